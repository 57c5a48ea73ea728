//! The perf_event interface: the `power` PMU.
//!
//! `<sysfs_root>/bus/event_source/devices/power` holds the PMU type, its
//! `cpumask` (one CPU per socket, or per die on multi-die packages), and
//! `events/energy-*` with a `.scale` (J per count, 2^-32 on current kernels)
//! and a `.unit`. Each event is opened system-wide (pid = -1) on each CPU of
//! the cpumask. The kernel extends the 32-bit hardware counter to a 64-bit
//! count, which wraps after 2^64 counts (2^32 J at the usual scale, about
//! 166 days at 300 W): the wrap is corrected like powercap's, and a count
//! that steps back (the kernel's delta of the register is signed 32-bit) is
//! not taken for one (see [`crate::counters`]).
//!
//! `energy-psys` is opened on every CPU of the cpumask: on multi-socket
//! Sapphire/Emerald Rapids each package has a psys counter and only one of
//! them advances, not necessarily the first CPU's.
//!
//! Opening and reading counters goes through [`PerfCounterOpener`] so that
//! tests can replay counter values; [`PerfEventOpener`] is the real one.

use std::io;
use std::path::{Path, PathBuf};

use perf_event::events::Dynamic;
use perf_event::{Builder, Counter};

use std::time::Duration;

use crate::domain::Domain;
use crate::source::{DomainReader, RawEnergyReader};
use crate::topology;
use alumet_energy::counter::Wrap;

/// The power PMU directory, relative to the sysfs root.
pub const POWER_PMU_DIR: &str = "bus/event_source/devices/power";

/// One energy event of the power PMU.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfEnergyEvent {
    /// The event name, e.g. `energy-pkg`.
    pub name: String,
    /// The domain it measures.
    pub domain: Domain,
    /// The PMU directory (`<sysfs_root>/bus/event_source/devices/power`).
    pub pmu_dir: PathBuf,
    /// Joules per count, from the `.scale` file.
    pub scale_j: f64,
}

/// A CPU to open events on, and the package it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketCpu {
    /// Logical CPU number.
    pub cpu: u32,
    /// Its `physical_package_id`.
    pub package_id: u32,
    /// Its `die_id`, where the kernel has the file.
    pub die_id: Option<u32>,
}

/// The power PMU as sysfs describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerPmu {
    /// The PMU directory.
    pub dir: PathBuf,
    /// The PMU type (for `perf_event_attr.type`).
    pub pmu_type: u32,
    /// Energy events, in domain order.
    pub events: Vec<PerfEnergyEvent>,
    /// One CPU per socket (or die), from `cpumask`.
    pub cpus: Vec<SocketCpu>,
}

/// Why perf cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// There is no power PMU.
    #[error("no power PMU at {}", .0.display())]
    NoPmu(PathBuf),
    /// A file of the PMU or of the CPU topology is missing or malformed.
    #[error("cannot use {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The PMU lists no energy event this plugin knows.
    #[error("no energy-* event in {}", .0.display())]
    NoEvents(PathBuf),
    /// `perf_event_open` failed.
    #[error("cannot open perf event power/{event}/ on CPU {cpu}: {source}")]
    Open {
        /// The event name.
        event: String,
        /// The CPU.
        cpu: u32,
        /// The error from the kernel.
        source: io::Error,
    },
}

impl PerfError {
    /// Whether the PMU exists but the user may not open its events.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, PerfError::Open { source, .. } if source.kind() == io::ErrorKind::PermissionDenied)
    }
}

/// Opens perf energy counters. The real one is [`PerfEventOpener`].
pub trait PerfCounterOpener: Send + Sync {
    /// Opens `event` system-wide on `cpu`, enabled, and returns a reader of
    /// its raw count.
    fn open(&self, event: &PerfEnergyEvent, cpu: u32) -> io::Result<Box<dyn RawEnergyReader>>;
}

/// Opens counters with `perf_event_open` (crate perf-event2).
#[derive(Debug, Clone, Copy, Default)]
pub struct PerfEventOpener;

/// An open perf counter.
pub struct PerfCounter(Counter);

