//! Plugin `procfs`: system and per-process activity read from /proc.
//!
//! Two sources: [`system::SystemSource`] (CPU time per state, context
//! switches, forks, tasks, memory, network) and [`process::ProcessSource`]
//! (per-process CPU time, CPU usage and memory). The metrics are described in
//! README.md; their names are shared with other plugins and must not change.

pub use alumet_kernelfs::host;
pub mod names;
pub mod parse;

pub mod process;
pub mod system;

use std::path::{Path, PathBuf};
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::metrics::{Metric, MetricKind, Thinning, Unit, ValueType};
use alumet::pipeline::{PluginStartContext, SourceTrigger};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

use alumet_kernelfs::glob::Glob;
use host::HostParams;
use process::{ProcessMetricIds, ProcessOptions, ProcessSource, WatchRules};
use system::{SystemMetricIds, SystemOptions, SystemSource};

/// Configuration of the `procfs` plugin (`[plugins.procfs]`).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct ProcfsConfig {
    /// Where procfs is mounted (default `/proc`; e.g. `/host/proc` in a container).
    pub proc_root: PathBuf,
    /// Flush interval of both sources: points are handed to the outputs in
    /// batches this often (default 5s).
    #[serde(with = "alumet::config::duration")]
    pub flush_interval: Duration,

    /// Read machine-wide activity (default true).
    pub system: bool,
    /// Poll interval of the system source (default 1s).
    #[serde(with = "alumet::config::duration")]
    pub system_poll_interval: Duration,
    /// Also report `cpu_time` per CPU (default false).
    pub per_cpu: bool,
    /// /proc/meminfo fields (in kB there) reported as `system_memory`, in bytes.
    /// Empty: /proc/meminfo is not read.
    pub meminfo_fields: Vec<String>,
    /// Report network counters from /proc/net/dev (default true).
    pub network: bool,
    /// Interfaces to report; empty (default): all of them.
    pub network_interfaces: Vec<String>,

    /// Read per-process activity (default true).
    pub processes: bool,
    /// Poll interval of the process source (default 1s).
    #[serde(with = "alumet::config::duration")]
    pub process_poll_interval: Duration,
    /// How often the process list is scanned for new processes (default 1s).
    #[serde(with = "alumet::config::duration")]
    pub process_refresh_interval: Duration,
    /// An idle process is re-read in full at least this often (default 30s),
    /// which bounds how old its reported resident size can be ("0s": every poll).
    #[serde(with = "alumet::config::duration")]
    pub idle_process_memory_max_age: Duration,
    /// Watch every process (default true: energy attribution needs them all).
    /// When true, the three rules below are moot.
    pub watch_all: bool,
    /// Watch these pids.
    pub watch_pids: Vec<u32>,
    /// Watch processes whose name or command line matches one of these glob
    /// patterns (`*`, `?`), e.g. `"python*"`, `"*train.py*"`.
    pub watch_patterns: Vec<String>,
    /// Watch the process tree of the command run by `alumet-agent exec` (default true).
    pub watch_exec_tree: bool,

    /// Write every point to the outputs that store rows (default false):
    /// when false, CSV, InfluxDB and OTLP get deltas (CPU time, network
    /// counters, context switches) only when not zero, and gauges (memory,
    /// task counts) when they moved by `memory_change_threshold` or are
    /// `idle_process_memory_max_age` old;
    /// each series keeps its first and last point, and sums are the same.
    /// Prometheus and energy attribution always see every point.
    pub keep_zero: bool,
    /// The relative change of a gauge (a process's memory, the machine's
    /// memory fields and task counts) that is written at once (default 0.01:
    /// 1 %); smaller changes wait for `idle_process_memory_max_age`.
    pub memory_change_threshold: f64,
}

/// The /proc/meminfo fields reported by default.
pub const DEFAULT_MEMINFO_FIELDS: [&str; 7] = [
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SwapTotal",
    "SwapFree",
];

