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

use crate::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Timestamp,
};
use crate::metrics::{MetricId, MetricRegistry, Thinning};

/// The thinning state of one output.
///
/// It runs on every point an output receives, so it is built to cost little
/// per point (measured with 3 000 processes: `scripts/bench-node-scale.sh`):
/// one fast hash of the series' identity and no allocation or reference
/// count unless a series starts or ends. A source emits its series in the
/// same order at every poll, so the series are kept in the order they came
/// and the next point is first compared with the series after the last
/// one: memory read in order, where a probe of a hash table at each point
/// was a cache miss (a quarter of the agent's CPU time with 3 000
/// processes); the table is the fallback.
#[derive(Debug, Default)]
pub(crate) struct Thinner {
    /// The series, in the order they first came; ended ones are marked and
    /// removed once they are half of them (removing shifts the positions,
    /// and the table must be rebuilt: not at every poll of a busy node).
    series: Vec<Series>,
    /// How many of `series` have ended.
    ended: usize,
    /// Where each series is in `series`, by key.
    index: HashMap<u64, usize, BuildHasherDefault<PassThrough>>,
    /// The series after the last one a point belonged to.
    cursor: usize,
    /// The positions of the series points came for, in the order they
    /// came, since the last start of a poll; and how many were not where
    /// the cursor expected them. When that is more than a tenth, the
    /// series are put in that order (points of a process come metric after
    /// metric, while its series were created poll after poll).
    visits: Vec<usize>,
    misses: usize,
    /// Per thinned metric (by index): its latest poll's timestamp, and the one before.
    polls: Vec<Option<(Timestamp, Option<Timestamp>)>>,
    /// Points left out so far.
    left_out: u64,
}

#[derive(Debug)]
struct Series {
    key: u64,
    /// Its metric's index (not read through `first`: a pointer per series at every poll).
    metric: usize,
    /// False once it ended: never matched again (a new series with its key starts anew).
    alive: bool,
    last_seen: Timestamp,
    last_written_at: Timestamp,
    last_written: f64,
    /// The latest point left out (time and value), written if the series ends after it.
    pending: Option<(Timestamp, MeasurementValue)>,
    /// The series' first point: what an end point is made from (metric,
    /// resource, consumer, attributes), kept apart so that the table's
    /// entries stay small.
    first: Box<MeasurementPoint>,
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
        // No capacity reserved: most points of a thinned stream are left out.
        let mut kept: MeasurementBuffer = Vec::new();
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
        let i = metric.index();
        if self.polls.len() <= i {
            self.polls.resize(i + 1, None);
        }
        match &mut self.polls[i] {
            Some((latest, before)) if at > *latest => {
                *before = Some(*latest);
                *latest = at;
                true
            }
            Some(_) => false,
            slot @ None => {
                *slot = Some((at, None));
                false
            }
        }
    }

    fn keep(&mut self, p: &MeasurementPoint, thinning: Thinning) -> bool {
        let value = p.value.as_f64();
        let key = series_key(p);
        let at = match self.series.get(self.cursor) {
            Some(next) if next.key == key && next.alive => Some(self.cursor),
            _ => {
                self.misses += 1;
                self.index.get(&key).copied()
            }
        };
        let Some(series) = at.and_then(|i| {
            self.cursor = i + 1;
            self.visits.push(i);
            self.series.get_mut(i)
        }) else {
            self.visits.push(self.series.len());
            self.index.insert(key, self.series.len());
            self.series.push(Series {
                key,
                metric: p.metric.index(),
                alive: true,
                last_seen: p.timestamp,
                last_written_at: p.timestamp,
                last_written: value,
                pending: None,
                first: Box::new(p.clone()),
            });
            self.cursor = self.series.len();
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
            series.pending = Some((p.timestamp, p.value));
        }
        write
    }

    /// Forgets the series that missed a whole poll of their metric, and
    /// gives the last point of those that have one left out.
    fn end_series(&mut self, ended: &mut Vec<MeasurementPoint>) {
        for s in self.series.iter_mut().filter(|s| s.alive) {
            let Some(Some((_, Some(previous_poll)))) = self.polls.get(s.metric) else {
                continue;
            };
            if s.last_seen >= *previous_poll {
                continue;
            }
            if let Some((timestamp, value)) = s.pending {
                ended.push(MeasurementPoint {
                    timestamp,
                    value,
                    ..(*s.first).clone()
                });
            }
            s.alive = false;
            self.ended += 1;
            self.index.remove(&s.key);
        }
        if self.misses * 10 > self.visits.len() || self.ended * 2 > self.series.len() {
            self.reorder();
        }
        self.visits.clear();
        self.misses = 0;
        self.cursor = 0;
    }

    /// Puts the live series in the order of `visits` (then the others, in
    /// their order), drops the ended ones, and rebuilds the table.
    fn reorder(&mut self) {
        let mut old: Vec<Option<Series>> = std::mem::take(&mut self.series)
            .into_iter()
            .map(Some)
            .collect();
        let mut series = Vec::with_capacity(old.len() - self.ended.min(old.len()));
        for &i in &self.visits {
            if let Some(s) = old.get_mut(i).and_then(Option::take) {
                series.push(s);
            }
        }
        series.extend(old.into_iter().flatten());
        series.retain(|s| s.alive);
        self.series = series;
        self.ended = 0;
        self.index.clear();
        self.index
            .extend(self.series.iter().enumerate().map(|(i, s)| (s.key, i)));
    }

    /// Points left out since the output started.
    #[cfg(test)]
    pub(crate) fn left_out(&self) -> u64 {
        self.left_out
    }
}

