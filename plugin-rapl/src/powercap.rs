//! The powercap interface: `<sysfs_root>/class/powercap/intel-rapl:*`.
//!
//! Zones are found by name, never by index: `intel-rapl:N` is `package-N`
//! (or `package-N-die-M`) or `psys` (which some machines number
//! `intel-rapl:1`; on multi-socket machines the other packages' platform
//! zones are `psys-N`), and `intel-rapl:N:M` is `core`, `uncore` or `dram`
//! of the package above it. The powercap core writes zone numbers in hex
//! (`intel-rapl:%x`): `intel-rapl:a` is the eleventh. AMD processors use the
//! same control type with package and core only, and their `core` zone is
//! the energy of one core (the package's lead CPU's), reported on that
//! `cpu_core`. `intel-rapl-mmio:*` zones repeat the package counters through
//! another register window and are skipped so that nothing is counted twice.
//!
//! `energy_uj` files are opened once and re-read with `pread`, which costs
//! about a sixth of open/read/close.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alumet::measurement::Resource;

use crate::domain::Domain;
use crate::source::{merge_shared_dies, DomainReader, RawEnergyReader};
use crate::topology::{self, Vendor};
use alumet_energy::counter::{shortest_wrap_time, Wrap};

/// The powercap directory, relative to the sysfs root.
pub const POWERCAP_DIR: &str = "class/powercap";

/// The prefix of RAPL zones (Intel and AMD alike).
const ZONE_PREFIX: &str = "intel-rapl:";

/// Opens `energy_uj` files. The real one is [`StdFileOpener`]; tests use
/// another to simulate files that only root can read.
pub trait EnergyFileOpener: Send + Sync {
    /// Opens `path` for reading.
    fn open(&self, path: &Path) -> io::Result<File>;
}

/// Opens files with [`File::open`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFileOpener;

impl EnergyFileOpener for StdFileOpener {
    fn open(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }
}

/// A RAPL zone found under the powercap directory.
#[derive(Debug, Clone, PartialEq)]
pub struct PowercapZone {
    /// The zone's directory, e.g. `/sys/class/powercap/intel-rapl:0:2`.
    pub dir: PathBuf,
    /// Its `name` file, e.g. `package-0`, `dram`, `psys`.
    pub name: String,
    /// The domain the name stands for.
    pub domain: Domain,
    /// The physical package id (from `package-N`, or `psys-N`; 0 for psys).
    pub package_id: u32,
    /// The die id, from `package-N-die-M` (and inherited by its subzones).
    pub die_id: Option<u32>,
    /// The resource the zone's energy is reported on.
    pub resource: Resource,
    /// `max_energy_range_uj`: the counter restarts at 0 after this value.
    pub max_energy_range_uj: u64,
    /// The highest `constraint_*_max_power_uw` of the zone, or of its
    /// package for subzones; `None` when no constraint gives one.
    pub max_power_uw: Option<u64>,
}

impl PowercapZone {
    /// The `energy_uj` file.
    pub fn energy_path(&self) -> PathBuf {
        self.dir.join("energy_uj")
    }

    /// The resource the zone's energy is reported on.
    pub fn resource(&self) -> Resource {
        self.resource.clone()
    }
}

/// A zone that exists but cannot be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedZone {
    /// The file that could not be used.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
    /// Whether it was a permission error (`energy_uj` is root-only on
    /// kernels since 5.10 and the 2020 security fixes).
    pub permission_denied: bool,
}

