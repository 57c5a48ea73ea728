//! The RAPL files of sysfs: the powercap zones (directory names, `name`,
//! `max_energy_range_uj`, constraints, `energy_uj`), the power PMU's perf
//! event files (`type`, `cpumask`, `events/energy-*.scale` and `.unit`)
//! and the CPU topology. A container's bind mount or a configured
//! `sysfs_root` can hold anything.
//!
//! The input is a file tree: `path NUL content NUL path NUL content...`,
//! written under a fresh directory for each run, then discovered and
//! opened as the plugin does (perf counters through a double: no
//! `perf_event_open`).

use std::io;
use std::path::{Component, Path};

use plugin_rapl::perf::{self, PerfCounterOpener, PerfEnergyEvent};
use plugin_rapl::powercap::{self, StdFileOpener};
use plugin_rapl::source::RawEnergyReader;

/// Most files in a tree (the fixtures have about 60).
const MAX_FILES: usize = 512;

/// A perf counter that counts nothing.
struct StillCounter;

impl RawEnergyReader for StillCounter {
    fn read_raw(&mut self) -> io::Result<u64> {
        Ok(0)
    }
}

struct DoubleOpener;

impl PerfCounterOpener for DoubleOpener {
    fn open(&self, _event: &PerfEnergyEvent, _cpu: u32) -> io::Result<Box<dyn RawEnergyReader>> {
        Ok(Box::new(StillCounter))
    }
}

/// A relative path that stays under the root, or `None`.
fn relative(path: &[u8]) -> Option<&Path> {
    let path = Path::new(std::str::from_utf8(path).ok()?);
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    (plain && path.components().count() > 0 && path.as_os_str().len() < 512).then_some(path)
}

/// Writes the tree of `data` under `root`.
pub fn write_tree(root: &Path, data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    for _ in 0..MAX_FILES {
        let (Some(path), Some(content)) = (parts.next(), parts.next()) else {
            break;
        };
        let Some(path) = relative(path) else { continue };
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            if std::fs::create_dir_all(parent).is_err() {
                continue;
            }
        }
        // A path that is a directory already, or under a file: skipped.
        let _ = std::fs::write(&path, content);
    }
}

/// A sysfs tree: powercap zones and the power PMU discovered and opened.
/// Whatever opens has readers for known domains, each with a finite
/// positive bound on power.
pub fn rapl_sysfs(data: &[u8]) {
    let dir = crate::scratch_dir();
    write_tree(dir.path(), data);
    let root = dir.path();

    if let Ok(discovery) = powercap::discover(root) {
        for zone in &discovery.zones {
            assert!(zone.dir.starts_with(root));
            assert!(zone.max_power_uw != Some(0));
        }
    }
    if let Ok(opened) = powercap::open(root, &StdFileOpener, 1_000_000_000) {
        assert!(!opened.readers.is_empty());
    }
    if let Ok(pmu) = perf::discover(root) {
        assert!(!pmu.events.is_empty() && !pmu.cpus.is_empty());
        for event in &pmu.events {
            assert!(event.scale_j.is_finite() && event.scale_j > 0.0);
        }
    }
    if let Ok(opened) = perf::open(root, &DoubleOpener, 1000.0) {
        assert!(!opened.readers.is_empty());
    }
}
