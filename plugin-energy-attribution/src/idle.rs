//! Idle (static) power of one energy domain: configured, or estimated as a low
//! percentile of the power observed over a sliding window.

use std::collections::VecDeque;

use alumet::measurement::Timestamp;

/// Where a domain's idle power comes from.
#[derive(Debug, Clone)]
pub enum IdlePower {
    /// Fixed by the user (`idle_power_w`), in watts.
    Configured(f64),
    /// Estimated from the power observed recently.
    Estimated(IdlePowerEstimator),
}

impl IdlePower {
    /// Records the power of an interval ending at `end` (estimation only) and
    /// returns the idle power to use for that interval, in watts.
    pub fn observe(&mut self, end: Timestamp, power_w: f64) -> f64 {
        match self {
            IdlePower::Configured(w) => *w,
            IdlePower::Estimated(e) => {
                e.push(end, power_w);
                e.idle_power_w().unwrap_or(0.0)
            }
        }
    }

    /// Whether the value is an estimate (for the `estimated` attribute).
    pub fn is_estimated(&self) -> bool {
        matches!(self, IdlePower::Estimated(_))
    }
}

/// Low percentile of the power samples of the last `window_ns` nanoseconds.
///
/// Samples are kept twice: in arrival order (to expire them) and sorted (so
/// the percentile is one index away). Insertion and removal in the sorted
/// copy are a binary search and a `memmove`, cheap for the few thousand
/// samples a 10-minute window holds at 10 Hz.
#[derive(Debug, Clone)]
pub struct IdlePowerEstimator {
    window_ns: u64,
    percentile: f64,
    by_time: VecDeque<(Timestamp, f64)>,
    sorted: Vec<f64>,
}

impl IdlePowerEstimator {
    /// An estimator over `window_ns`, taking the `percentile`-th (0–100) percentile.
    pub fn new(window_ns: u64, percentile: f64) -> Self {
        Self {
            window_ns,
            percentile: percentile.clamp(0.0, 100.0),
            by_time: VecDeque::new(),
            sorted: Vec::new(),
        }
    }

    /// Adds the power of an interval ending at `end`; samples older than the
    /// window (relative to `end`) are forgotten. Non-finite or negative
    /// powers are ignored.
    pub fn push(&mut self, end: Timestamp, power_w: f64) {
        if !power_w.is_finite() || power_w < 0.0 {
            return;
        }
        let horizon = end.unix_nanos().saturating_sub(self.window_ns);
        while let Some(&(t, p)) = self.by_time.front() {
            if t.unix_nanos() >= horizon {
                break;
            }
            self.by_time.pop_front();
            let i = self.sorted.partition_point(|&x| x < p);
            if i < self.sorted.len() {
                self.sorted.remove(i);
            }
        }
        self.by_time.push_back((end, power_w));
        let i = self.sorted.partition_point(|&x| x < power_w);
        self.sorted.insert(i, power_w);
    }

    /// The nearest-rank percentile of the samples in the window, if any.
    pub fn idle_power_w(&self) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = (self.percentile / 100.0 * n as f64).ceil() as usize;
        Some(self.sorted[rank.clamp(1, n) - 1])
    }

    /// Number of samples in the window.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True if no sample is in the window.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: u64) -> Timestamp {
        Timestamp::from_unix_nanos(s * 1_000_000_000)
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut e = IdlePowerEstimator::new(1_000 * 1_000_000_000, 5.0);
        for (i, p) in (1..=100).rev().enumerate() {
            e.push(ts(i as u64), p as f64);
        }
        // 5th percentile of 1..=100 by nearest rank is the 5th smallest.
        assert_eq!(e.idle_power_w(), Some(5.0));
        let mut zero = IdlePowerEstimator::new(1_000 * 1_000_000_000, 0.0);
        zero.push(ts(0), 7.0);
        zero.push(ts(1), 3.0);
        assert_eq!(zero.idle_power_w(), Some(3.0));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut e = IdlePowerEstimator::new(10 * 1_000_000_000, 0.0);
        e.push(ts(0), 1.0);
        e.push(ts(5), 20.0);
        assert_eq!(e.idle_power_w(), Some(1.0));
        e.push(ts(12), 30.0);
        assert_eq!(e.len(), 2);
        assert_eq!(e.idle_power_w(), Some(20.0));
    }

    #[test]
    fn invalid_powers_are_ignored() {
        let mut e = IdlePowerEstimator::new(10 * 1_000_000_000, 0.0);
        e.push(ts(0), f64::NAN);
        e.push(ts(0), -3.0);
        assert!(e.is_empty());
        assert_eq!(e.idle_power_w(), None);
    }
}
