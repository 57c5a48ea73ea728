//! Plugin `rapl`: CPU package, core, uncore, DRAM and platform energy from
//! Intel and AMD RAPL counters.
//!
//! This file holds the configuration, the metric, and the choice of the
//! interface: perf_event ([`perf`]) when its counters can be opened and
//! count ([`check`]), else powercap ([`powercap`]), else an error that says
//! why neither works. The source itself ([`source`]) is the same for both.

pub mod check;
pub mod domain;
pub mod perf;
pub mod powercap;
pub mod source;
pub mod topology;
pub mod verdict;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alumet::config::{format_duration, ConfigError};
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::pipeline::{PluginStartContext, SourceTrigger};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use alumet_kernelfs::virt::{self, MachineKind};
use serde::{Deserialize, Serialize};

use crate::check::{check_counting, SilentCounter};
use crate::perf::{PerfCounterOpener, PerfError, PerfEventOpener};
use crate::powercap::{EnergyFileOpener, PowercapError, StdFileOpener};
use crate::source::{DomainReader, EnergySource, SourceMetrics};

/// Name of the metric this plugin emits.
pub const METRIC_NAME: &str = "rapl_consumed_energy";

// The metric for intervals not measured is shared with hwmon: one definition.
pub use alumet_energy::metric::{unmeasured_metric, UNMEASURED_METRIC_NAME};

/// The definition of [`METRIC_NAME`].
pub fn energy_metric() -> Metric {
    Metric::new(
        METRIC_NAME,
        Unit::Joule,
        ValueType::F64,
        MetricKind::Delta,
        "Energy consumed by the RAPL domain during the interval ending at the timestamp (0 J at a counter's first reading: the start of its first interval); domains overlap (psys includes package, package includes core and uncore): never sum them.",
    )
}

/// One line naming the counters the start-up check dropped, if any.
pub fn silent_domains_line(silent: &[SilentCounter], window: Duration) -> Option<String> {
    if silent.is_empty() {
        return None;
    }
    Some(format!(
        "not reading {}: {} did not advance in {} (servers often do not report these domains)",
        silent
            .iter()
            .map(|s| format!("{} of {}", s.domain, s.resource))
            .collect::<Vec<_>>()
            .join(", "),
        silent
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        format_duration(window)
    ))
}

/// Which kernel interface to read RAPL through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceChoice {
    /// perf_event when its counters can be opened, else powercap.
    #[default]
    Auto,
    /// Only perf_event (the `power` PMU).
    Perf,
    /// Only powercap (`class/powercap/intel-rapl:*`).
    Powercap,
}

/// The interface actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// perf_event, `power` PMU.
    Perf,
    /// powercap sysfs files.
    Powercap,
}

impl Interface {
    /// Lowercase name, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Perf => "perf",
            Interface::Powercap => "powercap",
        }
    }
}

/// Configuration of `[plugins.rapl]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaplConfig {
    /// `auto` (default): perf_event if it can be opened, else powercap.
    pub interface: InterfaceChoice,
    /// Where sysfs is mounted (default `/sys`); the host's sysfs in a container.
    pub sysfs_root: PathBuf,
    /// Time between two reads of the counters (default 1s; at least 1ms is useful).
    #[serde(with = "alumet::config::duration")]
    pub poll_interval: Duration,
    /// Time between two hand-overs of the points to the outputs (default 5s).
    #[serde(with = "alumet::config::duration")]
    pub flush_interval: Duration,
    /// Upper bound of a domain's power, in W, used to warn when the poll
    /// interval is too long to see every counter wrap, for zones that do not
    /// give their own maximum (default 500).
    pub max_power_w_bound: f64,
    /// How long every counter is watched at start to show that it counts,
    /// and how long a package or psys counter may stay still while running
    /// before it is taken as frozen (default 100ms; "0s": no check).
    #[serde(with = "alumet::config::duration")]
    pub counting_check: Duration,
    /// Where procfs is mounted (`cpuinfo` says whether this is a virtual machine).
    pub proc_root: PathBuf,
}

