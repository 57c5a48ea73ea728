//! Thinning in front of an output that stores rows: the points of thinned
//! metrics ([`Thinning`]) that add nothing are left out, and each series
//! keeps a start and an end.
//!
//! A series is a metric, resource, consumer and attribute list. Its first
//! point is always written. After that a `SkipZero` point is written when
//! it is not zero, a `Gauge` point when it moved enough or the last one
//! written is old. A point left out is remembered as the series' possible
//! last point: when the series ends (its source polled the metric twice
//! without it: the process or cgroup is gone), that point is written, with
//! its own timestamp, so the series ends where its consumer was last seen.
//! Sums over a series are unchanged: only zeros (deltas) and repeated
//! values (gauges) are left out.
//!
//! Every point of a metric from one poll has the poll's timestamp, and a
//! poll may come in several buffers; so a series is ended only once a poll
//! *after* the one it missed has begun, never while its poll may still be
//! arriving.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use crate::measurement::{AttributeValue, MeasurementBuffer, MeasurementPoint, Timestamp};
use crate::metrics::{MetricId, MetricRegistry, Thinning};

/// The thinning state of one output.
#[derive(Debug, Default)]
pub(crate) struct Thinner {
    series: HashMap<u64, Series, BuildHasherDefault<KeyHasher>>,
    /// Per thinned metric: its latest poll's timestamp, and the one before.
    polls: HashMap<MetricId, (Timestamp, Option<Timestamp>)>,
    /// Points left out so far.
    left_out: u64,
}

#[derive(Debug)]
struct Series {
    metric: MetricId,
    last_seen: Timestamp,
    last_written_at: Timestamp,
    last_written: f64,
    /// The latest point left out, written if the series ends after it.
    pending: Option<MeasurementPoint>,
}

impl Thinner {
    /// Thins the buffer an output received; returns the number of points
    /// left out. Thinned in place when this output holds the only
    /// reference, else into a new buffer of the points kept (the others
    /// are the other outputs', untouched). Points of metrics without a
    /// [`Thinning`] are kept as they are.
    pub(crate) fn thin_shared(
        &mut self,
        buffer: &mut Arc<MeasurementBuffer>,
        metrics: &MetricRegistry,
    ) -> u64 {
        if let Some(own) = Arc::get_mut(buffer) {
            return self.thin(own, metrics);
        }
        let mut new_poll = false;
        let mut kept: MeasurementBuffer = Vec::with_capacity(buffer.len());
        for p in buffer.iter() {
            if self.select(p, metrics, &mut new_poll) {
                kept.push(p.clone());
            }
        }
        let left_out = self.finish(&mut kept, buffer.len(), new_poll);
        *buffer = Arc::new(kept);
        left_out
    }

    /// Thins `buffer` in place; returns the number of points left out.
    pub(crate) fn thin(&mut self, buffer: &mut MeasurementBuffer, metrics: &MetricRegistry) -> u64 {
        let mut new_poll = false;
        let before = buffer.len();
        buffer.retain(|p| self.select(p, metrics, &mut new_poll));
        self.finish(buffer, before, new_poll)
    }

    /// Whether `p` is written; notes when it begins a new poll of its metric.
    fn select(
        &mut self,
        p: &MeasurementPoint,
        metrics: &MetricRegistry,
        new_poll: &mut bool,
    ) -> bool {
        let Some(thinning) = metrics.get(p.metric).and_then(|m| m.thinning) else {
            return true;
        };
        *new_poll |= self.note_poll(p.metric, p.timestamp);
        self.keep(p, thinning)
    }

    /// Adds the last points of the series that ended (when a poll began)
    /// to `kept`; counts what was left out of the `received` points.
    fn finish(&mut self, kept: &mut MeasurementBuffer, received: usize, new_poll: bool) -> u64 {
        if new_poll {
            self.end_series(kept);
        }
        let left_out = received.saturating_sub(kept.len()) as u64;
        self.left_out += left_out;
        left_out
    }

    /// Records a point of `metric` at `at`; true when it begins a new poll.
    fn note_poll(&mut self, metric: MetricId, at: Timestamp) -> bool {
        match self.polls.get_mut(&metric) {
            Some((latest, before)) if at > *latest => {
                *before = Some(*latest);
                *latest = at;
                true
            }
            Some(_) => false,
            None => {
                self.polls.insert(metric, (at, None));
                false
            }
        }
    }

