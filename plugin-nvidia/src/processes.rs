//! Per-process SM utilisation from the driver's sample buffer.
//!
//! `nvmlDeviceGetProcessUtilization` answers one sample per driver sample
//! period (1/6 s to 1 s depending on the GPU) and per process that used the
//! SM in it, only for periods newer than the timestamp asked for. A poll
//! that comes before the next period finds nothing: that says nothing about
//! the processes (reporting 0 then makes a busy process alternate between 0
//! and its real value). The driver also returns samples for pids that are
//! not in the running-process lists, and values above 100 %.
//!
//! So a process gets a value only when it has new samples, the mean of
//! them; a sample is kept only for a pid listed at this poll or the previous
//! one (a process that exited since) and only with a value of at most 100.

use std::collections::BTreeMap;

use crate::nvml::{GpuProcess, ProcessSample};

/// What the sampling remembers between polls of one device.
#[derive(Debug, Clone)]
pub(crate) struct ProcessTracker {
    /// Driver timestamp (µs) of the newest sample seen; starts at the
    /// agent's start, so the driver's older buffer is never reported.
    newest_sample_us: u64,
    /// Pids listed at the previous poll.
    listed_before: Vec<u32>,
}

impl ProcessTracker {
    /// A tracker that ignores samples up to `start_us`.
    pub(crate) fn new(start_us: u64) -> Self {
        Self {
            newest_sample_us: start_us,
            listed_before: Vec::new(),
        }
    }

    /// The timestamp to ask the driver for samples after.
    pub(crate) fn newest_sample_us(&self) -> u64 {
        self.newest_sample_us
    }

    /// The mean SM utilisation of each pid over its samples newer than the
    /// previous call, keeping only pids in `listed` (this poll's list, when
    /// it was read) or listed at the previous poll, and values ≤ 100. When
    /// `list_known` is false (the device cannot list its processes) pids
    /// cannot be checked and only the range is. Moves the watermark to the
    /// newest sample, kept or not.
    pub(crate) fn take_samples(
        &mut self,
        samples: &[ProcessSample],
        listed: Option<&[GpuProcess]>,
        list_known: bool,
    ) -> BTreeMap<u32, f64> {
        let since = self.newest_sample_us;
        let allowed = |pid: u32| {
            !list_known
                || self.listed_before.contains(&pid)
                || listed.is_some_and(|l| l.iter().any(|p| p.pid == pid))
        };
        let mut sums: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut newest = since;
        for s in samples.iter().filter(|s| s.timestamp_us > since) {
            newest = newest.max(s.timestamp_us);
            if s.sm_percent > 100 || !allowed(s.pid) {
                log::debug!(
                    "process sample dropped: pid {} ({}), {} % SM",
                    s.pid,
                    if allowed(s.pid) {
                        "running"
                    } else {
                        "not in the process lists"
                    },
                    s.sm_percent
                );
                continue;
            }
            let e = sums.entry(s.pid).or_default();
            e.0 += u64::from(s.sm_percent);
            e.1 += 1;
        }
        self.newest_sample_us = newest;
        sums.into_iter()
            .map(|(pid, (sum, n))| (pid, sum as f64 / n as f64))
            .collect()
    }

    /// Remembers this poll's list for the next poll (a list that could not
    /// be read keeps the previous one).
    pub(crate) fn remember(&mut self, listed: Option<&[GpuProcess]>) {
        if let Some(list) = listed {
            self.listed_before = list.iter().map(|p| p.pid).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pid: u32, timestamp_us: u64, sm_percent: u32) -> ProcessSample {
        ProcessSample {
            pid,
            timestamp_us,
            sm_percent,
        }
    }

    fn listed(pids: &[u32]) -> Vec<GpuProcess> {
        pids.iter()
            .map(|&pid| GpuProcess {
                pid,
                used_memory_bytes: None,
            })
            .collect()
    }

    #[test]
    fn utilisation_is_averaged_over_new_samples_only() {
        let mut t = ProcessTracker::new(100);
        let list = listed(&[1, 2]);
        let means = t.take_samples(
            &[s(1, 90, 99), s(1, 110, 20), s(1, 120, 40), s(2, 130, 5)],
            Some(&list),
            true,
        );
        assert_eq!(means.get(&1), Some(&30.0));
        assert_eq!(means.get(&2), Some(&5.0));
        assert_eq!(t.newest_sample_us(), 130);
        // nothing new: nothing said, not 0
        assert!(t.take_samples(&[], Some(&list), true).is_empty());
        assert_eq!(t.newest_sample_us(), 130);
    }

    #[test]
    fn phantom_pids_and_impossible_values_are_dropped() {
        let mut t = ProcessTracker::new(0);
        let list = listed(&[1]);
        let means = t.take_samples(&[s(1, 10, 101), s(9, 10, 50)], Some(&list), true);
        assert!(means.is_empty(), "{means:?}");
        assert_eq!(t.newest_sample_us(), 10, "the watermark still moves");
        // without a process list, only the range can be checked
        let means = t.take_samples(&[s(9, 20, 50), s(9, 21, 150)], None, false);
        assert_eq!(means.get(&9), Some(&50.0));
    }

    #[test]
    fn a_pid_listed_at_the_previous_poll_keeps_its_last_samples() {
        let mut t = ProcessTracker::new(0);
        t.remember(Some(&listed(&[5])));
        let means = t.take_samples(&[s(5, 10, 30)], Some(&listed(&[])), true);
        assert_eq!(means.get(&5), Some(&30.0));
        t.remember(Some(&listed(&[])));
        assert!(t.take_samples(&[s(5, 20, 30)], Some(&[]), true).is_empty());
        // an unreadable list keeps the previous one
        t.remember(Some(&listed(&[6])));
        t.remember(None);
        assert_eq!(
            t.take_samples(&[s(6, 30, 1)], None, true).get(&6),
            Some(&1.0)
        );
    }
}
