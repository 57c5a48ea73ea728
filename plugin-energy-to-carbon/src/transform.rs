//! The carbon transform: for every energy point that passes (any metric in
//! joules of kind delta), appends a `carbon_emission` point with the same
//! resource, consumer and attributes, plus where its intensity came from.
//! Input points pass through untouched.

use std::borrow::Cow;

use alumet::measurement::{AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue};
use alumet::metrics::{MetricId, MetricKind, MetricRegistry, Unit};
use alumet::pipeline::{ElementContext, Transform, TransformError};

use crate::intensity::Intensity;

/// Joules in one kilowatt-hour.
pub const JOULES_PER_KWH: f64 = 3.6e6;

/// Counters of what the transform did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CarbonStats {
    /// Carbon points emitted.
    pub points: u64,
    /// Energy values that were NaN, infinite or negative (no carbon point).
    pub invalid_energy_values: u64,
    /// Points before the first row of the intensity time series (the first row was used).
    pub before_series: u64,
}

#[derive(Debug, Clone)]
struct EnergyInput {
    id: MetricId,
    /// Factor to joules (1e-3 for mJ...).
    scale: f64,
    name: AttributeValue,
}

/// The transform; the plugin adds it after energy-attribution, so that
/// attributed energy gets its carbon too.
pub struct CarbonTransform {
    intensity: Intensity,
    source: AttributeValue,
    pue: f64,
    output: MetricId,
    inputs: Option<Vec<EnergyInput>>,
    stats: CarbonStats,
}

impl CarbonTransform {
    /// A transform with this intensity and PUE, emitting metric `output`.
    pub fn new(intensity: Intensity, pue: f64, output: MetricId) -> Self {
        Self {
            source: AttributeValue::Str(Cow::Owned(intensity.source())),
            intensity,
            pue,
            output,
            inputs: None,
            stats: CarbonStats::default(),
        }
    }

    /// What the transform did so far.
    pub fn stats(&self) -> &CarbonStats {
        &self.stats
    }

    /// Every energy metric of the registry: unit J (any prefix), kind delta.
    fn resolve(metrics: &MetricRegistry) -> Vec<EnergyInput> {
        metrics
            .iter()
            .filter(|(_, m)| m.unit.base == Unit::Joule && m.kind == MetricKind::Delta)
            .map(|(id, m)| EnergyInput {
                id,
                scale: m.unit.prefix.factor(),
                name: AttributeValue::Str(Cow::Owned(m.name.clone())),
            })
            .collect()
    }

    /// The carbon of `energy_j` joules consumed in the interval ending at `unix_ns`, g CO2e.
    pub fn carbon_g(&self, energy_j: f64, unix_ns: u64) -> f64 {
        energy_j * self.pue / JOULES_PER_KWH * self.intensity.at(unix_ns)
    }

    fn add_carbon(&mut self, buffer: &mut MeasurementBuffer, inputs: &[EnergyInput]) {
        if inputs.is_empty() {
            return;
        }
        let n = buffer.len();
        for i in 0..n {
            let p = &buffer[i];
            let Some(input) = inputs.iter().find(|e| e.id == p.metric) else {
                continue;
            };
            let energy_j = p.value.as_f64() * input.scale;
            if !(energy_j.is_finite() && energy_j >= 0.0) {
                self.stats.invalid_energy_values += 1;
                if self.stats.invalid_energy_values.is_power_of_two() {
                    log::warn!(
                        "energy-to-carbon: no carbon for an invalid energy value {energy_j} J ({} so far)",
                        self.stats.invalid_energy_values
                    );
                }
                continue;
            }
            let t = p.timestamp.unix_nanos();
            if self.intensity.outside_series(t) {
                self.stats.before_series += 1;
                if self.stats.before_series.is_power_of_two() {
                    log::warn!(
                        "energy-to-carbon: energy measured before the first row of the intensity time series; that row's intensity is used ({} points so far)",
                        self.stats.before_series
                    );
                }
            }
            let mut attributes = Vec::with_capacity(p.attributes.len() + 3);
            attributes.extend(p.attributes.iter().cloned());
            attributes.push((Cow::Borrowed("energy_metric"), input.name.clone()));
            attributes.push((Cow::Borrowed("intensity_source"), self.source.clone()));
            attributes.push((Cow::Borrowed("pue"), AttributeValue::F64(self.pue)));
            if self.intensity.is_estimated() {
                attributes.push((
                    Cow::Borrowed("intensity_estimated"),
                    AttributeValue::Bool(true),
                ));
            }
            let point = MeasurementPoint {
                timestamp: p.timestamp,
                metric: self.output,
                resource: p.resource.clone(),
                consumer: p.consumer.clone(),
                value: MeasurementValue::F64(self.carbon_g(energy_j, t)),
                attributes: attributes.into(),
            };
            buffer.push(point);
            self.stats.points += 1;
        }
    }
}

impl Transform for CarbonTransform {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        // Taken out for the loop so that `self` can be borrowed beside it.
        let inputs = self
            .inputs
            .take()
            .unwrap_or_else(|| Self::resolve(ctx.metrics));
        self.add_carbon(buffer, &inputs);
        self.inputs = Some(inputs);
        Ok(())
    }

    fn finish(
        &mut self,
        _buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        log::info!(
            "energy-to-carbon: {} carbon points ({}), {} invalid energy values skipped",
            self.stats.points,
            self.intensity.source(),
            self.stats.invalid_energy_values
        );
        Ok(())
    }
}
