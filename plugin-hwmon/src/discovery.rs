//! The hwmon devices under a sysfs root and their power and energy
//! channels: what each is, where its files are, and how it is reported.
//!
//! Pure over the root: it lists and reads small attribute files (`name`,
//! labels, averaging intervals) and never reads a channel's value, so the
//! same listing serves `doctor`'s inventory and the source.
//!
//! Layouts (Documentation/hwmon/sysfs-interface.rst): a device is
//! `<root>/class/hwmon/hwmonN`, a link into `<root>/devices/...` (a plain
//! directory works too). Drivers registered the modern way keep `name` and
//! the channel files in `hwmonN/`; the ACPI power meter (and other old-style
//! drivers) keep them in `hwmonN/device/`, as libsensors also reads them.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use alumet::measurement::Resource;
use alumet_kernelfs::glob::Glob;

use crate::domain::{self, Domain, Placement};

/// Where hwmon devices are listed, under the sysfs root.
pub const HWMON_CLASS: &str = "class/hwmon";

/// How a channel's value is read.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    /// `energy*_input`: a cumulative counter in µJ.
    Energy {
        /// The counter's file.
        file: PathBuf,
    },
    /// `power*_average` or `power*_input`: a power in µW, integrated over
    /// the polls.
    Power {
        /// The power's file.
        file: PathBuf,
        /// `power*_average_interval` (ms), when the power is an average.
        averaging_interval_ms: Option<u64>,
    },
    /// `in*_input` (mV) × `curr*_input` (mA) of one rail: a power in µW.
    VoltageCurrent {
        /// The bus voltage's file.
        voltage: PathBuf,
        /// The current's file.
        current: PathBuf,
    },
}

/// Whether and how a channel is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Its energy (`hwmon_consumed_energy`) and, for power channels, its
    /// power (`hwmon_power`).
    Reported,
    /// Its power only: the same energy is another channel's (named).
    PowerOnly {
        /// The channel that reports the energy.
        energy_from: String,
    },
    /// Not read at all, for the reason given.
    Skipped {
        /// Why.
        why: String,
    },
}

/// One power or energy channel of one hwmon device.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// The hwmon device (`hwmon3`): numbers change across boots, for messages only.
    pub hwmon: String,
    /// The driver, as reported (see [`domain::canonical_driver`]).
    pub driver: String,
    /// The device the hwmon belongs to (`0000:03:00.0`, `ACPI000D:00`,
    /// `1-0040`): stable across boots; `hwmonN` when nothing names it.
    pub device: String,
    /// The channel (`power1`, `energy2`, `in1`).
    pub channel: String,
    /// The files read, for the inventory (`power1_average`).
    pub files: String,
    /// The raw label (`*_label`, or `power*_oem_info`), if any.
    pub label: Option<String>,
    /// How its value is read.
    pub kind: ChannelKind,
    /// Its domain and resource.
    pub placement: Placement,
    /// The domain reported on the same resource that contains this one.
    pub part_of: Option<Domain>,
    /// Whether it is reported.
    pub role: Role,
}

impl Channel {
    /// The `sensor` attribute: `<driver>/<channel>`.
    pub fn sensor(&self) -> String {
        format!("{}/{}", self.driver, self.channel)
    }

    /// Whether the channel is read at each poll.
    pub fn is_read(&self) -> bool {
        !matches!(self.role, Role::Skipped { .. })
    }
}

impl fmt::Display for Channel {
    /// The inventory line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.hwmon, self.driver, self.files)?;
        if let Some(label) = &self.label {
            write!(f, " \"{label}\"")?;
        }
        if let ChannelKind::Power {
            averaging_interval_ms: Some(ms),
            ..
        } = self.kind
        {
            write!(f, " (avg over {ms} ms)")?;
        }
        let resource = resource_text(&self.placement.resource);
        let how = match self.kind {
            ChannelKind::Energy { .. } => "energy counter",
            ChannelKind::Power { .. } => "integrated from power",
            ChannelKind::VoltageCurrent { .. } => "integrated from voltage x current",
        };
        let part_of = self
            .part_of
            .map(|d| format!(" part_of={d}"))
            .unwrap_or_default();
        match &self.role {
            Role::Reported => write!(
                f,
                " -> hwmon_consumed_energy domain={}{part_of} resource={resource}, {how}",
                self.placement.domain
            ),
            Role::PowerOnly { energy_from } => write!(
                f,
                " -> hwmon_power only domain={} resource={resource} (its energy is {energy_from}'s)",
                self.placement.domain
            ),
            Role::Skipped { why } => write!(f, " -> not reported: {why}"),
        }
    }
}

