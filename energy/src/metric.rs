//! The metric every energy plugin emits for intervals it did not measure.
//!
//! rapl and hwmon (and estimators that take over for such intervals) must
//! agree on one definition: it lives here, not in one of them.

use alumet::metrics::{Metric, MetricKind, Unit, ValueType};

/// Name of the metric that marks intervals whose energy is not known (a
/// frozen counter, an implausible advance, a reset, a reading that is not a
/// number or cannot be read): their energy is not reported as 0 J, and
/// estimates can take over for them.
pub const UNMEASURED_METRIC_NAME: &str = "energy_unmeasured_time";

/// The definition of [`UNMEASURED_METRIC_NAME`].
pub fn unmeasured_metric() -> Metric {
    Metric::new(
        UNMEASURED_METRIC_NAME,
        Unit::Second,
        ValueType::F64,
        MetricKind::Delta,
        "Time of the interval ending at the timestamp during which the energy sensor of the resource and domain did not measure (attribute reason: frozen, implausible, reset, invalid, unreadable; energy_metric: the energy metric it stands in for). No energy point is emitted for that interval.",
    )
}

/// The ids of the three metrics a power sensor's source emits: its energy
/// (J, delta), its power (W, gauge) and `energy_unmeasured_time` (hwmon,
/// redfish).
#[derive(Debug, Clone, Copy)]
pub struct EnergyMetricIds {
    /// The energy metric (`hwmon_consumed_energy`, `redfish_consumed_energy`).
    pub energy: alumet::metrics::MetricId,
    /// The power metric (`hwmon_power`, `redfish_power`).
    pub power: alumet::metrics::MetricId,
    /// `energy_unmeasured_time`.
    pub unmeasured: alumet::metrics::MetricId,
}
