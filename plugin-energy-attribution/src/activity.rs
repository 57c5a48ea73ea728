//! Per-process activity (CPU time, GPU utilisation) indexed by poll time, and
//! the overlap weights that align it with an energy interval.
//!
//! A poll at time `p1` reports, for each process, what it did since the
//! previous poll `p0` of the same source. The store keeps every poll time it
//! has seen (even polls where no process was active: they bound the next
//! poll's interval) and, per poll, the positive values by pid. The weight of
//! a process over an energy interval `[t0, t1]` is the part of each of its
//! samples that falls inside `[t0, t1]`, assuming a uniform rate within
//! `[p0, p1]`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use alumet::measurement::{Resource, Timestamp};

use crate::domain::ActivityKind;

/// How a sample's value turns into a weight over a sub-interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    /// The value is an amount over `[p0, p1]` (CPU seconds, a delta): a
    /// sub-interval of length `d` gets `value × d / (p1 − p0)`.
    Amount,
    /// The value is a level over `[p0, p1]` (utilisation %, a gauge): a
    /// sub-interval of length `d` gets `value × d` (seconds).
    Level,
}

/// What [`ActivityStore::weights`] found for an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Coverage {
    /// Sum of the weights of all processes.
    pub total_weight: f64,
    /// How much of the interval, in nanoseconds, polls with a known start cover.
    pub covered_ns: u64,
}

/// Activity samples of one source (e.g. procfs process CPU time, machine-wide).
#[derive(Debug, Clone)]
pub struct ActivityStore {
    kind: SampleKind,
    /// Poll time → pid → value (only finite, strictly positive values).
    polls: BTreeMap<Timestamp, HashMap<u32, f64>>,
    /// Scratch accumulator reused by [`ActivityStore::weights`].
    scratch: HashMap<u32, f64>,
}

impl ActivityStore {
    /// An empty store whose samples are of `kind`.
    pub fn new(kind: SampleKind) -> Self {
        Self {
            kind,
            polls: BTreeMap::new(),
            scratch: HashMap::new(),
        }
    }

    /// Records that the source polled at `t`, whether or not any process was active.
    pub fn mark_poll(&mut self, t: Timestamp) {
        self.polls.entry(t).or_default();
    }

    /// Adds `value` for `pid` at poll `t` (values of the same pid and poll add
    /// up, e.g. user + system CPU time). Returns false, and records only the
    /// poll time, when the value is not finite or not positive.
    pub fn add(&mut self, t: Timestamp, pid: u32, value: f64) -> bool {
        let poll = self.polls.entry(t).or_default();
        if !(value.is_finite() && value > 0.0) {
            return false;
        }
        *poll.entry(pid).or_insert(0.0) += value;
        true
    }

    /// The latest poll time seen: everything up to it has been reported.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.polls.keys().next_back().copied()
    }

    /// The latest poll time before `t`: the start of the sample a poll at `t` reports.
    pub fn poll_before(&self, t: Timestamp) -> Option<Timestamp> {
        self.polls.range(..t).next_back().map(|(p, _)| *p)
    }

    /// Number of poll times held.
    pub fn poll_count(&self) -> usize {
        self.polls.len()
    }

    /// Computes each process's weight over `[t0, t1]` into `out` (sorted by
    /// pid, only positive weights). A poll with no earlier poll known has an
    /// unknown start and contributes nothing.
    pub fn weights(&mut self, t0: Timestamp, t1: Timestamp, out: &mut Vec<(u32, f64)>) -> Coverage {
        out.clear();
        self.scratch.clear();
        let mut covered_ns = 0u64;
        if t1 <= t0 {
            return Coverage::default();
        }
        let mut prev = self.polls.range(..=t0).next_back().map(|(t, _)| *t);
        for (&p1, samples) in self.polls.range((Bound::Excluded(t0), Bound::Unbounded)) {
            if let Some(p0) = prev {
                let start = p0.max(t0).unix_nanos();
                let end = p1.min(t1).unix_nanos();
                if end > start {
                    covered_ns += end - start;
                }
                if end > start && !samples.is_empty() {
                    let overlap_s = (end - start) as f64 / 1e9;
                    let factor = match self.kind {
                        SampleKind::Amount => {
                            overlap_s / ((p1.unix_nanos() - p0.unix_nanos()) as f64 / 1e9)
                        }
                        SampleKind::Level => overlap_s,
                    };
                    for (&pid, &v) in samples {
                        *self.scratch.entry(pid).or_insert(0.0) += v * factor;
                    }
                }
            }
            if p1 >= t1 {
                break;
            }
            prev = Some(p1);
        }
        out.extend(
            self.scratch
                .iter()
                .filter(|(_, &w)| w > 0.0)
                .map(|(&p, &w)| (p, w)),
        );
        out.sort_unstable_by_key(|(pid, _)| *pid);
        Coverage {
            total_weight: out.iter().map(|(_, w)| w).sum(),
            covered_ns,
        }
    }

    /// Forgets the polls that no interval starting at or after `cutoff` can
    /// need: all those before it except the last one (the start of the next).
    pub fn prune_before(&mut self, cutoff: Timestamp) {
        let Some(keep_from) = self.polls.range(..=cutoff).next_back().map(|(t, _)| *t) else {
            return;
        };
        self.polls = self.polls.split_off(&keep_from);
    }

    /// The oldest poll time held.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.polls.keys().next().copied()
    }
}