impl Default for ProcfsConfig {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            flush_interval: Duration::from_secs(5),
            system: true,
            system_poll_interval: Duration::from_secs(1),
            per_cpu: false,
            meminfo_fields: DEFAULT_MEMINFO_FIELDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            network: true,
            network_interfaces: Vec::new(),
            processes: true,
            process_poll_interval: Duration::from_secs(1),
            process_refresh_interval: Duration::from_secs(1),
            idle_process_memory_max_age: Duration::from_secs(30),
            watch_all: true,
            watch_pids: Vec::new(),
            watch_patterns: Vec::new(),
            watch_exec_tree: true,
            keep_zero: false,
            memory_change_threshold: 0.01,
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

impl ProcfsConfig {
    fn validate(&self) -> Result<(), PluginError> {
        if !self.system && !self.processes {
            return Err(invalid(
                "system",
                "both `system` and `processes` are false: the plugin would measure nothing; disable the plugin instead",
            ));
        }
        use alumet::limits::{FLUSH_INTERVAL, MAX_AGE, POLL_INTERVAL};
        FLUSH_INTERVAL.check("flush_interval", self.flush_interval)?;
        POLL_INTERVAL.check("system_poll_interval", self.system_poll_interval)?;
        POLL_INTERVAL.check("process_poll_interval", self.process_poll_interval)?;
        POLL_INTERVAL
            .or_zero("scan at every poll")
            .check("process_refresh_interval", self.process_refresh_interval)?;
        MAX_AGE.or_zero("re-read at every poll").check(
            "idle_process_memory_max_age",
            self.idle_process_memory_max_age,
        )?;
        alumet::limits::FRACTION.check("memory_change_threshold", self.memory_change_threshold)?;
        if let Some(bad) = self
            .meminfo_fields
            .iter()
            .find(|f| f.is_empty() || f.contains(|c: char| c == ':' || c.is_whitespace()))
        {
            return Err(invalid(
                "meminfo_fields",
                format!("\"{bad}\" is not a /proc/meminfo key (write it without colon or spaces, e.g. \"MemAvailable\")"),
            ));
        }
        if self.watch_patterns.iter().any(String::is_empty) {
            return Err(invalid(
                "watch_patterns",
                "a pattern is empty; use \"*\" to match everything",
            ));
        }
        let selects_something = self.watch_all
            || !self.watch_pids.is_empty()
            || !self.watch_patterns.is_empty()
            || self.watch_exec_tree;
        if self.processes && !selects_something {
            return Err(invalid(
                "watch_all",
                "no process is selected: set watch_all = true, or give watch_pids / watch_patterns / watch_exec_tree, or set processes = false",
            ));
        }
        Ok(())
    }
}

/// The `procfs` plugin.
pub struct ProcfsPlugin {
    config: ProcfsConfig,
    host: Option<HostParams>,
}

impl ProcfsPlugin {
    /// Replaces the host parameters (clock ticks, page size, interval clock)
    /// that are otherwise detected at start: for fixture tests and simulations.
    pub fn with_host(mut self, host: HostParams) -> Self {
        self.host = Some(host);
        self
    }
}

fn probe(root: &Path) -> Result<(), PluginError> {
    let stat = root.join("stat");
    std::fs::File::open(&stat).map(|_| ()).map_err(|e| {
        PluginError::unavailable(
            format!("cannot read {}: {e}", stat.display()),
            "mount procfs there, or set plugins.procfs.proc_root to where it is mounted",
        )
    })
}

fn metric(
    ctx: &mut PluginStartContext,
    thinning: Option<Thinning>,
    name: &str,
    unit: Unit,
    value_type: ValueType,
    kind: MetricKind,
    description: &str,
) -> Result<alumet::metrics::MetricId, PluginError> {
    let mut metric = Metric::new(name, unit, value_type, kind, description);
    metric.thinning = thinning;
    Ok(ctx.create_metric(metric)?)
}

fn count_unit(ucum: &str, symbol: &str) -> Unit {
    Unit::Custom {
        ucum: ucum.to_owned(),
        symbol: symbol.to_owned(),
    }
}

impl ProcfsPlugin {
    /// Deltas and CPU usage: zeros left out by the outputs that store rows.
    fn skip_zero(&self) -> Option<Thinning> {
        (!self.config.keep_zero).then_some(Thinning::SkipZero)
    }

    /// Gauges (memory, task counts): written when they move, or every
    /// `idle_process_memory_max_age` (as often as an idle process is re-read).
    fn memory_thinning(&self) -> Option<Thinning> {
        (!self.config.keep_zero).then_some(Thinning::Gauge {
            max_age: self.config.idle_process_memory_max_age,
            min_relative_change: self.config.memory_change_threshold,
        })
    }

