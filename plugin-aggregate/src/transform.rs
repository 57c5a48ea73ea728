//! The aggregation transform: points of the chosen metrics go into their
//! series' window; a window closes when the newest point seen is
//! `max_delay` past its end, and then becomes one point per series (per
//! function for gauges).
//!
//! Windows hold `(end - window, end]` (a delta at `t` covers the interval
//! that ends at `t`, so a poll on a boundary belongs to the window it ends)
//! and are aligned to the epoch. An output point carries the window's end
//! as its timestamp and the window's length as attribute `window`, as OTLP
//! carries start and end times; the length is constant, so it adds no
//! series in a time-series database. A point whose window has closed is
//! late: it goes into a window of its own marked `late=true` (so totals
//! stay exact), emitted at the next close, and is counted in
//! `aggregate_late_points`. At shutdown the open windows are flushed: one
//! whose end the newest point had not reached is marked `partial=true`,
//! with the timestamp of its series' latest point (never a future time).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Duration;

use alumet::measurement::{
    AttributeValue, Attributes, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
};
use alumet::metrics::{MetricId, MetricKind, MetricRegistry};
use alumet::pipeline::{ElementContext, Transform, TransformError};
use alumet_kernelfs::glob::Glob;

use crate::accumulate::{GaugeFns, Window};

/// What the transform needs of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Window length.
    pub window: Duration,
    /// How long a window stays open after its end.
    pub max_delay: Duration,
    /// Globs of the metrics to aggregate.
    pub metrics: Vec<String>,
    /// A gauge's functions by default.
    pub gauge: GaugeFns,
    /// Per metric glob, in order: the first match wins.
    pub gauge_per_metric: Vec<(String, GaugeFns)>,
}

/// How one metric is treated.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Pass,
    Sum,
    Last,
    Gauge(GaugeFns),
}

/// One series: what identifies it, and its open windows by end.
struct Series {
    metric: MetricId,
    resource: Resource,
    consumer: ResourceConsumer,
    attributes: Attributes,
    plan: Plan,
    windows: Vec<Window>,
    /// Closes in a row that found no window: an idle series is forgotten.
    idle: u8,
}

/// A hasher for the series table, whose keys are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A fast multiplicative hasher for series keys (no DoS concern: the keys
/// come from the agent's own sources).
#[derive(Default)]
struct KeyHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

fn hash_value(v: &AttributeValue, h: &mut KeyHasher) {
    match v {
        AttributeValue::Str(s) => {
            h.write_u8(0);
            s.hash(h);
        }
        AttributeValue::U64(x) => h.write_u64(*x ^ (1 << 60)),
        AttributeValue::I64(x) => h.write_u64((*x as u64) ^ (2 << 60)),
        AttributeValue::F64(x) => h.write_u64(x.to_bits() ^ (3 << 60)),
        AttributeValue::Bool(x) => h.write_u64(u64::from(*x) ^ (4 << 60)),
    }
}

fn series_hash(p: &MeasurementPoint) -> u64 {
    let mut h = KeyHasher::default();
    h.write_u64(p.metric.index() as u64);
    p.resource.hash(&mut h);
    p.consumer.hash(&mut h);
    for (k, v) in p.attributes.iter() {
        k.hash(&mut h);
        hash_value(v, &mut h);
    }
    h.finish()
}

/// Equal attribute lists; floats by their bits, so that a NaN attribute
/// still names one series.
fn same_attributes(a: &Attributes, b: &Attributes) -> bool {
    a.ptr_eq(b)
        || (a.len() == b.len()
            && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
                ka == kb
                    && match (va, vb) {
                        (AttributeValue::F64(x), AttributeValue::F64(y)) => {
                            x.to_bits() == y.to_bits()
                        }
                        _ => va == vb,
                    }
            }))
}

impl Series {
    fn is(&self, p: &MeasurementPoint) -> bool {
        self.metric == p.metric
            && self.resource == p.resource
            && self.consumer == p.consumer
            && same_attributes(&self.attributes, &p.attributes)
    }
}

/// Counters of the transform, for its tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AggregateCounts {
    /// Points aggregated.
    pub points_in: u64,
    /// Points emitted for closed windows.
    pub points_out: u64,
    /// Points that came after their window closed.
    pub late: u64,
    /// Series currently tracked.
    pub series: usize,
}

