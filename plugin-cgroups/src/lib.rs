//! Plugin `cgroups`: CPU time, CPU usage, memory and I/O of control groups
//! (Slurm and OAR jobs, Kubernetes pods and containers, containers, systemd
//! services, user sessions), classified from their path.
//!
//! One source, [`source::CgroupSource`], over the hierarchy that accounts
//! CPU time (v2, v1 `cpuacct`, or the right one of a hybrid layout, see
//! [`alumet_kernelfs::cgroup::CgroupLayout`]). Metrics and classification
//! patterns are described in README.md; the metric names are shared with
//! the energy-attribution plugin and the exec report and must not change.

pub mod classify;
pub mod discovery;
pub mod lanes;
pub mod prune;
pub mod reader;
pub mod select;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::metrics::{Metric, MetricKind, Thinning, Unit, ValueType};
use alumet::pipeline::{PluginStartContext, SourceTrigger};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use alumet_kernelfs::cgroup::{Accounting, CgroupLayout, HierarchyChoice};
use alumet_kernelfs::glob::Glob;
use alumet_kernelfs::host::HostParams;
use alumet_workloads::config::NamesConfig;
use serde::{Deserialize, Serialize};

use discovery::Discovery;
use reader::Wanted;
use select::{SelectMode, Selection};
use source::{CgroupMetricIds, CgroupSource, SourceOptions};

/// Which hierarchy accounts CPU time (`hierarchy` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HierarchyKey {
    /// See [`HierarchyChoice::Auto`].
    #[default]
    Auto,
    /// cgroup v2.
    V2,
    /// cgroup v1 `cpuacct`.
    V1,
}

impl From<HierarchyKey> for HierarchyChoice {
    fn from(k: HierarchyKey) -> Self {
        match k {
            HierarchyKey::Auto => HierarchyChoice::Auto,
            HierarchyKey::V2 => HierarchyChoice::V2,
            HierarchyKey::V1 => HierarchyChoice::V1,
        }
    }
}

/// Configuration of `[plugins.cgroups]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupsConfig {
    /// Where the cgroup filesystems are mounted (default `/sys/fs/cgroup`; the host's in a container).
    pub cgroup_root: PathBuf,
    /// Where procfs is mounted (for `self/mountinfo`).
    pub proc_root: PathBuf,
    /// `auto`, `v2` or `v1`: the hierarchy that accounts CPU time.
    pub hierarchy: HierarchyKey,
    /// Time between two polls (default 1s).
    #[serde(with = "alumet::config::duration")]
    pub poll_interval: Duration,
    /// Time between two hand-overs of the points to the outputs (default 5s).
    #[serde(with = "alumet::config::duration")]
    pub flush_interval: Duration,
    /// `workloads` (jobs, pods, containers, services, sessions) or `all`.
    pub select: SelectMode,
    /// Glob patterns on the cgroup path always measured (e.g. `"/machine.slice/*"`).
    pub include: Vec<String>,
    /// Glob patterns on the cgroup path never measured (wins over `include`).
    pub exclude: Vec<String>,
    /// Deepest level discovered (1 = children of the root); 0: no limit.
    pub max_depth: usize,
    /// Most cgroups measured at once; beyond, cgroups are counted and logged, not measured.
    pub max_cgroups: usize,
    /// Watch the hierarchy with inotify (default true).
    pub inotify: bool,
    /// Start watching this long after the first poll (default 1s), so that a
    /// short `exec` does not pay for closing inotify (an RCU grace period).
    #[serde(with = "alumet::config::duration")]
    pub inotify_delay: Duration,
    /// Time between two full walks of the hierarchy (the safety net of inotify).
    #[serde(with = "alumet::config::duration")]
    pub rescan_interval: Duration,
    /// Time between two reads of memory and I/O (default 5s; CPU time is read at every poll).
    #[serde(with = "alumet::config::duration")]
    pub memory_io_interval: Duration,
    /// A cgroup that used no CPU since its last read of memory and I/O is
    /// read again only this often (default 30s); its last values are reported meanwhile.
    #[serde(with = "alumet::config::duration")]
    pub idle_memory_io_max_age: Duration,
    /// Read memory figures (default true).
    pub memory: bool,
    /// Read block I/O figures (default true).
    pub io: bool,
    /// Write every point to the outputs that store rows (default false):
    /// when false, CSV, InfluxDB and OTLP get CPU time and I/O deltas only
    /// when not zero, and memory when it moved by `memory_change_threshold`
    /// or is `idle_memory_io_max_age` old; each series keeps its first and
    /// last point and sums are the same. Prometheus and energy attribution
    /// always see every point.
    pub keep_zero: bool,
    /// The relative change of a cgroup's memory that is written at once
    /// (default 0.01: 1 %).
    pub memory_change_threshold: f64,
    /// Where the names of containers and Slurm jobs are looked up (see the README).
    pub names: NamesConfig,
}