    fn start_system(
        &self,
        ctx: &mut PluginStartContext,
        host: &HostParams,
    ) -> Result<(), PluginError> {
        use MetricKind::{Delta, Gauge};
        use ValueType::{F64, U64};
        let (zero, gauge) = (self.skip_zero(), self.memory_thinning());
        let ids = SystemMetricIds {
            cpu_time: metric(ctx, zero, "cpu_time", Unit::Second, F64, Delta, "CPU time spent in each state (attribute `state`), summed over the CPUs of the resource.")?,
            context_switches: metric(ctx, zero, "context_switches", count_unit("{switch}", "switches"), U64, Delta, "Context switches on the machine.")?,
            processes_created: metric(ctx, zero, "processes_created", count_unit("{process}", "processes"), U64, Delta, "Processes and threads created (forks and clones).")?,
            tasks_running: metric(ctx, gauge, "tasks_running", count_unit("{task}", "tasks"), U64, Gauge, "Tasks runnable now.")?,
            tasks_blocked: metric(ctx, gauge, "tasks_blocked", count_unit("{task}", "tasks"), U64, Gauge, "Tasks blocked on I/O now.")?,
            system_memory: metric(ctx, gauge, "system_memory", Unit::Byte, U64, Gauge, "A /proc/meminfo field (attribute `field`), in bytes.")?,
            network_bytes: metric(ctx, zero, "network_bytes", Unit::Byte, U64, Delta, "Bytes received or sent (attribute `direction`) by a network interface.")?,
            network_packets: metric(ctx, zero, "network_packets", count_unit("{packet}", "packets"), U64, Delta, "Packets received or sent by a network interface.")?,
            network_errors: metric(ctx, zero, "network_errors", count_unit("{error}", "errors"), U64, Delta, "Receive or transmit errors of a network interface.")?,
            network_drops: metric(ctx, zero, "network_drops", count_unit("{packet}", "packets"), U64, Delta, "Packets dropped on receive or transmit by a network interface.")?,
        };
        let options = SystemOptions {
            per_cpu: self.config.per_cpu,
            meminfo_fields: self.config.meminfo_fields.clone(),
            network: self.config.network,
            network_interfaces: self.config.network_interfaces.clone(),
        };
        let source = SystemSource::new(
            &self.config.proc_root,
            host.clock_ticks_per_second,
            options,
            ids,
        );
        let trigger = SourceTrigger::every(self.config.system_poll_interval)
            .flush_every(self.config.flush_interval);
        ctx.add_source("system", Box::new(source), trigger);
        Ok(())
    }

    fn start_processes(
        &self,
        ctx: &mut PluginStartContext,
        host: &HostParams,
    ) -> Result<(), PluginError> {
        use MetricKind::{Delta, Gauge};
        use ValueType::{F64, U64};
        let (zero, memory) = (self.skip_zero(), self.memory_thinning());
        let ids = ProcessMetricIds {
            cpu_time: metric(ctx, zero, "process_cpu_time", Unit::Second, F64, Delta, "CPU time of a process in user or system mode (attribute `mode`).")?,
            cpu_usage: metric(ctx, zero, "process_cpu_usage", Unit::Percent, F64, Gauge, "CPU time of a process over the interval, in % of one CPU (at most 100 x online CPUs).")?,
            memory_resident: metric(ctx, memory, "process_memory_resident", Unit::Byte, U64, Gauge, "Resident set size of a process.")?,
            memory_virtual: metric(ctx, memory, "process_memory_virtual", Unit::Byte, U64, Gauge, "Virtual memory size of a process.")?,
        };
        let rules = WatchRules {
            all: self.config.watch_all,
            pids: self.config.watch_pids.clone(),
            patterns: self
                .config
                .watch_patterns
                .iter()
                .map(|p| Glob::new(p))
                .collect(),
            exec_tree: self.config.watch_exec_tree,
        };
        let options = ProcessOptions {
            rules,
            refresh_interval_ns: u64::try_from(self.config.process_refresh_interval.as_nanos())
                .unwrap_or(u64::MAX),
            open_budget: alumet_kernelfs::file::open_file_budget(),
            idle_full_read_max_age_ns: u64::try_from(
                self.config.idle_process_memory_max_age.as_nanos(),
            )
            .unwrap_or(u64::MAX),
        };
        let source = ProcessSource::new(
            &self.config.proc_root,
            options,
            ctx.exec_target(),
            host.clone(),
            ids,
        );
        // Reading thousands of processes takes milliseconds: a thread of its
        // own keeps that from delaying other plugins' sources.
        let trigger = SourceTrigger::every(self.config.process_poll_interval)
            .flush_every(self.config.flush_interval)
            .on_dedicated_thread();
        ctx.add_source("processes", Box::new(source), trigger);
        Ok(())
    }
}

impl Plugin for ProcfsPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        probe(&self.config.proc_root)?;
        let host = self.host.clone().unwrap_or_else(HostParams::detect);
        if self.config.system {
            self.start_system(ctx, &host)?;
        }
        if self.config.processes {
            self.start_processes(ctx, &host)?;
        }
        Ok(())
    }
}

