//! What a channel measures: its domain and resource, from the driver's
//! name and the channel's label.
//!
//! Domains nest and must not be summed across levels:
//!
//! - NVIDIA Grace (ACPI power meters labelled `<Kind> Power Socket N`):
//!   `module` (Grace Hopper only: the whole module, GPU, HBM, LPDDR and
//!   regulator losses included) contains `grace` (the CPU side of the
//!   socket: CPU rail, SysIO rail, LPDDR memory and regulator losses),
//!   which contains `cpu` (CPU rail) and `soc` (SysIO rail). `cpu + soc` is
//!   less than `grace`: the rest is memory and losses that no channel
//!   reports on its own.
//! - Jetson INA3221: `module` (`VDD_IN`, the module's input) contains every
//!   other rail.
//!
//! Each nested channel says what contains it (the `part_of` attribute, see
//! [`enclosing`]); the energy of a socket or a module is its outermost
//! channel alone, never a sum of levels.

use std::fmt;

use alumet::measurement::Resource;

/// What a channel's energy belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// The whole machine (an ACPI power meter that is not Grace's: the BMC's reading).
    Node,
    /// A module: a Grace Hopper superchip, or a Jetson module's input.
    Module,
    /// A CPU rail (Grace `CPU Power Socket N`, a Jetson `*CPU*` rail).
    Cpu,
    /// A system-on-chip or I/O rail (Grace `SysIO`, Jetson `VDD_SOC`).
    Soc,
    /// Grace's CPU side of a socket: CPU and SysIO rails, memory and regulator losses.
    Grace,
    /// A GPU (amdgpu, i915, xe; a Jetson `*GPU*` rail).
    Gpu,
    /// A memory rail (a Jetson `VDDQ`/`DDR` rail).
    Memory,
    /// Anything else: a rail feeding several parts, an unknown driver.
    Other,
}

impl Domain {
    /// The value of the `domain` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Node => "node",
            Domain::Module => "module",
            Domain::Cpu => "cpu",
            Domain::Soc => "soc",
            Domain::Grace => "grace",
            Domain::Gpu => "gpu",
            Domain::Memory => "memory",
            Domain::Other => "other",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The domain and resource of one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The domain.
    pub domain: Domain,
    /// The resource the points are reported on.
    pub resource: Resource,
}

/// The driver name the plugin reports: the ACPI power meter's hwmon name is
/// `power_meter` (its kernel module is `acpi_power_meter`), too generic to
/// say where the reading comes from, so it is reported under the module's
/// name. Every other driver keeps its hwmon `name`.
pub fn canonical_driver(hwmon_name: &str) -> &str {
    match hwmon_name {
        "power_meter" => "acpi_power_meter",
        other => other,
    }
}

/// A Grace power meter's label (`power1_oem_info`): `<Kind> Power Socket N`
/// → the domain and the socket.
pub fn grace_socket(label: &str) -> Option<(Domain, u32)> {
    let (kind, socket) = label.trim().rsplit_once(" Power Socket ")?;
    let socket = socket.trim().parse().ok()?;
    let domain = match kind.trim().to_ascii_lowercase().as_str() {
        "module" => Domain::Module,
        "grace" => Domain::Grace,
        "cpu" => Domain::Cpu,
        "sysio" => Domain::Soc,
        _ => return None,
    };
    Some((domain, socket))
}