impl std::fmt::Display for SkippedZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Why powercap cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PowercapError {
    /// No RAPL zone under the powercap directory (or no such directory).
    #[error("no powercap zones at {}", .0.display())]
    NoZones(PathBuf),
    /// The powercap directory exists but cannot be listed.
    #[error("cannot list {}: {source}", path.display())]
    List {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Zones exist but none can be read.
    #[error("{}", describe_unusable(.0))]
    NoUsableZone(Vec<SkippedZone>),
}

fn describe_unusable(skipped: &[SkippedZone]) -> String {
    match skipped.first() {
        Some(first) if skipped.iter().all(|s| s.permission_denied) => {
            format!("permission denied reading {}", first.path.display())
        }
        Some(first) => format!("cannot read {first}"),
        None => "no usable powercap zone".to_owned(),
    }
}

impl PowercapError {
    /// Whether the zones exist but the user may not read them.
    pub fn is_permission_denied(&self) -> bool {
        match self {
            PowercapError::NoUsableZone(skipped) => skipped.iter().any(|s| s.permission_denied),
            PowercapError::List { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
            PowercapError::NoZones(_) => false,
        }
    }
}

/// Zones found, and zones that were found but cannot be used.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Usable zones, sorted by directory name.
    pub zones: Vec<PowercapZone>,
    /// Zones skipped, with the reason.
    pub skipped: Vec<SkippedZone>,
    /// Things to warn about that skip nothing.
    pub notes: Vec<String>,
}

/// The zone indices in a directory name: `intel-rapl:0:1` → `[0, 1]`. The
/// powercap core writes them in hex (`intel-rapl:a` is zone 10).
fn zone_indices(dir_name: &str) -> Option<Vec<u32>> {
    let rest = dir_name.strip_prefix(ZONE_PREFIX)?;
    rest.split(':')
        .map(|i| u32::from_str_radix(i, 16).ok())
        .collect()
}

/// The package id and die id in a package zone's name: `package-1` or
/// `package-1-die-0`.
fn package_id_from_name(name: &str) -> Option<(u32, Option<u32>)> {
    let rest = name.strip_prefix("package-")?;
    match rest.split_once("-die-") {
        Some((package, die)) => Some((package.parse().ok()?, Some(die.parse().ok()?))),
        None => Some((rest.parse().ok()?, None)),
    }
}

/// The package of a platform zone: `psys` (0) or `psys-N` (the kernel's
/// name for the other packages' psys on multi-socket machines).
fn psys_package_from_name(name: &str) -> Option<u32> {
    match name.strip_prefix("psys") {
        Some("") => Some(0),
        Some(rest) => rest.strip_prefix('-')?.parse().ok(),
        None => None,
    }
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

fn read_u64(path: &Path) -> Result<u64, String> {
    let text = read_trimmed(path).map_err(|e| e.to_string())?;
    text.parse()
        .map_err(|_| format!("expected an integer, found {text:?}"))
}

/// The highest positive `constraint_*_max_power_uw` in `dir`.
fn max_power_uw(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("constraint_") && name.ends_with("_max_power_uw")
        })
        .filter_map(|e| read_u64(&e.path()).ok())
        .filter(|&p| p > 0)
        .max()
}

/// A package zone, as its subzones need it.
struct PackageInfo {
    id: u32,
    die: Option<u32>,
    max_power_uw: Option<u64>,
}

/// Where a zone's energy goes.
struct Placement {
    domain: Domain,
    package_id: u32,
    die_id: Option<u32>,
    resource: Resource,
    max_power_uw: Option<u64>,
}

/// The resource of an AMD `core` zone: the core of the package's lead CPU,
/// whose `MSR_AMD_CORE_ENERGY_STATUS` the driver reads.
fn amd_core_resource(
    sysfs_root: &Path,
    package_id: u32,
    die_id: Option<u32>,
) -> Result<Resource, String> {
    topology::lead_cpu(sysfs_root, package_id, die_id)
        .map(|id| Resource::CpuCore { id })
        .ok_or_else(|| {
            format!(
                "AMD core zone: it measures one core of package {package_id} (its lead CPU's), but no online CPU of that package{} is listed under devices/system/cpu",
                die_id.map_or(String::new(), |d| format!(" and die {d}"))
            )
        })
}

/// A top-level zone: `intel-rapl:<index>`, a package or not (psys).
struct ParentZone {
    index: u32,
    package: Option<PackageInfo>,
}