    fn keep(&mut self, p: &MeasurementPoint, thinning: Thinning) -> bool {
        let value = p.value.as_f64();
        let key = series_key(p);
        let Some(series) = self.series.get_mut(&key) else {
            self.series.insert(
                key,
                Series {
                    metric: p.metric,
                    last_seen: p.timestamp,
                    last_written_at: p.timestamp,
                    last_written: value,
                    pending: None,
                },
            );
            return true;
        };
        series.last_seen = series.last_seen.max(p.timestamp);
        let write = match thinning {
            Thinning::SkipZero => value != 0.0,
            Thinning::Gauge {
                max_age,
                min_relative_change,
            } => {
                let age_ns = p
                    .timestamp
                    .unix_nanos()
                    .saturating_sub(series.last_written_at.unix_nanos());
                let moved = (value - series.last_written).abs()
                    > min_relative_change * series.last_written.abs();
                moved || u128::from(age_ns) >= max_age.as_nanos()
            }
        };
        if write {
            series.last_written_at = p.timestamp;
            series.last_written = value;
            series.pending = None;
        } else {
            series.pending = Some(p.clone());
        }
        write
    }

    /// Forgets the series that missed a whole poll of their metric, and
    /// gives the last point of those that have one left out.
    fn end_series(&mut self, ended: &mut Vec<MeasurementPoint>) {
        let polls = &self.polls;
        self.series.retain(|_, s| {
            let Some((_, Some(previous_poll))) = polls.get(&s.metric) else {
                return true;
            };
            if s.last_seen >= *previous_poll {
                return true;
            }
            ended.extend(s.pending.take());
            false
        });
    }

    /// Points left out since the output started.
    #[cfg(test)]
    pub(crate) fn left_out(&self) -> u64 {
        self.left_out
    }
}

/// A series' identity, hashed once per point (64 bits: a collision among a
/// node's few hundred thousand series is about 1e-9 likely, and would only
/// write or leave out one extra point).
fn series_key(p: &MeasurementPoint) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.metric.hash(&mut h);
    p.resource.hash(&mut h);
    p.consumer.hash(&mut h);
    for (k, v) in p.attributes.iter() {
        k.hash(&mut h);
        match v {
            AttributeValue::Str(s) => s.hash(&mut h),
            AttributeValue::U64(n) => n.hash(&mut h),
            AttributeValue::I64(n) => n.hash(&mut h),
            AttributeValue::F64(f) => f.to_bits().hash(&mut h),
            AttributeValue::Bool(b) => b.hash(&mut h),
        }
    }
    h.finish()
}

