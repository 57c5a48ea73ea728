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
    /// An `attributed_energy` point: `energy` J of `domain`'s `part` that
    /// process `pid` (named `exe` when known) used.
    #[allow(clippy::too_many_arguments)]
    pub fn attributed_to_process(
        &self,
        at: Timestamp,
        resource: &Resource,
        domain: &AttributeValue,
        part: &'static str,
        pid: u32,
        exe: Option<&AttributeValue>,
        energy: f64,
    ) -> MeasurementPoint {
        let mut attributes = Vec::with_capacity(3);
        attributes.push((Cow::Borrowed("domain"), domain.clone()));
        attributes.push((Cow::Borrowed("part"), AttributeValue::from(part)));
        if let Some(exe) = exe {
            attributes.push((Cow::Borrowed("exe"), exe.clone()));
        }
        MeasurementPoint {
            timestamp: at,
            metric: self.attributed_energy,
            resource: resource.clone(),
            consumer: ResourceConsumer::Process { pid },
            value: MeasurementValue::F64(energy),
            attributes: attributes.into(),
        }
    }

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
