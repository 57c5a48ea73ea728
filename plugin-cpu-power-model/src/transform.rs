//! The estimating transform: reads the machine's `cpu_time` points (procfs)
//! as they pass, and for each poll appends an `estimated_cpu_energy` point
//! per CPU package: the model's power at the poll's utilisation times the
//! interval. It stays off when RAPL energy is measured, unless forced.
//! Input points pass through untouched.

use std::borrow::Cow;

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
};
use alumet::metrics::{MetricId, MetricRegistry, Unit};
use alumet::pipeline::{ElementContext, Transform, TransformError};

use crate::model::PowerCurve;
use crate::topology::Topology;

/// Input metric: CPU time per state, from procfs.
pub const CPU_TIME_METRIC: &str = "cpu_time";
/// The metric whose presence means RAPL is measured (the rapl plugin
/// registers it only when it starts).
pub const RAPL_ENERGY_METRIC: &str = "rapl_consumed_energy";

/// States that count as busy (guest time is already inside user time).
const BUSY_STATES: [&str; 5] = ["user", "nice", "system", "irq", "softirq"];
/// States that count as idle.
const IDLE_STATES: [&str; 2] = ["idle", "iowait"];
/// Time the hypervisor gave to others: part of the interval, not of the utilisation.
const STEAL_STATE: &str = "steal";

/// What the model is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// The curve gives the watts of one vCPU (logical CPU); × vCPUs.
    Vcpu,
    /// The curve gives the watts of one socket; × sockets.
    Socket,
}

/// Counters of what the transform did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelStats {
    /// Polls turned into energy.
    pub intervals: u64,
    /// Energy estimated so far, J.
    pub energy_j: f64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Unresolved,
    Off,
    On {
        cpu_time: MetricId,
        scale: f64,
        /// A gauge procfs's system source emits at every poll, the first
        /// included (where `cpu_time` has no delta yet).
        poll_marker: Option<MetricId>,
    },
}

/// Emitted by procfs's system source at every poll, the first one included.
pub const SYSTEM_POLL_MARKER_METRIC: &str = "tasks_running";

#[derive(Debug, Default, Clone, Copy)]
struct Poll {
    busy_s: f64,
    idle_s: f64,
    steal_s: f64,
}

/// The transform. The plugin adds it before energy-attribution, so that
/// the estimate is attributed like RAPL's measurement.
pub struct PowerModelTransform {
    curve: PowerCurve,
    per: Per,
    topology: Topology,
    force: bool,
    output: MetricId,
    model: AttributeValue,
    state: State,
    pending: Option<(Timestamp, Poll)>,
    /// Whether a point was emitted yet (the first one, of zero joules at
    /// procfs's first poll, gives the next interval its start).
    started: bool,
    stats: ModelStats,
}

impl PowerModelTransform {
    /// A transform applying `curve` per `per` on a machine of `topology`.
    pub fn new(
        curve: PowerCurve,
        per: Per,
        topology: Topology,
        force: bool,
        output: MetricId,
    ) -> Self {
        let model = AttributeValue::Str(Cow::Owned(model_name(&curve, per, &topology)));
        Self {
            curve,
            per,
            topology,
            force,
            output,
            model,
            state: State::Unresolved,
            pending: None,
            started: false,
            stats: ModelStats::default(),
        }
    }

    /// What the transform did so far.
    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Whether the model runs (false before the first buffer).
    pub fn is_on(&self) -> bool {
        matches!(self.state, State::On { .. })
    }

    fn resolve(&self, metrics: &MetricRegistry) -> State {
        if metrics.by_name(RAPL_ENERGY_METRIC).is_some() && !self.force {
            log::info!("cpu-power-model: RAPL energy is measured, so no estimate is made (set force = true to estimate anyway)");
            return State::Off;
        }
        let Some(id) = metrics.by_name(CPU_TIME_METRIC) else {
            log::warn!("cpu-power-model: {CPU_TIME_METRIC} is not measured (enable the procfs plugin with system = true); no CPU energy is estimated");
            return State::Off;
        };
        match metrics.get(id) {
            Some(m) if m.unit.base == Unit::Second => State::On {
                cpu_time: id,
                scale: m.unit.prefix.factor(),
                poll_marker: metrics.by_name(SYSTEM_POLL_MARKER_METRIC),
            },
            _ => {
                log::warn!("cpu-power-model: {CPU_TIME_METRIC} is not in seconds; no CPU energy is estimated");
                State::Off
            }
        }
    }