/// `local_machine`, `gpu:0000:03:00.0`, `cpu_package:0`.
fn resource_text(r: &Resource) -> String {
    match r {
        Resource::LocalMachine => "local_machine".to_owned(),
        other => format!("{}:{}", other.kind(), other.id()),
    }
}

/// Which drivers are read: included by one of `include` and by none of
/// `exclude` (globs on the reported driver or the hwmon `name`).
#[derive(Debug, Clone)]
pub struct DriverFilter {
    include: Vec<Glob>,
    exclude: Vec<Glob>,
}

impl DriverFilter {
    /// A filter from the configuration's globs.
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        let globs = |v: &[String]| v.iter().map(|p| Glob::new(p)).collect();
        Self {
            include: globs(include),
            exclude: globs(exclude),
        }
    }

    /// Every driver.
    pub fn all() -> Self {
        Self::new(&["*".to_owned()], &[])
    }

    /// Why a device of `driver` (hwmon name `raw`) is not read, if it is not.
    fn refuses(&self, driver: &str, raw: &str) -> Option<&'static str> {
        let any = |globs: &[Glob]| {
            globs
                .iter()
                .any(|g| g.matches(driver.as_bytes()) || g.matches(raw.as_bytes()))
        };
        if !any(&self.include) {
            Some("driver not in `drivers`")
        } else if any(&self.exclude) {
            Some("driver in `exclude_drivers`")
        } else {
            None
        }
    }
}

