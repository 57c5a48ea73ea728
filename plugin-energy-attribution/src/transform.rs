//! The attribution transform: reads energy and process activity points as
//! they pass, holds each energy interval back until the activity covering it
//! has arrived, then appends `idle_power`, `attributed_energy` and
//! `unattributed_energy` points. Input points pass through untouched.
//!
//! This module keeps the transform's state and its schedule (ingest, wait,
//! attribute, prune); what it reads is resolved in `inputs`, an interval is
//! shared by `processes` and `cgroups` (whole nodes by `node`), and what it
//! did is counted in `stats`.

use std::borrow::Cow;

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
};
use alumet::pipeline::{ElementContext, Transform, TransformError};

use crate::activity::Activity;
use crate::cgroups::{CgroupActivity, IntervalToShare};
use crate::domain::{ActivityKind, Domain, EnergyInterval, Inserted};
use crate::idle::{IdlePower, IdlePowerEstimator};
use crate::inputs::{is_node_domain, model_idle_power, EnergyInput, Inputs, NODE_SERIES_KEYS};
use crate::node::{GpuDynamic, NodeAttribution};
use crate::processes::{self, ProcessNames};
use crate::stats::should_log;
use crate::Config;

// The public names that moved out of this module keep their old paths
// (`transform::RAPL_ENERGY_METRIC`, `transform::AttributionStats`...).
pub use crate::inputs::{
    CGROUP_CPU_TIME_METRIC, CGROUP_POLL_MARKER_METRIC, ESTIMATED_CPU_ENERGY_METRIC,
    GPU_ENERGY_METRIC, GPU_PROCESS_UTILISATION_METRIC, HWMON_ENERGY_METRIC,
    MODEL_IDLE_POWER_ATTRIBUTE, NODE_DOMAINS, PROCESS_CPU_TIME_METRIC, PROCESS_POLL_MARKER_METRICS,
    RAPL_ENERGY_METRIC, REDFISH_ENERGY_METRIC, UNMEASURED_METRIC,
};
pub use crate::node::NODE_HOLD_NS;
pub use crate::outputs::OutputMetrics;
pub use crate::stats::AttributionStats;

#[derive(Debug)]
enum State {
    /// The registry has not been read yet (first `apply`).
    Unresolved,
    /// None of the inputs exist: buffers pass through.
    PassThrough,
    /// Attributing.
    Active(Inputs),
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
    /// Process names, for the points of the process level.
    names: ProcessNames,
    /// Latest timestamp of any input point: the transform's notion of "now",
    /// taken from the data so that results do not depend on processing speed.
    now: Option<Timestamp>,
    /// Points made while ingesting, appended with the next results.
    early: MeasurementBuffer,
    /// The GPUs' attributed dynamic energy, for the whole-node domains.
    gpu_dynamic: GpuDynamic,
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
            names: ProcessNames::default(),
            now: None,
            early: MeasurementBuffer::new(),
            gpu_dynamic: GpuDynamic::default(),
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
        self.names.remember(pid, p);
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
        self.names.remember(pid, p);
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
                let mut point = self.outputs.unattributed(
                    p.timestamp,
                    &domain.resource,
                    &domain.name,
                    "total",
                    "interval_start_unknown",
                    j,
                );
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
            self.gpu_dynamic.record(g, start, end, dynamic_j);
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
            let node = NodeAttribution {
                activity: &mut self.activity,
                gpu_dynamic: &self.gpu_dynamic,
                names: &self.names,
                process_level: self.process_level && self.cpu_process_level,
                cgroups: self.cgroups.as_mut(),
                outputs: &self.outputs,
                stats: &mut self.stats,
            };
            let domain = &self.domains[di];
            node.attribute(
                &domain.resource,
                &domain.name,
                (start, end),
                dynamic_j,
                shared_static_j,
                out,
            );
            return;
        }
        let parts = [("dynamic", dynamic_j), ("static", shared_static_j)];
        let kind = domain.activity;
        let resource = domain.resource.clone();
        let name = domain.name.clone();
        let coverage = self.activity.weights_of(kind, start, end);
        let cpu = matches!(kind, ActivityKind::Cpu);
        if self.process_level && (self.cpu_process_level || !cpu) {
            let interval = IntervalToShare {
                resource: &resource,
                domain: &name,
                start,
                end,
                parts,
            };
            processes::attribute(
                &interval,
                coverage,
                &self.activity.weights,
                &self.names,
                &self.outputs,
                &mut self.stats,
                out,
            );
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
        self.gpu_dynamic.prune_before(cutoff);
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
            self.names.forget_before(cutoff);
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
            self.state = match Inputs::resolve(ctx.metrics, self.config.attribute_node) {
                Some(inputs) => State::Active(inputs),
                None => State::PassThrough,
            };
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
            self.stats.log_summary();
        }
        self.state = state;
        Ok(())
    }
}
