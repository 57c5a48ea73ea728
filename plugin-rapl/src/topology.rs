//! The CPU topology and vendor, as sysfs describes them under the
//! configurable root: `devices/system/cpu/cpuN/topology/{physical_package_id,die_id}`,
//! `devices/system/cpu/online` and `devices/system/cpu/modalias`.
//!
//! Both interfaces need it: perf to know which package and die each CPU of
//! the PMU's `cpumask` stands for, powercap to know whose core the AMD
//! `core` zone measures.

use std::io;
use std::path::{Path, PathBuf};

/// `devices/system/cpu` under the sysfs root.
const CPU_DIR: &str = "devices/system/cpu";

/// The CPU vendor, from the `ven` field of `devices/system/cpu/modalias`
/// (`cpu:type:x86,ven0002fam0019mod0011:feature:…`), which holds the
/// kernel's `X86_VENDOR_*` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// `X86_VENDOR_INTEL` (0).
    Intel,
    /// `X86_VENDOR_AMD` (2) or `X86_VENDOR_HYGON` (9, Zen-based): RAPL
    /// through the AMD energy MSRs.
    Amd,
    /// Any other vendor number.
    Other(u32),
}

/// The highest CPU number a list may hold. The kernel's `NR_CPUS` is at
/// most 8192; a `cpumask` of `0-4294967295` (seen while writing the
/// `rapl_sysfs` fuzz target) asked for 16 GiB, so anything beyond is not a
/// CPU list.
pub const MAX_CPU: u32 = 65_535;

/// Parses a CPU list such as `0`, `0,28` or `0-3,8`. `None` for a number
/// above [`MAX_CPU`] or more entries than there can be CPUs.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u32, u32) = (first.parse().ok()?, last.parse().ok()?);
                if last < first || last > MAX_CPU {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok().filter(|&cpu| cpu <= MAX_CPU)?),
        }
        // Repeated ranges: as many entries as the text allows, otherwise.
        if cpus.len() > MAX_CPU as usize + 1 {
            return None;
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// Parses the vendor out of the CPU modalias.
pub fn parse_vendor(modalias: &str) -> Option<Vendor> {
    let rest = modalias.split("ven").nth(1)?;
    // Four hex digits (`%04X`), followed by `fam`.
    let number = u32::from_str_radix(rest.get(..4)?, 16).ok()?;
    Some(match number {
        0 => Vendor::Intel,
        2 | 9 => Vendor::Amd,
        n => Vendor::Other(n),
    })
}

/// The vendor of this machine's CPUs; `None` when the modalias is missing
/// or unreadable (not x86, or an old or unusual kernel).
pub fn vendor(sysfs_root: &Path) -> Option<Vendor> {
    let text = std::fs::read_to_string(sysfs_root.join(CPU_DIR).join("modalias")).ok()?;
    parse_vendor(&text)
}

/// The topology file `name` of `cpu`.
pub fn topology_path(sysfs_root: &Path, cpu: u32, name: &str) -> PathBuf {
    sysfs_root
        .join(CPU_DIR)
        .join(format!("cpu{cpu}"))
        .join("topology")
        .join(name)
}

/// Reads an integer topology file of `cpu`.
pub fn read_topology_id(sysfs_root: &Path, cpu: u32, name: &str) -> io::Result<u32> {
    let path = topology_path(sysfs_root, cpu, name);
    let text = std::fs::read_to_string(&path)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: expected an integer, found {:?}",
                path.display(),
                text.trim()
            ),
        )
    })
}

/// The lowest-numbered online CPU of package `package_id` (and of die
/// `die_id` when the RAPL zones are per die): the CPU the kernel's RAPL
/// driver reads the zone's MSRs on (its "lead CPU" when the CPUs came online
/// in order). `None` when no CPU says it belongs there.
pub fn lead_cpu(sysfs_root: &Path, package_id: u32, die_id: Option<u32>) -> Option<u32> {
    let dir = sysfs_root.join(CPU_DIR);
    let online = std::fs::read_to_string(dir.join("online"))
        .ok()
        .and_then(|t| parse_cpu_list(&t));
    let mut cpus: Vec<u32> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
        .filter(|cpu| online.as_ref().is_none_or(|list| list.contains(cpu)))
        .collect();
    cpus.sort_unstable();
    cpus.into_iter().find(|&cpu| {
        read_topology_id(sysfs_root, cpu, "physical_package_id").ok() == Some(package_id)
            && die_id
                .is_none_or(|die| read_topology_id(sysfs_root, cpu, "die_id").ok() == Some(die))
    })
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
        assert_eq!(parse_cpu_list("0-65535").map(|l| l.len()), Some(65_536));
        assert_eq!(parse_cpu_list("0-4294967295"), None);
        assert_eq!(parse_cpu_list("65536"), None);
        assert_eq!(parse_cpu_list("0-65535,0-65535"), None);
    }

    #[test]
    fn vendors_parse_from_the_modalias() {
        let amd = "cpu:type:x86,ven0002fam0019mod0011:feature:,0000,0001\n";
        assert_eq!(parse_vendor(amd), Some(Vendor::Amd));
        let hygon = "cpu:type:x86,ven0009fam0018mod0000:feature:";
        assert_eq!(parse_vendor(hygon), Some(Vendor::Amd));
        let intel = "cpu:type:x86,ven0000fam0006mod008F:feature:,0000";
        assert_eq!(parse_vendor(intel), Some(Vendor::Intel));
        let zhaoxin = "cpu:type:x86,ven000Afam0007mod003B:feature:";
        assert_eq!(parse_vendor(zhaoxin), Some(Vendor::Other(10)));
        assert_eq!(parse_vendor("cpu:type:aarch64:feature:"), None);
    }
}