/// Why nothing could be listed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No `class/hwmon` under the root.
    #[error("cannot list {path}: {source}")]
    NoClass {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Every power and energy channel of every hwmon device under `sysfs_root`,
/// devices in hwmon order.
pub fn discover(sysfs_root: &Path, filter: &DriverFilter) -> Result<Vec<Channel>, DiscoveryError> {
    let class = sysfs_root.join(HWMON_CLASS);
    let entries = std::fs::read_dir(&class).map_err(|source| DiscoveryError::NoClass {
        path: class.clone(),
        source,
    })?;
    let mut devices: Vec<(u64, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let n = name.strip_prefix("hwmon")?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    devices.sort();
    let mut channels = Vec::new();
    for (_, hwmon) in devices {
        channels.extend(device_channels(&class.join(&hwmon), &hwmon, filter));
    }
    // Grace's meters are one hwmon device each: nesting is decided over
    // every channel found.
    mark_nesting(&mut channels);
    Ok(channels)
}

/// A small attribute file, trimmed; `None` when absent, unreadable or empty.
fn read_attr(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// `N` of a file named `<prefix>N<suffix>`.
fn index_of(file: &str, prefix: &str, suffix: &str) -> Option<u32> {
    file.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// The indices `N` of the files `<prefix>N<suffix>` among `files`, sorted.
fn indices(files: &BTreeSet<String>, prefix: &str, suffix: &str) -> BTreeSet<u32> {
    files
        .iter()
        .filter_map(|f| index_of(f, prefix, suffix))
        .collect()
}

/// A PCI address `dddd:bb:dd.f`.
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// The name of the device a hwmon belongs to: the `device` link's target,
/// else `PCI_SLOT_NAME` of `device/uevent` (a copied tree of plain
/// directories), else the directory before `hwmon/hwmonN` in the path the
/// class link points to.
fn device_name(hw: &Path) -> Option<String> {
    let base = |p: &Path| p.file_name()?.to_str().map(str::to_owned);
    if let Ok(target) = std::fs::read_link(hw.join("device")) {
        return base(&target);
    }
    if let Some(uevent) = read_attr(&hw.join("device/uevent")) {
        if let Some(slot) = uevent
            .lines()
            .find_map(|l| l.strip_prefix("PCI_SLOT_NAME="))
        {
            return Some(slot.trim().to_owned());
        }
    }
    let target = std::fs::read_link(hw).ok()?;
    let parts: Vec<&str> = target.iter().filter_map(|c| c.to_str()).collect();
    let at = parts.iter().rposition(|c| *c == "hwmon")?;
    at.checked_sub(1).map(|i| parts[i].to_owned())
}

/// The channels of the hwmon device at `hw`.
fn device_channels(hw: &Path, hwmon: &str, filter: &DriverFilter) -> Vec<Channel> {
    // Where `name` is, the channel files are (see the module's doc).
    let Some(dir) = [hw.to_path_buf(), hw.join("device")]
        .into_iter()
        .find(|d| d.join("name").is_file())
    else {
        return Vec::new();
    };
    let Some(raw_name) = read_attr(&dir.join("name")) else {
        return Vec::new();
    };
    let driver = domain::canonical_driver(&raw_name).to_owned();
    let files: BTreeSet<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect(),
        Err(_) => return Vec::new(),
    };
    let device = device_name(hw).unwrap_or_else(|| hwmon.to_owned());
    let bus_id = is_pci_address(&device).then_some(device.as_str());
    let new = |channel: String, files: String, label: Option<String>, kind| {
        let placement = domain::place(&driver, label.as_deref(), bus_id);
        Channel {
            hwmon: hwmon.to_owned(),
            driver: driver.clone(),
            device: device.clone(),
            channel,
            files,
            label,
            kind,
            placement,
            part_of: None,
            role: Role::Reported,
        }
    };

    let mut energy = Vec::new();
    for n in indices(&files, "energy", "_input") {
        let label = read_attr(&dir.join(format!("energy{n}_label")));
        let file = dir.join(format!("energy{n}_input"));
        energy.push(new(
            format!("energy{n}"),
            format!("energy{n}_input"),
            label,
            ChannelKind::Energy { file },
        ));
    }

    let mut power = Vec::new();
    let power_indices: BTreeSet<u32> = indices(&files, "power", "_average")
        .union(&indices(&files, "power", "_input"))
        .copied()
        .collect();
    for &n in &power_indices {
        // An average over the device's own interval loses less of what
        // happens between two polls than an instantaneous reading: it is
        // preferred when a channel has both.
        let average = format!("power{n}_average");
        let (file, averaging_interval_ms) = if files.contains(&average) {
            let interval = read_attr(&dir.join(format!("power{n}_average_interval")))
                .and_then(|t| t.parse().ok());
            (average, interval)
        } else {
            (format!("power{n}_input"), None)
        };
        // Grace's power meters name their domain in oem_info, not in a label.
        let label = read_attr(&dir.join(format!("power{n}_label")))
            .or_else(|| read_attr(&dir.join(format!("power{n}_oem_info"))));
        power.push(new(
            format!("power{n}"),
            file.clone(),
            label,
            ChannelKind::Power {
                file: dir.join(file),
                averaging_interval_ms,
            },
        ));
    }

    // V × I only where the driver pairs the two by index (INA3221: the
    // same channel is one rail); elsewhere in*/curr* of one index need not
    // be the same rail.
    if driver == "ina3221" {
        for n in indices(&files, "in", "_input") {
            let Some(label) = read_attr(&dir.join(format!("in{n}_label"))) else {
                continue;
            };
            if power_indices.contains(&n) || !files.contains(&format!("curr{n}_input")) {
                continue;
            }
            let mut rail = new(
                format!("in{n}"),
                format!("in{n}_input x curr{n}_input"),
                Some(label.clone()),
                ChannelKind::VoltageCurrent {
                    voltage: dir.join(format!("in{n}_input")),
                    current: dir.join(format!("curr{n}_input")),
                },
            );
            if label.eq_ignore_ascii_case("NC") {
                rail.role = Role::Skipped {
                    why: "not connected".into(),
                };
            } else if read_attr(&dir.join(format!("in{n}_enable"))).as_deref() == Some("0") {
                rail.role = Role::Skipped {
                    why: "channel disabled (in_enable = 0)".into(),
                };
            }
            power.push(rail);
        }
    }

    assign_roles(&driver, &mut energy, &mut power);
    let mut channels: Vec<Channel> = energy.into_iter().chain(power).collect();
    if let Some(why) = filter.refuses(&driver, &raw_name) {
        for c in &mut channels {
            c.role = Role::Skipped { why: why.into() };
        }
    }
    channels
}

/// Decides which channels report energy, so that nothing is counted twice
/// on one device.
fn assign_roles(driver: &str, energy: &mut [Channel], power: &mut [Channel]) {
    // xe: energy1 is the card, energy2 the package on it (ABI
    // sysfs-driver-intel-xe-hwmon): the package is inside the card.
    if let Some(card) = energy
        .iter()
        .find(|c| c.label.as_deref() == Some("card"))
        .map(|c| c.channel.clone())
    {
        for c in energy.iter_mut() {
            if c.label.as_deref() == Some("pkg") {
                c.role = Role::Skipped {
                    why: format!("the package is included in {card} (card)"),
                };
            }
        }
    }
    // A device with an energy counter: its power channels measure the same
    // thing (amdgpu, xe), the counter is exact.
    if let Some(first) = energy.iter().find(|c| c.role == Role::Reported) {
        let energy_from = first.channel.clone();
        for c in power.iter_mut().filter(|c| c.role == Role::Reported) {
            c.role = Role::PowerOnly {
                energy_from: energy_from.clone(),
            };
        }
        return;
    }
    // amdgpu: power1 is the whole GPU (on APUs, the whole SoC: slowPPT);
    // power2 (fastPPT) is the same SoC with another time constant.
    if driver == "amdgpu" {
        if let Some((first, rest)) = power.split_first_mut() {
            for c in rest.iter_mut().filter(|c| c.role == Role::Reported) {
                c.role = Role::PowerOnly {
                    energy_from: first.channel.clone(),
                };
            }
        }
    }
}

/// Sets `part_of` of each reported channel inside another reported one.
fn mark_nesting(channels: &mut [Channel]) {
    let reported: Vec<(Resource, Domain)> = channels
        .iter()
        .filter(|c| c.role == Role::Reported)
        .map(|c| (c.placement.resource.clone(), c.placement.domain))
        .collect();
    for c in channels.iter_mut().filter(|c| c.role == Role::Reported) {
        let present: Vec<Domain> = reported
            .iter()
            .filter(|(r, _)| *r == c.placement.resource)
            .map(|(_, d)| *d)
            .collect();
        c.part_of = domain::enclosing(&c.driver, c.placement.domain, &present);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn plain_directories_work_and_the_bus_id_comes_from_uevent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "class/hwmon/hwmon4/name", "amdgpu\n");
        write(root, "class/hwmon/hwmon4/power1_average", "35000000\n");
        write(
            root,
            "class/hwmon/hwmon4/device/uevent",
            "DRIVER=amdgpu\nPCI_SLOT_NAME=0000:0A:00.0\n",
        );
        let found = discover(root, &DriverFilter::all()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].placement.resource,
            Resource::Gpu {
                bus_id: "0000:0a:00.0".into()
            }
        );
        assert_eq!(found[0].sensor(), "amdgpu/power1");
    }

    #[test]
    fn old_style_devices_keep_their_files_in_device() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "class/hwmon/hwmon0/device/name", "power_meter\n");
        write(root, "class/hwmon/hwmon0/device/power1_average", "1\n");
        write(
            root,
            "class/hwmon/hwmon0/device/power1_average_interval",
            "500\n",
        );
        write(root, "class/hwmon/hwmon1/name", "nct6775\n");
        write(root, "class/hwmon/hwmon1/temp1_input", "40000\n");
        let found = discover(root, &DriverFilter::all()).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].to_string(),
            "hwmon0 acpi_power_meter power1_average (avg over 500 ms) -> hwmon_consumed_energy domain=node resource=local_machine, integrated from power"
        );
    }

    #[test]
    fn excluded_drivers_are_listed_but_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "class/hwmon/hwmon2/name", "i915\n");
        write(root, "class/hwmon/hwmon2/energy1_input", "1\n");
        let filter = DriverFilter::new(&["*".into()], &["i9*".into()]);
        let found = discover(root, &filter).unwrap();
        assert!(!found[0].is_read());
        let filter = DriverFilter::new(&["amdgpu".into()], &[]);
        assert!(!discover(root, &filter).unwrap()[0].is_read());
        assert!(discover(root, &DriverFilter::all()).unwrap()[0].is_read());
    }

    #[test]
    fn no_class_is_an_error_naming_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = discover(dir.path(), &DriverFilter::all()).unwrap_err();
        assert!(e.to_string().contains("class/hwmon"), "{e}");
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:03:00.0"));
        assert!(is_pci_address("0001:af:1f.7"));
        assert!(!is_pci_address("ACPI000D:00"));
        assert!(!is_pci_address("1-0040"));
    }
}
