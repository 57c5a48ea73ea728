//! One exported family and its series: what the store keeps and the
//! exposition renders (both read it; neither is needed to define it), and
//! how their values are written as text.

use std::collections::HashMap;
use std::fmt::Write;

use alumet::metrics::MetricKind;

use crate::naming::FamilyName;

/// One series: its value and times (24 bytes; the key is its label set).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Series {
    /// The value: `f64` bits, or a `u64` in an integer family.
    pub value: u64,
    /// For counters made of deltas: the first point's time, ms since the
    /// epoch (OpenMetrics `_created`); 0 when unknown.
    pub created_ms: u64,
    /// When it was last updated, ms since the store was created (monotonic).
    pub seen_ms: u64,
}

/// One exported metric and its series.
#[derive(Debug)]
pub(crate) struct Family {
    pub meta: FamilyName,
    /// What the Alumet metric is: deltas are summed, the others replaced.
    pub source_kind: MetricKind,
    /// Values are exact unsigned integers (u64 metric, no scaling).
    pub integer: bool,
    /// Whether its series count against `max_series`: all but the
    /// pipeline's own `alumet_*` metrics (a handful of series that say
    /// what was lost, which a full store must not hide).
    pub capped: bool,
    pub series: HashMap<Box<str>, Series>,
}

impl Family {
    /// The value of a series as text.
    pub fn format_value(&self, value: u64, out: &mut String) {
        if self.integer {
            let _ = write!(out, "{value}");
        } else {
            push_f64(f64::from_bits(value), out);
        }
    }
}

/// Writes a float as both formats want it: shortest round-trip form,
/// `NaN`, `+Inf`, `-Inf`.
pub fn push_f64(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v:?}");
    }
}
