//! What a window keeps of its points: an exact sum, the count, the
//! extremes and the last value, and the functions a gauge is reduced with.
//!
//! "Exact to the µJ": u64 values are summed as integers (saturating at
//! 2^64 − 1, which no window reaches). f64 values are summed with
//! Neumaier's compensated summation, whose error does not grow with the
//! number of points: the total is within about two ulp of the exact sum
//! of the f64 inputs (plus a term in the square of the ulp); in joules that
//! is below 1 µJ for any window total under 1 GJ (one ulp there is
//! 0.12 µJ), while a plain running sum's error grows with each point.

use alumet::measurement::MeasurementValue;
use serde::{Deserialize, Serialize};

/// A gauge's reduction over a window.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum GaugeFn {
    /// The arithmetic mean of the points (a u64 gauge's mean is rounded).
    Mean,
    /// The smallest point.
    Min,
    /// The largest point.
    Max,
    /// The latest point.
    Last,
}

impl GaugeFn {
    /// Every function, in the order their points are emitted.
    pub const ALL: [GaugeFn; 4] = [GaugeFn::Mean, GaugeFn::Min, GaugeFn::Max, GaugeFn::Last];

    /// The value of the `aggregation` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            GaugeFn::Mean => "mean",
            GaugeFn::Min => "min",
            GaugeFn::Max => "max",
            GaugeFn::Last => "last",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`GaugeFn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GaugeFns(u8);

impl GaugeFns {
    /// Whether `f` is in the set.
    pub fn contains(self, f: GaugeFn) -> bool {
        self.0 & f.bit() != 0
    }

    /// The functions of the set, in [`GaugeFn::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = GaugeFn> {
        GaugeFn::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl From<&[GaugeFn]> for GaugeFns {
    fn from(fns: &[GaugeFn]) -> Self {
        Self(fns.iter().fold(0, |acc, f| acc | f.bit()))
    }
}

/// Neumaier's compensated sum of f64 values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExactSum {
    sum: f64,
    compensation: f64,
}

impl ExactSum {
    /// Adds `x`, keeping the low-order bits that `sum + x` loses.
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// The total.
    pub fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// One series' points in one window.
#[derive(Debug, Clone)]
pub struct Window {
    /// End of the window, ns since the epoch; it holds `(end - length, end]`.
    pub end: u64,
    /// Points that came after the window had closed: kept apart.
    pub late: bool,
    /// How many points.
    pub count: u64,
    /// Sum of the u64 values.
    pub sum_u64: u64,
    /// Sum of the f64 values.
    pub sum_f64: ExactSum,
    /// Whether any value was an f64.
    pub any_f64: bool,
    /// Smallest value.
    pub min: MeasurementValue,
    /// Largest value.
    pub max: MeasurementValue,
    /// Latest value (by timestamp; the later one on a tie).
    pub last: MeasurementValue,
    /// Timestamp of the latest value.
    pub last_ts: u64,
}

fn less(a: MeasurementValue, b: MeasurementValue) -> bool {
    match (a, b) {
        (MeasurementValue::U64(a), MeasurementValue::U64(b)) => a < b,
        (a, b) => a.as_f64() < b.as_f64(),
    }
}

impl Window {
    /// A window holding one point.
    pub fn new(end: u64, late: bool, value: MeasurementValue, ts: u64) -> Self {
        let mut w = Self {
            end,
            late,
            count: 0,
            sum_u64: 0,
            sum_f64: ExactSum::default(),
            any_f64: false,
            min: value,
            max: value,
            last: value,
            last_ts: ts,
        };
        w.add(value, ts);
        w
    }