impl RawEnergyReader for PerfCounter {
    fn read_raw(&mut self) -> io::Result<u64> {
        self.0.read()
    }
}

impl PerfCounterOpener for PerfEventOpener {
    fn open(&self, event: &PerfEnergyEvent, cpu: u32) -> io::Result<Box<dyn RawEnergyReader>> {
        // The builder reads the PMU type, its format and the event's terms
        // from the (configurable) sysfs root, so no value is hard-coded here.
        let dynamic: Dynamic = Dynamic::builder(&event.pmu_dir)?
            .event(&event.name)?
            .build()
            .map_err(io::Error::from)?;
        let cpu =
            usize::try_from(cpu).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut builder = Builder::new(dynamic);
        // The RAPL PMU accepts only system-wide counting (pid = -1 on one
        // CPU) and rejects any exclusion filter.
        builder
            .any_pid()
            .one_cpu(cpu)
            .include_kernel()
            .include_hv()
            .exclude_user(false)
            .enabled(true);
        Ok(Box::new(PerfCounter(builder.build()?)))
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> PerfError {
    PerfError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_trimmed(path: &Path) -> Result<String, PerfError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| invalid(path, e.to_string()))
}

/// Reads the power PMU under `sysfs_root`: type, energy events with their
/// scale, and one CPU per socket with its package id. Opens nothing.
pub fn discover(sysfs_root: &Path) -> Result<PowerPmu, PerfError> {
    let dir = sysfs_root.join(POWER_PMU_DIR);
    let type_path = dir.join("type");
    if !type_path.exists() {
        return Err(PerfError::NoPmu(dir));
    }
    let pmu_type: u32 = read_trimmed(&type_path)?
        .parse()
        .map_err(|_| invalid(&type_path, "expected an integer"))?;

    let mut events = Vec::new();
    for domain in crate::domain::Domain::ALL {
        let name = match domain {
            Domain::Package => "energy-pkg",
            Domain::Core => "energy-cores",
            Domain::Uncore => "energy-gpu",
            Domain::Dram => "energy-ram",
            Domain::Psys => "energy-psys",
        };
        let event_path = dir.join("events").join(name);
        if !event_path.exists() {
            continue;
        }
        let scale_path = dir.join("events").join(format!("{name}.scale"));
        let scale_text = read_trimmed(&scale_path)?;
        let scale_j: f64 = scale_text
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s > 0.0)
            .ok_or_else(|| {
                invalid(
                    &scale_path,
                    format!("expected a positive number, found {scale_text:?}"),
                )
            })?;
        let unit_path = dir.join("events").join(format!("{name}.unit"));
        // A missing unit file is tolerated (the scale is what matters); a
        // different unit means the scale is not in joules.
        if let Ok(unit) = std::fs::read_to_string(&unit_path) {
            if unit.trim() != "Joules" {
                return Err(invalid(
                    &unit_path,
                    format!("expected \"Joules\", found {:?}", unit.trim()),
                ));
            }
        }
        events.push(PerfEnergyEvent {
            name: name.to_owned(),
            domain,
            pmu_dir: dir.clone(),
            scale_j,
        });
    }
    if events.is_empty() {
        return Err(PerfError::NoEvents(dir.join("events")));
    }

    let cpumask_path = dir.join("cpumask");
    let cpumask = read_trimmed(&cpumask_path)?;
    let cpu_list = topology::parse_cpu_list(&cpumask).ok_or_else(|| {
        invalid(
            &cpumask_path,
            format!("expected a CPU list, found {cpumask:?}"),
        )
    })?;
    let mut cpus = Vec::with_capacity(cpu_list.len());
    for cpu in cpu_list {
        let path = topology::topology_path(sysfs_root, cpu, "physical_package_id");
        let text = read_trimmed(&path)?;
        let package_id = text
            .parse()
            .map_err(|_| invalid(&path, format!("expected a package id, found {text:?}")))?;
        // die_id exists since kernel 5.2; older kernels have one die per package.
        let die_id = topology::read_topology_id(sysfs_root, cpu, "die_id").ok();
        cpus.push(SocketCpu {
            cpu,
            package_id,
            die_id,
        });
    }
    Ok(PowerPmu {
        dir,
        pmu_type,
        events,
        cpus,
    })
}

