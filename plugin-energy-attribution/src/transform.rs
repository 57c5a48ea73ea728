//! The attribution transform: reads energy and process activity points as
//! they pass, holds each energy interval back until the activity covering it
//! has arrived, then appends `idle_power`, `attributed_energy` and
//! `unattributed_energy` points. Input points pass through untouched.

use std::borrow::Cow;
use std::collections::HashMap;

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, ResourceConsumer,
    Timestamp,
};
use alumet::metrics::{MetricId, MetricRegistry, Unit};
use alumet::pipeline::{ElementContext, Transform, TransformError};

use crate::activity::Activity;
use crate::cgroups::{CgroupActivity, IntervalToShare};
use crate::domain::{ActivityKind, Domain, EnergyInterval, Inserted};
use crate::idle::{IdlePower, IdlePowerEstimator};
pub use crate::outputs::OutputMetrics;
use crate::Config;

/// Input metric: RAPL energy per domain.
pub const RAPL_ENERGY_METRIC: &str = "rapl_consumed_energy";
/// Input metric: GPU energy.
pub const GPU_ENERGY_METRIC: &str = "gpu_consumed_energy";
/// Input metric: CPU package energy estimated by a power model (cpu-power-model)
/// where RAPL is absent. Attributed like RAPL's; every point derived from it
/// carries `estimated=true`.
pub const ESTIMATED_CPU_ENERGY_METRIC: &str = "estimated_cpu_energy";
/// Input metric: intervals a sensor did not measure (a frozen counter),
/// with the energy metric they stand in for (`energy_metric`). Nothing is
/// attributed over them from that sensor: an estimate covers them.
pub const UNMEASURED_METRIC: &str = "energy_unmeasured_time";
/// Input metric: process CPU time per mode.
pub const PROCESS_CPU_TIME_METRIC: &str = "process_cpu_time";
/// Input metric: process SM utilisation per GPU.
pub const GPU_PROCESS_UTILISATION_METRIC: &str = "gpu_process_sm_utilization";
/// Input metric: cgroup CPU time per mode.
pub const CGROUP_CPU_TIME_METRIC: &str = "cgroup_cpu_time";
/// Metric emitted by the cgroups source at every poll, the first one
/// included: it marks cgroup polls, so the first CPU-time delta gets a known start.
pub const CGROUP_POLL_MARKER_METRIC: &str = "cgroups_measured";

/// Metrics emitted by procfs's process source at every poll, including the
/// first one (where `process_cpu_time` has no delta yet): their timestamps
/// mark procfs polls, so the first CPU-time delta gets a known start.
pub const PROCESS_POLL_MARKER_METRICS: [&str; 2] =
    ["process_memory_resident", "process_memory_virtual"];

/// Counters of what the transform did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributionStats {
    /// Energy intervals whose energy was shared among processes.
    pub intervals_attributed: u64,
    /// Of those, the ones that activity data covered only in part (the
    /// shares then come from the covered part).
    pub intervals_partially_covered: u64,
    /// Intervals with energy to share but no process activity over them.
    pub intervals_unattributed: u64,
    /// Intervals with nothing to share (no dynamic energy).
    pub intervals_without_dynamic_energy: u64,
    /// Energy points dropped because they arrived after the interval they
    /// belong to had been attributed (or twice).
    pub energy_points_too_late: u64,
    /// Energy values that were NaN, infinite or negative (interval skipped).
    pub invalid_energy_values: u64,
    /// Intervals the sensor did not measure (nothing to attribute).
    pub intervals_unmeasured: u64,
    /// First points of a domain that carried energy over an interval whose
    /// start is unknown (reported as unattributed, reason
    /// `interval_start_unknown`).
    pub energy_with_unknown_start: u64,
    /// Activity values that were NaN, infinite or negative (ignored).
    pub invalid_activity_values: u64,
}

#[derive(Debug, Clone, Copy)]
struct EnergyInput {
    name: &'static str,
    id: MetricId,
    scale: f64,
    gpu: bool,
    /// The input is a model's estimate, not a measurement.
    estimated: bool,
}

