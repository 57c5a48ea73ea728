//! The transform: turns each sensor's power into energy with the trapezoid
//! rule over the points' own timestamps, so that the result depends only on
//! the data (not on when buffers arrive). The first power point of a sensor
//! gives 0 J: its timestamp is where the sensor's first interval starts.
//! Power points pass through untouched.

use std::collections::HashMap;

use alumet::measurement::{MeasurementBuffer, MeasurementPoint, Timestamp};
use alumet::metrics::MetricId;
use alumet::pipeline::{ElementContext, Transform, TransformError};

/// The transform of the plugin.
#[derive(Debug)]
pub struct PowerToEnergy {
    power: MetricId,
    energy: MetricId,
    /// Each sensor's previous point: time and watts.
    previous: HashMap<String, (Timestamp, f64)>,
}

impl PowerToEnergy {
    /// Integrates `power` points into `energy` points.
    pub fn new(power: MetricId, energy: MetricId) -> Self {
        Self {
            power,
            energy,
            previous: HashMap::new(),
        }
    }
}

/// Joules between two power readings: their mean times the time between them.
pub fn trapezoid(from: (Timestamp, f64), to: (Timestamp, f64)) -> f64 {
    let seconds = to.0.unix_nanos().saturating_sub(from.0.unix_nanos()) as f64 / 1e9;
    (from.1 + to.1) / 2.0 * seconds
}

impl Transform for PowerToEnergy {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        let mut energy = Vec::new();
        for p in buffer.iter().filter(|p| p.metric == self.power) {
            let sensor = p
                .attr("sensor")
                .map(ToString::to_string)
                .unwrap_or_default();
            let now = (p.timestamp, p.value.as_f64());
            let joules = match self.previous.insert(sensor, now) {
                // A point older than the previous one (out of order): nothing
                // to integrate, and the later point stays the reference.
                Some(before) if before.0 > now.0 => continue,
                Some(before) => trapezoid(before, now),
                None => 0.0,
            };
            let mut point: MeasurementPoint = p.clone();
            point.metric = self.energy;
            point.value = joules.into();
            energy.push(point);
        }
        buffer.extend(energy);
        Ok(())
    }
}