/// The aggregation transform (see the module's comment).
pub struct AggregateTransform {
    window_ns: u64,
    max_delay_ns: u64,
    window_label: String,
    metric_globs: Vec<Glob>,
    gauge: GaugeFns,
    gauge_per_metric: Vec<(Glob, GaugeFns)>,
    /// By metric index; `None`: not decided yet.
    plans: Vec<Option<Plan>>,
    series: HashMap<u64, Vec<Series>, BuildHasherDefault<Prehashed>>,
    /// Newest timestamp of an aggregated point.
    newest: u64,
    /// Every window that ends at or before this is closed.
    closed_upto: u64,
    late_metric: MetricId,
    late_unreported: u64,
    counts: AggregateCounts,
}

impl AggregateTransform {
    /// A transform with `settings`, counting late points in `late_metric`.
    pub fn new(settings: Settings, late_metric: MetricId) -> Self {
        Self {
            window_ns: u64::try_from(settings.window.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            max_delay_ns: u64::try_from(settings.max_delay.as_nanos()).unwrap_or(u64::MAX),
            window_label: alumet::config::format_duration(settings.window),
            metric_globs: settings.metrics.iter().map(|g| Glob::new(g)).collect(),
            gauge: settings.gauge,
            gauge_per_metric: settings
                .gauge_per_metric
                .iter()
                .map(|(g, f)| (Glob::new(g), *f))
                .collect(),
            plans: Vec::new(),
            series: HashMap::default(),
            newest: 0,
            closed_upto: 0,
            late_metric,
            late_unreported: 0,
            counts: AggregateCounts::default(),
        }
    }

    /// Its counters so far.
    pub fn counts(&self) -> AggregateCounts {
        AggregateCounts {
            series: self.series.values().map(Vec::len).sum(),
            ..self.counts
        }
    }

    fn plan_of(&self, id: MetricId, metrics: &MetricRegistry) -> Plan {
        let Some(metric) = metrics.get(id) else {
            return Plan::Pass;
        };
        let name = metric.name.as_bytes();
        if id == self.late_metric || !self.metric_globs.iter().any(|g| g.matches(name)) {
            return Plan::Pass;
        }
        match metric.kind {
            MetricKind::Delta => Plan::Sum,
            MetricKind::Counter => Plan::Last,
            MetricKind::Gauge => Plan::Gauge(
                self.gauge_per_metric
                    .iter()
                    .find(|(g, _)| g.matches(name))
                    .map_or(self.gauge, |(_, f)| *f),
            ),
        }
    }

    /// The end of the window that holds `ts`: `(end - window, end]`.
    #[inline]
    fn window_end(&self, ts: u64) -> u64 {
        ts.div_ceil(self.window_ns).saturating_mul(self.window_ns)
    }

    /// Puts `p` into its series' window. `plan` is not `Pass`.
    #[inline]
    fn add(&mut self, p: &MeasurementPoint, plan: Plan) {
        let ts = p.timestamp.unix_nanos();
        let end = self.window_end(ts);
        let late = end <= self.closed_upto;
        if late {
            self.counts.late += 1;
            self.late_unreported += 1;
        }
        self.newest = self.newest.max(ts);
        self.counts.points_in += 1;
        let bucket = self.series.entry(series_hash(p)).or_default();
        let series = match bucket.iter_mut().position(|s| s.is(p)) {
            Some(i) => &mut bucket[i],
            None => {
                bucket.push(Series {
                    metric: p.metric,
                    resource: p.resource.clone(),
                    consumer: p.consumer.clone(),
                    attributes: p.attributes.clone(),
                    plan,
                    windows: Vec::with_capacity(2),
                    idle: 0,
                });
                let last = bucket.len() - 1;
                &mut bucket[last]
            }
        };
        // Nearly always the newest window; else a short search (few are open).
        match series.windows.last_mut() {
            Some(w) if w.end == end && w.late == late => w.add(p.value, ts),
            _ => match series
                .windows
                .iter_mut()
                .find(|w| w.end == end && w.late == late)
            {
                Some(w) => w.add(p.value, ts),
                None => {
                    let at = series.windows.partition_point(|w| w.end <= end);
                    series
                        .windows
                        .insert(at, Window::new(end, late, p.value, ts));
                }
            },
        }
    }

    /// Closes every window that ends at or before `upto`, into `out`.
    fn close(&mut self, upto: u64, out: &mut MeasurementBuffer) {
        let before = out.len();
        for bucket in self.series.values_mut() {
            for s in bucket.iter_mut() {
                let n = s.windows.partition_point(|w| w.end <= upto);
                if n == 0 {
                    s.idle = s.idle.saturating_add(1);
                    continue;
                }
                s.idle = 0;
                for w in &s.windows[..n] {
                    emit(s, w, w.end, false, &self.window_label, out);
                }
                s.windows.drain(..n);
            }
            bucket.retain(|s| !s.windows.is_empty() || s.idle < 2);
        }
        self.series.retain(|_, b| !b.is_empty());
        self.counts.points_out += (out.len() - before) as u64;
        self.report_late(Timestamp::from_unix_nanos(upto), out);
    }

    fn report_late(&mut self, at: Timestamp, out: &mut MeasurementBuffer) {
        if self.late_unreported == 0 {
            return;
        }
        let n = self.late_unreported;
        self.late_unreported = 0;
        let total = self.counts.late;
        let before = total - n;
        // Logged when the total passes a power of two: seen, never a flood.
        if before == 0 || total.ilog2() > before.ilog2() {
            log::warn!(
                "aggregate: {n} points came after their window had closed (more than max_delay late; {total} so far); they are aggregated apart, marked late=true"
            );
        }
        out.push(MeasurementPoint::new(
            at,
            self.late_metric,
            Resource::LocalMachine,
            ResourceConsumer::Custom {
                kind: Cow::Borrowed("alumet"),
                id: Cow::Borrowed("aggregate"),
            },
            n,
        ));
    }
}

/// The point(s) of window `w` of series `s`.
fn emit(
    s: &Series,
    w: &Window,
    timestamp: u64,
    partial: bool,
    window_label: &str,
    out: &mut MeasurementBuffer,
) {
    let point = |value: MeasurementValue, aggregation: Option<&'static str>| {
        let mut attributes = s.attributes.clone();
        attributes.push((
            Cow::Borrowed("window"),
            AttributeValue::Str(Cow::Owned(window_label.to_owned())),
        ));
        if let Some(f) = aggregation {
            attributes.push((Cow::Borrowed("aggregation"), AttributeValue::from(f)));
        }
        if partial {
            attributes.push((Cow::Borrowed("partial"), AttributeValue::Bool(true)));
        }
        if w.late {
            attributes.push((Cow::Borrowed("late"), AttributeValue::Bool(true)));
        }
        MeasurementPoint {
            timestamp: Timestamp::from_unix_nanos(timestamp),
            metric: s.metric,
            resource: s.resource.clone(),
            consumer: s.consumer.clone(),
            value,
            attributes,
        }
    };
    match s.plan {
        Plan::Pass => {}
        Plan::Sum => out.push(point(w.sum(), None)),
        Plan::Last => out.push(point(w.last, None)),
        Plan::Gauge(fns) => {
            for f in fns.iter() {
                out.push(point(w.gauge(f), Some(f.as_str())));
            }
        }
    }
}