impl Default for RaplConfig {
    fn default() -> Self {
        Self {
            interface: InterfaceChoice::Auto,
            sysfs_root: PathBuf::from("/sys"),
            poll_interval: Duration::from_secs(1),
            flush_interval: Duration::from_secs(5),
            max_power_w_bound: 500.0,
            counting_check: DEFAULT_COUNTING_CHECK,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// The default `counting_check`: a real package counter advances within a
/// millisecond or two, even at idle.
pub const DEFAULT_COUNTING_CHECK: Duration = Duration::from_millis(100);

impl RaplConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use alumet::limits::{DurationRange, FLUSH_INTERVAL, POLL_INTERVAL};
        POLL_INTERVAL.check("poll_interval", self.poll_interval)?;
        FLUSH_INTERVAL.check("flush_interval", self.flush_interval)?;
        // Below a millisecond no counter can have moved (RAPL updates about
        // every millisecond); the upper bound is the message below.
        if !(self.counting_check.is_zero() || self.counting_check >= Duration::from_millis(1)) {
            return DurationRange::new(Duration::from_millis(1), Duration::from_secs(10))
                .or_zero("no check")
                .check("counting_check", self.counting_check);
        }
        if self.counting_check > Duration::from_secs(10) {
            return Err(ConfigError::Invalid {
                key: "counting_check".into(),
                reason: format!(
                    "{} would hold the agent's start that long; a real counter advances within milliseconds (e.g. \"100ms\", or \"0s\" for no check)",
                    format_duration(self.counting_check)
                ),
            });
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::Invalid {
                key: "poll_interval".into(),
                reason: "must be longer than zero, e.g. \"1s\" or \"10ms\"".into(),
            });
        }
        if !(self.max_power_w_bound.is_finite() && self.max_power_w_bound > 0.0) {
            return Err(ConfigError::Invalid {
                key: "max_power_w_bound".into(),
                reason: format!(
                    "must be a positive number of watts, e.g. 500.0 (found {})",
                    self.max_power_w_bound
                ),
            });
        }
        Ok(())
    }

    fn max_power_uw_bound(&self) -> u64 {
        (self.max_power_w_bound * 1e6) as u64
    }

    /// The same configuration with `sysfs_root` made absolute (against the
    /// current directory): perf-event2 reads a relative PMU path under
    /// `/sys/bus/event_source/devices`, which would silently read the
    /// wrong files.
    pub fn with_absolute_root(mut self) -> Result<Self, ConfigError> {
        if self.sysfs_root.is_relative() {
            self.sysfs_root =
                std::path::absolute(&self.sysfs_root).map_err(|e| ConfigError::Invalid {
                    key: "sysfs_root".into(),
                    reason: format!("cannot make {} absolute: {e}", self.sysfs_root.display()),
                })?;
        }
        Ok(self)
    }
}

/// The boundaries to the outside world: how counters and files are opened.
/// [`Backends::real`] in the agent; tests substitute doubles.
#[derive(Clone)]
pub struct Backends {
    /// Opens perf counters.
    pub perf: Arc<dyn PerfCounterOpener>,
    /// Opens `energy_uj` files.
    pub files: Arc<dyn EnergyFileOpener>,
}

impl Backends {
    /// perf_event_open and the file system.
    pub fn real() -> Self {
        Self {
            perf: Arc::new(PerfEventOpener),
            files: Arc::new(StdFileOpener),
        }
    }
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backends")
    }
}

/// The interface chosen and its opened counters.
#[derive(Debug)]
pub struct Probe {
    /// The interface used.
    pub interface: Interface,
    /// One reader per domain and package.
    pub readers: Vec<DomainReader>,
    /// The shortest time a counter can take to wrap (perf: its 64-bit
    /// count, months at server power).
    pub shortest_wrap: Option<Duration>,
    /// Warnings to show (zones skipped, why perf was not used).
    pub warnings: Vec<String>,
    /// Counters dropped because they did not count at start.
    pub silent: Vec<SilentCounter>,
    /// The machine, as the configured roots describe it.
    pub machine: MachineKind,
}

/// How to fix permission problems, for both interfaces. `alumet-agent
/// doctor` works out the exact commands for the user who runs it.
fn permission_fix(config: &RaplConfig, perf: bool, powercap: bool) -> String {
    let mut fixes = vec!["run as root".to_owned()];
    if powercap {
        fixes.push(format!(
            "grant read access: sudo chmod a+r {}/intel-rapl:*/energy_uj (or the group alumet and its udev rule, as the Debian package installs them)",
            config.sysfs_root.join(powercap::POWERCAP_DIR).display()
        ));
    }
    if perf {
        fixes.push(
            "use perf with CAP_PERFMON: sudo setcap cap_perfmon=ep $(which alumet-agent), or set kernel.perf_event_paranoid to 0 or less"
                .to_owned(),
        );
    }
    format!(
        "`alumet-agent doctor` prints the exact commands; in short: {}",
        fixes.join(", or ")
    )
}

