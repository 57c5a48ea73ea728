//! The metrics the attribution produces, as the transform and its cgroup
//! level both emit them (one definition that neither owns).

use alumet::metrics::MetricId;

/// The ids of the metrics the attribution produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputMetrics {
    /// `attributed_energy`.
    pub attributed_energy: MetricId,
    /// `idle_power`.
    pub idle_power: MetricId,
    /// `unattributed_energy`.
    pub unattributed_energy: MetricId,
}
