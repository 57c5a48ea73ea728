//! What the summary, its carbon lines and the plot share: a series' key
//! and aggregate, its attributes read back, the energy metrics the report
//! has lines for, and their names.

use alumet::measurement::Resource;
use serde::Serialize;

/// Sum, mean, max... of one series.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Aggregate {
    /// Number of points.
    pub count: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Largest value.
    pub max: f64,
    /// First value (counters).
    pub first: f64,
    /// Last value (counters).
    pub last: f64,
}

impl Aggregate {
    /// Adds one value.
    pub(crate) fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.first = v;
            self.max = v;
        }
        self.count += 1;
        self.sum += v;
        self.max = self.max.max(v);
        self.last = v;
    }
}

/// Identifies a series in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SeriesKey {
    pub(crate) metric: String,
    pub(crate) resource: Resource,
    /// Sorted `k=v` pairs, without per-process attributes.
    pub(crate) attributes: String,
}

/// The energy the report has a line for: measured, and estimated where
/// nothing measures (the metric contract in ARCHITECTURE.md).
pub(crate) const ENERGY_METRICS: [&str; 5] = [
    "rapl_consumed_energy",
    "gpu_consumed_energy",
    "estimated_cpu_energy",
    "hwmon_consumed_energy",
    "redfish_consumed_energy",
];

/// Domains that are the whole node (hwmon's ACPI power meter, Redfish) or
/// a module holding CPU, memory and accelerators (Grace Hopper socket,
/// Jetson `VDD_IN`): what the report's node breakdown starts from.
pub(crate) const NODE_DOMAINS: [&str; 2] = ["node", "module"];
/// The carbon of each energy point (energy-to-carbon).
pub(crate) const CARBON_METRIC: &str = "carbon_emission";
/// Intervals a sensor did not measure (rapl: a frozen counter).
pub(crate) const UNMEASURED_METRIC: &str = "energy_unmeasured_time";

pub(crate) fn is_estimated(attrs: &str) -> bool {
    attribute(attrs, "estimated").as_deref() == Some("true")
}

pub(crate) fn attribute(attrs: &str, key: &str) -> Option<String> {
    attrs
        .split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

/// The report's (and the plot's) name of an energy domain.
pub(crate) fn energy_label(resource: &Resource, domain: &str) -> String {
    match (resource, domain) {
        (Resource::CpuPackage { .. }, "package")
        | (Resource::Dram { .. }, "dram")
        | (Resource::Gpu { .. }, _) => resource.to_string(),
        (Resource::LocalMachine, "psys") => "Platform (psys, includes the packages)".into(),
        (Resource::LocalMachine, "node") => "Whole node".into(),
        (r, "module") => format!("Module of {r}"),
        (r, d) => format!("{r} ({d})"),
    }
}