const NO_RAPL_FIX: &str = "this CPU or kernel does not expose RAPL, as in most virtual machines; disable the plugin with `enabled = false` in [plugins.rapl]";

/// What to do about counters that do not count.
fn not_counting_fix(machine: &MachineKind) -> String {
    if machine.is_virtual() {
        "a virtual machine's RAPL counters measure nothing here; cpu-power-model estimates the CPU's energy instead (enabled by default), or disable the plugin with `enabled = false` in [plugins.rapl]".to_owned()
    } else {
        "on bare metal this is a fault: check that the firmware reports power (RAPL) and the kernel modules intel_rapl_msr and intel_rapl_common; `perf stat -a -e power/energy-pkg/ sleep 1` shows what the kernel reads".to_owned()
    }
}

/// " on this virtual machine (KVM)", or nothing on bare metal.
fn on_machine(machine: &MachineKind) -> String {
    if machine.is_virtual() {
        format!(" on this {machine}")
    } else {
        String::new()
    }
}

/// Counters that opened but did not count: absent on a virtual machine
/// (nothing to fix), a fault on bare metal. `also` adds what the other
/// interface said.
fn not_counting(
    silent: &Silent,
    window: Duration,
    machine: &MachineKind,
    also: Option<String>,
) -> PluginError {
    let list = silent
        .counters
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut reason = format!(
        "RAPL counters do not count{}: {list} did not advance in {}",
        on_machine(machine),
        format_duration(window)
    );
    if let Some(path) = &silent.kept_in {
        reason.push_str(&format!(
            " (at this boot's first check; the verdict is kept in {})",
            path.display()
        ));
    }
    if let Some(also) = also {
        reason.push_str("; ");
        reason.push_str(&also);
    }
    let fix = not_counting_fix(machine);
    if machine.is_virtual() {
        PluginError::absent(reason, fix)
    } else {
        PluginError::unavailable(reason, fix)
    }
}

/// Counters that do not count, and where that verdict was kept, when it
/// comes from an earlier check of this boot.
#[derive(Debug)]
struct Silent {
    counters: Vec<SilentCounter>,
    kept_in: Option<PathBuf>,
}

/// Where the verdict of a VM's check is kept for the boot ([`verdict`]),
/// and whether this caller may write it (`doctor` only reads).
#[derive(Debug, Clone)]
pub struct VerdictKeeping {
    /// The file; `None`: no keeping.
    pub path: Option<PathBuf>,
    /// Whether a new verdict is written.
    pub write: bool,
    /// Keep only what is read under the host's own sysfs (`/sys`), not a
    /// container's view of another host or a fixture.
    pub host_sysfs_only: bool,
}

impl VerdictKeeping {
    /// Nothing kept, nothing reused: every start checks.
    pub fn none() -> Self {
        Self {
            path: None,
            write: false,
            host_sysfs_only: true,
        }
    }

    /// The default place for this user; `write`: whether to keep new verdicts.
    pub fn default_place(write: bool) -> Self {
        Self {
            path: verdict::default_path(),
            write,
            host_sysfs_only: true,
        }
    }
}

/// The opened counters that count, or those that do not when none of
/// them can stand for the CPU's energy. On a VM, under the host's sysfs, a
/// verdict kept from this boot's first check is reused (and a new one kept).
fn keep_counting(
    mut probe: Probe,
    config: &RaplConfig,
    keeping: &VerdictKeeping,
) -> Result<Probe, Silent> {
    let window = config.counting_check;
    let keep = keeping
        .path
        .as_ref()
        .filter(|_| {
            !window.is_zero()
                && probe.machine.is_virtual()
                && (!keeping.host_sysfs_only || config.sysfs_root == Path::new(verdict::HOST_SYSFS))
        })
        .and_then(|path| Some((path, verdict::boot_id(&config.proc_root)?)));
    if let Some((path, boot)) = &keep {
        let origins: Vec<&str> = probe.readers.iter().map(DomainReader::origin).collect();
        if let Some(counters) = verdict::load(path, boot, &origins) {
            return Err(Silent {
                counters,
                kept_in: Some(path.to_path_buf()),
            });
        }
    }
    let checked = check_counting(std::mem::take(&mut probe.readers), window);
    if !checked.counts() {
        if let Some((path, boot)) = &keep {
            if keeping.write && checked.counting.is_empty() {
                verdict::store(path, boot, &checked.silent);
            }
        }
        return Err(Silent {
            counters: checked.silent,
            kept_in: None,
        });
    }
    probe.readers = checked.counting;
    probe.silent = checked.silent;
    Ok(probe)
}