#[derive(Debug, Clone, Default)]
struct Inputs {
    energy: Vec<EnergyInput>,
    cpu_time: Option<(MetricId, f64)>,
    cpu_poll_markers: Vec<MetricId>,
    gpu_utilisation: Option<MetricId>,
    cgroup_cpu_time: Option<(MetricId, f64)>,
    cgroup_poll_marker: Option<MetricId>,
    unmeasured: Option<MetricId>,
}

#[derive(Debug)]
enum State {
    /// The registry has not been read yet (first `apply`).
    Unresolved,
    /// None of the inputs exist: buffers pass through.
    PassThrough,
    /// Attributing.
    Active(Inputs),
}

/// Attribute of estimated energy points: the model's idle power of the
/// resource, W (cpu-power-model sets it).
pub const MODEL_IDLE_POWER_ATTRIBUTE: &str = "idle_power_w";

/// The model's idle power carried by an energy point, if valid.
fn model_idle_power(p: &MeasurementPoint) -> Option<f64> {
    let w = match p.attr(MODEL_IDLE_POWER_ATTRIBUTE)? {
        AttributeValue::F64(w) => *w,
        AttributeValue::U64(w) => *w as f64,
        AttributeValue::Str(s) => s.parse().ok()?,
        _ => return None,
    };
    (w.is_finite() && w >= 0.0).then_some(w)
}

/// Tags points derived from estimated energy `estimated=true` (the
/// `idle_power` point already has the key: an estimate's idle power is an estimate).
fn mark_estimated(points: &mut [MeasurementPoint]) {
    for p in points {
        match p.attributes.iter_mut().find(|(k, _)| k == "estimated") {
            Some((_, v)) => *v = AttributeValue::Bool(true),
            None => p
                .attributes
                .push((Cow::Borrowed("estimated"), AttributeValue::Bool(true))),
        }
    }
}

/// Logs the 1st, 2nd, 4th, 8th... occurrence of something that may repeat at every poll.
fn should_log(count: u64) -> bool {
    count.is_power_of_two()
}

/// The transform. Create it with [`AttributionTransform::new`]; the plugin adds it
/// to the pipeline, tests can drive it through [`Transform`] directly.
pub struct AttributionTransform {
    config: Config,
    max_delay_ns: u64,
    outputs: OutputMetrics,
    state: State,
    domains: Vec<Domain>,
    activity: Activity,
    /// The cgroup level (None when not configured).
    cgroups: Option<CgroupActivity>,
    /// Whether the process level runs.
    process_level: bool,
    /// Whether the process level runs for CPU domains (false when only
    /// cgroups measure CPU time).
    cpu_process_level: bool,
    /// Process name by pid, and the last poll that reported the pid.
    exe_by_pid: HashMap<u32, (AttributeValue, Timestamp)>,
    /// Latest timestamp of any input point: the transform's notion of "now",
    /// taken from the data so that results do not depend on processing speed.
    now: Option<Timestamp>,
    /// Points made while ingesting, appended with the next results.
    early: MeasurementBuffer,
    stats: AttributionStats,
}

impl AttributionTransform {
    /// A transform with this configuration, emitting the given metrics.
    pub fn new(config: Config, outputs: OutputMetrics) -> Self {
        let max_delay_ns = u64::try_from(config.max_delay.as_nanos()).unwrap_or(u64::MAX);
        let process_level = config.levels.iter().any(|l| l == crate::LEVEL_PROCESS);
        let cgroups = config
            .levels
            .iter()
            .any(|l| l == crate::LEVEL_CGROUP)
            .then(|| CgroupActivity::new(&config.proc_root));
        Self {
            cgroups,
            process_level,
            cpu_process_level: true,
            config,
            max_delay_ns,
            outputs,
            state: State::Unresolved,
            domains: Vec::new(),
            activity: Activity::new(),
            exe_by_pid: HashMap::new(),
            now: None,
            early: MeasurementBuffer::new(),
            stats: AttributionStats::default(),
        }
    }

    /// What the transform did so far.
    pub fn stats(&self) -> &AttributionStats {
        &self.stats
    }

    /// Whether the transform found any of its inputs (false before the first buffer).
    pub fn is_active(&self) -> bool {
        matches!(self.state, State::Active(_))
    }