/// Counters opened for polling.
#[derive(Debug)]
pub struct OpenedPerf {
    /// The PMU they belong to.
    pub pmu: PowerPmu,
    /// One reader per event and socket or die (psys: one in all).
    pub readers: Vec<DomainReader>,
    /// The shortest time a 64-bit count can take to wrap at `max_power_w`.
    pub shortest_wrap: Option<Duration>,
}

/// The die of `socket` to report, when its package has several CPUs in the
/// cpumask (one per die): its `die_id`, else its rank among them.
fn reported_die(pmu: &PowerPmu, socket: &SocketCpu) -> Option<u32> {
    let same_package: Vec<&SocketCpu> = pmu
        .cpus
        .iter()
        .filter(|c| c.package_id == socket.package_id)
        .collect();
    if same_package.len() < 2 {
        return None;
    }
    socket.die_id.or_else(|| {
        same_package
            .iter()
            .position(|c| c.cpu == socket.cpu)
            .and_then(|i| u32::try_from(i).ok())
    })
}

/// Discovers the power PMU and opens every energy event on each CPU of the
/// cpumask. All or nothing: a partial set of counters would silently miss
/// energy, so any failure makes perf unusable (and powercap is tried). The
/// exception is psys, a candidate on every CPU of which one is enough.
/// `max_power_w` bounds the energy a wrap may imply.
pub fn open(
    sysfs_root: &Path,
    opener: &dyn PerfCounterOpener,
    max_power_w: f64,
) -> Result<OpenedPerf, PerfError> {
    let pmu = discover(sysfs_root)?;
    let mut readers = Vec::new();
    let mut shortest_wrap: Option<Duration> = None;
    for event in &pmu.events {
        // 2^64 counts of `scale_j` J at `max_power_w` W
        let wrap_s = 2f64.powi(64) * event.scale_j / max_power_w;
        if let Ok(t) = Duration::try_from_secs_f64(wrap_s) {
            shortest_wrap = Some(shortest_wrap.map_or(t, |s| s.min(t)));
        }
        let origin = |cpu: u32| format!("perf event power/{}/ on CPU {cpu}", event.name);
        if event.domain == Domain::Psys {
            // psys measures the platform: it is reported once, from the
            // package whose counter advances.
            let mut candidates = Vec::new();
            let mut first_error = None;
            for socket in &pmu.cpus {
                match opener.open(event, socket.cpu) {
                    Ok(reader) => candidates.push((origin(socket.cpu), reader)),
                    Err(source) => {
                        log::debug!("rapl: cannot open {}: {source}", origin(socket.cpu));
                        first_error.get_or_insert(PerfError::Open {
                            event: event.name.clone(),
                            cpu: socket.cpu,
                            source,
                        });
                    }
                }
            }
            if candidates.is_empty() {
                if let Some(e) = first_error {
                    return Err(e);
                }
                continue;
            }
            readers.push(DomainReader::with_candidates(
                event.domain,
                event.domain.resource(0),
                event.scale_j,
                Wrap::At64Bits,
                max_power_w,
                candidates,
            ));
            continue;
        }
        for socket in &pmu.cpus {
            let reader = opener
                .open(event, socket.cpu)
                .map_err(|source| PerfError::Open {
                    event: event.name.clone(),
                    cpu: socket.cpu,
                    source,
                })?;
            readers.push(
                DomainReader::new(
                    event.domain,
                    event.domain.resource(socket.package_id),
                    origin(socket.cpu),
                    event.scale_j,
                    Wrap::At64Bits,
                    max_power_w,
                    reader,
                )
                .with_die(reported_die(&pmu, socket)),
            );
        }
    }
    // Dies are not merged here as powercap's are: a perf count starts at 0
    // when the event is opened, so equal values say nothing, and the kernel
    // gives the PMU one CPU per die only where each die has its own counter
    // (Intel multi-die parts; AMD's power PMU is per package).
    Ok(OpenedPerf {
        pmu,
        readers,
        shortest_wrap,
    })
}
