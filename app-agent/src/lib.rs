//! The library of `alumet-agent` (the binary is `main.rs`): every room of
//! the agent, public so that the fuzz targets (`fuzz-targets/`) reach the
//! parsers of the configuration and of the control socket.
//!
//! The crate has one room per use; a change goes to the room of its use:
//! - [`cli`]: the command line (clap definition) and the commands that only
//!   inspect (`doctor`);
//! - [`config`]: loading the file with overrides, diagnostics with file,
//!   line and did-you-mean, the static plugin list;
//! - [`agent`]: the plugins started into a pipeline, stopped, restarted
//!   (what the service and a measurement share);
//! - [`service`]: `run` (signals, SIGHUP reload, sd_notify, the control
//!   socket and its `ctl` client);
//! - [`measure`]: `exec`, `exec --cgroup`, `watch` (the command's launch and
//!   cgroup, the measured window);
//! - [`report`]: what a measurement reports (summary, carbon lines, text
//!   and JSON, plots).

pub mod agent;
pub mod cli;
pub mod config;
pub mod measure;
pub mod report;
pub mod service;