    fn resolve_inputs(metrics: &MetricRegistry) -> State {
        let lookup = |name: &str, unit: Unit| -> Option<(MetricId, f64)> {
            let id = metrics.by_name(name)?;
            let metric = metrics.get(id)?;
            if metric.unit.base != unit {
                log::warn!(
                    "energy-attribution: metric {name} has unit {} instead of {}; it is not used",
                    metric.unit,
                    unit.symbol()
                );
                return None;
            }
            Some((id, metric.unit.prefix.factor()))
        };
        let mut inputs = Inputs::default();
        for (name, gpu, estimated) in [
            (RAPL_ENERGY_METRIC, false, false),
            (GPU_ENERGY_METRIC, true, false),
            (ESTIMATED_CPU_ENERGY_METRIC, false, true),
        ] {
            if let Some((id, scale)) = lookup(name, Unit::Joule) {
                inputs.energy.push(EnergyInput {
                    name,
                    id,
                    scale,
                    gpu,
                    estimated,
                });
            }
        }
        inputs.cpu_time = lookup(PROCESS_CPU_TIME_METRIC, Unit::Second);
        if inputs.cpu_time.is_some() {
            inputs.cpu_poll_markers = PROCESS_POLL_MARKER_METRICS
                .iter()
                .filter_map(|name| metrics.by_name(name))
                .collect();
        }
        inputs.gpu_utilisation = metrics.by_name(GPU_PROCESS_UTILISATION_METRIC);
        inputs.cgroup_cpu_time = lookup(CGROUP_CPU_TIME_METRIC, Unit::Second);
        inputs.cgroup_poll_marker = metrics.by_name(CGROUP_POLL_MARKER_METRIC);
        inputs.unmeasured = metrics.by_name(UNMEASURED_METRIC);
        if inputs.energy.is_empty() && inputs.cpu_time.is_none() {
            log::info!(
                "energy-attribution: none of {RAPL_ENERGY_METRIC}, {GPU_ENERGY_METRIC}, {PROCESS_CPU_TIME_METRIC} is measured; nothing to attribute"
            );
            return State::PassThrough;
        }
        if inputs.cpu_time.is_none() && inputs.cgroup_cpu_time.is_none() {
            log::warn!("energy-attribution: {PROCESS_CPU_TIME_METRIC} is not measured (enable the procfs plugin); CPU energy is reported as unattributed");
        }
        State::Active(inputs)
    }

    fn ingest(&mut self, buffer: &MeasurementBuffer, inputs: &Inputs) {
        for p in buffer {
            if let Some((id, scale)) = inputs.cpu_time {
                if p.metric == id {
                    self.ingest_cpu_time(p, scale);
                    continue;
                }
            }
            if inputs.cpu_poll_markers.contains(&p.metric) {
                self.advance_now(p.timestamp);
                if self.activity.cpu.watermark() != Some(p.timestamp) {
                    self.activity.cpu.mark_poll(p.timestamp);
                    self.activity.cache = None;
                }
                continue;
            }
            if inputs.gpu_utilisation == Some(p.metric) {
                self.ingest_gpu_utilisation(p);
                continue;
            }
            if let Some(cgroups) = &mut self.cgroups {
                if let Some((_, scale)) = inputs.cgroup_cpu_time.filter(|(id, _)| *id == p.metric) {
                    self.now = Some(self.now.map_or(p.timestamp, |n| n.max(p.timestamp)));
                    if !cgroups.ingest_cpu_time(p, scale) {
                        self.stats.invalid_activity_values += 1;
                    }
                    continue;
                }
                if inputs.cgroup_poll_marker == Some(p.metric) {
                    self.now = Some(self.now.map_or(p.timestamp, |n| n.max(p.timestamp)));
                    cgroups.mark_poll(p.timestamp);
                    continue;
                }
            }
            if let Some((index, input)) = inputs
                .energy
                .iter()
                .enumerate()
                .find(|(_, e)| e.id == p.metric)
            {
                self.ingest_energy(p, index, *input, Some(p.value.as_f64() * input.scale));
                continue;
            }
            if inputs.unmeasured == Some(p.metric) {
                let of = p.attr("energy_metric").map(ToString::to_string);
                if let Some((index, input)) = inputs
                    .energy
                    .iter()
                    .enumerate()
                    .find(|(_, e)| of.as_deref() == Some(e.name))
                {
                    self.ingest_energy(p, index, *input, None);
                }
            }
        }
    }

