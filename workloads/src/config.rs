//! The `names` settings of a plugin that names workloads (the cgroups
//! plugin's `[plugins.cgroups.names]`), and the resolver they make.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{is_socket, EngineLookup, EngineSettings};
use crate::resolver::{Lookup, Resolver};
use crate::slurm::{SlurmLookup, SlurmSettings};

/// Where workload names come from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NamesConfig {
    /// Look names up at all (default true). Off: workloads keep the ids of
    /// their cgroup paths, exactly as without any manager.
    pub enabled: bool,
    /// Docker's API socket.
    pub docker_socket: PathBuf,
    /// Podman's API sockets, tried in order; `{uid}` is the uid of a
    /// rootless container's owner.
    pub podman_sockets: Vec<String>,
    /// Container labels copied as `label_<name>` attributes (e.g. `["app"]`).
    pub container_labels: Vec<String>,
    /// How long one request to an engine may take.
    #[serde(with = "alumet::config::duration")]
    pub engine_timeout: Duration,
    /// Name Slurm jobs (default true).
    pub slurm: bool,
    /// The `squeue` asked when no process of a job says its names; `""`:
    /// never run it.
    pub squeue: String,
    /// How long `squeue` may take.
    #[serde(with = "alumet::config::duration")]
    pub squeue_timeout: Duration,
}

impl Default for NamesConfig {
    fn default() -> Self {
        let engine = EngineSettings::default();
        let slurm = SlurmSettings::default();
        Self {
            enabled: true,
            docker_socket: engine.docker_socket,
            podman_sockets: engine.podman_sockets,
            container_labels: engine.labels,
            engine_timeout: engine.timeout,
            slurm: true,
            squeue: slurm.squeue,
            squeue_timeout: slurm.timeout,
        }
    }
}

impl NamesConfig {
    /// The lookups these settings ask for, with `proc_root` for the
    /// processes' environments. Each says in one line whether it can work
    /// here; none is left out for a manager that is not running yet (its
    /// socket is tried per workload).
    pub fn lookups(&self, proc_root: PathBuf) -> Vec<Arc<dyn Lookup>> {
        let mut lookups: Vec<Arc<dyn Lookup>> = Vec::new();
        if !self.enabled {
            log::info!("names: off; workloads keep the ids of their cgroup paths");
            return lookups;
        }
        let present: Vec<String> = std::iter::once(self.docker_socket.display().to_string())
            .chain(
                self.podman_sockets
                    .iter()
                    .filter(|s| !s.contains("{uid}"))
                    .cloned(),
            )
            .filter(|s| is_socket(std::path::Path::new(s)))
            .collect();
        log::info!(
            "names: containers from the engines' sockets ({})",
            if present.is_empty() {
                "none listening now; tried again per container".to_owned()
            } else {
                format!("listening: {}", present.join(", "))
            }
        );
        lookups.push(Arc::new(EngineLookup::new(EngineSettings {
            docker_socket: self.docker_socket.clone(),
            podman_sockets: self.podman_sockets.clone(),
            labels: self.container_labels.clone(),
            timeout: self.engine_timeout,
        })));
        if self.slurm {
            lookups.push(Arc::new(SlurmLookup::new(SlurmSettings {
                proc_root,
                squeue: self.squeue.clone(),
                timeout: self.squeue_timeout,
            })));
        }
        lookups
    }

    /// A resolver with these settings' lookups.
    pub fn resolver(&self, proc_root: PathBuf) -> Resolver {
        Resolver::new(self.lookups(proc_root))
    }
}