impl Default for CgroupsConfig {
    fn default() -> Self {
        Self {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            hierarchy: HierarchyKey::Auto,
            poll_interval: Duration::from_secs(1),
            flush_interval: Duration::from_secs(5),
            select: SelectMode::Workloads,
            include: Vec::new(),
            exclude: Vec::new(),
            max_depth: 12,
            max_cgroups: 4096,
            inotify: true,
            inotify_delay: Duration::from_secs(1),
            rescan_interval: Duration::from_secs(30),
            memory_io_interval: Duration::from_secs(5),
            idle_memory_io_max_age: Duration::from_secs(30),
            memory: true,
            io: true,
            keep_zero: false,
            memory_change_threshold: 0.01,
            names: NamesConfig::default(),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

impl CgroupsConfig {
    /// How the outputs that store rows thin metric `name` (see `keep_zero`).
    fn thinning_of(&self, name: &str) -> Option<Thinning> {
        if self.keep_zero {
            return None;
        }
        match name {
            "cgroup_cpu_time" | "cgroup_cpu_usage" | "cgroup_io_read" | "cgroup_io_write" => {
                Some(Thinning::SkipZero)
            }
            "cgroup_memory_current" | "cgroup_memory_peak" => Some(Thinning::Gauge {
                max_age: self.idle_memory_io_max_age,
                min_relative_change: self.memory_change_threshold,
            }),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), PluginError> {
        use alumet::limits::{CountRange, FLUSH_INTERVAL, MAX_AGE, POLL_INTERVAL, TIMEOUT};
        POLL_INTERVAL.check("poll_interval", self.poll_interval)?;
        FLUSH_INTERVAL.check("flush_interval", self.flush_interval)?;
        POLL_INTERVAL.check("rescan_interval", self.rescan_interval)?;
        POLL_INTERVAL.check("memory_io_interval", self.memory_io_interval)?;
        MAX_AGE
            .or_zero("re-read at every memory_io_interval")
            .check("idle_memory_io_max_age", self.idle_memory_io_max_age)?;
        TIMEOUT
            .or_zero("no delay")
            .check("inotify_delay", self.inotify_delay)?;
        // Deeper than the kernel's own limit on nested cgroups is a typo.
        CountRange::new(0, 1000).check("max_depth", self.max_depth)?;
        alumet::limits::FRACTION.check("memory_change_threshold", self.memory_change_threshold)?;
        self.names.validate()?;
        for (key, patterns) in [("include", &self.include), ("exclude", &self.exclude)] {
            if let Some(bad) = patterns
                .iter()
                .find(|p| !p.starts_with('/') && !p.starts_with('*'))
            {
                return Err(invalid(
                    key,
                    format!("\"{bad}\" cannot match a cgroup path: paths start with '/', e.g. \"/system.slice/*.service\""),
                ));
            }
        }
        if self.max_cgroups == 0 {
            return Err(invalid(
                "max_cgroups",
                "must be at least 1; disable the plugin to measure no cgroup",
            ));
        }
        CountRange::new(1, 10_000_000).check("max_cgroups", self.max_cgroups)?;
        Ok(())
    }

    /// The settings of the source over `accounting`.
    pub fn source_options(&self, accounting: &Accounting) -> SourceOptions {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        SourceOptions {
            selection: Selection {
                mode: self.select,
                include: self.include.iter().map(|p| Glob::new(p)).collect(),
                exclude: self.exclude.iter().map(|p| Glob::new(p)).collect(),
            },
            max_cgroups: self.max_cgroups,
            watch_after_ns: ns(self.inotify_delay),
            memory_io_interval_ns: ns(self.memory_io_interval),
            idle_memory_io_max_age_ns: ns(self.idle_memory_io_max_age),
            rescan_interval_ns: ns(self.rescan_interval),
            wanted: Wanted {
                memory: self.memory,
                io: self.io,
            },
            // procfs keeps half of the limit; a quarter is ours.
            open_budget: alumet_kernelfs::file::open_file_budget() / 2,
            prune_idle_subtrees: alumet_kernelfs::cgroup::is_cgroup_filesystem(&accounting.cpu),
            unaccounted_by: None,
            resolver: None,
        }
    }

    /// The hierarchy this configuration reads, or why there is none.
    pub fn accounting(&self) -> Result<Accounting, PluginError> {
        self.accountings().map(|(primary, _)| primary)
    }

    /// The hierarchy this configuration reads, and with `hierarchy =
    /// "auto"` on a hybrid machine, the v2 tree for the cgroups that v1
    /// `cpuacct` does not hold (see [`lanes`]); or why there is none.
    pub fn accountings(&self) -> Result<(Accounting, Option<Accounting>), PluginError> {
        let layout = CgroupLayout::detect(&self.cgroup_root, &self.proc_root).map_err(|e| {
            PluginError::unavailable(
                e.to_string(),
                "mount cgroupfs there, or set plugins.cgroups.cgroup_root to where it is mounted (the host's /sys/fs/cgroup in a container)",
            )
        })?;
        let unavailable = |e: alumet_kernelfs::cgroup::LayoutError| {
            PluginError::unavailable(
                e.to_string(),
                "set plugins.cgroups.hierarchy = \"auto\", or mount the missing hierarchy",
            )
        };
        if self.hierarchy == HierarchyKey::Auto {
            // Hybrid: cpuacct's root accounts the whole machine, and a
            // manager may put a workload in either tree, so both are read.
            if let (Ok(v1), Ok(v2)) = (
                layout.accounting(HierarchyChoice::V1),
                layout.accounting(HierarchyChoice::V2),
            ) {
                return Ok((v1, Some(v2)));
            }
        }
        let primary = layout
            .accounting(self.hierarchy.into())
            .map_err(unavailable)?;
        Ok((primary, None))
    }
}

/// The `cgroups` plugin.
pub struct CgroupsPlugin {
    config: CgroupsConfig,
    host: Option<HostParams>,
}

impl CgroupsPlugin {
    /// Replaces the detected host parameters (clock, USER_HZ): for fixture tests.
    pub fn with_host(mut self, host: HostParams) -> Self {
        self.host = Some(host);
        self
    }
}

fn online_cpus(proc_root: &Path) -> u32 {
    let counted = std::fs::read_to_string(proc_root.join("stat"))
        .map(|t| {
            t.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count() as u32
        })
        .unwrap_or(0);
    if counted > 0 {
        counted
    } else {
        HostParams::online_cpus_fallback()
    }
}

/// The metrics of this plugin, in registration order.
pub fn metric_definitions() -> [Metric; 7] {
    use MetricKind::{Delta, Gauge};
    use ValueType::{F64, U64};
    [
        Metric::new("cgroup_cpu_time", Unit::Second, F64, Delta, "CPU time of a cgroup and its descendants in user or system mode (attribute `mode`), exited processes included."),
        Metric::new("cgroup_cpu_usage", Unit::Percent, F64, Gauge, "CPU time of a cgroup over the interval, in % of one CPU (at most 100 x online CPUs)."),
        Metric::new("cgroup_memory_current", Unit::Byte, U64, Gauge, "Memory charged to a cgroup now."),
        Metric::new("cgroup_memory_peak", Unit::Byte, U64, Gauge, "Highest memory charged to a cgroup so far."),
        Metric::new("cgroup_io_read", Unit::Byte, U64, Delta, "Bytes a cgroup read from block devices."),
        Metric::new("cgroup_io_write", Unit::Byte, U64, Delta, "Bytes a cgroup wrote to block devices."),
        Metric::new("cgroups_measured", Unit::Custom { ucum: "{cgroup}".into(), symbol: "cgroups".into() }, U64, Gauge, "Cgroups measured at this poll (the hierarchy root included)."),
    ]
}

impl Plugin for CgroupsPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let (accounting, unaccounted) = self.config.accountings()?;
        log::info!("cgroups: reading {}", accounting.describe());
        let ids = CgroupMetricIds::register_with(|mut m| {
            m.thinning = self.config.thinning_of(&m.name);
            ctx.create_metric(m)
        })?;
        let host = self.host.clone().unwrap_or_else(HostParams::detect);
        let online = online_cpus(&self.config.proc_root);
        let resolver = Arc::new(self.config.names.resolver(self.config.proc_root.clone()));
        let resolver = resolver.is_active().then_some(resolver);
        let lane = |accounting: Accounting, unaccounted_by: Option<PathBuf>| {
            let mut options = self.config.source_options(&accounting);
            options.unaccounted_by = unaccounted_by;
            options.resolver = resolver.clone();
            let discovery =
                Discovery::new(&accounting.cpu, self.config.max_depth, self.config.inotify);
            CgroupSource::new(
                accounting,
                discovery,
                options,
                ctx.exec_target(),
                host.clone(),
                online,
                ids,
            )
        };
        let primary_cpu = accounting.cpu.clone();
        let primary = lane(accounting, None);
        let source: Box<dyn alumet::pipeline::Source> = match unaccounted {
            Some(v2) => {
                log::info!(
                    "cgroups: and the cgroups that cpuacct does not hold (VMs under libvirt...) from {}",
                    v2.describe()
                );
                Box::new(lanes::Lanes::new(
                    primary,
                    lane(v2, Some(primary_cpu)),
                    ids.measured,
                ))
            }
            None => Box::new(primary),
        };
        let trigger = SourceTrigger::every(self.config.poll_interval)
            .flush_every(self.config.flush_interval)
            .on_dedicated_thread();
        ctx.add_source("cgroups", source, trigger);
        Ok(())
    }
}

impl PluginDefinition for CgroupsPlugin {
    const NAME: &'static str = "cgroups";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "CPU time, memory and I/O of Slurm/OAR jobs, Kubernetes pods, containers, systemd services and sessions (cgroup v1/v2).";
    type Config = CgroupsConfig;

    fn init(config: Self::Config) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self { config, host: None })
    }

