//! The attribution transform: reads energy and process activity points as
//! they pass, holds each energy interval back until the activity covering it
//! has arrived, then appends `idle_power`, `attributed_energy` and
//! `unattributed_energy` points. Input points pass through untouched.

use std::borrow::Cow;
use std::collections::HashMap;

use std::collections::BTreeMap;
use std::ops::Bound;

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
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
/// Input metric (with `attribute_node`): hwmon energy; its `node` and `module`
/// domains are whole-node energy.
pub const HWMON_ENERGY_METRIC: &str = "hwmon_consumed_energy";
/// Input metric (with `attribute_node`): the node's energy from its BMC (Redfish).
pub const REDFISH_ENERGY_METRIC: &str = "redfish_consumed_energy";
/// The domains of the whole-node inputs that are attributed: the whole
/// server (`node`) and a module (a Grace Hopper socket's, a Jetson's
/// `VDD_IN`). The other domains of hwmon are parts of these or components
/// that other inputs measure.
pub const NODE_DOMAINS: [&str; 2] = ["node", "module"];
/// How long the process activity behind an open whole-node interval is held
/// at most, counted from the interval's start: a BMC's kWh counter may
/// advance only every few minutes (Redfish calls one frozen after the time
/// 4 W takes to fill a 0.01 kWh step, 2.5 h). An interval longer than this is
/// attributed by the shares of the part that activity still covers
/// (counted in `intervals_partially_covered`).
pub const NODE_HOLD_NS: u64 = 3 * 3600 * 1_000_000_000;
/// Attributes that tell whole-node series apart (besides resource and domain).
const NODE_SERIES_KEYS: [&str; 3] = ["chassis", "sensor", "device"];
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
    /// Whole-node intervals longer than `NODE_HOLD_NS` (their shares come
    /// from the part that activity still covers).
    pub node_intervals_beyond_hold: u64,
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
    /// Whole-node energy (only its `NODE_DOMAINS` are read).
    node: bool,
}

/// Whether a point of a whole-node input is of a domain attributed here.
fn is_node_domain(p: &MeasurementPoint) -> bool {
    matches!(p.attr("domain"), Some(AttributeValue::Str(d)) if NODE_DOMAINS.contains(&d.as_ref()))
}

