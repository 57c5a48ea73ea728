//! The metrics the attribution produces, as the transform and its cgroup
//! level both emit them (one definition that neither owns).

use std::borrow::Cow;

use alumet::measurement::{
    AttributeValue, MeasurementPoint, MeasurementValue, Resource, ResourceConsumer, Timestamp,
};
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

impl OutputMetrics {
    /// An `unattributed_energy` point: `energy` J of `domain`'s `part` that
    /// went to no one, and why (the machine as consumer).
    pub fn unattributed(
        &self,
        at: Timestamp,
        resource: &Resource,
        domain: &AttributeValue,
        part: &'static str,
        reason: &'static str,
        energy: f64,
    ) -> MeasurementPoint {
        MeasurementPoint {
            timestamp: at,
            metric: self.unattributed_energy,
            resource: resource.clone(),
            consumer: ResourceConsumer::LocalMachine,
            value: MeasurementValue::F64(energy),
            attributes: vec![
                (Cow::Borrowed("domain"), domain.clone()),
                (Cow::Borrowed("part"), AttributeValue::from(part)),
                (Cow::Borrowed("reason"), AttributeValue::from(reason)),
            ]
            .into(),
        }
    }
}