/// The keys are hashes already: used as they are.
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measurement::{Resource, ResourceConsumer};
    use crate::metrics::{Metric, MetricKind, Unit, ValueType};
    use std::time::Duration;

    fn registry() -> (MetricRegistry, MetricId, MetricId, MetricId) {
        let mut r = MetricRegistry::new();
        let delta = r
            .register(
                Metric::new("d", Unit::Second, ValueType::F64, MetricKind::Delta, "")
                    .thinned(Thinning::SkipZero),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let gauge = r
            .register(
                Metric::new("g", Unit::Byte, ValueType::U64, MetricKind::Gauge, "").thinned(
                    Thinning::Gauge {
                        max_age: Duration::from_secs(30),
                        min_relative_change: 0.01,
                    },
                ),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let plain = r
            .register(Metric::new(
                "p",
                Unit::Second,
                ValueType::F64,
                MetricKind::Delta,
                "",
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        (r, delta, gauge, plain)
    }

    fn point(metric: MetricId, s: u64, pid: u32, value: f64) -> MeasurementPoint {
        MeasurementPoint {
            timestamp: Timestamp::from_unix_nanos(s * 1_000_000_000),
            metric,
            resource: Resource::LocalMachine,
            consumer: ResourceConsumer::Process { pid },
            value: value.into(),
            attributes: Default::default(),
        }
    }

    fn gauge_point(metric: MetricId, s: u64, pid: u32, value: u64) -> MeasurementPoint {
        MeasurementPoint {
            value: value.into(),
            ..point(metric, s, pid, 0.0)
        }
    }

    fn summary(buffer: &MeasurementBuffer) -> Vec<(u64, u32, f64)> {
        buffer
            .iter()
            .map(|p| {
                let ResourceConsumer::Process { pid } = p.consumer else {
                    return (0, 0, 0.0);
                };
                (
                    p.timestamp.unix_nanos() / 1_000_000_000,
                    pid,
                    p.value.as_f64(),
                )
            })
            .collect()
    }

    #[test]
    fn zeros_are_left_out_but_a_series_starts_and_ends() {
        let (r, d, _, _) = registry();
        let mut t = Thinner::default();
        let mut b = vec![point(d, 1, 10, 0.0), point(d, 1, 11, 0.5)];
        t.thin(&mut b, &r);
        assert_eq!(summary(&b), [(1, 10, 0.0), (1, 11, 0.5)], "first points");
        let mut b = vec![point(d, 2, 10, 0.0), point(d, 2, 11, 0.0)];
        t.thin(&mut b, &r);
        assert!(b.is_empty());
        // pid 11 is gone at 3 s; its end is known once the 4 s poll begins.
        let mut b = vec![point(d, 3, 10, 0.2)];
        t.thin(&mut b, &r);
        assert_eq!(summary(&b), [(3, 10, 0.2)]);
        let mut b = vec![point(d, 4, 10, 0.0)];
        t.thin(&mut b, &r);
        assert_eq!(
            summary(&b),
            [(2, 11, 0.0)],
            "pid 11's end: last seen at 2 s"
        );
        assert_eq!(t.left_out(), 2, "3 zeros out, 1 back as an end");
    }

    #[test]
    fn a_poll_in_two_buffers_does_not_end_its_series() {
        let (r, d, _, _) = registry();
        let mut t = Thinner::default();
        t.thin(&mut vec![point(d, 1, 10, 1.0), point(d, 1, 11, 1.0)], &r);
        let mut b = vec![point(d, 2, 10, 0.0)];
        t.thin(&mut b, &r);
        assert!(b.is_empty(), "pid 11 may still come in this poll");
        let mut b = vec![point(d, 2, 11, 0.0)];
        t.thin(&mut b, &r);
        assert!(b.is_empty());
    }

    #[test]
    fn gauges_are_written_when_they_move_or_age() {
        let (r, _, g, _) = registry();
        let mut t = Thinner::default();
        let mut written = Vec::new();
        for (s, v) in [
            (0, 1000),
            (1, 1005),
            (2, 1009),
            (3, 1011),
            (4, 1011),
            (34, 1011),
        ] {
            let mut b = vec![gauge_point(g, s, 1, v)];
            t.thin(&mut b, &r);
            written.extend(summary(&b));
        }
        assert_eq!(
            written,
            [(0, 1, 1000.0), (3, 1, 1011.0), (34, 1, 1011.0)],
            "1 % moved at 3 s; 30 s old at 34 s"
        );
    }

    #[test]
    fn a_shared_buffer_is_copied_and_left_alone() {
        let (r, d, _, _) = registry();
        let mut t = Thinner::default();
        t.thin(&mut vec![point(d, 1, 10, 1.0)], &r);
        let mut shared = Arc::new(vec![point(d, 2, 10, 0.0), point(d, 2, 12, 0.0)]);
        let other = Arc::clone(&shared);
        assert_eq!(t.thin_shared(&mut shared, &r), 1);
        assert_eq!(summary(&shared), [(2, 12, 0.0)], "pid 12's first point");
        assert_eq!(other.len(), 2, "the other output's buffer is whole");
    }

    #[test]
    fn metrics_without_thinning_pass_untouched() {
        let (r, _, _, p) = registry();
        let mut t = Thinner::default();
        for s in 0..3 {
            let mut b = vec![point(p, s, 1, 0.0)];
            assert_eq!(t.thin(&mut b, &r), 0);
            assert_eq!(b.len(), 1);
        }
    }

    #[test]
    fn sums_are_unchanged() {
        let (r, d, _, _) = registry();
        let mut t = Thinner::default();
        let (mut raw, mut thinned) = (0.0, 0.0);
        for s in 0..200u64 {
            let mut b: MeasurementBuffer = (0..20u32)
                .filter(|pid| s < 150 || pid % 2 == 0)
                .map(|pid| {
                    let v = if (s * 7 + u64::from(pid)) % 5 == 0 {
                        0.01 * f64::from(pid)
                    } else {
                        0.0
                    };
                    point(d, s, pid, v)
                })
                .collect();
            raw += b.iter().map(|p| p.value.as_f64()).sum::<f64>();
            t.thin(&mut b, &r);
            thinned += b.iter().map(|p| p.value.as_f64()).sum::<f64>();
        }
        assert_eq!(raw, thinned);
        assert!(t.left_out() > 2000);
    }
}