    /// Adds a point.
    #[inline]
    pub fn add(&mut self, value: MeasurementValue, ts: u64) {
        self.count += 1;
        match value {
            MeasurementValue::U64(v) => self.sum_u64 = self.sum_u64.saturating_add(v),
            MeasurementValue::F64(v) => {
                self.sum_f64.add(v);
                self.any_f64 = true;
            }
        }
        if less(value, self.min) {
            self.min = value;
        }
        if less(self.max, value) {
            self.max = value;
        }
        if ts >= self.last_ts {
            self.last = value;
            self.last_ts = ts;
        }
    }

    /// The sum, in the points' type (f64 if any was an f64).
    pub fn sum(&self) -> MeasurementValue {
        if self.any_f64 {
            let mut s = self.sum_f64;
            s.add(self.sum_u64 as f64);
            MeasurementValue::F64(s.value())
        } else {
            MeasurementValue::U64(self.sum_u64)
        }
    }

    /// The value of `f` over the window.
    pub fn gauge(&self, f: GaugeFn) -> MeasurementValue {
        match f {
            GaugeFn::Min => self.min,
            GaugeFn::Max => self.max,
            GaugeFn::Last => self.last,
            GaugeFn::Mean => {
                let count = self.count.max(1) as f64;
                match self.sum() {
                    MeasurementValue::U64(s) => {
                        // The integer part exactly, the remainder rounded.
                        let (q, r) = (s / self.count.max(1), s % self.count.max(1));
                        MeasurementValue::U64(q + u64::from(r as f64 / count >= 0.5))
                    }
                    MeasurementValue::F64(s) => MeasurementValue::F64(s / count),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensated_sum_keeps_what_a_plain_sum_loses() {
        let values = [1e16, 1.0, -1e16, 1.0];
        let mut exact = ExactSum::default();
        let mut plain = 0.0;
        for v in values {
            exact.add(v);
            plain += v;
        }
        assert_eq!(exact.value(), 2.0);
        assert_ne!(plain, 2.0, "the plain sum loses the first 1.0");
    }

    #[test]
    fn a_million_tenths_of_a_joule_sum_to_the_microjoule() {
        // The exact sum of the f64 nearest 0.1, a million times, is
        // 100 000.000 000 000 005 55 J: 100 000 J to far below a µJ.
        let mut exact = ExactSum::default();
        let mut plain = 0.0_f64;
        for _ in 0..1_000_000 {
            exact.add(0.1);
            plain += 0.1;
        }
        assert!(
            (exact.value() - 100_000.0).abs() < 1e-9,
            "{}",
            exact.value()
        );
        assert!(
            (plain - 100_000.0).abs() > 1e-6,
            "a plain sum is off by more than a µJ: {plain}"
        );
    }

    #[test]
    fn a_window_gives_sum_mean_min_max_last() {
        let mut w = Window::new(10, false, MeasurementValue::U64(5), 3);
        w.add(MeasurementValue::U64(2), 1);
        w.add(MeasurementValue::U64(4), 2);
        assert_eq!(w.sum(), MeasurementValue::U64(11));
        assert_eq!(
            w.gauge(GaugeFn::Mean),
            MeasurementValue::U64(4),
            "11/3 rounds to 4"
        );
        assert_eq!(w.gauge(GaugeFn::Min), MeasurementValue::U64(2));
        assert_eq!(w.gauge(GaugeFn::Max), MeasurementValue::U64(5));
        assert_eq!(
            w.gauge(GaugeFn::Last),
            MeasurementValue::U64(5),
            "by timestamp, not arrival"
        );
        let mut f = Window::new(10, false, MeasurementValue::F64(0.5), 1);
        f.add(MeasurementValue::F64(-1.5), 2);
        assert_eq!(f.gauge(GaugeFn::Mean), MeasurementValue::F64(-0.5));
        assert_eq!(f.gauge(GaugeFn::Min), MeasurementValue::F64(-1.5));
        let fns = GaugeFns::from(&[GaugeFn::Max, GaugeFn::Mean][..]);
        assert_eq!(
            fns.iter().collect::<Vec<_>>(),
            vec![GaugeFn::Mean, GaugeFn::Max]
        );
    }
}