    fn advance_now(&mut self, t: Timestamp) {
        self.now = Some(self.now.map_or(t, |n| n.max(t)));
    }

    fn ingest_cpu_time(&mut self, p: &MeasurementPoint, scale: f64) {
        self.advance_now(p.timestamp);
        self.activity.cache = None;
        let ResourceConsumer::Process { pid } = p.consumer else {
            self.activity.cpu.mark_poll(p.timestamp);
            return;
        };
        let value = p.value.as_f64() * scale;
        if !self.activity.cpu.add(p.timestamp, pid, value) && value != 0.0 {
            self.stats.invalid_activity_values += 1;
            if should_log(self.stats.invalid_activity_values) {
                log::warn!("energy-attribution: ignored an invalid CPU time {value} s of pid {pid} ({} so far)", self.stats.invalid_activity_values);
            }
        }
        self.remember_exe(pid, p);
    }

    fn ingest_gpu_utilisation(&mut self, p: &MeasurementPoint) {
        self.advance_now(p.timestamp);
        self.activity.cache = None;
        let index = self.activity.gpu_index(&p.resource);
        let store = &mut self.activity.gpus[index].1;
        let ResourceConsumer::Process { pid } = p.consumer else {
            store.mark_poll(p.timestamp);
            return;
        };
        let value = p.value.as_f64();
        if !store.add(p.timestamp, pid, value) && value != 0.0 {
            self.stats.invalid_activity_values += 1;
        }
        if let Some(cgroups) = &mut self.cgroups {
            cgroups.note_gpu_process(pid, p.timestamp);
        }
        self.remember_exe(pid, p);
    }

    fn remember_exe(&mut self, pid: u32, p: &MeasurementPoint) {
        let Some(exe) = p.attr("exe") else {
            if let Some(entry) = self.exe_by_pid.get_mut(&pid) {
                entry.1 = entry.1.max(p.timestamp);
            }
            return;
        };
        match self.exe_by_pid.get_mut(&pid) {
            Some(entry) => {
                if entry.0 != *exe {
                    entry.0 = exe.clone();
                }
                entry.1 = entry.1.max(p.timestamp);
            }
            None => {
                self.exe_by_pid.insert(pid, (exe.clone(), p.timestamp));
            }
        }
    }