/// Opens the counters of the configured interface (for `auto`: perf, then
/// powercap), keeps those that count (see [`check`]), or explains in one
/// line why none can be read. Checks every time (no verdict kept).
pub fn probe(config: &RaplConfig, backends: &Backends) -> Result<Probe, PluginError> {
    probe_keeping(config, backends, &VerdictKeeping::none())
}

/// [`probe`], reusing (and keeping, as `keeping` says) a VM's verdict for
/// the boot.
pub fn probe_keeping(
    config: &RaplConfig,
    backends: &Backends,
    keeping: &VerdictKeeping,
) -> Result<Probe, PluginError> {
    let root = &config.sysfs_root;
    let machine = virt::detect(&config.proc_root, root);
    let window = config.counting_check;
    let try_perf = || perf::open(root, backends.perf.as_ref(), config.max_power_w_bound);
    let try_powercap =
        || powercap::open(root, backends.files.as_ref(), config.max_power_uw_bound());
    let from_powercap = |opened: powercap::OpenedPowercap, mut warnings: Vec<String>| {
        warnings.extend(opened.skipped.iter().map(|s| {
            let fix = if s.permission_denied {
                format!(" ({})", permission_fix(config, false, true))
            } else {
                String::new()
            };
            format!("skipping powercap zone {s}{fix}")
        }));
        warnings.extend(opened.notes);
        Probe {
            interface: Interface::Powercap,
            readers: opened.readers,
            shortest_wrap: opened.shortest_wrap,
            warnings,
            silent: Vec::new(),
            machine: machine.clone(),
        }
    };
    let from_perf = |opened: perf::OpenedPerf| Probe {
        interface: Interface::Perf,
        readers: opened.readers,
        shortest_wrap: opened.shortest_wrap,
        warnings: Vec::new(),
        silent: Vec::new(),
        machine: machine.clone(),
    };
    let silent_error =
        |silent: &Silent, also: Option<String>| not_counting(silent, window, &machine, also);

    match config.interface {
        InterfaceChoice::Perf => {
            let opened = try_perf().map(from_perf).map_err(|e| {
                let fix = match &e {
                    e if e.is_permission_denied() => permission_fix(config, true, false),
                    PerfError::NoPmu(_) => {
                        format!("{NO_RAPL_FIX}, or try interface = \"powercap\"")
                    }
                    _ => "try interface = \"auto\" or \"powercap\"".to_owned(),
                };
                match e {
                    PerfError::NoPmu(_) => PluginError::absent(e.to_string(), fix),
                    _ => PluginError::unavailable(e.to_string(), fix),
                }
            })?;
            keep_counting(opened, config, keeping).map_err(|silent| silent_error(&silent, None))
        }
        InterfaceChoice::Powercap => {
            let opened = try_powercap()
                .map(|o| from_powercap(o, Vec::new()))
                .map_err(|e| {
                    let fix = match &e {
                        e if e.is_permission_denied() => permission_fix(config, false, true),
                        PowercapError::NoZones(_) => {
                            format!("{NO_RAPL_FIX}, or try interface = \"perf\"")
                        }
                        _ => "try interface = \"auto\" or \"perf\"".to_owned(),
                    };
                    match e {
                        PowercapError::NoZones(_) => PluginError::absent(e.to_string(), fix),
                        _ => PluginError::unavailable(e.to_string(), fix),
                    }
                })?;
            keep_counting(opened, config, keeping).map_err(|silent| silent_error(&silent, None))
        }
        InterfaceChoice::Auto => {
            // What perf gave: counting counters, or why not.
            let perf_outcome = match try_perf() {
                Ok(opened) => match keep_counting(from_perf(opened), config, keeping) {
                    Ok(probe) => return Ok(probe),
                    Err(silent) => PerfOutcome::Silent(silent),
                },
                Err(e) => PerfOutcome::Failed(e),
            };
            let why_not_perf = match &perf_outcome {
                PerfOutcome::Failed(e) => e.to_string(),
                PerfOutcome::Silent(silent) => format!(
                    "its counters do not count: {}",
                    silent
                        .counters
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let powercap_error = match try_powercap() {
                Ok(opened) => {
                    let why = format!("perf_event not used ({why_not_perf}); reading powercap");
                    match keep_counting(from_powercap(opened, vec![why]), config, keeping) {
                        Ok(probe) => return Ok(probe),
                        Err(silent) => {
                            let mut all = match perf_outcome {
                                PerfOutcome::Silent(perf_silent) => perf_silent,
                                PerfOutcome::Failed(e) => {
                                    return Err(silent_error(&silent, Some(format!("perf: {e}"))))
                                }
                            };
                            all.counters.extend(silent.counters);
                            return Err(silent_error(&all, None));
                        }
                    }
                }
                Err(e) => e,
            };
            let perf_error = match perf_outcome {
                PerfOutcome::Silent(silent) => {
                    // perf opens but does not count; powercap says why it
                    // cannot be read (absent, or a permission to fix).
                    if powercap_error.is_permission_denied() {
                        return Err(PluginError::unavailable(
                            format!(
                                "RAPL counters do not count through perf ({why_not_perf}), and powercap cannot be read: {powercap_error}"
                            ),
                            permission_fix(config, false, true),
                        ));
                    }
                    return Err(silent_error(&silent, Some(powercap_error.to_string())));
                }
                PerfOutcome::Failed(e) => e,
            };
            if matches!(perf_error, PerfError::NoPmu(_))
                && matches!(powercap_error, PowercapError::NoZones(_))
            {
                return Err(PluginError::absent(
                    format!(
                        "no RAPL interface found{} ({perf_error}, {powercap_error})",
                        on_machine(&machine)
                    ),
                    NO_RAPL_FIX,
                ));
            }
            let denied_perf = perf_error.is_permission_denied();
            let denied_powercap = powercap_error.is_permission_denied();
            let fix = if denied_perf || denied_powercap {
                permission_fix(config, denied_perf, denied_powercap)
            } else {
                "check the kernel's RAPL support (modules intel_rapl_msr, intel_rapl_common)"
                    .to_owned()
            };
            Err(PluginError::unavailable(
                format!("cannot read RAPL: perf: {perf_error}; powercap: {powercap_error}"),
                fix,
            ))
        }
    }
}

/// Why perf was not used, in `auto`.
enum PerfOutcome {
    /// It could not be opened.
    Failed(PerfError),
    /// Its counters opened but did not count.
    Silent(Silent),
}

/// What is wrong with `poll_interval` given the counters opened: below
/// RAPL's ~1 ms update period, or longer than the shortest wrap period (a
/// second wrap within one interval cannot be detected).
pub fn timing_warnings(poll_interval: Duration, shortest_wrap: Option<Duration>) -> Vec<String> {
    let mut warnings = Vec::new();
    if poll_interval < Duration::from_millis(1) {
        warnings.push(format!(
            "poll_interval {} is below 1ms; RAPL counters update about every 1ms, so most polls will read the same value",
            format_duration(poll_interval)
        ));
    }
    if let Some(wrap) = shortest_wrap {
        if poll_interval > wrap {
            warnings.push(format!(
                "poll_interval {} is longer than the shortest time a counter can wrap ({:.0}s at the domain's maximum power); a second wrap within one interval cannot be detected and its energy would be lost: use a shorter poll_interval",
                format_duration(poll_interval),
                wrap.as_secs_f64()
            ));
        }
    }
    warnings
}

/// The `rapl` plugin.
#[derive(Debug)]
pub struct RaplPlugin {
    config: RaplConfig,
    backends: Backends,
    keeping: VerdictKeeping,
    interface: Option<Interface>,
}

impl RaplPlugin {
    /// The plugin with other backends than the real ones (tests, embedding).
    pub fn with_backends(config: RaplConfig, backends: Backends) -> Result<Self, PluginError> {
        config.validate()?;
        let config = config.with_absolute_root()?;
        Ok(Self {
            config,
            backends,
            keeping: VerdictKeeping::none(),
            interface: None,
        })
    }

    /// The same plugin, reusing and keeping a VM's verdict as `keeping` says.
    pub fn keeping_verdicts(mut self, keeping: VerdictKeeping) -> Self {
        self.keeping = keeping;
        self
    }

    /// The interface chosen by `start`, if it succeeded.
    pub fn interface(&self) -> Option<Interface> {
        self.interface
    }
}

impl PluginDefinition for RaplPlugin {
    const NAME: &'static str = "rapl";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "CPU package, core, uncore, DRAM and platform energy from RAPL (perf_event or powercap)";
    type Config = RaplConfig;

    fn init(config: RaplConfig) -> Result<Self, PluginError> {
        Ok(Self::with_backends(config, Backends::real())?
            .keeping_verdicts(VerdictKeeping::default_place(true)))
    }

    fn check_availability(config: &RaplConfig) -> Result<(), PluginError> {
        config.validate()?;
        let config = config.clone().with_absolute_root()?;
        // Opening a few files and perf fds is cheap; they are closed at once.
        // A VM's verdict kept for the boot is reused, never written here
        // (`doctor` changes nothing).
        probe_keeping(
            &config,
            &Backends::real(),
            &VerdictKeeping::default_place(false),
        )
        .map(|_| ())
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            (
                "interface",
                "\"auto\" (perf_event if every energy event can be opened, else powercap), \"perf\" or \"powercap\".",
            ),
            (
                "sysfs_root",
                "Where sysfs is mounted (the host's /sys when the agent runs in a container).",
            ),
            (
                "poll_interval",
                "Time between two reads of the counters; RAPL updates about every 1ms.",
            ),
            (
                "flush_interval",
                "Time between two hand-overs of the points to the outputs.",
            ),
            (
                "max_power_w_bound",
                "Power bound (W) for zones without a constraint, to warn when poll_interval is too long to see every counter wrap, and to skip an advance larger than twice what a domain can draw.",
            ),
            (
                "counting_check",
                "How long each counter is watched at start to show that it counts (virtual machines' counters often open and never move); a package or psys counter still for that long while running is frozen, its intervals reported as energy_unmeasured_time. \"0s\": no check.",
            ),
            (
                "proc_root",
                "Where procfs is mounted (cpuinfo says whether this is a virtual machine).",
            ),
        ]
    }
}

impl Plugin for RaplPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let probe = probe_keeping(&self.config, &self.backends, &self.keeping)?;
        for w in probe.warnings.iter().chain(&timing_warnings(
            self.config.poll_interval,
            probe.shortest_wrap,
        )) {
            log::warn!("rapl: {w}");
        }
        if let Some(line) = silent_domains_line(&probe.silent, self.config.counting_check) {
            log::info!("rapl: {line}");
        }
        log::info!(
            "rapl: reading {} counters through {}: {}",
            probe.readers.len(),
            probe.interface.as_str(),
            probe
                .readers
                .iter()
                .map(|r| format!("{} of {}", r.domain(), r.resource()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if probe.machine.is_virtual() {
            log::info!(
                "rapl: these counters are read from inside a {}: they usually show the host's package, shared with other guests; every point carries virtual_machine",
                probe.machine
            );
        }
        let energy = ctx.create_metric(energy_metric())?;
        let unmeasured = ctx.create_metric(unmeasured_metric())?;
        let freeze_after = Some(self.config.counting_check).filter(|d| !d.is_zero());
        let readers = probe
            .readers
            .into_iter()
            .map(|r| r.with_freeze_after(freeze_after))
            .collect();
        let mut source = EnergySource::new(SourceMetrics { energy, unmeasured }, readers);
        if probe.machine.is_virtual() {
            source = source.seen_from_vm(probe.machine.hypervisor());
        }
        ctx.add_source(
            "energy",
            Box::new(source),
            SourceTrigger::every(self.config.poll_interval).flush_every(self.config.flush_interval),
        );
        self.interface = Some(probe.interface);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_warnings_below_1ms_and_beyond_the_wrap_period() {
        let wrap = Some(Duration::from_secs(398));
        assert!(timing_warnings(Duration::from_secs(1), wrap).is_empty());
        assert!(timing_warnings(Duration::from_millis(1), wrap).is_empty());
        let fast = timing_warnings(Duration::from_micros(500), wrap);
        assert_eq!(fast.len(), 1);
        assert!(fast[0].contains("500us is below 1ms"), "{fast:?}");
        let slow = timing_warnings(Duration::from_secs(600), wrap);
        assert_eq!(slow.len(), 1);
        assert!(
            slow[0].contains("10m is longer than the shortest time a counter can wrap (398s"),
            "{slow:?}"
        );
        // perf counters are 64-bit: no wrap period to respect
        assert!(timing_warnings(Duration::from_secs(600), None).is_empty());
    }
}
