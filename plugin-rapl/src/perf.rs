//! The perf_event interface: the `power` PMU.
//!
//! `<sysfs_root>/bus/event_source/devices/power` holds the PMU type, its
//! `cpumask` (one CPU per socket), and `events/energy-*` with a `.scale`
//! (J per count, 2^-32 on current kernels) and a `.unit`. Each event is
//! opened system-wide (pid = -1) on one CPU of each socket; the kernel
//! extends the 32-bit hardware counter to 64 bits, so a perf count does not
//! wrap in practice.
//!
//! Opening and reading counters goes through [`PerfCounterOpener`] so that
//! tests can replay counter values; [`PerfEventOpener`] is the real one.

use std::io;
use std::path::{Path, PathBuf};

use perf_event::events::Dynamic;
use perf_event::{Builder, Counter};

use crate::counters::Wrap;
use crate::domain::Domain;
use crate::source::{DomainReader, RawEnergyReader};

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
    /// One CPU per socket, from `cpumask`.
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

/// Parses a CPU list such as `0`, `0,28` or `0-3,8`.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u32, u32) = (first.parse().ok()?, last.parse().ok()?);
                if last < first {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
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
    let cpu_list = parse_cpu_list(&cpumask).ok_or_else(|| {
        invalid(
            &cpumask_path,
            format!("expected a CPU list, found {cpumask:?}"),
        )
    })?;
    let mut cpus = Vec::with_capacity(cpu_list.len());
    for cpu in cpu_list {
        let path = sysfs_root.join(format!(
            "devices/system/cpu/cpu{cpu}/topology/physical_package_id"
        ));
        let text = read_trimmed(&path)?;
        let package_id = text
            .parse()
            .map_err(|_| invalid(&path, format!("expected a package id, found {text:?}")))?;
        cpus.push(SocketCpu { cpu, package_id });
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
    /// One reader per event and socket (psys: one in all).
    pub readers: Vec<DomainReader>,
}

/// Discovers the power PMU and opens every energy event on one CPU of each
/// socket. All or nothing: a partial set of counters would silently miss
/// energy, so any failure makes perf unusable (and powercap is tried).
pub fn open(sysfs_root: &Path, opener: &dyn PerfCounterOpener) -> Result<OpenedPerf, PerfError> {
    let pmu = discover(sysfs_root)?;
    let mut readers = Vec::new();
    for event in &pmu.events {
        for (i, socket) in pmu.cpus.iter().enumerate() {
            // psys measures the platform: reading it on every socket would
            // report the same energy several times.
            if event.domain == Domain::Psys && i > 0 {
                break;
            }
            let reader = opener
                .open(event, socket.cpu)
                .map_err(|source| PerfError::Open {
                    event: event.name.clone(),
                    cpu: socket.cpu,
                    source,
                })?;
            readers.push(DomainReader::new(
                event.domain,
                event.domain.resource(socket.package_id),
                format!("perf event power/{}/ on CPU {}", event.name, socket.cpu),
                event.scale_j,
                Wrap::At64Bits,
                reader,
            ));
        }
    }
    Ok(OpenedPerf { pmu, readers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0,28"), Some(vec![0, 28]));
        assert_eq!(parse_cpu_list("0-2,8"), Some(vec![0, 1, 2, 8]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }
}
