//! Alumet's core: the data model, the plugin contract and the measurement
//! pipeline. It knows nothing about hardware or output formats; plugins do.
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
pub mod measurement;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod secret;
pub mod suggest;
pub mod testing;