impl PluginDefinition for ProcfsPlugin {
    const NAME: &'static str = "procfs";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "System and per-process CPU, memory and network activity from /proc.";
    type Config = ProcfsConfig;

    fn init(config: Self::Config) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self { config, host: None })
    }

    fn check_availability(config: &Self::Config) -> Result<(), PluginError> {
        probe(&config.proc_root)
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("proc_root", "Where procfs is mounted (the host's /proc when the agent runs in a container)."),
            ("flush_interval", "Time between two hand-overs of the points to the outputs."),
            ("system", "Read machine-wide activity from /proc/stat, /proc/meminfo and /proc/net/dev."),
            ("system_poll_interval", "Time between two reads of the machine-wide files."),
            ("per_cpu", "Also report cpu_time for each CPU, not only for the whole machine."),
            ("meminfo_fields", "/proc/meminfo fields reported as system_memory (bytes); [] to skip the file."),
            ("network", "Report network counters per interface from /proc/net/dev."),
            ("network_interfaces", "Interfaces to report; [] for all."),
            ("processes", "Read per-process CPU time, CPU usage and memory from /proc/PID/stat."),
            ("process_poll_interval", "Time between two reads of the watched processes."),
            ("process_refresh_interval", "Time between two scans of /proc for new processes."),
            ("idle_process_memory_max_age", "An idle process (no CPU time since its last read) is not re-read, except this often: how old its resident memory may be (\"0s\": every poll)."),
            ("watch_all", "Watch every process (energy attribution needs them all); watch_exec_tree, watch_patterns and watch_pids then do not matter."),
            ("watch_pids", "Pids to watch when watch_all = false."),
            ("watch_patterns", "Glob patterns (* and ?) on the process name or command line, e.g. \"python*\"."),
            ("watch_exec_tree", "Watch the process tree of the command run by `alumet-agent exec`."),
            ("keep_zero", "Write every point to CSV, InfluxDB and OTLP (false: deltas only when not zero, gauges such as memory when they moved or are idle_process_memory_max_age old; every series keeps its first and last point and every sum is the same; Prometheus and attribution always see every point)."),
            ("memory_change_threshold", "Relative change of a gauge (memory, task counts) written at once (0.01 = 1 %) when keep_zero = false."),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips_and_is_valid() {
        let table = alumet::config::serialize_config(&ProcfsConfig::default()).unwrap();
        let text = toml::to_string(&table).unwrap();
        assert!(text.contains("system_poll_interval = \"1s\""), "{text}");
        let back: ProcfsConfig = alumet::config::deserialize_config(table).unwrap();
        assert!(ProcfsPlugin::init(back).is_ok());
    }

    #[test]
    fn invalid_configs_are_rejected_with_the_key() {
        let d = ProcfsConfig::default;
        let cases = [
            (
                ProcfsConfig {
                    system: false,
                    processes: false,
                    ..d()
                },
                "system",
            ),
            (
                ProcfsConfig {
                    meminfo_fields: vec!["MemFree:".into()],
                    ..d()
                },
                "meminfo_fields",
            ),
            (
                ProcfsConfig {
                    watch_all: false,
                    watch_exec_tree: false,
                    ..d()
                },
                "watch_all",
            ),
            (
                ProcfsConfig {
                    process_poll_interval: Duration::ZERO,
                    ..d()
                },
                "process_poll_interval",
            ),
            (
                ProcfsConfig {
                    watch_patterns: vec![String::new()],
                    ..d()
                },
                "watch_patterns",
            ),
        ];
        for (config, key) in cases {
            let err = ProcfsPlugin::init(config).err().unwrap().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn missing_proc_root_is_unavailable_with_a_fix() {
        let c = ProcfsConfig {
            proc_root: PathBuf::from("/nonexistent/proc"),
            ..ProcfsConfig::default()
        };
        let err = ProcfsPlugin::check_availability(&c).unwrap_err();
        assert!(matches!(err, PluginError::Unavailable { .. }));
        assert!(err.to_string().contains("/nonexistent/proc/stat"), "{err}");
    }
}
