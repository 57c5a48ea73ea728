//! The source: one per BMC, on its own poller thread, so that a BMC that
//! takes seconds to answer (or the full `timeout`) delays only its own points.
//!
//! Each poll reads each chassis's resource(s) and turns the reading into
//! points:
//!
//! - a cumulative counter (J, Wh or kWh) through `alumet_energy`'s
//!   [`EnergyCounter`] and [`CounterTruth`]: an energy point only when the
//!   counter advanced, covering the whole time since the previous energy
//!   point (a kWh counter advances by 0.001 kWh = 3 600 J steps: at 300 W
//!   that is one step every 12 s, so most 10 s polls see no change, and a
//!   0 J point there would be false); a counter still for `freeze_after` is
//!   frozen and its intervals are `energy_unmeasured_time`; a counter that
//!   goes back (a BMC reset) or jumps beyond what a node can draw is too.
//!   A poll that fails costs nothing: the next reading's difference covers
//!   the gap, as counted by the BMC.
//! - power, integrated with [`PowerIntegrator`] over the polls' timestamps
//!   (`integrated=true`); a poll that fails breaks the chain, and the gap,
//!   from the last reading to the next, is `energy_unmeasured_time`
//!   (`reason=unreadable`), never integrated blindly.
//!
//! A BMC that stops answering (timeout, 503, refused credentials) is one
//! warning line, and one more when it answers again: not one per poll.

use std::sync::Arc;
use std::time::Duration;

use alumet::measurement::{
    AttributeValue, Attributes, MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer,
    Timestamp,
};
use alumet::metrics::MetricId;
use alumet::pipeline::{PollError, Source};
use alumet_energy::{CounterTruth, EnergyCounter, PowerIntegrator, Transition, Verdict, Wrap};
use serde_json::Value;

use crate::client::{Client, FetchError};
use crate::discovery::{ChassisPlan, EnergyUnit};

/// The most a node (or an enclosure of nodes) may draw, W: a counter's
/// advance that means more than twice this over its interval is a jump,
/// not energy.
pub const MAX_NODE_POWER_W: f64 = 50_000.0;

/// The shortest time a counter may stay still before it is frozen: a
/// 0.001 kWh step takes 15 min below 4 W, which no node draws.
pub const MIN_FREEZE_AFTER: Duration = Duration::from_secs(15 * 60);

/// The metrics the source emits (the ids every power sensor's source has).
pub use alumet_energy::EnergyMetricIds as SourceMetrics;

/// How a chassis's energy is known.
enum Mode {
    Counter {
        counter: EnergyCounter,
        truth: CounterTruth,
        unit: EnergyUnit,
        /// Where the open interval (not yet reported) began.
        open_since: Option<Timestamp>,
        previous_poll: Option<Timestamp>,
    },
    Integrated {
        integrator: PowerIntegrator,
        /// The last poll that read the power.
        last_read: Option<Timestamp>,
    },
}

/// One measured chassis.
struct Chassis {
    plan: ChassisPlan,
    mode: Mode,
    energy_attributes: Attributes,
    power_attributes: Attributes,
    unmeasured_attributes: Vec<(&'static str, AttributeValue)>,
}

fn attributes(pairs: Vec<(&'static str, AttributeValue)>) -> Attributes {
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v))
        .collect::<Vec<_>>()
        .into()
}

impl Chassis {
    fn new(plan: ChassisPlan) -> Self {
        let base = |sensor: &str| {
            vec![
                ("domain", AttributeValue::from("node")),
                ("chassis", AttributeValue::from(plan.id.clone())),
                ("sensor", AttributeValue::from(sensor.to_owned())),
            ]
        };
        let (mode, energy_sensor, integrated) = match (&plan.energy, &plan.power) {
            (Some((field, unit)), _) => (
                Mode::Counter {
                    counter: EnergyCounter::new(Wrap::At64Bits),
                    truth: CounterTruth::new(),
                    unit: *unit,
                    open_since: None,
                    previous_poll: None,
                },
                field.sensor.clone(),
                false,
            ),
            (None, power) => (
                Mode::Integrated {
                    integrator: PowerIntegrator::new(),
                    last_read: None,
                },
                power.as_ref().map(|p| p.sensor.clone()).unwrap_or_default(),
                true,
            ),
        };
        let mut energy = base(&energy_sensor);
        let mut unmeasured = base(&energy_sensor);
        unmeasured.push(("energy_metric", AttributeValue::from(crate::ENERGY_METRIC)));
        if integrated {
            energy.push(("integrated", AttributeValue::from(true)));
        }
        let power_sensor = plan.power.as_ref().map(|p| p.sensor.clone());
        Self {
            energy_attributes: attributes(energy),
            power_attributes: attributes(base(power_sensor.as_deref().unwrap_or_default())),
            unmeasured_attributes: unmeasured,
            mode,
            plan,
        }
    }

