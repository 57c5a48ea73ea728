//! Hybrid machines: every workload measured from the hierarchy that
//! accounts it.
//!
//! With v1 controllers and a v2 tree side by side, not every cgroup sits in
//! v1 `cpuacct`: a manager configured for the v2 tree, or one that skips
//! `cpuacct` (libvirt's `cgroup_controllers`, systemd units without CPU
//! accounting), leaves a workload there only. Read from `cpuacct` alone,
//! such a workload is invisible and its time lands in the machine's rest.
//! So the source has two lanes polled together, with one timestamp: the
//! primary hierarchy (v1 `cpuacct`) as before, and the v2 tree's `cpu.stat`
//! for the cgroups that `cpuacct` does not hold, itself or through an
//! ancestor below the root. A cgroup is read from one lane only, so nothing
//! is counted twice, and the v2 lane reports no root (the primary root
//! already accounts every CPU of the machine). The kernel keeps v2's
//! `cpu.stat` in every cgroup, controllers enabled or not.

use alumet::measurement::{MeasurementBuffer, MeasurementValue, Timestamp};
use alumet::pipeline::{PollError, Source};

use crate::source::CgroupSource;

/// The primary lane and the cgroups of the v2 tree it does not hold,
/// polled as one source.
pub struct Lanes {
    primary: CgroupSource,
    unaccounted: CgroupSource,
    measured_metric: alumet::metrics::MetricId,
}

impl Lanes {
    /// Both lanes; `measured_metric` is `cgroups_measured`, which the
    /// primary lane emits and this counts both lanes in.
    pub fn new(
        primary: CgroupSource,
        unaccounted: CgroupSource,
        measured_metric: alumet::metrics::MetricId,
    ) -> Self {
        Self {
            primary,
            unaccounted,
            measured_metric,
        }
    }

    /// Paths measured from the v2 tree (for tests and diagnostics).
    pub fn unaccounted_paths(&self) -> Vec<String> {
        self.unaccounted.measured_paths()
    }
}

impl Source for Lanes {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let first = into.len();
        let primary = self.primary.poll(into, timestamp);
        let unaccounted = self.unaccounted.poll(into, timestamp);
        let extra = self.unaccounted.measured_paths().len() as u64;
        if let Some(marker) = into[first..]
            .iter_mut()
            .find(|p| p.metric == self.measured_metric && p.timestamp == timestamp)
        {
            if let MeasurementValue::U64(n) = marker.value {
                marker.value = MeasurementValue::U64(n + extra);
            }
        }
        primary.and(unaccounted)
    }
}
