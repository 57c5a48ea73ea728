//! The process level of attribution: an energy interval's parts are shared
//! among processes by their activity (CPU time or GPU use) over it, or
//! reported as unattributed with the reason none could be; and the process
//! names (`exe`) its points carry.
//!
//! The counterpart of `cgroups` for processes; whole nodes (`node`) share
//! by CPU and GPU use together and only read the names from here.

use std::collections::HashMap;

use alumet::measurement::{AttributeValue, MeasurementBuffer, MeasurementPoint, Timestamp};

use crate::activity::Coverage;
use crate::cgroups::IntervalToShare;
use crate::outputs::OutputMetrics;
use crate::stats::{should_log, AttributionStats};

/// Process name by pid, and the last poll that reported the pid (so that
/// names of processes gone from every store can be forgotten).
#[derive(Debug, Default)]
pub(crate) struct ProcessNames {
    by_pid: HashMap<u32, (AttributeValue, Timestamp)>,
}

impl ProcessNames {
    /// Notes the `exe` of an activity point of `pid`, and that it was seen then.
    pub(crate) fn remember(&mut self, pid: u32, p: &MeasurementPoint) {
        let Some(exe) = p.attr("exe") else {
            if let Some(entry) = self.by_pid.get_mut(&pid) {
                entry.1 = entry.1.max(p.timestamp);
            }
            return;
        };
        match self.by_pid.get_mut(&pid) {
            Some(entry) => {
                if entry.0 != *exe {
                    entry.0 = exe.clone();
                }
                entry.1 = entry.1.max(p.timestamp);
            }
            None => {
                self.by_pid.insert(pid, (exe.clone(), p.timestamp));
            }
        }
    }

    /// The name of `pid`, if a point said it.
    pub(crate) fn get(&self, pid: u32) -> Option<&AttributeValue> {
        self.by_pid.get(&pid).map(|(exe, _)| exe)
    }

    /// Forgets the processes last seen before `cutoff`.
    pub(crate) fn forget_before(&mut self, cutoff: Timestamp) {
        self.by_pid.retain(|_, (_, seen)| *seen >= cutoff);
    }
}

/// The process level: shares by process activity (`weights`, whose sum and
/// coverage of the interval are `coverage`), or unattributed.
pub(crate) fn attribute(
    interval: &IntervalToShare,
    coverage: Coverage,
    weights: &[(u32, f64)],
    names: &ProcessNames,
    outputs: &OutputMetrics,
    stats: &mut AttributionStats,
    out: &mut MeasurementBuffer,
) {
    let IntervalToShare {
        resource,
        domain,
        start,
        end,
        parts,
    } = *interval;
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
                out.push(outputs.unattributed(end, resource, domain, part, reason, energy));
            }
        }
        stats.intervals_unattributed += 1;
        if reason == "no_process_data" && should_log(stats.intervals_unattributed) {
            log::warn!(
                "energy-attribution: no process data covers {} {} over an interval ending at {:.3} s; its {dynamic_j:.3} J dynamic energy is unattributed ({} intervals so far)",
                resource,
                domain,
                end.unix_seconds_f64(),
                stats.intervals_unattributed
            );
        }
        return;
    }
    stats.intervals_attributed += 1;
    if coverage.covered_ns < duration_ns {
        stats.intervals_partially_covered += 1;
    }
    let total = coverage.total_weight;
    for &(pid, weight) in weights {
        let share = weight / total;
        for (part, energy) in parts {
            if energy <= 0.0 {
                continue;
            }
            out.push(outputs.attributed_to_process(
                end,
                resource,
                domain,
                part,
                pid,
                names.get(pid),
                energy * share,
            ));
        }
    }
}
