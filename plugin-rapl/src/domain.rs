//! RAPL domains and the resource each one measures.
//!
//! The mapping is the contract other crates rely on (energy attribution keys
//! on it): package, core (pp0) and uncore (pp1) belong to CPU package N, dram
//! to the DRAM of package N, psys to the whole machine. Nothing here adds
//! domains together: psys already includes the packages, and the package
//! already includes core and uncore.

use alumet::measurement::Resource;

/// A RAPL power domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// The whole CPU package (socket): cores, caches, uncore, integrated GPU.
    Package,
    /// The cores of a package (power plane 0).
    Core,
    /// The uncore of a package, usually the integrated GPU (power plane 1).
    Uncore,
    /// The memory attached to a package.
    Dram,
    /// The platform (SoC and more); includes the packages.
    Psys,
}

impl Domain {
    /// Every domain, in the order they are reported.
    pub const ALL: [Domain; 5] = [
        Domain::Package,
        Domain::Core,
        Domain::Uncore,
        Domain::Dram,
        Domain::Psys,
    ];

    /// The value of the `domain` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Package => "package",
            Domain::Core => "core",
            Domain::Uncore => "uncore",
            Domain::Dram => "dram",
            Domain::Psys => "psys",
        }
    }

    /// Whether a real counter of this domain always advances, even at idle
    /// (a package, the platform): one that does not is dead or frozen. The
    /// others (core, uncore without an integrated GPU, sometimes dram on
    /// servers) may legitimately stay at 0.
    pub fn must_count(self) -> bool {
        matches!(self, Domain::Package | Domain::Psys)
    }

    /// The resource this domain measures on package `package_id`
    /// (ignored for psys, which covers the whole machine).
    pub fn resource(self, package_id: u32) -> Resource {
        match self {
            Domain::Package | Domain::Core | Domain::Uncore => {
                Resource::CpuPackage { id: package_id }
            }
            Domain::Dram => Resource::Dram { pkg_id: package_id },
            Domain::Psys => Resource::LocalMachine,
        }
    }

    /// The domain of a powercap subzone or platform zone name
    /// (`core`, `uncore`, `dram`, `psys`); packages are named `package-N`
    /// and parsed by the powercap module.
    pub fn from_zone_name(name: &str) -> Option<Domain> {
        match name {
            "core" => Some(Domain::Core),
            "uncore" => Some(Domain::Uncore),
            "dram" => Some(Domain::Dram),
            "psys" => Some(Domain::Psys),
            _ => None,
        }
    }

    /// The domain of a perf power event (`energy-pkg`, `energy-cores`,
    /// `energy-gpu`, `energy-ram`, `energy-psys`).
    pub fn from_perf_event(event: &str) -> Option<Domain> {
        match event {
            "energy-pkg" => Some(Domain::Package),
            "energy-cores" => Some(Domain::Core),
            "energy-gpu" => Some(Domain::Uncore),
            "energy-ram" => Some(Domain::Dram),
            "energy-psys" => Some(Domain::Psys),
            _ => None,
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_map_to_the_contract_resources() {
        assert_eq!(Domain::Package.resource(1), Resource::CpuPackage { id: 1 });
        assert_eq!(Domain::Core.resource(1), Resource::CpuPackage { id: 1 });
        assert_eq!(Domain::Uncore.resource(0), Resource::CpuPackage { id: 0 });
        assert_eq!(Domain::Dram.resource(1), Resource::Dram { pkg_id: 1 });
        assert_eq!(Domain::Psys.resource(1), Resource::LocalMachine);
    }

    #[test]
    fn perf_event_names_map_to_domains() {
        assert_eq!(Domain::from_perf_event("energy-gpu"), Some(Domain::Uncore));
        assert_eq!(Domain::from_perf_event("energy-ram"), Some(Domain::Dram));
        assert_eq!(Domain::from_perf_event("energy-pkg.scale"), None);
    }
}
