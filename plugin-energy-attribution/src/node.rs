//! Whole-node attribution (`attribute_node`): the energy of a whole server
//! or module (hwmon/redfish domain `node` or `module`) contains the GPUs',
//! so the part of its dynamic energy that the GPUs' own intervals show as
//! dynamic is shared by GPU use, and the rest by CPU time, at both levels.
//!
//! Apart from the transform because it shares one interval by two kinds of
//! activity at once, where every other domain is shared by one; it reads the
//! transform's state through [`NodeAttribution`] and never the transform.

use std::collections::BTreeMap;
use std::ops::Bound;

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource, Timestamp,
};

use crate::activity::{Activity, Coverage};
use crate::cgroups::{CgroupActivity, IntervalToShare};
use crate::domain::ActivityKind;
use crate::outputs::OutputMetrics;
use crate::processes::ProcessNames;
use crate::stats::AttributionStats;

/// How long the process activity behind an open whole-node interval is held
/// at most, counted from the interval's start: a BMC's kWh counter may
/// advance only every few minutes (Redfish calls one frozen after the time
/// 4 W takes to fill a 0.01 kWh step, 2.5 h). An interval longer than this is
/// attributed by the shares of the part that activity still covers
/// (counted in `intervals_partially_covered`).
pub const NODE_HOLD_NS: u64 = 3 * 3600 * 1_000_000_000;

/// Per GPU (index of the activity stores): the dynamic energy of each
/// attributed GPU interval, end → (start, J), kept for the whole-node
/// domains, which are attributed after the GPUs.
#[derive(Debug, Default)]
pub(crate) struct GpuDynamic {
    by_gpu: Vec<BTreeMap<Timestamp, (Timestamp, f64)>>,
}

impl GpuDynamic {
    /// Notes the dynamic energy of an attributed interval of GPU `g`.
    pub(crate) fn record(&mut self, g: usize, start: Timestamp, end: Timestamp, dynamic_j: f64) {
        if self.by_gpu.len() <= g {
            self.by_gpu.resize_with(g + 1, BTreeMap::new);
        }
        self.by_gpu[g].insert(end, (start, dynamic_j));
    }

    /// The dynamic energy of each GPU over `[start, end]`, from the GPU
    /// intervals attributed so far (each taken by its overlap, as a uniform
    /// rate over its own interval); GPUs with none left out.
    fn over(&self, start: Timestamp, end: Timestamp) -> Vec<(usize, f64)> {
        let mut parts = Vec::new();
        for (g, log) in self.by_gpu.iter().enumerate() {
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

    /// Forgets the intervals that end at or before `cutoff`.
    pub(crate) fn prune_before(&mut self, cutoff: Timestamp) {
        for log in &mut self.by_gpu {
            // Intervals ending at or before the cutoff overlap nothing to come.
            if log.first_key_value().is_some_and(|(&end, _)| end <= cutoff) {
                *log = log.split_off(&Timestamp::from_unix_nanos(
                    cutoff.unix_nanos().saturating_add(1),
                ));
            }
        }
    }
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

/// What the attribution of a whole-node interval reads and counts: the
/// transform's state, lent for one interval.
pub(crate) struct NodeAttribution<'a> {
    pub(crate) activity: &'a mut Activity,
    pub(crate) gpu_dynamic: &'a GpuDynamic,
    pub(crate) names: &'a ProcessNames,
    /// Whether the process level shares CPU energy.
    pub(crate) process_level: bool,
    /// The cgroup level (None when not configured).
    pub(crate) cgroups: Option<&'a mut CgroupActivity>,
    pub(crate) outputs: &'a OutputMetrics,
    pub(crate) stats: &'a mut AttributionStats,
}

impl NodeAttribution<'_> {
    /// A whole-node interval: the part of its dynamic energy that the GPUs'
    /// own intervals show as dynamic goes by GPU use, the rest (never below
    /// 0) and the shared static energy by CPU time. A module on a CPU
    /// package (Grace Hopper) does not say which GPU it holds: all of its
    /// dynamic energy goes by CPU time.
    pub(crate) fn attribute(
        self,
        resource: &Resource,
        name: &AttributeValue,
        (start, end): (Timestamp, Timestamp),
        dynamic_j: f64,
        static_j: f64,
        out: &mut MeasurementBuffer,
    ) {
        let NodeAttribution {
            activity,
            gpu_dynamic,
            names,
            process_level,
            cgroups,
            outputs,
            stats,
        } = self;
        let duration_ns = end.unix_nanos() - start.unix_nanos();
        let mut gpu_parts = if *resource == Resource::LocalMachine {
            gpu_dynamic.over(start, end)
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
        let cpu = activity.weights_of(ActivityKind::Cpu, start, end);
        let cpu_weights = activity.weights.clone();

        if process_level {
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
            let reason_of = |c: Coverage| {
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
                let c = activity.weights_of(ActivityKind::Gpu(g), start, end);
                if c.total_weight.is_finite() && c.total_weight > 0.0 {
                    for &(pid, w) in &activity.weights {
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
                    out.push(outputs.attributed_to_process(
                        end,
                        resource,
                        name,
                        part,
                        pid,
                        names.get(pid),
                        energy,
                    ));
                }
            }
            for (part, reason, energy) in unattributed {
                out.push(outputs.unattributed(end, resource, name, part, reason, energy));
            }
            if any {
                stats.intervals_attributed += 1;
                if cpu.covered_ns < duration_ns {
                    stats.intervals_partially_covered += 1;
                }
            } else {
                stats.intervals_unattributed += 1;
            }
        }
        if let Some(cgroups) = cgroups {
            let mut points = Vec::new();
            let interval = IntervalToShare {
                resource,
                domain: name,
                start,
                end,
                parts: [("dynamic", cpu_dynamic_j), ("static", static_j)],
            };
            cgroups.attribute_cpu(&interval, cpu.total_weight, outputs, &mut points);
            for &(g, j) in &gpu_parts {
                activity.weights_of(ActivityKind::Gpu(g), start, end);
                let interval = IntervalToShare {
                    resource,
                    domain: name,
                    start,
                    end,
                    parts: [("dynamic", j), ("static", 0.0)],
                };
                cgroups.attribute_gpu(&interval, &activity.weights, outputs, &mut points);
            }
            if !gpu_parts.is_empty() {
                coalesce(&mut points);
            }
            out.extend(points);
        }
    }
}
