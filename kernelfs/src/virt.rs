//! Whether this machine is a virtual machine, and under which hypervisor.
//!
//! Energy figures depend on it: a VM's RAPL counters usually do not count
//! (they open and read 0), and where they do count they show the host's
//! package, shared with other guests. rapl, cpu-power-model, `doctor` and
//! the `exec` report all ask here, so that they say the same thing.
//!
//! What is read, every path under the configurable roots (fixtures, or the
//! host's /proc and /sys mounted elsewhere in a container):
//! - `<proc>/cpuinfo`: the `hypervisor` flag, which x86 hypervisors set
//!   (CPUID leaf 1, ECX bit 31) and bare metal never has;
//! - `<sys>/hypervisor/type` (Xen, and a few others);
//! - `<sys>/class/dmi/id/sys_vendor` and `product_name` (SMBIOS), which name
//!   the cloud or the emulator;
//! - `<sys>/devices/system/clocksource/clocksource0/available_clocksource`:
//!   a paravirtual clock (`kvm-clock`, `xen`, `hyperv_clocksource_tsc_page`)
//!   names the hypervisor where there is no SMBIOS (Firecracker-like VMs).
//!
//! A DMI vendor alone never makes a machine virtual: Amazon's bare-metal
//! instances say `Amazon EC2` too. Product names that only emulators use
//! (`KVM`, `VirtualBox`, `VMware Virtual Platform`...) do, for the guests
//! (arm64) whose CPUs have no `hypervisor` flag.

use std::fmt;
use std::path::Path;

/// What kind of machine the roots describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineKind {
    /// No sign of a hypervisor.
    BareMetal,
    /// A guest of a hypervisor, named when something says which.
    VirtualMachine {
        /// `KVM`, `Amazon EC2`, `Microsoft Hyper-V`...; `None` when nothing names it.
        hypervisor: Option<String>,
    },
}

impl MachineKind {
    /// Whether it is a virtual machine.
    pub fn is_virtual(&self) -> bool {
        matches!(self, MachineKind::VirtualMachine { .. })
    }

    /// The hypervisor's name, if known.
    pub fn hypervisor(&self) -> Option<&str> {
        match self {
            MachineKind::VirtualMachine { hypervisor } => hypervisor.as_deref(),
            MachineKind::BareMetal => None,
        }
    }
}

impl fmt::Display for MachineKind {
    /// `bare metal`, `virtual machine (KVM)`, or `virtual machine` when no
    /// file names the hypervisor.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineKind::BareMetal => f.write_str("bare metal"),
            MachineKind::VirtualMachine {
                hypervisor: Some(h),
            } => write!(f, "virtual machine ({h})"),
            MachineKind::VirtualMachine { hypervisor: None } => f.write_str("virtual machine"),
        }
    }
}

/// DMI `sys_vendor` (or `product_name`) prefixes and the name to report.
/// Public names of the clouds and hypervisors, as their SMBIOS tables
/// write them (systemd's `detect-virt` documents the same strings).
const DMI_NAMES: &[(&str, &str)] = &[
    ("Amazon EC2", "Amazon EC2"),
    ("Google Compute Engine", "Google Compute Engine"),
    ("Google", "Google Compute Engine"),
    ("Microsoft Corporation", "Microsoft Hyper-V"),
    ("VMware", "VMware"),
    ("QEMU", "QEMU"),
    ("KVM", "KVM"),
    ("innotek GmbH", "VirtualBox"),
    ("VirtualBox", "VirtualBox"),
    ("Xen", "Xen"),
    ("Bochs", "Bochs"),
    ("Parallels", "Parallels"),
    ("OpenStack", "OpenStack"),
    ("Alibaba Cloud", "Alibaba Cloud"),
    ("Cloud Hypervisor", "Cloud Hypervisor"),
    ("Firecracker", "Firecracker"),
    ("DigitalOcean", "DigitalOcean"),
    ("Hetzner", "Hetzner Cloud"),
    ("Scaleway", "Scaleway"),
    ("OVH", "OVHcloud"),
];

/// Product names that only a hypervisor's guests have: a machine that
/// shows one is virtual even without the CPU flag.
const VIRTUAL_ONLY_PRODUCTS: &[&str] = &[
    "KVM",
    "VirtualBox",
    "VMware Virtual Platform",
    "VMware7,1",
    "Virtual Machine",
    "Standard PC (",
    "Bochs",
    "HVM domU",
    "Google Compute Engine",
    "OpenStack Compute",
    "OpenStack Nova",
    "Cloud Hypervisor",
];