/// Activity stores and the weights of the last interval asked for.
pub(crate) struct Activity {
    pub(crate) cpu: ActivityStore,
    /// One store per GPU, with its resource.
    pub(crate) gpus: Vec<(Resource, ActivityStore)>,
    /// The weights of `(kind, start, end)`: RAPL domains polled together
    /// share their intervals, so one computation serves them all.
    pub(crate) cache: Option<(ActivityKind, Timestamp, Timestamp, Coverage)>,
    pub(crate) weights: Vec<(u32, f64)>,
}

impl Activity {
    /// Empty stores.
    pub(crate) fn new() -> Self {
        Self {
            cpu: ActivityStore::new(SampleKind::Amount),
            gpus: Vec::new(),
            cache: None,
            weights: Vec::new(),
        }
    }

    pub(crate) fn store(&mut self, kind: ActivityKind) -> Option<&mut ActivityStore> {
        match kind {
            ActivityKind::Cpu => Some(&mut self.cpu),
            ActivityKind::Gpu(i) => self.gpus.get_mut(i).map(|(_, s)| s),
        }
    }

    pub(crate) fn gpu_index(&mut self, resource: &Resource) -> usize {
        if let Some(i) = self.gpus.iter().position(|(r, _)| r == resource) {
            return i;
        }
        self.gpus
            .push((resource.clone(), ActivityStore::new(SampleKind::Level)));
        self.gpus.len() - 1
    }

    pub(crate) fn watermark(&self, kind: ActivityKind) -> Option<Timestamp> {
        match kind {
            ActivityKind::Cpu => self.cpu.watermark(),
            ActivityKind::Gpu(i) => self.gpus.get(i).and_then(|(_, s)| s.watermark()),
        }
    }

    pub(crate) fn weights_of(
        &mut self,
        kind: ActivityKind,
        start: Timestamp,
        end: Timestamp,
    ) -> Coverage {
        if let Some((k, s, e, c)) = self.cache {
            if k == kind && s == start && e == end {
                return c;
            }
        }
        let mut weights = std::mem::take(&mut self.weights);
        let coverage = match self.store(kind) {
            Some(store) => store.weights(start, end, &mut weights),
            None => {
                weights.clear();
                Coverage::default()
            }
        };
        self.weights = weights;
        self.cache = Some((kind, start, end, coverage));
        coverage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_unix_nanos(v * 1_000_000)
    }

    #[test]
    fn amount_is_split_by_overlap() {
        let mut s = ActivityStore::new(SampleKind::Amount);
        s.mark_poll(ms(0));
        s.add(ms(1000), 1, 0.6);
        s.add(ms(1000), 1, 0.2); // system time adds to user time
        s.add(ms(1000), 2, 0.4);
        let mut out = Vec::new();
        let c = s.weights(ms(100), ms(200), &mut out);
        assert_eq!(out.len(), 2);
        assert!((out[0].1 - 0.08).abs() < 1e-12, "{out:?}");
        assert!((out[1].1 - 0.04).abs() < 1e-12);
        assert!((c.total_weight - 0.12).abs() < 1e-12);
        assert_eq!(c.covered_ns, 100_000_000);
    }

    #[test]
    fn interval_spanning_two_polls_takes_from_both() {
        let mut s = ActivityStore::new(SampleKind::Amount);
        s.mark_poll(ms(0));
        s.add(ms(1000), 1, 1.0);
        s.add(ms(2000), 2, 1.0);
        let mut out = Vec::new();
        s.weights(ms(900), ms(1100), &mut out);
        assert_eq!(out, vec![(1, 0.1), (2, 0.1)]);
    }

    #[test]
    fn first_poll_has_no_known_start() {
        let mut s = ActivityStore::new(SampleKind::Amount);
        s.add(ms(1000), 1, 1.0);
        let mut out = Vec::new();
        assert_eq!(s.weights(ms(0), ms(1000), &mut out), Coverage::default());
        assert!(out.is_empty());
    }

    #[test]
    fn level_weights_are_level_times_seconds() {
        let mut s = ActivityStore::new(SampleKind::Level);
        s.mark_poll(ms(0));
        s.add(ms(1000), 7, 50.0);
        let mut out = Vec::new();
        s.weights(ms(0), ms(500), &mut out);
        assert_eq!(out, vec![(7, 25.0)]);
    }

    #[test]
    fn invalid_values_only_mark_the_poll() {
        let mut s = ActivityStore::new(SampleKind::Amount);
        assert!(!s.add(ms(5), 1, f64::NAN));
        assert!(!s.add(ms(5), 1, -1.0));
        assert_eq!(s.watermark(), Some(ms(5)));
    }

    #[test]
    fn pruning_keeps_the_start_of_the_next_interval() {
        let mut s = ActivityStore::new(SampleKind::Amount);
        for t in 0..5 {
            s.add(ms(t * 1000), 1, 1.0);
        }
        s.prune_before(ms(2500));
        assert_eq!(s.oldest(), Some(ms(2000)));
        let mut out = Vec::new();
        let c = s.weights(ms(2500), ms(3000), &mut out);
        assert!((c.total_weight - 0.5).abs() < 1e-12);
    }
}