    /// An energy point (`energy_j`), or an interval its sensor did not
    /// measure (`None`).
    fn ingest_energy(
        &mut self,
        p: &MeasurementPoint,
        input_index: usize,
        input: EnergyInput,
        energy_j: Option<f64>,
    ) {
        self.advance_now(p.timestamp);
        let name: Cow<'static, str> = if input.gpu {
            Cow::Borrowed("gpu")
        } else {
            match p.attr("domain") {
                Some(AttributeValue::Str(s)) => s.clone(),
                Some(other) => Cow::Owned(other.to_string()),
                None => Cow::Owned(p.resource.kind().to_owned()),
            }
        };
        let index = match self
            .domains
            .iter()
            .position(|d| d.matches(input_index, &p.resource, &name, p.attr("die")))
        {
            Some(i) => i,
            None => {
                let activity = if input.gpu {
                    ActivityKind::Gpu(self.activity.gpu_index(&p.resource))
                } else {
                    ActivityKind::Cpu
                };
                // A model that estimates energy knows its idle power and says
                // so on its points; it wins over the per-domain-name setting,
                // which is meant for the measured domain of that name.
                let idle = match model_idle_power(p)
                    .or_else(|| self.config.idle_power_w.get(name.as_ref()).copied())
                {
                    Some(w) => IdlePower::Configured(w),
                    None => IdlePower::Estimated(IdlePowerEstimator::new(
                        u64::try_from(self.config.idle_window.as_nanos()).unwrap_or(u64::MAX),
                        self.config.idle_percentile,
                    )),
                };
                let mut domain = Domain::new(
                    p.resource.clone(),
                    AttributeValue::Str(name),
                    input_index,
                    activity,
                    idle,
                );
                domain.die = p.attr("die").cloned();
                self.domains.push(domain);
                self.domains.len() - 1
            }
        };
        let inserted = match energy_j {
            Some(j) => self.domains[index].insert(p.timestamp, j),
            None => self.domains[index].insert_unmeasured(p.timestamp),
        };
        if let (Inserted::StartLearned, Some(j)) = (inserted, energy_j) {
            // Energy over an interval that starts before anything this
            // transform saw (a source that does not mark its first poll):
            // it cannot be shared by activity, but it is not dropped.
            if j.is_finite() && j > 0.0 {
                self.stats.energy_with_unknown_start += 1;
                let domain = &self.domains[index];
                let mut point = MeasurementPoint {
                    timestamp: p.timestamp,
                    metric: self.outputs.unattributed_energy,
                    resource: domain.resource.clone(),
                    consumer: ResourceConsumer::LocalMachine,
                    value: MeasurementValue::F64(j),
                    attributes: vec![
                        (Cow::Borrowed("domain"), domain.name.clone()),
                        (Cow::Borrowed("part"), AttributeValue::from("total")),
                        (
                            Cow::Borrowed("reason"),
                            AttributeValue::from("interval_start_unknown"),
                        ),
                    ]
                    .into(),
                };
                if let Some(die) = &domain.die {
                    point.attributes.push((Cow::Borrowed("die"), die.clone()));
                }
                if input.estimated {
                    mark_estimated(std::slice::from_mut(&mut point));
                }
                self.early.push(point);
            }
        }
        if inserted == Inserted::TooLate {
            self.stats.energy_points_too_late += 1;
            if should_log(self.stats.energy_points_too_late) {
                log::warn!(
                    "energy-attribution: dropped an energy point of {} {} that arrived after its interval was attributed ({} so far); raise max_delay if sources flush rarely",
                    self.domains[index].resource,
                    self.domains[index].name,
                    self.stats.energy_points_too_late
                );
            }
        }
    }

    /// Attributes every interval that is covered by activity data, expired,
    /// or (when `force`) anything pending, appending the results to `out`.
    fn attribute(&mut self, inputs: &Inputs, force: bool, out: &mut MeasurementBuffer) {
        out.append(&mut self.early);
        let now = self.now.map_or(0, |t| t.unix_nanos());
        for di in 0..self.domains.len() {
            let kind = self.domains[di].activity;
            let process_input = match kind {
                ActivityKind::Cpu => inputs.cpu_time.is_some(),
                ActivityKind::Gpu(_) => inputs.gpu_utilisation.is_some(),
            };
            let cgroup_input = self.cgroups.is_some()
                && matches!(kind, ActivityKind::Cpu)
                && inputs.cgroup_cpu_time.is_some();
            let has_activity_input = process_input || cgroup_input;
            while let Some(interval) = self.domains[di].front() {
                let process_covered = !process_input
                    || self
                        .activity
                        .watermark(kind)
                        .is_some_and(|w| w >= interval.end);
                let cgroup_covered = !cgroup_input
                    || self
                        .cgroups
                        .as_ref()
                        .and_then(CgroupActivity::watermark)
                        .is_some_and(|w| w >= interval.end);
                let covered = process_covered && cgroup_covered;
                let expired = interval.end.unix_nanos().saturating_add(self.max_delay_ns) <= now;
                if !(covered || expired || force || !has_activity_input) {
                    break;
                }
                let first_new = out.len();
                self.attribute_interval(di, interval, out);
                // A die's points say which die, as its energy points do.
                if let Some(die) = &self.domains[di].die {
                    for p in &mut out[first_new..] {
                        p.attributes.push((Cow::Borrowed("die"), die.clone()));
                    }
                }
                let input = self.domains[di].input;
                if inputs.energy.get(input).is_some_and(|e| e.estimated) {
                    mark_estimated(&mut out[first_new..]);
                }
                self.domains[di].pop_front();
            }
        }
    }

    fn attribute_interval(
        &mut self,
        di: usize,
        interval: EnergyInterval,
        out: &mut MeasurementBuffer,
    ) {
        let EnergyInterval {
            start,
            end,
            energy_j,
        } = interval;
        let Some(energy_j) = energy_j else {
            // Not measured: an estimate (cpu-power-model) covers it.
            self.stats.intervals_unmeasured += 1;
            return;
        };
        let domain = &mut self.domains[di];
        let duration_ns = end.unix_nanos() - start.unix_nanos();
        let duration_s = duration_ns as f64 / 1e9;
        if !(energy_j.is_finite() && energy_j >= 0.0) {
            self.stats.invalid_energy_values += 1;
            if should_log(self.stats.invalid_energy_values) {
                log::warn!(
                    "energy-attribution: skipped an invalid energy value {energy_j} J of {} {} ({} so far)",
                    domain.resource,
                    domain.name,
                    self.stats.invalid_energy_values
                );
            }
            return;
        }
        let idle_power_w = domain.idle.observe(end, energy_j / duration_s);
        out.push(MeasurementPoint {
            timestamp: end,
            metric: self.outputs.idle_power,
            resource: domain.resource.clone(),
            consumer: ResourceConsumer::LocalMachine,
            value: MeasurementValue::F64(idle_power_w),
            attributes: vec![
                (Cow::Borrowed("domain"), domain.name.clone()),
                (
                    Cow::Borrowed("estimated"),
                    AttributeValue::Bool(domain.idle.is_estimated()),
                ),
            ]
            .into(),
        });
        let static_j = energy_j.min(idle_power_w * duration_s).max(0.0);
        let dynamic_j = (energy_j - static_j).max(0.0);
        let shared_static_j = if self.config.share_static {
            static_j
        } else {
            0.0
        };
        if dynamic_j <= 0.0 && shared_static_j <= 0.0 {
            self.stats.intervals_without_dynamic_energy += 1;
            return;
        }
        let parts = [("dynamic", dynamic_j), ("static", shared_static_j)];
        let kind = domain.activity;
        let resource = domain.resource.clone();
        let name = domain.name.clone();
        let coverage = self.activity.weights_of(kind, start, end);
        let cpu = matches!(kind, ActivityKind::Cpu);
        if self.process_level && (self.cpu_process_level || !cpu) {
            self.attribute_to_processes(di, coverage, (start, end), parts, out);
        }
        if let Some(cgroups) = &mut self.cgroups {
            let interval = IntervalToShare {
                resource: &resource,
                domain: &name,
                start,
                end,
                parts,
            };
            match kind {
                ActivityKind::Cpu => {
                    cgroups.attribute_cpu(&interval, coverage.total_weight, &self.outputs, out)
                }
                ActivityKind::Gpu(_) => {
                    cgroups.attribute_gpu(&interval, &self.activity.weights, &self.outputs, out)
                }
            }
        }
    }

    /// The process level: shares by process activity, or unattributed.
    fn attribute_to_processes(
        &mut self,
        di: usize,
        coverage: crate::activity::Coverage,
        (start, end): (Timestamp, Timestamp),
        parts: [(&'static str, f64); 2],
        out: &mut MeasurementBuffer,
    ) {
        let domain = &self.domains[di];
        let duration_ns = end.unix_nanos() - start.unix_nanos();
        let dynamic_j = parts[0].1;
        if !(coverage.total_weight.is_finite() && coverage.total_weight > 0.0) {
            let reason = if coverage.covered_ns == 0 {
                "no_process_data"
            } else {
                "no_activity"
            };
            for (part, energy) in parts {
                if energy > 0.0 {
                    out.push(MeasurementPoint {
                        timestamp: end,
                        metric: self.outputs.unattributed_energy,
                        resource: domain.resource.clone(),
                        consumer: ResourceConsumer::LocalMachine,
                        value: MeasurementValue::F64(energy),
                        attributes: vec![
                            (Cow::Borrowed("domain"), domain.name.clone()),
                            (Cow::Borrowed("part"), AttributeValue::from(part)),
                            (Cow::Borrowed("reason"), AttributeValue::from(reason)),
                        ]
                        .into(),
                    });
                }
            }
            self.stats.intervals_unattributed += 1;
            if reason == "no_process_data" && should_log(self.stats.intervals_unattributed) {
                log::warn!(
                    "energy-attribution: no process data covers {} {} over an interval ending at {:.3} s; its {dynamic_j:.3} J dynamic energy is unattributed ({} intervals so far)",
                    domain.resource,
                    domain.name,
                    end.unix_seconds_f64(),
                    self.stats.intervals_unattributed
                );
            }
            return;
        }
        self.stats.intervals_attributed += 1;
        if coverage.covered_ns < duration_ns {
            self.stats.intervals_partially_covered += 1;
        }
        let total = coverage.total_weight;
        for &(pid, weight) in &self.activity.weights {
            let share = weight / total;
            for (part, energy) in parts {
                if energy <= 0.0 {
                    continue;
                }
                let mut attributes = Vec::with_capacity(3);
                attributes.push((Cow::Borrowed("domain"), domain.name.clone()));
                attributes.push((Cow::Borrowed("part"), AttributeValue::from(part)));
                if let Some((exe, _)) = self.exe_by_pid.get(&pid) {
                    attributes.push((Cow::Borrowed("exe"), exe.clone()));
                }
                out.push(MeasurementPoint {
                    timestamp: end,
                    metric: self.outputs.attributed_energy,
                    resource: domain.resource.clone(),
                    consumer: ResourceConsumer::Process { pid },
                    value: MeasurementValue::F64(energy * share),
                    attributes: attributes.into(),
                });
            }
        }
    }

    /// Forgets activity that no pending or future interval can overlap.
    fn prune(&mut self) {
        let Some(now) = self.now else { return };
        let now = now.unix_nanos();
        let mut cutoff = now.saturating_sub(self.max_delay_ns);
        for d in &self.domains {
            if let Some(from) = d.needs_from() {
                let live =
                    d.has_pending() || from.unix_nanos().saturating_add(self.max_delay_ns) >= now;
                if live {
                    cutoff = cutoff.min(from.unix_nanos());
                }
            }
        }
        let cutoff = Timestamp::from_unix_nanos(cutoff);
        if let Some(cgroups) = &mut self.cgroups {
            cgroups.prune_before(cutoff);
        }
        let before = self.activity.cpu.poll_count();
        self.activity.cpu.prune_before(cutoff);
        let mut pruned = before != self.activity.cpu.poll_count();
        for (_, store) in &mut self.activity.gpus {
            let before = store.poll_count();
            store.prune_before(cutoff);
            pruned |= before != store.poll_count();
        }
        if pruned {
            self.activity.cache = None;
            self.exe_by_pid.retain(|_, (_, seen)| *seen >= cutoff);
        }
    }
}

impl Transform for AttributionTransform {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        if matches!(self.state, State::Unresolved) {
            self.state = Self::resolve_inputs(ctx.metrics);
            if let State::Active(inputs) = &self.state {
                if inputs.cgroup_cpu_time.is_none() {
                    // No cgroups source: the level has nothing to share by.
                    self.cgroups = None;
                } else if inputs.cpu_time.is_none() {
                    // Only cgroups: CPU energy is shared at that level alone.
                    self.cpu_process_level = false;
                }
            }
        }
        // Taken out for the call so that `self` can be borrowed mutably beside it.
        let state = std::mem::replace(&mut self.state, State::PassThrough);
        if let State::Active(inputs) = &state {
            self.ingest(buffer, inputs);
            self.attribute(inputs, false, buffer);
            self.prune();
        }
        self.state = state;
        Ok(())
    }

    fn finish(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        let state = std::mem::replace(&mut self.state, State::PassThrough);
        if let State::Active(inputs) = &state {
            self.attribute(inputs, true, buffer);
            let s = &self.stats;
            log::info!(
                "energy-attribution: {} energy intervals attributed ({} only partly covered by CPU data), {} unattributed, {} without dynamic energy, {} not measured, {} with an unknown start; {} late energy points dropped, {} invalid energy values, {} invalid activity values",
                s.intervals_attributed,
                s.intervals_partially_covered,
                s.intervals_unattributed,
                s.intervals_without_dynamic_energy,
                s.intervals_unmeasured,
                s.energy_with_unknown_start,
                s.energy_points_too_late,
                s.invalid_energy_values,
                s.invalid_activity_values
            );
        }
        self.state = state;
        Ok(())
    }
}