/// Paravirtual clock sources and their hypervisor.
const CLOCKSOURCES: &[(&str, &str)] = &[
    ("kvm-clock", "KVM"),
    ("xen", "Xen"),
    ("hyperv_clocksource_tsc_page", "Microsoft Hyper-V"),
    ("hyperv_clocksource_msr", "Microsoft Hyper-V"),
];

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    // DMI fields the firmware left blank say so in many ways.
    let blank = text.is_empty()
        || matches!(
            text.to_ascii_lowercase().as_str(),
            "to be filled by o.e.m." | "default string" | "system product name" | "none"
        );
    (!blank).then(|| text.to_owned())
}

/// Whether `<proc>/cpuinfo` has the `hypervisor` flag on a `flags` line.
fn cpuinfo_has_hypervisor_flag(proc_root: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(proc_root.join("cpuinfo")) else {
        return false;
    };
    text.lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':'))
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "hypervisor"))
}

fn dmi_name(vendor: Option<&str>, product: Option<&str>) -> Option<String> {
    // Hyper-V's vendor is Microsoft's on its own hardware too: only its
    // `Virtual Machine` product says Hyper-V.
    if vendor == Some("Microsoft Corporation") && product != Some("Virtual Machine") {
        return None;
    }
    [product, vendor].into_iter().flatten().find_map(|field| {
        DMI_NAMES
            .iter()
            .find(|(prefix, _)| field.starts_with(prefix))
            .map(|(_, name)| (*name).to_owned())
    })
}

fn clocksource_name(sys_root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(
        sys_root.join("devices/system/clocksource/clocksource0/available_clocksource"),
    )
    .ok()?;
    text.split_whitespace().find_map(|c| {
        CLOCKSOURCES
            .iter()
            .find(|(name, _)| *name == c)
            .map(|(_, h)| (*h).to_owned())
    })
}

/// Reads what the roots say about the machine (see the module's comment).
/// Never fails: what cannot be read says nothing.
pub fn detect(proc_root: &Path, sys_root: &Path) -> MachineKind {
    let flag = cpuinfo_has_hypervisor_flag(proc_root);
    let hypervisor_type = read_trimmed(&sys_root.join("hypervisor/type"));
    let dmi = sys_root.join("class/dmi/id");
    let vendor = read_trimmed(&dmi.join("sys_vendor"));
    let product = read_trimmed(&dmi.join("product_name"));
    let virtual_product = product
        .as_deref()
        .is_some_and(|p| VIRTUAL_ONLY_PRODUCTS.iter().any(|v| p.starts_with(v)))
        && dmi_name(vendor.as_deref(), product.as_deref()).is_some();
    if !(flag || hypervisor_type.is_some() || virtual_product) {
        return MachineKind::BareMetal;
    }
    let from_type = hypervisor_type.map(|t| match t.as_str() {
        "xen" => "Xen".to_owned(),
        "kvm" => "KVM".to_owned(),
        other => other.to_owned(),
    });
    let hypervisor = dmi_name(vendor.as_deref(), product.as_deref())
        .or(from_type)
        .or_else(|| clocksource_name(sys_root));
    MachineKind::VirtualMachine { hypervisor }
}