impl Transform for AggregateTransform {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        if self.plans.len() < ctx.metrics.len() {
            // Metrics only grow (a plugin started by a reload adds some).
            let known = self.plans.len();
            self.plans.resize(ctx.metrics.len(), None);
            for (id, _) in ctx.metrics.iter().skip(known) {
                let plan = self.plan_of(id, ctx.metrics);
                if let Some(slot) = self.plans.get_mut(id.index()) {
                    *slot = Some(plan);
                }
            }
        }
        let mut kept = 0;
        for i in 0..buffer.len() {
            let plan = self
                .plans
                .get(buffer[i].metric.index())
                .copied()
                .flatten()
                .unwrap_or(Plan::Pass);
            if plan == Plan::Pass {
                buffer.swap(kept, i);
                kept += 1;
            } else {
                self.add(&buffer[i], plan);
            }
        }
        buffer.truncate(kept);
        // Windows that end before `newest - max_delay` close; one that ends
        // exactly there may still get points stamped with its end.
        let horizon = self
            .newest
            .saturating_sub(self.max_delay_ns.saturating_add(1));
        let boundary = horizon / self.window_ns * self.window_ns;
        if boundary > self.closed_upto {
            self.closed_upto = boundary;
            self.close(boundary, buffer);
        }
        Ok(())
    }

    fn finish(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        let before = buffer.len();
        for bucket in self.series.values_mut() {
            for s in bucket.iter_mut() {
                for w in std::mem::take(&mut s.windows) {
                    // The pipeline's data did not reach the window's end: partial.
                    let partial = w.end > self.newest && !w.late;
                    let ts = if partial { w.last_ts } else { w.end };
                    emit(s, &w, ts, partial, &self.window_label, buffer);
                }
            }
        }
        self.series.clear();
        self.counts.points_out += (buffer.len() - before) as u64;
        self.report_late(Timestamp::from_unix_nanos(self.newest), buffer);
        Ok(())
    }
}
