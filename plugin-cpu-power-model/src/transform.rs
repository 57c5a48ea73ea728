//! The estimating transform: reads the machine's `cpu_time` points (procfs)
//! as they pass, and for each poll interval appends an
//! `estimated_cpu_energy` point per CPU package: the model's power at the
//! interval's utilisation times its length.
//!
//! The estimate takes over by itself, interval by interval: it is emitted
//! for the intervals that no CPU energy sensor measured, and left out for
//! those a sensor did. Which is which is read from the data, not from what
//! is registered: a `rapl_consumed_energy` point of a package or psys
//! domain measures the rapl interval it ends; an `energy_unmeasured_time`
//! point (a frozen counter) or the absence of any rapl point does not. An
//! estimate waits (at most `max_delay`, in the data's time) for the rapl
//! point that says; where no rapl metric exists at all, it goes at once.
//! Where a run of estimates begins, a 0 J point marks its start, so that
//! every estimate point covers exactly the interval since the previous one.
//! Input points pass through untouched.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
};
use alumet::metrics::{MetricId, MetricRegistry, Unit};
use alumet::pipeline::{ElementContext, Transform, TransformError};

use crate::model::PowerModel;
use crate::topology::Topology;

/// Input metric: CPU time per state, from procfs.
pub const CPU_TIME_METRIC: &str = "cpu_time";
/// The measured CPU energy the estimate stands in for (rapl).
pub const RAPL_ENERGY_METRIC: &str = "rapl_consumed_energy";
/// Intervals a sensor did not measure, with the metric they stand in for
/// (`energy_metric`).
pub const UNMEASURED_METRIC: &str = "energy_unmeasured_time";

/// States that count as busy (guest time is already inside user time).
const BUSY_STATES: [&str; 5] = ["user", "nice", "system", "irq", "softirq"];
/// States that count as idle.
const IDLE_STATES: [&str; 2] = ["idle", "iowait"];
/// Time the hypervisor gave to others: part of the interval, not of the utilisation.
const STEAL_STATE: &str = "steal";
/// The rapl domains that stand for the CPU's energy.
const CPU_DOMAINS: [&str; 2] = ["package", "psys"];

/// Counters of what the transform did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelStats {
    /// Intervals estimated (energy points emitted, start markers apart).
    pub intervals: u64,
    /// Energy estimated so far, J.
    pub energy_j: f64,
    /// Intervals left out because a sensor measured them.
    pub intervals_measured_elsewhere: u64,
}

#[derive(Debug, Clone, Copy)]
struct Inputs {
    cpu_time: MetricId,
    scale: f64,
    /// A gauge procfs's system source emits at every poll, the first
    /// included (where `cpu_time` has no delta yet).
    poll_marker: Option<MetricId>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Unresolved,
    Off,
    On(Inputs),
}

/// Emitted by procfs's system source at every poll, the first one included.
pub const SYSTEM_POLL_MARKER_METRIC: &str = "tasks_running";

#[derive(Debug, Default, Clone, Copy)]
struct Poll {
    busy_s: f64,
    idle_s: f64,
    steal_s: f64,
}

/// An estimate waiting to know whether a sensor measured its interval.
#[derive(Debug, Clone, Copy)]
struct Held {
    start: Timestamp,
    end: Timestamp,
    energy_j: f64,
}

/// What the rapl points say about the rapl interval ending at a timestamp.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Coverage {
    Measured,
    NotMeasured,
}

/// The transform. The plugin adds it before energy-attribution, so that
/// the estimate is attributed like RAPL's measurement.
pub struct PowerModelTransform {
    model: PowerModel,
    topology: Topology,
    force: bool,
    max_delay_ns: u64,
    output: MetricId,
    model_attribute: AttributeValue,
    idle_attribute: AttributeValue,
    state: State,
    /// The procfs poll being summed (its timestamp) and the one before it.
    pending: Option<(Timestamp, Poll)>,
    last_poll: Option<Timestamp>,
    held: VecDeque<Held>,
    /// rapl timestamps and whether they ended a measured interval.
    rapl: BTreeMap<Timestamp, Coverage>,
    /// rapl series (resource, domain) seen: the first point of each is a
    /// start, not a measurement.
    rapl_series: Vec<(Resource, String)>,
    /// End of the last estimate emitted (the start of a run continues it).
    last_emitted: Option<Timestamp>,
    /// Latest timestamp seen in the data.
    now: Option<Timestamp>,
    /// Whether estimates are being emitted (for the log's transitions).
    estimating: Option<bool>,
    stats: ModelStats,
}