/// Finds the RAPL zones under `<sysfs_root>/class/powercap`. Reads only
/// world-readable files (`name`, `max_energy_range_uj`, constraints).
pub fn discover(sysfs_root: &Path) -> Result<Discovery, PowercapError> {
    let base = sysfs_root.join(POWERCAP_DIR);
    let entries = match std::fs::read_dir(&base) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(PowercapError::NoZones(base)),
        Err(source) => return Err(PowercapError::List { path: base, source }),
    };
    let mut found: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let indices = zone_indices(name.to_str()?)?;
            Some((indices, e.path()))
        })
        .collect();
    if found.is_empty() {
        return Err(PowercapError::NoZones(base));
    }
    // Parents (one index) before their subzones, in numeric order.
    found.sort();

    let mut discovery = Discovery::default();
    let vendor = topology::vendor(sysfs_root);
    // Top-level zones seen so far, for their subzones.
    let mut parents: Vec<ParentZone> = Vec::new();
    for (indices, dir) in found {
        let skip = |reason: String| SkippedZone {
            path: dir.clone(),
            reason,
            permission_denied: false,
        };
        let name = match read_trimmed(&dir.join("name")) {
            Ok(name) => name,
            Err(e) => {
                discovery.skipped.push(SkippedZone {
                    permission_denied: e.kind() == io::ErrorKind::PermissionDenied,
                    ..skip(format!("cannot read its name: {e}"))
                });
                continue;
            }
        };
        let placement = match indices.as_slice() {
            [index] => {
                let placed = if let Some((id, die)) = package_id_from_name(&name) {
                    Some(Placement {
                        domain: Domain::Package,
                        package_id: id,
                        die_id: die,
                        resource: Domain::Package.resource(id),
                        max_power_uw: max_power_uw(&dir),
                    })
                } else {
                    psys_package_from_name(&name).map(|id| Placement {
                        domain: Domain::Psys,
                        package_id: id,
                        die_id: None,
                        resource: Domain::Psys.resource(id),
                        max_power_uw: max_power_uw(&dir),
                    })
                };
                let package = placed
                    .as_ref()
                    .filter(|p| p.domain == Domain::Package)
                    .map(|p| PackageInfo {
                        id: p.package_id,
                        die: p.die_id,
                        max_power_uw: p.max_power_uw,
                    });
                parents.push(ParentZone {
                    index: *index,
                    package,
                });
                placed.ok_or_else(|| format!("unknown zone name {name:?}"))
            }
            [parent, _] => match parents.iter().find(|p| p.index == *parent) {
                Some(ParentZone {
                    package: Some(package),
                    ..
                }) => match Domain::from_zone_name(&name) {
                    Some(Domain::Core) if vendor == Some(Vendor::Amd) => {
                        amd_core_resource(sysfs_root, package.id, package.die).map(|resource| {
                            Placement {
                                domain: Domain::Core,
                                package_id: package.id,
                                die_id: package.die,
                                resource,
                                max_power_uw: max_power_uw(&dir).or(package.max_power_uw),
                            }
                        })
                    }
                    Some(d) if d != Domain::Psys => {
                        if d == Domain::Core && vendor.is_none() {
                            discovery.notes.push(format!(
                                "cannot tell the CPU vendor ({} is missing): {} is reported as the cores of package {}, which is right on Intel; on AMD it is one core's energy",
                                sysfs_root.join("devices/system/cpu/modalias").display(),
                                dir.display(),
                                package.id
                            ));
                        }
                        Ok(Placement {
                            domain: d,
                            package_id: package.id,
                            die_id: package.die,
                            resource: d.resource(package.id),
                            max_power_uw: max_power_uw(&dir).or(package.max_power_uw),
                        })
                    }
                    _ => Err(format!("unknown subzone name {name:?}")),
                },
                _ => Err(format!(
                    "subzone {name:?} is not under a package zone {ZONE_PREFIX}{parent:x}"
                )),
            },
            _ => Err("zones nested more than two levels are not RAPL domains".to_owned()),
        };
        let placement = match placement {
            Ok(p) => p,
            Err(reason) => {
                discovery.skipped.push(skip(reason));
                continue;
            }
        };
        let range_path = dir.join("max_energy_range_uj");
        let max_energy_range_uj = match read_u64(&range_path) {
            Ok(r) if r > 0 => r,
            Ok(_) => {
                discovery.skipped.push(skip(
                    "max_energy_range_uj is 0: wraps cannot be corrected".into(),
                ));
                continue;
            }
            Err(e) => {
                discovery
                    .skipped
                    .push(skip(format!("cannot read max_energy_range_uj: {e}")));
                continue;
            }
        };
        discovery.zones.push(PowercapZone {
            dir,
            name,
            domain: placement.domain,
            package_id: placement.package_id,
            die_id: placement.die_id,
            resource: placement.resource,
            max_energy_range_uj,
            max_power_uw: placement.max_power_uw,
        });
    }
    Ok(discovery)
}

/// Parses the contents of an `energy_uj` file (`"123456\n"`).
pub fn parse_energy_uj(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut count = 0;
    for &b in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        count += 1;
    }
    (count > 0).then_some(value)
}

/// An open `energy_uj` file, re-read from offset 0 at each poll.
#[derive(Debug)]
pub struct EnergyFile {
    file: File,
}

impl EnergyFile {
    /// Wraps an open `energy_uj` file.
    pub fn new(file: File) -> Self {
        Self { file }
    }

    /// Reads the current value, in µJ.
    pub fn read_energy_uj(&self) -> io::Result<u64> {
        // 20 digits hold any u64, plus the newline.
        let mut buf = [0u8; 24];
        let n = self.file.read_at(&mut buf, 0)?;
        parse_energy_uj(&buf[..n]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "expected an energy in µJ, found {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ),
            )
        })
    }
}

impl RawEnergyReader for EnergyFile {
    fn read_raw(&mut self) -> io::Result<u64> {
        self.read_energy_uj()
    }
}

/// Zones opened for polling.
#[derive(Debug)]
pub struct OpenedPowercap {
    /// One reader per usable zone (psys zones of every package: one in all).
    pub readers: Vec<DomainReader>,
    /// Zones found but not usable, with the reason (to warn about).
    pub skipped: Vec<SkippedZone>,
    /// Other things to warn about.
    pub notes: Vec<String>,
    /// The shortest time any opened counter can take to wrap.
    pub shortest_wrap: Option<Duration>,
}