    fn check_availability(config: &Self::Config) -> Result<(), PluginError> {
        config.accounting().map(|_| ())
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("cgroup_root", "Where the cgroup filesystems are mounted (the host's /sys/fs/cgroup when the agent runs in a container)."),
            ("proc_root", "Where procfs is mounted (self/mountinfo tells where each hierarchy is)."),
            ("hierarchy", "Hierarchy that accounts CPU time: \"auto\" (on a hybrid machine, each cgroup from the one that accounts it: v1 cpuacct, else the v2 tree), \"v2\" or \"v1\"."),
            ("poll_interval", "Time between two reads of the measured cgroups."),
            ("flush_interval", "Time between two hand-overs of the points to the outputs."),
            ("select", "\"workloads\" (Slurm/OAR jobs and steps, pods, containers, systemd services, user sessions) or \"all\"."),
            ("include", "Glob patterns on the cgroup path always measured, e.g. [\"/machine.slice/*\"]."),
            ("exclude", "Glob patterns on the cgroup path never measured (wins over include)."),
            ("max_depth", "Deepest level of the tree discovered (1 = children of the root); 0 for no limit."),
            ("max_cgroups", "Most cgroups measured at once; the others are counted and logged."),
            ("inotify", "Watch the tree with inotify so that new cgroups are measured from their first poll."),
            ("inotify_delay", "Time after the start before inotify starts: closing an inotify instance costs the kernel an RCU grace period (~15 ms), which a short exec would pay; until then, the tree is walked at start and every rescan_interval."),
            ("rescan_interval", "Time between two full walks of the tree (the safety net of inotify)."),
            ("memory_io_interval", "Time between two reads of memory and I/O, which cost the kernel more than CPU time (read at every poll); the command of exec is read in full at every poll."),
            ("idle_memory_io_max_age", "A cgroup that used no CPU since its last read of memory and I/O is read again only this often (its last values are reported meanwhile): how old the memory of an idle cgroup can be (reclaim shrinks it while it sleeps), and how late the writeback of its dirty pages can show; \"0s\": every cgroup at every memory_io_interval."),
            ("memory", "Report cgroup_memory_current and cgroup_memory_peak."),
            ("io", "Report cgroup_io_read and cgroup_io_write."),
            ("keep_zero", "Write every point to CSV, InfluxDB and OTLP (false: CPU time and I/O only when not zero, memory when it moved or is idle_memory_io_max_age old; every series keeps its first and last point and every sum is the same; Prometheus and attribution always see every point)."),
            ("memory_change_threshold", "Relative change of a cgroup's memory written at once (0.01 = 1 %) when keep_zero = false."),
            ("names", "Names of containers, pods and Slurm jobs, looked up once per workload off the poll path and added to its points' attributes."),
            ("names.enabled", "Look names up (false: workloads keep the ids of their cgroup paths)."),
            ("names.docker_socket", "Docker's API socket."),
            ("names.podman_sockets", "Podman's API sockets, tried in order; {uid} is a rootless container's owner."),
            ("names.container_labels", "Container labels copied as label_<name> attributes, e.g. [\"app\"]."),
            ("names.engine_timeout", "How long one request to a container engine (or a CRI runtime) may take."),
            ("names.containerd_socket", "containerd's socket, whose CRI names its containers (Kubernetes ones from their labels when kubernetes is off)."),
            ("names.crio_socket", "CRI-O's socket, likewise."),
            ("names.slurm", "Name Slurm jobs (from a job process's environment, as root, else squeue)."),
            ("names.squeue", "The squeue run when no process of a job says its names; \"\": never run it."),
            ("names.squeue_timeout", "How long squeue may take."),
            ("names.kubernetes", "Pod names: \"auto\" (the API server when in a pod, i.e. KUBERNETES_SERVICE_HOST set, else off), \"api_server\" (RBAC pods: get, list, watch), \"kubelet\" (RBAC nodes/proxy: get) or \"off\"."),
            ("names.node_name", "This node's name (only its pods are watched); \"\": $NODE_NAME (downward API spec.nodeName)."),
            ("names.pod_labels", "Pod labels copied as label_<name> attributes."),
            ("names.api_url", "The API server; \"\": https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT."),
            ("names.token_file", "Service account token, read at each request, never logged; \"\": none."),
            ("names.ca_file", "CA of the API server's (or kubelet's) certificate; \"\": the system's trust store."),
            ("names.kubelet_url", "The kubelet, for kubernetes = \"kubelet\" (needs nodes/proxy: get and the host's network)."),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips_and_is_valid() {
        let table = alumet::config::serialize_config(&CgroupsConfig::default()).unwrap();
        let back: CgroupsConfig = alumet::config::deserialize_config(table).unwrap();
        assert_eq!(back, CgroupsConfig::default());
        assert!(CgroupsPlugin::init(back).is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = CgroupsConfig {
            include: vec!["system.slice".into()],
            ..CgroupsConfig::default()
        };
        assert!(CgroupsPlugin::init(c)
            .err()
            .unwrap()
            .to_string()
            .contains("include"));
        let c = CgroupsConfig {
            poll_interval: Duration::ZERO,
            ..CgroupsConfig::default()
        };
        assert!(CgroupsPlugin::init(c)
            .err()
            .unwrap()
            .to_string()
            .contains("poll_interval"));
    }

    #[test]
    fn no_cgroupfs_is_unavailable_with_a_fix() {
        let d = tempfile::tempdir().unwrap();
        let c = CgroupsConfig {
            cgroup_root: d.path().to_path_buf(),
            proc_root: d.path().to_path_buf(),
            ..CgroupsConfig::default()
        };
        let e = CgroupsPlugin::check_availability(&c).unwrap_err();
        assert!(matches!(e, PluginError::Unavailable { .. }));
        let text = e.to_string();
        assert!(
            text.contains("no cgroup filesystem under") && text.contains("cgroup_root"),
            "{text}"
        );
    }
}