/// Sums the points that have the same metric, resource, consumer and
/// attributes (a whole node's GPU and CPU shares that reach one cgroup),
/// keeping the first one's place.
fn coalesce(points: &mut Vec<MeasurementPoint>) {
    let mut merged: Vec<MeasurementPoint> = Vec::with_capacity(points.len());
    for p in points.drain(..) {
        match merged.iter_mut().find(|m| {
            m.metric == p.metric
                && m.resource == p.resource
                && m.consumer == p.consumer
                && *m.attributes == *p.attributes
        }) {
            Some(m) => m.value = MeasurementValue::F64(m.value.as_f64() + p.value.as_f64()),
            None => merged.push(p),
        }
    }
    *points = merged;
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
    /// Per GPU (index of the activity stores): the dynamic energy of each
    /// attributed GPU interval, end → (start, J), for the whole-node domains.
    gpu_dynamic: Vec<BTreeMap<Timestamp, (Timestamp, f64)>>,
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
            gpu_dynamic: Vec::new(),
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

    fn resolve_inputs(metrics: &MetricRegistry, attribute_node: bool) -> State {
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
        for (name, gpu, estimated, node) in [
            (RAPL_ENERGY_METRIC, false, false, false),
            (GPU_ENERGY_METRIC, true, false, false),
            (ESTIMATED_CPU_ENERGY_METRIC, false, true, false),
            (HWMON_ENERGY_METRIC, false, false, true),
            (REDFISH_ENERGY_METRIC, false, false, true),
        ] {
            if node && !attribute_node {
                continue;
            }
            if let Some((id, scale)) = lookup(name, Unit::Joule) {
                inputs.energy.push(EnergyInput {
                    name,
                    id,
                    scale,
                    gpu,
                    estimated,
                    node,
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
                if !input.node || is_node_domain(p) {
                    self.ingest_energy(p, index, *input, Some(p.value.as_f64() * input.scale));
                }
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
                    if input.node && !is_node_domain(p) {
                        continue;
                    }
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
        let tags: Vec<(Cow<'static, str>, AttributeValue)> = if input.node {
            NODE_SERIES_KEYS
                .iter()
                .filter_map(|&k| p.attr(k).map(|v| (Cow::Borrowed(k), v.clone())))
                .chain(std::iter::once((
                    Cow::Borrowed("energy_metric"),
                    AttributeValue::from(input.name),
                )))
                .collect()
        } else {
            p.attr("die")
                .map(|die| vec![(Cow::Borrowed("die"), die.clone())])
                .unwrap_or_default()
        };
        let index = match self
            .domains
            .iter()
            .position(|d| d.matches(input_index, &p.resource, &name, &tags))
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
                domain.tags = tags;
                domain.node = input.node;
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
                for tag in &domain.tags {
                    point.attributes.push(tag.clone());
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
        // Whole-node domains last: they use the GPU intervals attributed before them.
        let order: Vec<usize> = (0..self.domains.len())
            .filter(|&i| !self.domains[i].node)
            .chain((0..self.domains.len()).filter(|&i| self.domains[i].node))
            .collect();
        for di in order {
            let kind = self.domains[di].activity;
            // A whole machine's energy contains the GPUs': its interval waits
            // for their energy too.
            let waits_for_gpus =
                self.domains[di].node && self.domains[di].resource == Resource::LocalMachine;
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
                let gpus_covered = !waits_for_gpus
                    || self.domains.iter().all(|d| {
                        !matches!(d.activity, ActivityKind::Gpu(_))
                            || d.needs_from().is_some_and(|r| r >= interval.end)
                    });
                let covered = process_covered && cgroup_covered && gpus_covered;
                let expired = interval.end.unix_nanos().saturating_add(self.max_delay_ns) <= now;
                if !(covered || expired || force || (!has_activity_input && gpus_covered)) {
                    break;
                }
                let first_new = out.len();
                self.attribute_interval(di, interval, out);
                // A die's points say which die, a node's which sensor and
                // metric, as its energy points do.
                let tags = &self.domains[di].tags;
                if !tags.is_empty() {
                    for p in &mut out[first_new..] {
                        for tag in tags {
                            p.attributes.push(tag.clone());
                        }
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
        if let ActivityKind::Gpu(g) = domain.activity {
            if self.gpu_dynamic.len() <= g {
                self.gpu_dynamic.resize_with(g + 1, BTreeMap::new);
            }
            self.gpu_dynamic[g].insert(end, (start, dynamic_j));
        }
        let node = domain.node;
        if node && duration_ns > NODE_HOLD_NS {
            self.stats.node_intervals_beyond_hold += 1;
            if should_log(self.stats.node_intervals_beyond_hold) {
                log::warn!(
                    "energy-attribution: an energy interval of {} {} lasts {duration_s:.0} s, longer than the {} s of activity held for it; it is attributed by the shares of its last {} s ({} so far)",
                    domain.resource,
                    domain.name,
                    NODE_HOLD_NS / 1_000_000_000,
                    NODE_HOLD_NS / 1_000_000_000,
                    self.stats.node_intervals_beyond_hold
                );
            }
        }
        if dynamic_j <= 0.0 && shared_static_j <= 0.0 {
            self.stats.intervals_without_dynamic_energy += 1;
            return;
        }
        if node {
            self.attribute_node_interval(di, (start, end), dynamic_j, shared_static_j, out);
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

    /// The dynamic energy of each GPU over `[start, end]`, from the GPU
    /// intervals attributed so far (each taken by its overlap, as a uniform
    /// rate over its own interval); GPUs with none left out.
    fn gpu_dynamic_over(&self, start: Timestamp, end: Timestamp) -> Vec<(usize, f64)> {
        let mut parts = Vec::new();
        for (g, log) in self.gpu_dynamic.iter().enumerate() {
            let mut j = 0.0;
            for (&g1, &(g0, dynamic_j)) in log.range((Bound::Excluded(start), Bound::Unbounded)) {
                if g0 >= end {
                    break;
                }
                let from = g0.max(start).unix_nanos();
                let to = g1.min(end).unix_nanos();
                let len = g1.unix_nanos().saturating_sub(g0.unix_nanos());
                if to > from && len > 0 {
                    j += dynamic_j * (to - from) as f64 / len as f64;
                }
            }
            if j > 0.0 {
                parts.push((g, j));
            }
        }
        parts
    }

    /// A whole-node interval: the part of its dynamic energy that the GPUs'
    /// own intervals show as dynamic goes by GPU use, the rest (never below
    /// 0) and the shared static energy by CPU time. A module on a CPU
    /// package (Grace Hopper) does not say which GPU it holds: all of its
    /// dynamic energy goes by CPU time.
    fn attribute_node_interval(
        &mut self,
        di: usize,
        (start, end): (Timestamp, Timestamp),
        dynamic_j: f64,
        static_j: f64,
        out: &mut MeasurementBuffer,
    ) {
        let resource = self.domains[di].resource.clone();
        let name = self.domains[di].name.clone();
        let duration_ns = end.unix_nanos() - start.unix_nanos();
        let mut gpu_parts = if resource == Resource::LocalMachine {
            self.gpu_dynamic_over(start, end)
        } else {
            Vec::new()
        };
        let gpu_j: f64 = gpu_parts.iter().map(|(_, j)| j).sum();
        if gpu_j > dynamic_j {
            // The GPUs' idle powers and the node's are estimated apart: the
            // GPUs cannot take more than the node's dynamic energy.
            let factor = if gpu_j > 0.0 { dynamic_j / gpu_j } else { 0.0 };
            for (_, j) in &mut gpu_parts {
                *j *= factor;
            }
        }
        let gpu_j: f64 = gpu_parts.iter().map(|(_, j)| j).sum();
        let cpu_dynamic_j = (dynamic_j - gpu_j).max(0.0);
        let cpu = self.activity.weights_of(ActivityKind::Cpu, start, end);
        let cpu_weights = self.activity.weights.clone();

        if self.process_level && self.cpu_process_level {
            // pid → [dynamic, static]
            let mut shares: BTreeMap<u32, [f64; 2]> = BTreeMap::new();
            let mut unattributed: Vec<(&'static str, &'static str, f64)> = Vec::new();
            let mut not_shared = |part: &'static str, reason: &'static str, j: f64| {
                if j <= 0.0 {
                    return;
                }
                match unattributed
                    .iter_mut()
                    .find(|(p, r, _)| *p == part && *r == reason)
                {
                    Some(entry) => entry.2 += j,
                    None => unattributed.push((part, reason, j)),
                }
            };
            let reason_of = |c: crate::activity::Coverage| {
                if c.covered_ns == 0 {
                    "no_process_data"
                } else {
                    "no_activity"
                }
            };
            let total = cpu.total_weight;
            if total.is_finite() && total > 0.0 {
                for &(pid, w) in &cpu_weights {
                    let share = shares.entry(pid).or_default();
                    share[0] += cpu_dynamic_j * (w / total);
                    share[1] += static_j * (w / total);
                }
            } else {
                not_shared("dynamic", reason_of(cpu), cpu_dynamic_j);
                not_shared("static", reason_of(cpu), static_j);
            }
            for &(g, j) in &gpu_parts {
                let c = self.activity.weights_of(ActivityKind::Gpu(g), start, end);
                if c.total_weight.is_finite() && c.total_weight > 0.0 {
                    for &(pid, w) in &self.activity.weights {
                        shares.entry(pid).or_default()[0] += j * (w / c.total_weight);
                    }
                } else {
                    not_shared("dynamic", reason_of(c), j);
                }
            }
            let mut any = false;
            for (pid, values) in shares {
                for (part, energy) in [("dynamic", values[0]), ("static", values[1])] {
                    if energy <= 0.0 {
                        continue;
                    }
                    any = true;
                    let mut attributes = Vec::with_capacity(3);
                    attributes.push((Cow::Borrowed("domain"), name.clone()));
                    attributes.push((Cow::Borrowed("part"), AttributeValue::from(part)));
                    if let Some((exe, _)) = self.exe_by_pid.get(&pid) {
                        attributes.push((Cow::Borrowed("exe"), exe.clone()));
                    }
                    out.push(MeasurementPoint {
                        timestamp: end,
                        metric: self.outputs.attributed_energy,
                        resource: resource.clone(),
                        consumer: ResourceConsumer::Process { pid },
                        value: MeasurementValue::F64(energy),
                        attributes: attributes.into(),
                    });
                }
            }
            for (part, reason, energy) in unattributed {
                out.push(MeasurementPoint {
                    timestamp: end,
                    metric: self.outputs.unattributed_energy,
                    resource: resource.clone(),
                    consumer: ResourceConsumer::LocalMachine,
                    value: MeasurementValue::F64(energy),
                    attributes: vec![
                        (Cow::Borrowed("domain"), name.clone()),
                        (Cow::Borrowed("part"), AttributeValue::from(part)),
                        (Cow::Borrowed("reason"), AttributeValue::from(reason)),
                    ]
                    .into(),
                });
            }
            if any {
                self.stats.intervals_attributed += 1;
                if cpu.covered_ns < duration_ns {
                    self.stats.intervals_partially_covered += 1;
                }
            } else {
                self.stats.intervals_unattributed += 1;
            }
        }
        if let Some(cgroups) = &mut self.cgroups {
            let mut points = Vec::new();
            let interval = IntervalToShare {
                resource: &resource,
                domain: &name,
                start,
                end,
                parts: [("dynamic", cpu_dynamic_j), ("static", static_j)],
            };
            cgroups.attribute_cpu(&interval, cpu.total_weight, &self.outputs, &mut points);
            for &(g, j) in &gpu_parts {
                self.activity.weights_of(ActivityKind::Gpu(g), start, end);
                let interval = IntervalToShare {
                    resource: &resource,
                    domain: &name,
                    start,
                    end,
                    parts: [("dynamic", j), ("static", 0.0)],
                };
                cgroups.attribute_gpu(
                    &interval,
                    &self.activity.weights,
                    &self.outputs,
                    &mut points,
                );
            }
            if !gpu_parts.is_empty() {
                coalesce(&mut points);
            }
            out.extend(points);
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
                let from = from.unix_nanos();
                if d.has_pending() || from.saturating_add(self.max_delay_ns) >= now {
                    cutoff = cutoff.min(from);
                } else if d.node {
                    // A whole node's next point may be minutes away (a kWh
                    // counter): the activity since its last one is kept for
                    // it, the last NODE_HOLD_NS of it at most.
                    cutoff = cutoff.min(from.max(now.saturating_sub(NODE_HOLD_NS)));
                }
            }
        }
        let cutoff = Timestamp::from_unix_nanos(cutoff);
        if let Some(cgroups) = &mut self.cgroups {
            cgroups.prune_before(cutoff);
        }
        for log in &mut self.gpu_dynamic {
            // Intervals ending at or before the cutoff overlap nothing to come.
            if log.first_key_value().is_some_and(|(&end, _)| end <= cutoff) {
                *log = log.split_off(&Timestamp::from_unix_nanos(
                    cutoff.unix_nanos().saturating_add(1),
                ));
            }
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
            self.state = Self::resolve_inputs(ctx.metrics, self.config.attribute_node);
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
