//! The bodies of the fuzz targets: one function per parser that meets
//! outside input, each calling the real parsing code of the crate that owns
//! it and asserting what must hold of any input (no panic, and where cheap,
//! that what parsed writes back and parses to the same thing).
//!
//! `fuzz/` (a cargo-fuzz project, nightly, outside the workspace) has one
//! target per function that only calls it; `tests/replay.rs` runs every
//! function over its seed corpus (`fuzz/corpus/<target>/`) and over the
//! inputs that once failed (`fuzz/regressions/<target>/`) on the stable
//! toolchain, so that CI replays them without nightly. FUZZING.md says how
//! to run a target and records the runs.

// A fuzz target reports a broken invariant by panicking: that is its job.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod config;
mod http;
mod hwmon;
mod kernel;
mod redfish;
mod sysfs;
mod workloads;

/// A temporary directory for a target that writes a file tree at each
/// run: on tmpfs where there is one (a run writes tens of files).
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory")
}

pub use agent::{agent_config, control_request};
pub use config::{carbon_intensity, plugin_config};
pub use http::{influxdb_response, otlp_response, prometheus_request};
pub use hwmon::hwmon_values;
pub use kernel::{cgroup_path, cgroup_stat, mountinfo, proc_cgroup, proc_pid_stat, proc_stat};
pub use redfish::redfish_documents;
pub use sysfs::{rapl_sysfs, write_tree};
pub use workloads::{
    cri_status, engine_api, kube_pod_list, kube_watch, slurm_environ, slurm_squeue,
};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name: the name of its file in `fuzz/fuzz_targets/` and
/// of its directories under `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("proc_stat", proc_stat),
    ("proc_pid_stat", proc_pid_stat),
    ("mountinfo", mountinfo),
    ("proc_cgroup", proc_cgroup),
    ("cgroup_stat", cgroup_stat),
    ("cgroup_path", cgroup_path),
    ("rapl_sysfs", rapl_sysfs),
    ("plugin_config", plugin_config),
    ("carbon_intensity", carbon_intensity),
    ("prometheus_request", prometheus_request),
    ("influxdb_response", influxdb_response),
    ("otlp_response", otlp_response),
    ("engine_api", engine_api),
    ("cri_status", cri_status),
    ("kube_pod_list", kube_pod_list),
    ("kube_watch", kube_watch),
    ("slurm_squeue", slurm_squeue),
    ("slurm_environ", slurm_environ),
    ("agent_config", agent_config),
    ("control_request", control_request),
    ("redfish_documents", redfish_documents),
    ("hwmon_values", hwmon_values),
];