/// A series' identity, hashed once per point with [`KeyHasher`] (64 bits:
/// a collision among a node's few hundred thousand series is about 1e-9
/// likely, and would only write or leave out one extra point).
fn series_key(p: &MeasurementPoint) -> u64 {
    let mut h = KeyHasher::default();
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

/// A fast, non-cryptographic hasher: words mixed by a rotation, a xor and a
/// multiplication by an odd constant (2^64 / φ), and a final avalanche so
/// that the low bits the table indexes by depend on every input bit.
/// std's SipHash cost a third of the agent's CPU time here (perf, 3 000
/// processes).
#[derive(Debug)]
struct KeyHasher(u64);

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Default for KeyHasher {
    /// Not 0: from 0, a zero word would leave the state at 0, so that
    /// `[0, 1]` and `[1]` (a zero discriminant, then an id) would collide.
    fn default() -> Self {
        Self(0x243f_6a88_85a3_08d3)
    }
}

impl KeyHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(GOLDEN);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 31;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
}

/// The table's keys are [`series_key`] hashes already: used as they are.
#[derive(Debug, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
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
    fn keys_tell_series_apart_by_every_part() {
        let (_, d, g, _) = registry();
        let base = point(d, 1, 10, 0.0);
        let key = series_key(&base);
        assert_eq!(
            key,
            series_key(&point(d, 2, 10, 0.5)),
            "time and value are not identity"
        );
        let others = [
            point(g, 1, 10, 0.0),
            point(d, 1, 11, 0.0),
            MeasurementPoint {
                resource: Resource::CpuPackage { id: 0 },
                ..base.clone()
            },
            base.clone().with_attr("mode", "user"),
            base.clone().with_attr("mode", "system"),
            base.clone().with_attr("n", 1u64),
            base.clone().with_attr("n", 2u64),
        ];
        let mut keys: Vec<u64> = others.iter().map(series_key).collect();
        keys.push(key);
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "distinct series, distinct keys");
        // A node's worth of process series: no two alike.
        let mut many: Vec<u64> = (0..100_000u32)
            .flat_map(|pid| {
                ["user", "system"].map(|mode| {
                    series_key(
                        &point(d, 1, pid, 0.0)
                            .with_attr("mode", mode)
                            .with_attr("exe", format!("p{}", pid % 97)),
                    )
                })
            })
            .collect();
        many.sort_unstable();
        many.dedup();
        assert_eq!(many.len(), 200_000);
    }

    #[test]
    fn series_coming_in_another_order_at_each_poll_are_the_same_series() {
        let (r, d, g, _) = registry();
        let mut t = Thinner::default();
        let (mut raw, mut thinned, mut firsts) = (0.0, 0.0, 0);
        for s in 0..60u64 {
            // Memory first at poll 0, CPU time from poll 1, each process's
            // points together, the processes rotated by one each poll.
            let mut pids: Vec<u32> = (0..40).filter(|pid| s < 40 || pid % 3 != 0).collect();
            let n = pids.len();
            pids.rotate_left((s as usize) % n);
            let mut b: MeasurementBuffer = Vec::new();
            for pid in pids {
                b.push(gauge_point(g, s, pid, 1000));
                if s > 0 {
                    let busy = (u64::from(pid) + s) % 7 == 0;
                    b.push(point(d, s, pid, if busy { 0.5 } else { 0.0 }));
                }
            }
            raw += b
                .iter()
                .filter(|p| p.metric == d)
                .map(|p| p.value.as_f64())
                .sum::<f64>();
            t.thin(&mut b, &r);
            thinned += b
                .iter()
                .filter(|p| p.metric == d)
                .map(|p| p.value.as_f64())
                .sum::<f64>();
            firsts += b
                .iter()
                .filter(|p| p.timestamp.unix_nanos() == s * 1_000_000_000 && s <= 1)
                .count();
        }
        assert_eq!(raw, thinned);
        assert_eq!(
            firsts,
            40 + 40,
            "every series' first point: memory at 0, CPU time at 1"
        );
        // 14 processes gone at 40: their memory and CPU series ended once each.
        assert!(t.series.iter().filter(|s| s.alive).count() <= 2 * 27);
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
