//! Alumet's core: the data model, the plugin contract and the measurement
//! pipeline. It knows nothing about hardware or output formats; plugins do.
//!
//! # An agent in a few dozen lines
//!
//! An agent is this crate, the plugins you choose, and their configuration.
//! This is `examples/custom-agent` (procfs, csv and the tutorial's
//! file-sensor plugin, built and run in CI; `docs/custom-agent.md`):
//! each plugin is initialised from its `[plugins.NAME]` section, started into
//! a [`pipeline::PipelineBuilder`], the pipeline runs until Ctrl-C, then
//! shuts down (a last poll, every point written) and the plugins stop.
//!
#![doc = concat!("```rust,ignore\n", include_str!("../../examples/custom-agent/src/main.rs"), "```\n")]
//!
//! To write a plugin, `docs/plugin-guide.md` and `docs/tutorial.md` (a
//! source, a transform and an output, step by step).
//!
//! # Modules
//!
//! - [`measurement`]: points, resources, consumers, values, attributes.
//! - [`metrics`]: metric definitions, units, the registry.
//! - [`plugin`]: the lifecycle every plugin follows.
//! - [`pipeline`]: sources → transforms → outputs, its control handle and counters.
//! - [`error`]: the errors plugins and elements return.
//! - [`config`]: TOML tables and human durations for plugin configs.
//! - [`secret`]: tokens and passwords from config, env or file, never logged.
//! - [`suggest`]: "did you mean ...?" by edit distance, for config errors.
//! - [`testing`]: run one element in a real pipeline and look at what comes out;
//!   `testing::points` (feature `fixtures`): metrics and points from a `points.json`.

pub mod config;
pub mod error;
pub mod exec;
pub mod limits;
pub mod measurement;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod secret;
pub mod suggest;
pub mod testing;
