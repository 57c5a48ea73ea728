//! How many vCPUs and sockets the machine has: `cpuN` lines of
//! `<proc_root>/stat` and the distinct `physical_package_id`s under
//! `<sys_root>/devices/system/cpu` (roots configurable, for containers and fixtures).

use std::collections::BTreeSet;
use std::path::Path;

/// vCPUs and the package ids of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Online logical CPUs (vCPUs on a VM).
    pub vcpus: u32,
    /// Package (socket) ids; `[0]` when sysfs does not say.
    pub packages: Vec<u32>,
}

/// Reads the topology. Err: why the CPUs cannot be counted.
pub fn read(proc_root: &Path, sys_root: &Path) -> Result<Topology, String> {
    let stat_path = proc_root.join("stat");
    let stat = std::fs::read_to_string(&stat_path)
        .map_err(|e| format!("cannot read {}: {e}", stat_path.display()))?;
    let vcpus = stat
        .lines()
        .filter(|l| {
            // `cpuN ...`; the `cpu ...` line is the sum over all of them.
            l.strip_prefix("cpu")
                .and_then(|rest| {
                    rest.split_whitespace()
                        .next()
                        .filter(|_| !rest.starts_with(' '))
                })
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    let vcpus = u32::try_from(vcpus).unwrap_or(u32::MAX);
    if vcpus == 0 {
        return Err(format!("{} lists no cpuN line", stat_path.display()));
    }
    let mut packages = BTreeSet::new();
    let cpu_dir = sys_root.join("devices/system/cpu");
    if let Ok(entries) = std::fs::read_dir(&cpu_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_cpu = name
                .strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !is_cpu {
                continue;
            }
            let id = std::fs::read_to_string(entry.path().join("topology/physical_package_id"))
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok());
            // -1 on some VMs: no package information.
            if let Some(id) = id.and_then(|i| u32::try_from(i).ok()) {
                packages.insert(id);
            }
        }
    }
    if packages.is_empty() {
        packages.insert(0);
    }
    Ok(Topology {
        vcpus,
        packages: packages.into_iter().collect(),
    })
}