impl PowerModelTransform {
    /// A transform applying `model` on a machine of `topology`; `force`:
    /// estimate even where a sensor measures; an estimate waits at most
    /// `max_delay_ns` (data time) for the sensor's verdict.
    pub fn new(
        model: PowerModel,
        topology: Topology,
        force: bool,
        max_delay_ns: u64,
        output: MetricId,
    ) -> Self {
        let packages = topology.packages.len().max(1) as f64;
        let model_attribute = AttributeValue::Str(Cow::Owned(model.name.clone()));
        let idle_attribute = AttributeValue::F64(model.power_w(0.0) / packages);
        Self {
            model,
            topology,
            force,
            max_delay_ns,
            output,
            model_attribute,
            idle_attribute,
            state: State::Unresolved,
            pending: None,
            last_poll: None,
            held: VecDeque::new(),
            rapl: BTreeMap::new(),
            rapl_series: Vec::new(),
            last_emitted: None,
            now: None,
            estimating: None,
            stats: ModelStats::default(),
        }
    }

    /// What the transform did so far.
    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Whether the model can run (false before the first buffer, and
    /// without procfs's `cpu_time`).
    pub fn is_on(&self) -> bool {
        matches!(self.state, State::On(_))
    }

    fn resolve(metrics: &MetricRegistry) -> State {
        let Some(id) = metrics.by_name(CPU_TIME_METRIC) else {
            log::warn!("cpu-power-model: {CPU_TIME_METRIC} is not measured (enable the procfs plugin with system = true); no CPU energy is estimated");
            return State::Off;
        };
        match metrics.get(id) {
            Some(m) if m.unit.base == Unit::Second => State::On(Inputs {
                cpu_time: id,
                scale: m.unit.prefix.factor(),
                poll_marker: metrics.by_name(SYSTEM_POLL_MARKER_METRIC),
            }),
            _ => {
                log::warn!("cpu-power-model: {CPU_TIME_METRIC} is not in seconds; no CPU energy is estimated");
                State::Off
            }
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
        Some((self.model.power_w(utilisation) * interval_s, utilisation))
    }

    fn advance_now(&mut self, t: Timestamp) {
        self.now = Some(self.now.map_or(t, |n| n.max(t)));
    }

    /// Notes what a rapl point says about the interval it ends.
    fn note_rapl(&mut self, p: &MeasurementPoint, measured: bool) {
        let domain = p
            .attr("domain")
            .map(ToString::to_string)
            .unwrap_or_default();
        if !CPU_DOMAINS.contains(&domain.as_str()) {
            return;
        }
        self.advance_now(p.timestamp);
        let mut coverage = if measured {
            Coverage::Measured
        } else {
            Coverage::NotMeasured
        };
        if measured {
            let key = (p.resource.clone(), domain);
            if !self.rapl_series.contains(&key) {
                // A series' first point starts it: it measures nothing before.
                self.rapl_series.push(key);
                coverage = Coverage::NotMeasured;
            }
        }
        let entry = self.rapl.entry(p.timestamp).or_insert(coverage);
        if coverage == Coverage::Measured {
            *entry = Coverage::Measured;
        }
    }

    /// The procfs poll being summed ends: its estimate is held (or sent).
    fn close_poll(&mut self) {
        let Some((end, poll)) = self.pending.take() else {
            return;
        };
        let start = self.last_poll.replace(end);
        let Some(start) = start else { return };
        let Some((energy_j, _)) = self.energy_of(poll.busy_s, poll.idle_s, poll.steal_s) else {
            return;
        };
        self.held.push_back(Held {
            start,
            end,
            energy_j,
        });
    }

    /// Sends or drops every held estimate that can be decided. `finish`:
    /// the sources have stopped, nothing more will say.
    fn decide(&mut self, rapl_exists: bool, finish: bool, out: &mut MeasurementBuffer) {
        let now = self.now.map_or(0, |t| t.unix_nanos());
        while let Some(h) = self.held.front().copied() {
            let verdict = if self.force || !rapl_exists {
                Some(Coverage::NotMeasured)
            } else {
                match self.rapl.range(h.end..).next() {
                    Some((_, c)) => Some(*c),
                    None if finish => Some(Coverage::NotMeasured),
                    None if h.end.unix_nanos().saturating_add(self.max_delay_ns) <= now => {
                        Some(Coverage::NotMeasured)
                    }
                    None => None,
                }
            };
            let Some(verdict) = verdict else { break };
            self.held.pop_front();
            match verdict {
                Coverage::Measured => {
                    self.stats.intervals_measured_elsewhere += 1;
                    self.log_transition(false);
                }
                Coverage::NotMeasured => {
                    self.log_transition(true);
                    if self.last_emitted != Some(h.start) {
                        self.emit(h.start, 0.0, out);
                    }
                    self.stats.intervals += 1;
                    self.stats.energy_j += h.energy_j;
                    self.emit(h.end, h.energy_j, out);
                    self.last_emitted = Some(h.end);
                }
            }
        }
        // rapl points older than anything still held are not needed.
        if let Some(oldest) = self.held.front().map(|h| h.end) {
            self.rapl = self.rapl.split_off(&oldest);
        } else if let Some(last) = self.last_poll {
            self.rapl = self.rapl.split_off(&last);
        }
    }

    fn log_transition(&mut self, estimating: bool) {
        if self.estimating == Some(estimating) {
            return;
        }
        let first = self.estimating.is_none();
        self.estimating = Some(estimating);
        if estimating {
            log::info!(
                "cpu-power-model: no CPU energy sensor measures {}: estimating it with the model {}",
                if first { "here" } else { "now" },
                self.model.name
            );
        } else if !first {
            log::info!("cpu-power-model: a CPU energy sensor measures again: estimate off");
        }
    }

    /// One point per package, `energy_j` shared among them.
    fn emit(&mut self, timestamp: Timestamp, energy_j: f64, out: &mut MeasurementBuffer) {
        let packages = self.topology.packages.len().max(1) as f64;
        let share = energy_j / packages;
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
                    (Cow::Borrowed("model"), self.model_attribute.clone()),
                    (Cow::Borrowed("idle_power_w"), self.idle_attribute.clone()),
                ]
                .into(),
            });
        }
    }
}