    /// Units the curve is multiplied by.
    fn units(&self) -> f64 {
        match self.per {
            Per::Vcpu => f64::from(self.topology.vcpus),
            Per::Socket => self.topology.packages.len() as f64,
        }
    }

    /// Energy over a poll, J, and the utilisation it was computed from.
    pub fn energy_of(&self, busy_s: f64, idle_s: f64, steal_s: f64) -> Option<(f64, f64)> {
        let active = busy_s + idle_s;
        if !(active.is_finite() && active > 0.0 && busy_s >= 0.0 && idle_s >= 0.0) {
            return None;
        }
        let utilisation = busy_s / active;
        let interval_s = (active + steal_s.max(0.0)) / f64::from(self.topology.vcpus.max(1));
        Some((
            self.units() * self.curve.power_w(utilisation) * interval_s,
            utilisation,
        ))
    }

    fn close(&mut self, out: &mut MeasurementBuffer) {
        let Some((timestamp, poll)) = self.pending.take() else {
            return;
        };
        let Some((energy_j, _)) = self.energy_of(poll.busy_s, poll.idle_s, poll.steal_s) else {
            return;
        };
        self.stats.intervals += 1;
        self.stats.energy_j += energy_j;
        self.emit(timestamp, energy_j, out);
    }

    /// One point per package, `energy_j` shared among them.
    fn emit(&mut self, timestamp: Timestamp, energy_j: f64, out: &mut MeasurementBuffer) {
        self.started = true;
        let packages = self.topology.packages.len().max(1) as f64;
        let share = energy_j / packages;
        let idle_w = self.units() * self.curve.power_w(0.0) / packages;
        for &id in &self.topology.packages {
            out.push(MeasurementPoint {
                timestamp,
                metric: self.output,
                resource: Resource::CpuPackage { id },
                consumer: ResourceConsumer::LocalMachine,
                value: MeasurementValue::F64(share),
                attributes: vec![
                    (Cow::Borrowed("domain"), AttributeValue::from("package")),
                    (Cow::Borrowed("estimated"), AttributeValue::Bool(true)),
                    (Cow::Borrowed("model"), self.model.clone()),
                    (Cow::Borrowed("idle_power_w"), AttributeValue::F64(idle_w)),
                ]
                .into(),
            });
        }
    }
}

/// The `model` attribute: the curve, what it is per, and how many (no commas).
pub fn model_name(curve: &PowerCurve, per: Per, topology: &Topology) -> String {
    match per {
        Per::Vcpu => format!("{} per vCPU x{}", curve.describe(), topology.vcpus),
        Per::Socket => format!(
            "{} per socket x{}",
            curve.describe(),
            topology.packages.len()
        ),
    }
}

impl Transform for PowerModelTransform {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        if matches!(self.state, State::Unresolved) {
            self.state = self.resolve(ctx.metrics);
        }
        let State::On {
            cpu_time,
            scale,
            poll_marker,
        } = self.state
        else {
            return Ok(());
        };
        let mut added = MeasurementBuffer::new();
        for p in buffer.iter() {
            // procfs's first poll: no CPU time yet, but the start of the first interval.
            if !self.started && self.pending.is_none() && Some(p.metric) == poll_marker {
                self.emit(p.timestamp, 0.0, &mut added);
                continue;
            }
            if p.metric != cpu_time
                || p.resource != Resource::LocalMachine
                || p.consumer != ResourceConsumer::LocalMachine
            {
                continue;
            }
            if self.pending.is_some_and(|(t, _)| t != p.timestamp) {
                self.close(&mut added);
            }
            let (_, poll) = self.pending.get_or_insert((p.timestamp, Poll::default()));
            let seconds = p.value.as_f64() * scale;
            match p.attr("state").map(ToString::to_string).as_deref() {
                Some(s) if BUSY_STATES.contains(&s) => poll.busy_s += seconds,
                Some(s) if IDLE_STATES.contains(&s) => poll.idle_s += seconds,
                Some(STEAL_STATE) => poll.steal_s += seconds,
                _ => {}
            }
        }
        // procfs puts every state of a poll in the same buffer.
        self.close(&mut added);
        buffer.extend(added);
        Ok(())
    }

    fn finish(
        &mut self,
        _buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        if self.is_on() {
            log::info!(
                "cpu-power-model: {:.3} J estimated over {} intervals ({})",
                self.stats.energy_j,
                self.stats.intervals,
                self.model
            );
        }
        Ok(())
    }
}