    /// A poll that could not read this chassis.
    fn gap(&mut self) {
        if let Mode::Integrated { integrator, .. } = &mut self.mode {
            integrator.reset();
        }
    }

    /// Turns the resources read at `t` into points.
    fn take(
        &mut self,
        resources: &[(String, Value)],
        t: Timestamp,
        into: &mut MeasurementBuffer,
        metrics: &SourceMetrics,
        freeze_after: Duration,
    ) -> Result<(), String> {
        let resource_of = |path: &str| {
            resources
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("{path} was not read"))
        };
        let point = |metric: MetricId, value: f64, attributes: &Attributes| {
            MeasurementPoint::new(
                t,
                metric,
                Resource::LocalMachine,
                ResourceConsumer::LocalMachine,
                value,
            )
            .with_attributes(attributes)
        };
        let unmeasured =
            |seconds: f64, reason: &'static str, base: &[(&'static str, AttributeValue)]| {
                let mut pairs = base.to_vec();
                pairs.push(("reason", AttributeValue::from(reason)));
                point(metrics.unmeasured, seconds, &attributes(pairs))
            };
        let power = match &self.plan.power {
            Some(field) => {
                // A power above what a node can draw is no reading: two
                // readings of 1e308 W integrated to infinite joules (found
                // by fuzzing, target redfish_documents).
                let w = field
                    .read(resource_of(&field.path)?)
                    .filter(|w| w.is_finite() && (0.0..=MAX_NODE_POWER_W).contains(w));
                if w.is_none() && self.plan.energy.is_none() {
                    return Err(format!(
                        "chassis {}: {} is not a power in watts (0 to {MAX_NODE_POWER_W} W)",
                        self.plan.id, field.sensor
                    ));
                }
                w
            }
            None => None,
        };
        if let Some(w) = power {
            into.push(point(metrics.power, w, &self.power_attributes));
        }
        match &mut self.mode {
            Mode::Counter {
                counter,
                truth,
                unit,
                open_since,
                previous_poll,
            } => {
                let Some((field, _)) = &self.plan.energy else {
                    return Ok(());
                };
                let value = field
                    .read(resource_of(&field.path)?)
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| {
                        format!(
                            "chassis {}: {} is not an energy reading",
                            self.plan.id, field.sensor
                        )
                    })?;
                // Millijoules: kWh, Wh and J readings all become integers.
                let millijoules = (value * unit.joules() * 1000.0).round();
                if millijoules >= u64::MAX as f64 {
                    return Err(format!(
                        "chassis {}: {} = {value} is out of range",
                        self.plan.id, field.sensor
                    ));
                }
                // A Redfish counter does not wrap: any step back is a reset.
                let reading = counter.update(millijoules as u64, 0);
                let open = open_since.unwrap_or(t);
                let since_previous =
                    previous_poll.map_or(Duration::ZERO, |p| t.saturating_duration_since(p));
                *previous_poll = Some(t);
                // Stillness is counted poll by poll; an advance is judged
                // against the whole interval it closes.
                let elapsed = match reading {
                    alumet_energy::Reading::Advanced(0) => since_previous,
                    _ => t.saturating_duration_since(open),
                };
                // A quantised counter may tick by a whole step in a short
                // interval: the bound allows one step more than the power.
                let max_power_w =
                    MAX_NODE_POWER_W + unit.coarsest_step_j() / elapsed.as_secs_f64().max(1e-3);
                let (verdict, transition) =
                    truth.judge(reading, 1e-3, elapsed, Some(freeze_after), max_power_w);
                match transition {
                    Some(Transition::Froze { still_for }) => log::warn!(
                        "redfish: chassis {}: {} has not advanced for {:.0} s: frozen; its intervals are reported as energy_unmeasured_time until it counts again",
                        self.plan.id,
                        field.sensor,
                        still_for.as_secs_f64()
                    ),
                    Some(Transition::Thawed { .. }) => log::warn!(
                        "redfish: chassis {}: {} counts again",
                        self.plan.id,
                        field.sensor
                    ),
                    None => {}
                }
                match verdict {
                    // The start of the first interval.
                    Verdict::Start => {
                        into.push(point(metrics.energy, 0.0, &self.energy_attributes))
                    }
                    // Not advanced: the interval stays open (no false 0 J).
                    Verdict::Consumed(0.0) => return Ok(()),
                    Verdict::Consumed(j) => {
                        into.push(point(metrics.energy, j, &self.energy_attributes))
                    }
                    Verdict::Unmeasured(why) => {
                        if let alumet_energy::Unmeasured::Implausible { joules, bound_j } = why {
                            log::warn!(
                                "redfish: chassis {}: {} advanced by {joules:.0} J in {:.1} s, more than a node can draw ({bound_j:.0} J): skipped, reported as energy_unmeasured_time",
                                self.plan.id,
                                field.sensor,
                                t.saturating_duration_since(open).as_secs_f64()
                            );
                        }
                        into.push(unmeasured(
                            t.saturating_duration_since(open).as_secs_f64(),
                            why.as_str(),
                            &self.unmeasured_attributes,
                        ));
                    }
                }
                *open_since = Some(t);
            }
            Mode::Integrated {
                integrator,
                last_read,
            } => {
                let Some(w) = power else {
                    return Ok(());
                };
                let was_primed = integrator.is_primed();
                let joules = integrator.update(t, w);
                match (was_primed, joules, *last_read) {
                    (true, Some(j), _) => {
                        into.push(point(metrics.energy, j, &self.energy_attributes))
                    }
                    // Same timestamp, or the clock went back: nothing to add.
                    (true, None, _) => {}
                    // The first reading: the start of the first interval.
                    (false, _, None) => {
                        into.push(point(metrics.energy, 0.0, &self.energy_attributes))
                    }
                    // The first reading after polls that failed: the gap
                    // was not measured.
                    (false, _, Some(previous)) => into.push(unmeasured(
                        t.saturating_duration_since(previous).as_secs_f64(),
                        "unreadable",
                        &self.unmeasured_attributes,
                    )),
                }
                *last_read = Some(t);
            }
        }
        Ok(())
    }
}