impl Transform for PowerModelTransform {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        if matches!(self.state, State::Unresolved) {
            self.state = Self::resolve(ctx.metrics);
        }
        let State::On(inputs) = self.state else {
            return Ok(());
        };
        let rapl = ctx.metrics.by_name(RAPL_ENERGY_METRIC);
        let unmeasured = ctx.metrics.by_name(UNMEASURED_METRIC);
        for p in buffer.iter() {
            if rapl == Some(p.metric) {
                self.note_rapl(p, true);
                continue;
            }
            if unmeasured.is_some() && unmeasured == Some(p.metric) {
                let of_rapl = p
                    .attr("energy_metric")
                    .is_some_and(|m| m.to_string() == RAPL_ENERGY_METRIC);
                if of_rapl {
                    self.note_rapl(p, false);
                }
                continue;
            }
            let is_marker = Some(p.metric) == inputs.poll_marker;
            let is_cpu_time = p.metric == inputs.cpu_time
                && p.resource == Resource::LocalMachine
                && p.consumer == ResourceConsumer::LocalMachine;
            if !(is_marker || is_cpu_time) {
                continue;
            }
            self.advance_now(p.timestamp);
            if self.pending.is_some_and(|(t, _)| t != p.timestamp) {
                self.close_poll();
            }
            let (_, poll) = self.pending.get_or_insert((p.timestamp, Poll::default()));
            if !is_cpu_time {
                continue;
            }
            let seconds = p.value.as_f64() * inputs.scale;
            match p.attr("state").map(ToString::to_string).as_deref() {
                Some(s) if BUSY_STATES.contains(&s) => poll.busy_s += seconds,
                Some(s) if IDLE_STATES.contains(&s) => poll.idle_s += seconds,
                Some(STEAL_STATE) => poll.steal_s += seconds,
                _ => {}
            }
        }
        // procfs puts every state of a poll in the same buffer.
        self.close_poll();
        let mut added = MeasurementBuffer::new();
        self.decide(rapl.is_some(), false, &mut added);
        buffer.extend(added);
        Ok(())
    }

    fn finish(
        &mut self,
        buffer: &mut MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        if !self.is_on() {
            return Ok(());
        }
        self.close_poll();
        let rapl_exists = ctx.metrics.by_name(RAPL_ENERGY_METRIC).is_some();
        self.decide(rapl_exists, true, buffer);
        if self.stats.intervals > 0 {
            log::info!(
                "cpu-power-model: {:.3} J estimated over {} intervals ({}); {} intervals measured by a sensor",
                self.stats.energy_j,
                self.stats.intervals,
                self.model.name,
                self.stats.intervals_measured_elsewhere
            );
        }
        Ok(())
    }
}