/// Finds the zones and opens their `energy_uj` files, checking that each
/// can be read. `default_max_power_uw` bounds the power of zones that have
/// no constraint, to compute the wrap time; the higher of it and a zone's
/// own maximum bounds the energy a wrap may imply.
///
/// The psys zones of all packages become one reader that keeps the one
/// that advances (on multi-socket Sapphire/Emerald Rapids only one does);
/// dies whose zones read one shared counter become one reader per package.
pub fn open(
    sysfs_root: &Path,
    opener: &dyn EnergyFileOpener,
    default_max_power_uw: u64,
) -> Result<OpenedPowercap, PowercapError> {
    let discovery = discover(sysfs_root)?;
    let mut skipped = discovery.skipped;
    let mut readers = Vec::new();
    let mut psys: Vec<(String, Box<dyn RawEnergyReader>)> = Vec::new();
    let mut psys_range_uj = 0;
    let mut psys_max_power_w: f64 = 0.0;
    let mut shortest_wrap: Option<Duration> = None;
    for zone in discovery.zones {
        let path = zone.energy_path();
        let opened = opener.open(&path).and_then(|file| {
            let file = EnergyFile::new(file);
            file.read_energy_uj().map(|_| file)
        });
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                skipped.push(SkippedZone {
                    reason: e.to_string(),
                    permission_denied: e.kind() == io::ErrorKind::PermissionDenied,
                    path,
                });
                continue;
            }
        };
        let power = zone.max_power_uw.unwrap_or(default_max_power_uw);
        if let Some(t) = shortest_wrap_time(zone.max_energy_range_uj, power) {
            shortest_wrap = Some(shortest_wrap.map_or(t, |s| s.min(t)));
        }
        let max_power_w = power.max(default_max_power_uw) as f64 / 1e6;
        let origin = path.display().to_string();
        if zone.domain == Domain::Psys {
            psys_range_uj = psys_range_uj.max(zone.max_energy_range_uj);
            psys_max_power_w = psys_max_power_w.max(max_power_w);
            psys.push((origin, Box::new(file)));
            continue;
        }
        readers.push(
            DomainReader::new(
                zone.domain,
                zone.resource(),
                origin,
                1e-6,
                Wrap::AtMax(zone.max_energy_range_uj),
                max_power_w,
                Box::new(file),
            )
            .with_die(zone.die_id),
        );
    }
    if !psys.is_empty() {
        // Candidates may have different ranges in theory; each keeps its own
        // counter, the widest range is used for all (they are equal on
        // every machine seen).
        readers.push(DomainReader::with_candidates(
            Domain::Psys,
            Domain::Psys.resource(0),
            1e-6,
            Wrap::AtMax(psys_range_uj),
            psys_max_power_w,
            psys,
        ));
    }
    if readers.is_empty() {
        return Err(PowercapError::NoUsableZone(skipped));
    }
    Ok(OpenedPowercap {
        readers: merge_shared_dies(readers),
        skipped,
        notes: discovery.notes,
        shortest_wrap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_directory_names_parse() {
        assert_eq!(zone_indices("intel-rapl:0"), Some(vec![0]));
        assert_eq!(zone_indices("intel-rapl:1:2"), Some(vec![1, 2]));
        assert_eq!(zone_indices("intel-rapl"), None);
        assert_eq!(zone_indices("intel-rapl-mmio:0"), None);
        assert_eq!(zone_indices("intel-rapl:x"), None);
        // hex, as the powercap core writes them
        assert_eq!(zone_indices("intel-rapl:a"), Some(vec![10]));
        assert_eq!(zone_indices("intel-rapl:1f:2"), Some(vec![31, 2]));
    }

    #[test]
    fn package_names_parse_with_and_without_die() {
        assert_eq!(package_id_from_name("package-1"), Some((1, None)));
        assert_eq!(package_id_from_name("package-0-die-1"), Some((0, Some(1))));
        assert_eq!(package_id_from_name("package-0-die-"), None);
        assert_eq!(package_id_from_name("psys"), None);
    }

    #[test]
    fn psys_names_parse_with_and_without_package() {
        assert_eq!(psys_package_from_name("psys"), Some(0));
        assert_eq!(psys_package_from_name("psys-1"), Some(1));
        assert_eq!(psys_package_from_name("psys1"), None);
        assert_eq!(psys_package_from_name("psys-x"), None);
    }

    #[test]
    fn energy_contents_parse() {
        assert_eq!(parse_energy_uj(b"123456\n"), Some(123_456));
        assert_eq!(parse_energy_uj(b"0"), Some(0));
        assert_eq!(parse_energy_uj(b""), None);
        assert_eq!(parse_energy_uj(b"\n"), None);
        assert_eq!(parse_energy_uj(b"99999999999999999999999"), None);
    }
}