/// Failing polls in a row.
#[derive(Debug, Clone, Copy)]
struct Failing {
    since: Timestamp,
    polls: u64,
}

/// The source of one BMC.
pub struct BmcSource {
    client: Arc<Client>,
    chassis: Vec<Chassis>,
    metrics: SourceMetrics,
    freeze_after: Duration,
    failing: Option<Failing>,
}

impl BmcSource {
    /// A source reading `plans` through `client`; a counter still for
    /// `freeze_after` is frozen.
    pub fn new(
        client: Arc<Client>,
        plans: Vec<ChassisPlan>,
        metrics: SourceMetrics,
        freeze_after: Duration,
    ) -> Self {
        Self {
            client,
            chassis: plans.into_iter().map(Chassis::new).collect(),
            metrics,
            freeze_after,
            failing: None,
        }
    }

    fn track(&mut self, error: Option<String>, t: Timestamp) {
        let endpoint = self.client.endpoint();
        match (error, &mut self.failing) {
            (Some(e), None) => {
                log::warn!(
                    "redfish: {endpoint}: {e}; its polls are skipped (power intervals reported as energy_unmeasured_time) until it answers"
                );
                self.failing = Some(Failing { since: t, polls: 1 });
            }
            (Some(_), Some(f)) => f.polls += 1,
            (None, Some(f)) => {
                log::warn!(
                    "redfish: {endpoint} answers again, after {} failed polls ({:.1} s)",
                    f.polls,
                    t.saturating_duration_since(f.since).as_secs_f64()
                );
                self.failing = None;
            }
            (None, None) => {}
        }
    }
}