/// A Jetson INA3221 rail's domain from its label (`in*_label`): the
/// module's input (`VDD_IN`, `POM_5V_IN` on older modules) is `module`; a
/// rail that names one part is that part's; a rail that feeds several
/// (`VDD_CPU_GPU_CV`, `VDD_GPU_SOC`) is `other`, its label says which.
pub fn jetson_rail(label: &str) -> Domain {
    let upper = label.trim().to_ascii_uppercase();
    if matches!(upper.as_str(), "VDD_IN" | "POM_5V_IN" | "VIN") {
        return Domain::Module;
    }
    let parts: Vec<Domain> = upper
        .split('_')
        .filter_map(|token| match token {
            "CPU" => Some(Domain::Cpu),
            "GPU" => Some(Domain::Gpu),
            "SOC" => Some(Domain::Soc),
            "DDR" | "VDDQ" | "DRAM" | "DDRQ" => Some(Domain::Memory),
            // Other accelerators (CV: DLA and PVA) are parts too.
            "CV" => Some(Domain::Other),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        [one] => *one,
        _ => Domain::Other,
    }
}

/// Whether `driver` is one of the GPU drivers whose hwmon device is a PCI GPU.
pub fn is_gpu_driver(driver: &str) -> bool {
    matches!(driver, "amdgpu" | "i915" | "xe")
}

/// The domain and resource of a channel of `driver` labelled `label`, on
/// the device at `bus_id` (a PCI address, for GPUs).
pub fn place(driver: &str, label: Option<&str>, bus_id: Option<&str>) -> Placement {
    let machine = |domain| Placement {
        domain,
        resource: Resource::LocalMachine,
    };
    match driver {
        "acpi_power_meter" => match label.and_then(grace_socket) {
            Some((domain, socket)) => Placement {
                domain,
                resource: Resource::CpuPackage { id: socket },
            },
            None => machine(Domain::Node),
        },
        "ina3221" => machine(label.map_or(Domain::Other, jetson_rail)),
        d if is_gpu_driver(d) => match bus_id {
            Some(bus) => Placement {
                domain: Domain::Gpu,
                resource: Resource::Gpu {
                    bus_id: bus.to_ascii_lowercase().into(),
                },
            },
            None => machine(Domain::Gpu),
        },
        _ => machine(Domain::Other),
    }
}

/// The domain that contains `domain` when both are reported on the same
/// resource by channels of `driver` (`present`: the domains reported
/// there), for the `part_of` attribute: Grace's `cpu` and `soc` are part of
/// `grace`, `grace` of `module`; a Jetson rail is part of `module`.
pub fn enclosing(driver: &str, domain: Domain, present: &[Domain]) -> Option<Domain> {
    let candidates: &[Domain] = match (driver, domain) {
        ("acpi_power_meter", Domain::Cpu | Domain::Soc) => &[Domain::Grace, Domain::Module],
        ("acpi_power_meter", Domain::Grace) => &[Domain::Module],
        ("ina3221", d) if d != Domain::Module => &[Domain::Module],
        _ => &[],
    };
    candidates.iter().copied().find(|c| present.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_labels_from_the_tuning_guide() {
        assert_eq!(
            grace_socket("Module Power Socket 0"),
            Some((Domain::Module, 0))
        );
        assert_eq!(
            grace_socket("Grace Power Socket 1"),
            Some((Domain::Grace, 1))
        );
        assert_eq!(grace_socket("CPU Power Socket 3"), Some((Domain::Cpu, 3)));
        assert_eq!(
            grace_socket("SysIO Power Socket 2\n"),
            Some((Domain::Soc, 2))
        );
        assert_eq!(grace_socket("Total Power Socket 0"), None);
        assert_eq!(grace_socket("CPU Power Socket x"), None);
        assert_eq!(grace_socket(""), None);
    }

    #[test]
    fn acpi_power_meter_is_the_node_unless_grace_names_a_socket() {
        assert_eq!(
            place("acpi_power_meter", None, None),
            Placement {
                domain: Domain::Node,
                resource: Resource::LocalMachine
            }
        );
        assert_eq!(
            place("acpi_power_meter", Some("Grace Power Socket 1"), None),
            Placement {
                domain: Domain::Grace,
                resource: Resource::CpuPackage { id: 1 }
            }
        );
        assert_eq!(canonical_driver("power_meter"), "acpi_power_meter");
        assert_eq!(canonical_driver("amdgpu"), "amdgpu");
    }

    #[test]
    fn jetson_rails_from_the_orin_docs() {
        assert_eq!(jetson_rail("VDD_IN"), Domain::Module);
        assert_eq!(jetson_rail("POM_5V_IN"), Domain::Module);
        assert_eq!(jetson_rail("VDD_SOC"), Domain::Soc);
        assert_eq!(jetson_rail("VDD_CPU_GPU_CV"), Domain::Other);
        assert_eq!(jetson_rail("VDD_GPU_SOC"), Domain::Other);
        assert_eq!(jetson_rail("VDD_CPU_CV"), Domain::Other);
        assert_eq!(jetson_rail("POM_5V_GPU"), Domain::Gpu);
        assert_eq!(jetson_rail("POM_5V_CPU"), Domain::Cpu);
        assert_eq!(jetson_rail("VDDQ_VDD2_1V8AO"), Domain::Memory);
        assert_eq!(jetson_rail("VIN_SYS_5V0"), Domain::Other);
    }

    #[test]
    fn gpus_are_placed_on_their_pci_address() {
        for driver in ["amdgpu", "i915", "xe"] {
            assert_eq!(
                place(driver, Some("PPT"), Some("0000:03:00.0")),
                Placement {
                    domain: Domain::Gpu,
                    resource: Resource::Gpu {
                        bus_id: "0000:03:00.0".into()
                    }
                }
            );
        }
        assert_eq!(place("nct6775", None, None).domain, Domain::Other);
    }

    #[test]
    fn nested_domains_name_what_contains_them() {
        let gh = [Domain::Module, Domain::Grace, Domain::Cpu, Domain::Soc];
        let m = |d| enclosing("acpi_power_meter", d, &gh);
        assert_eq!(m(Domain::Cpu), Some(Domain::Grace));
        assert_eq!(m(Domain::Soc), Some(Domain::Grace));
        assert_eq!(m(Domain::Grace), Some(Domain::Module));
        assert_eq!(m(Domain::Module), None);
        let grace_only = [Domain::Grace, Domain::Cpu];
        assert_eq!(
            enclosing("acpi_power_meter", Domain::Grace, &grace_only),
            None
        );
        let jetson = [Domain::Module, Domain::Soc, Domain::Other];
        assert_eq!(
            enclosing("ina3221", Domain::Soc, &jetson),
            Some(Domain::Module)
        );
        assert_eq!(enclosing("ina3221", Domain::Module, &jetson), None);
        assert_eq!(enclosing("amdgpu", Domain::Gpu, &[Domain::Gpu]), None);
    }
}
