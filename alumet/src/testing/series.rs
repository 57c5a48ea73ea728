//! Per-series totals of a run's points, to compare two runs of the same
//! input (thinned and not, before and after a change): a series is a
//! metric, resource, consumer and attribute list, as outputs key it.

use std::collections::BTreeMap;

use crate::measurement::{MeasurementPoint, Timestamp};
use crate::metrics::MetricRegistry;

use super::fixture::{consumer_text, resource_text};

/// What a run wrote for one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesTotal {
    /// Sum of its values.
    pub sum: f64,
    /// Its points.
    pub points: usize,
    /// Its first point's timestamp.
    pub first: Timestamp,
    /// Its last point's timestamp.
    pub last: Timestamp,
}

/// Every series of `points` by `metric resource consumer k=v;k=v` (sorted attributes).
pub fn series_totals(
    points: &[MeasurementPoint],
    metrics: &MetricRegistry,
) -> BTreeMap<String, SeriesTotal> {
    let mut series = BTreeMap::new();
    for p in points {
        let metric = metrics.get(p.metric).map_or("?", |m| m.name.as_str());
        let mut attrs: Vec<String> = p
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        attrs.sort();
        let key = format!(
            "{metric} {} {} {}",
            resource_text(&p.resource),
            consumer_text(&p.consumer),
            attrs.join(";")
        );
        let e = series.entry(key).or_insert(SeriesTotal {
            sum: 0.0,
            points: 0,
            first: p.timestamp,
            last: p.timestamp,
        });
        e.sum += p.value.as_f64();
        e.points += 1;
        e.first = e.first.min(p.timestamp);
        e.last = e.last.max(p.timestamp);
    }
    series
}

/// The index of the poll at or after `t` among `polls` (the times each
/// poll had ended), to compare when two runs' series start and end.
pub fn poll_index(polls: &[Timestamp], t: Timestamp) -> Option<usize> {
    polls.iter().position(|p| t <= *p)
}