impl Source for BmcSource {
    fn poll(&mut self, into: &mut MeasurementBuffer, t: Timestamp) -> Result<(), PollError> {
        let mut error: Option<String> = None;
        let mut unreachable = false;
        for c in &mut self.chassis {
            if unreachable {
                c.gap();
                continue;
            }
            let mut resources = Vec::new();
            let mut failed = None;
            for path in c.plan.paths() {
                match self.client.get(path) {
                    Ok(v) => resources.push((path.to_owned(), v)),
                    Err(e) => {
                        // No answer at all: the other chassis of the same
                        // BMC would wait as long; skipped this poll.
                        unreachable = matches!(
                            e,
                            FetchError::Transport(_) | FetchError::Unauthorized { .. }
                        );
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            let result = match failed {
                Some(e) => Err(e),
                None => c.take(&resources, t, into, &self.metrics, self.freeze_after),
            };
            if let Err(e) = result {
                c.gap();
                error.get_or_insert(e);
            }
        }
        self.track(error, t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Field;
    use crate::testing::FakeBmc;
    use alumet::measurement::MeasurementValue;
    use serde_json::json;

    const ENV: &str = "/redfish/v1/Chassis/1U/EnvironmentMetrics";
    fn metrics() -> SourceMetrics {
        let mut r = alumet::metrics::MetricRegistry::new();
        SourceMetrics {
            energy: r.register(crate::energy_metric()).unwrap(),
            power: r.register(crate::power_metric()).unwrap(),
            unmeasured: r.register(alumet_energy::unmeasured_metric()).unwrap(),
        }
    }

    fn at(s: f64) -> Timestamp {
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + (s * 1e9) as u64)
    }

    fn plan(energy: Option<EnergyUnit>) -> ChassisPlan {
        let field = |name: &str| Field {
            path: ENV.into(),
            pointer: format!("/{name}/Reading"),
            sensor: format!("EnvironmentMetrics.{name}"),
        };
        ChassisPlan {
            id: "1U".into(),
            chassis_type: "RackMount".into(),
            energy: energy.map(|u| (field("EnergykWh"), u)),
            power: Some(field("PowerWatts")),
        }
    }

    fn source(bmc: &FakeBmc, energy: Option<EnergyUnit>) -> BmcSource {
        let client = bmc.client("u", "p");
        client.login().unwrap();
        BmcSource::new(
            Arc::new(client),
            vec![plan(energy)],
            metrics(),
            MIN_FREEZE_AFTER,
        )
    }

    /// (metric index, value, reason) of each point of one poll.
    fn poll(s: &mut BmcSource, t: f64) -> Vec<(u64, f64, Option<String>)> {
        let mut buffer = Vec::new();
        s.poll(&mut buffer, at(t)).unwrap();
        buffer
            .iter()
            .map(|p| {
                let MeasurementValue::F64(v) = p.value else {
                    panic!()
                };
                let reason = p.attr("reason").map(|r| r.to_string());
                (p.metric.index() as u64, v, reason)
            })
            .collect()
    }

    fn readings(bmc: &FakeBmc, kwh: f64, watts: f64) {
        bmc.put(
            ENV,
            json!({"EnergykWh": {"Reading": kwh}, "PowerWatts": {"Reading": watts}}),
        );
    }

    #[test]
    fn a_kwh_counter_reports_energy_only_when_it_advances() {
        let bmc = FakeBmc::new("u", "p");
        let mut s = source(&bmc, Some(EnergyUnit::KilowattHours));
        readings(&bmc, 100.0, 300.0);
        assert_eq!(poll(&mut s, 0.0), [(1, 300.0, None), (0, 0.0, None)]);
        // Not advanced: the power gauge only, no false 0 J.
        assert_eq!(poll(&mut s, 10.0), [(1, 300.0, None)]);
        // One 0.001 kWh step: 3600 J, over the 20 s since the last point.
        readings(&bmc, 100.001, 300.0);
        assert_eq!(poll(&mut s, 20.0), [(1, 300.0, None), (0, 3600.0, None)]);
    }

    #[test]
    fn a_still_counter_is_frozen_and_a_step_back_is_a_reset() {
        let bmc = FakeBmc::new("u", "p");
        let mut s = source(&bmc, Some(EnergyUnit::KilowattHours));
        readings(&bmc, 100.0, 300.0);
        poll(&mut s, 0.0);
        let mut t = 0.0;
        let mut frozen = Vec::new();
        while t < 1000.0 {
            t += 100.0;
            frozen.extend(poll(&mut s, t).into_iter().filter(|p| p.0 == 2));
        }
        // Still from 0 s: frozen from 900 s (15 min), its whole interval unmeasured.
        assert_eq!(
            frozen,
            [
                (2, 900.0, Some("frozen".into())),
                (2, 100.0, Some("frozen".into()))
            ]
        );
        readings(&bmc, 3.0, 300.0);
        assert_eq!(
            poll(&mut s, 1010.0),
            [(1, 300.0, None), (2, 10.0, Some("reset".into()))]
        );
        readings(&bmc, 3.001, 300.0);
        assert_eq!(poll(&mut s, 1020.0), [(1, 300.0, None), (0, 3600.0, None)]);
    }

    #[test]
    fn power_is_integrated_and_a_gap_is_unmeasured_with_one_line() {
        let bmc = FakeBmc::new("u", "p");
        let mut s = source(&bmc, None);
        readings(&bmc, 0.0, 100.0);
        assert_eq!(poll(&mut s, 0.0), [(1, 100.0, None), (0, 0.0, None)]);
        readings(&bmc, 0.0, 200.0);
        // (100 + 200) / 2 W × 10 s
        assert_eq!(poll(&mut s, 10.0), [(1, 200.0, None), (0, 1500.0, None)]);
        bmc.fault(Some(Ok(503)));
        assert!(poll(&mut s, 20.0).is_empty());
        assert!(poll(&mut s, 30.0).is_empty());
        assert_eq!(s.failing.map(|f| f.polls), Some(2));
        bmc.fault(None);
        assert_eq!(
            poll(&mut s, 40.0),
            [(1, 200.0, None), (2, 30.0, Some("unreadable".into()))]
        );
        assert!(s.failing.is_none());
        assert_eq!(poll(&mut s, 50.0), [(1, 200.0, None), (0, 2000.0, None)]);
    }

    #[test]
    fn a_power_above_what_a_node_draws_is_no_reading() {
        // Found by fuzzing (fuzz/regressions/redfish_documents/huge-power):
        // two readings of 1e308 W integrated to an infinite energy.
        let bmc = FakeBmc::new("u", "p");
        let mut s = source(&bmc, None);
        readings(&bmc, 0.0, 1e308);
        assert!(poll(&mut s, 0.0).is_empty());
        assert!(poll(&mut s, 10.0).is_empty());
        assert_eq!(s.failing.map(|f| f.polls), Some(2));
        readings(&bmc, 0.0, MAX_NODE_POWER_W + 1.0);
        assert!(poll(&mut s, 20.0).is_empty());
        readings(&bmc, 0.0, 200.0);
        // The first power read: the start of the first interval.
        assert_eq!(poll(&mut s, 30.0), [(1, 200.0, None), (0, 0.0, None)]);
        assert!(s.failing.is_none());
        assert_eq!(poll(&mut s, 40.0), [(1, 200.0, None), (0, 2000.0, None)]);
        // Beside a counter, the counter's energy still counts; no gauge.
        let mut s = source(&bmc, Some(EnergyUnit::KilowattHours));
        readings(&bmc, 1.0, 1e308);
        assert_eq!(poll(&mut s, 0.0), [(0, 0.0, None)]);
    }

    #[test]
    fn a_counter_spans_a_gap_with_the_bmcs_own_count() {
        let bmc = FakeBmc::new("u", "p");
        let mut s = source(&bmc, Some(EnergyUnit::KilowattHours));
        readings(&bmc, 1.0, 300.0);
        poll(&mut s, 0.0);
        bmc.fault(Some(Err(crate::client::TransportError::Timeout(
            Duration::from_secs(5),
        ))));
        assert!(poll(&mut s, 10.0).is_empty());
        bmc.fault(None);
        readings(&bmc, 1.002, 300.0);
        assert_eq!(poll(&mut s, 20.0), [(1, 300.0, None), (0, 7200.0, None)]);
    }
}