/// Writes under `proc` and `sys` what a KVM guest shows [`detect`]: the
/// `hypervisor` flag in cpuinfo and the KVM clock source, as this project's
/// CI machines have. A fixture for the tests of code that asks [`detect`].
pub fn write_kvm_guest_fixture(proc: &Path, sys: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(proc)?;
    std::fs::write(
        proc.join("cpuinfo"),
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 hypervisor avx2\n",
    )?;
    let clock = sys.join("devices/system/clocksource/clocksource0");
    std::fs::create_dir_all(&clock)?;
    std::fs::write(clock.join("available_clocksource"), "tsc kvm-clock \n")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Roots {
        dir: tempfile::TempDir,
    }

    impl Roots {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn write(&self, relative: &str, text: &str) -> &Self {
            let path = self.dir.path().join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(path, text).unwrap();
            self
        }
        fn detect(&self) -> MachineKind {
            detect(&self.dir.path().join("proc"), &self.dir.path().join("sys"))
        }
    }

    const FLAGS_VM: &str = "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor avx2\n\nprocessor\t: 1\nflags\t\t: fpu vme sse2 hypervisor avx2\n";
    const FLAGS_METAL: &str = "processor\t: 0\nflags\t\t: fpu vme sse2 avx2 hypervisorx\n";

    #[test]
    fn the_kvm_guest_fixture_is_a_kvm_guest() {
        let r = Roots::new();
        write_kvm_guest_fixture(&r.dir.path().join("proc"), &r.dir.path().join("sys")).unwrap();
        assert_eq!(r.detect().to_string(), "virtual machine (KVM)");
    }

    #[test]
    fn nothing_readable_is_bare_metal() {
        assert_eq!(Roots::new().detect(), MachineKind::BareMetal);
        let r = Roots::new();
        r.write("proc/cpuinfo", FLAGS_METAL);
        assert_eq!(r.detect(), MachineKind::BareMetal);
        assert_eq!(r.detect().to_string(), "bare metal");
    }

    #[test]
    fn the_flag_alone_is_an_unnamed_vm_and_the_clock_names_kvm() {
        let r = Roots::new();
        r.write("proc/cpuinfo", FLAGS_VM);
        assert_eq!(r.detect().to_string(), "virtual machine");
        r.write(
            "sys/devices/system/clocksource/clocksource0/available_clocksource",
            "tsc kvm-clock \n",
        );
        assert_eq!(r.detect().to_string(), "virtual machine (KVM)");
        assert_eq!(r.detect().hypervisor(), Some("KVM"));
    }

    #[test]
    fn dmi_names_the_cloud_before_the_clock() {
        for (vendor, product, expected) in [
            ("Amazon EC2", "m5.large", "Amazon EC2"),
            ("Google", "Google Compute Engine", "Google Compute Engine"),
            (
                "Microsoft Corporation",
                "Virtual Machine",
                "Microsoft Hyper-V",
            ),
            ("VMware, Inc.", "VMware Virtual Platform", "VMware"),
            ("QEMU", "Standard PC (Q35 + ICH9, 2009)", "QEMU"),
            ("OpenStack Foundation", "OpenStack Nova", "OpenStack"),
        ] {
            let r = Roots::new();
            r.write("proc/cpuinfo", FLAGS_VM)
                .write("sys/class/dmi/id/sys_vendor", &format!("{vendor}\n"))
                .write("sys/class/dmi/id/product_name", &format!("{product}\n"))
                .write(
                    "sys/devices/system/clocksource/clocksource0/available_clocksource",
                    "kvm-clock tsc\n",
                );
            assert_eq!(
                r.detect().to_string(),
                format!("virtual machine ({expected})"),
                "{vendor} {product}"
            );
        }
    }

    #[test]
    fn a_cloud_vendor_on_bare_metal_is_bare_metal() {
        // Amazon's *.metal instances: same vendor, no hypervisor flag.
        let r = Roots::new();
        r.write("proc/cpuinfo", FLAGS_METAL)
            .write("sys/class/dmi/id/sys_vendor", "Amazon EC2\n")
            .write("sys/class/dmi/id/product_name", "c5.metal\n");
        assert_eq!(r.detect(), MachineKind::BareMetal);
        // Microsoft's own hardware is not Hyper-V.
        let r = Roots::new();
        r.write("sys/class/dmi/id/sys_vendor", "Microsoft Corporation\n")
            .write("sys/class/dmi/id/product_name", "Surface Laptop 4\n");
        assert_eq!(r.detect(), MachineKind::BareMetal);
    }

    #[test]
    fn a_virtual_only_product_without_the_flag_is_a_vm() {
        // arm64 guests have no x86 hypervisor flag.
        let r = Roots::new();
        r.write("proc/cpuinfo", "processor\t: 0\nFeatures\t: fp asimd\n")
            .write("sys/class/dmi/id/sys_vendor", "QEMU\n")
            .write("sys/class/dmi/id/product_name", "KVM Virtual Machine\n");
        assert_eq!(r.detect().to_string(), "virtual machine (KVM)");
    }

    #[test]
    fn xen_from_sys_hypervisor_and_blank_dmi_fields_say_nothing() {
        let r = Roots::new();
        r.write("sys/hypervisor/type", "xen\n")
            .write("sys/class/dmi/id/sys_vendor", "To Be Filled By O.E.M.\n");
        assert_eq!(r.detect().to_string(), "virtual machine (Xen)");
    }
}
