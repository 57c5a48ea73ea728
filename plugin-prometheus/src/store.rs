//! The exported state: the latest value of every series, bounded in
//! number (`max_series`) and in time (`series_ttl`).
//!
//! The output thread updates it with each batch; a scrape reads it under
//! the same lock only long enough to render (or reuse) the families'
//! text, never while talking to a client. A series is the family (from
//! the metric) plus its label set; the label set, already escaped and
//! joined (`resource_kind="cpu_package",resource_id="0",domain="package"`),
//! is the key, stored once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alumet::measurement::{MeasurementPoint, MeasurementValue};
use alumet::metrics::{MetricKind, MetricRegistry, ValueType};
use alumet::pipeline::LossReporter;

use crate::exposition::{self, Format};
use crate::family::{Family, Series};
use crate::gzip::{self, DeflatedPart};
use crate::naming::{self, FamilyType};
use crate::stats::ExporterStats;

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Prefix of every family name.
    pub prefix: String,
    /// A series not updated for this long disappears.
    pub series_ttl: Duration,
    /// At most this many series (all families together).
    pub max_series: usize,
}

struct Rendered {
    generation: u64,
    at: Instant,
    body: Arc<RenderedFamilies>,
}

/// The families' text as one scrape rendered it, shared by the scrapes
/// that reuse it, with its deflated form made by the first that wants gzip.
#[derive(Debug)]
pub struct RenderedFamilies {
    /// The text.
    pub text: Vec<u8>,
    deflated: OnceLock<DeflatedPart>,
}

impl RenderedFamilies {
    /// The text deflated for [`gzip::gzip`], compressed once.
    pub fn deflated(&self) -> &DeflatedPart {
        self.deflated.get_or_init(|| gzip::deflate_part(&self.text))
    }
}

/// The state of every series.
pub struct Store {
    settings: StoreSettings,
    ttl_ms: u64,
    /// Families by metric index; `None` for a metric that is not exported
    /// (its name collides with an earlier one).
    families: Vec<Option<Family>>,
    /// Metrics whose families are built: the registry only grows (a plugin
    /// started by a reload adds metrics), so only the new ones are built.
    built: usize,
    /// Every sample name a family writes, with the metric it belongs to.
    taken: HashMap<String, String>,
    series_count: usize,
    /// The part of `series_count` that counts against `max_series`.
    capped_count: usize,
    epoch: Instant,
    last_sweep_ms: u64,
    /// Hashes of the series refused because of `max_series`, so that each
    /// is counted once; at most [`REFUSED_REMEMBERED`] (or `max_series`) of
    /// them, beyond which new refused series are counted in points only.
    refused: HashSet<u64>,
    hasher: RandomState,
    stats: Arc<ExporterStats>,
    loss: LossReporter,
    generation: u64,
    key: String,
    label_names: Vec<(usize, usize)>,
    rendered: [Option<Rendered>; 2],
    /// Size of the last rendering per format, to allocate the next at once.
    last_rendering_bytes: [usize; 2],
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("series", &self.series_count)
            .field("families", &self.families.len())
            .finish()
    }
}

/// A rendering is kept for the next scrapes only up to this size (about
/// 30 000 series); beyond, every scrape renders.
const MAX_KEPT_RENDERING_BYTES: usize = 4 << 20;

/// Refused series remembered (by a 64-bit hash, about 16 bytes each) to
/// count each once.
const REFUSED_REMEMBERED: usize = 65_536;

/// The namespace of the pipeline's own metrics (`alumet_dropped_points`).
const PIPELINE_METRIC_PREFIX: &str = "alumet_";

/// A rendered body is reused by later scrapes until the state changes, or
/// for at most this long (so that expired series leave without a write).
const RENDER_REUSE: Duration = Duration::from_millis(500);

/// Writes label values through the escaping.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        naming::push_label_value(s, self.0);
        Ok(())
    }
}

impl Store {
    /// An empty store; `loss` receives the points it refuses.
    pub fn new(settings: StoreSettings, stats: Arc<ExporterStats>, loss: LossReporter) -> Self {
        let ttl_ms = u64::try_from(settings.series_ttl.as_millis()).unwrap_or(u64::MAX);
        Self {
            settings,
            ttl_ms,
            families: Vec::new(),
            built: 0,
            taken: HashMap::new(),
            series_count: 0,
            capped_count: 0,
            epoch: Instant::now(),
            last_sweep_ms: 0,
            refused: HashSet::new(),
            hasher: RandomState::new(),
            stats,
            loss,
            generation: 0,
            key: String::with_capacity(256),
            label_names: Vec::with_capacity(16),
            rendered: [None, None],
            last_rendering_bytes: [0, 0],
        }
    }

    /// Number of live series.
    pub fn series_count(&self) -> usize {
        self.series_count
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Builds the families of the metrics registered since the last build.
    fn build(&mut self, metrics: &MetricRegistry) {
        let from = self.built;
        self.built = metrics.len();
        // Every sample name a family writes (a counter `c` writes `c`, in
        // OpenMetrics metadata, `c_total` and `c_created`), by metric name.
        let taken = &mut self.taken;
        let reserved = format!("{}prometheus_", self.settings.prefix);
        for (id, metric) in metrics.iter().skip(from) {
            let meta = naming::family_name(&self.settings.prefix, metric);
            let index = id.index();
            if self.families.len() <= index {
                self.families.resize_with(index + 1, || None);
            }
            let names: Vec<String> = match meta.family_type {
                FamilyType::Gauge => vec![meta.name.clone()],
                FamilyType::Counter => ["", "_total", "_created"]
                    .iter()
                    .map(|suffix| format!("{}{suffix}", meta.name))
                    .collect(),
            };
            let clash = if meta.name.starts_with(&reserved) {
                Some("this exporter's own families".to_owned())
            } else {
                names
                    .iter()
                    .find_map(|n| taken.get(n))
                    .map(|m| format!("metric {m}"))
            };
            if let Some(other) = clash {
                log::warn!(
                    "prometheus: metric {} would be exposed as {}, which clashes with {other}; its points are not exported",
                    metric.name,
                    meta.name
                );
                continue;
            }
            for n in names {
                taken.insert(n, metric.name.clone());
            }
            self.families[index] = Some(Family {
                integer: metric.value_type == ValueType::U64 && meta.scale == 1.0,
                capped: !metric.name.starts_with(PIPELINE_METRIC_PREFIX),
                meta,
                source_kind: metric.kind,
                series: HashMap::new(),
            });
        }
    }

    /// Applies a batch: the latest value of each series, deltas summed.
    pub fn update(&mut self, points: &[MeasurementPoint], metrics: &MetricRegistry) {
        if metrics.len() > self.built {
            self.build(metrics);
        }
        let now_ms = self.now_ms();
        let mut refused = 0u64;
        let mut invalid = 0u64;
        for point in points {
            match self.update_one(point, now_ms) {
                Update::Done => {}
                Update::Refused => refused += 1,
                Update::Invalid => invalid += 1,
            }
        }
        self.generation = self.generation.wrapping_add(1);
        self.stats.series.store(self.series_count as u64, Relaxed);
        if refused + invalid > 0 {
            self.stats
                .dropped_points
                .fetch_add(refused + invalid, Relaxed);
            self.loss.report(refused + invalid);
        }
        if invalid > 0 {
            let before = self.stats.invalid_points.fetch_add(invalid, Relaxed);
            if (before + invalid).ilog2() != before.checked_ilog2().unwrap_or(u32::MAX) {
                log::warn!(
                    "prometheus: {} points not exported so far: negative or non-finite deltas, or a metric whose name collides",
                    before + invalid
                );
            }
        }
        self.sweep_if_due(now_ms);
    }

    fn update_one(&mut self, point: &MeasurementPoint, now_ms: u64) -> Update {
        let Some(Some(family)) = self.families.get_mut(point.metric.index()) else {
            return Update::Invalid;
        };
        let key = &mut self.key;
        key.clear();
        self.label_names.clear();
        write_labels(point, key, &mut self.label_names);
        let delta = family.source_kind == MetricKind::Delta;
        let value = match convert(point.value, family, delta) {
            Some(v) => v,
            None => return Update::Invalid,
        };
        if let Some(series) = family.series.get_mut(key.as_str()) {
            series.value = if delta {
                add(series.value, value, family.integer)
            } else {
                value
            };
            series.seen_ms = now_ms;
            return Update::Done;
        }
        // A workload's names, found after its first points, relabel its
        // series rather than start a second one (its sum goes on).
        if point
            .attributes
            .iter()
            .any(|(k, _)| alumet_workloads::names::is_name_key(k))
        {
            let mut unnamed = String::with_capacity(key.len());
            let mut names = Vec::new();
            write_labels_where(point, &mut unnamed, &mut names, |k| {
                !alumet_workloads::names::is_name_key(k)
            });
            if let Some(mut series) = family.series.remove(unnamed.as_str()) {
                series.value = if delta {
                    add(series.value, value, family.integer)
                } else {
                    value
                };
                series.seen_ms = now_ms;
                family.series.insert(key.as_str().into(), series);
                self.generation = self.generation.wrapping_add(1);
                return Update::Done;
            }
        }
        if family.capped && self.capped_count >= self.settings.max_series {
            let hash = self.hasher.hash_one((point.metric.index(), key.as_str()));
            let room = self.refused.len() < self.settings.max_series.max(REFUSED_REMEMBERED);
            if room && self.refused.insert(hash) {
                let before = self.stats.dropped_series.fetch_add(1, Relaxed);
                if (before + 1).is_power_of_two() {
                    log::warn!(
                        "prometheus: max_series ({}) reached: {} new series refused so far (their points are counted as dropped); raise max_series or lower series_ttl",
                        self.settings.max_series,
                        before + 1
                    );
                }
            }
            return Update::Refused;
        }
        let created_ms = if delta {
            point.timestamp.unix_nanos() / 1_000_000
        } else {
            0
        };
        family.series.insert(
            key.as_str().into(),
            Series {
                value,
                created_ms,
                seen_ms: now_ms,
            },
        );
        self.series_count += 1;
        if family.capped {
            self.capped_count += 1;
        }
        Update::Done
    }

    /// Removes the series not updated for `series_ttl`, at most once a second.
    fn sweep_if_due(&mut self, now_ms: u64) {
        let interval_ms = self.ttl_ms.clamp(1, 1000);
        if now_ms.saturating_sub(self.last_sweep_ms) < interval_ms {
            return;
        }
        self.last_sweep_ms = now_ms;
        let ttl_ms = self.ttl_ms;
        let mut expired = 0usize;
        for family in self.families.iter_mut().flatten() {
            let before = family.series.len();
            family
                .series
                .retain(|_, s| now_ms.saturating_sub(s.seen_ms) <= ttl_ms);
            let gone = before - family.series.len();
            expired += gone;
            if family.capped {
                self.capped_count -= gone;
            }
            if family.series.is_empty() && family.series.capacity() > 64 {
                family.series.shrink_to_fit();
            }
        }
        if expired > 0 {
            self.series_count -= expired;
            self.generation = self.generation.wrapping_add(1);
            self.stats.expired_series.fetch_add(expired as u64, Relaxed);
            self.stats.series.store(self.series_count as u64, Relaxed);
            log::debug!("prometheus: {expired} series expired (not updated for series_ttl)");
        }
    }

    /// The families' text in `format` (without the exporter's own metrics
    /// and the OpenMetrics `# EOF`), rendered now or reused from a recent
    /// scrape of the same state.
    pub fn render(&mut self, format: Format) -> Arc<RenderedFamilies> {
        let now_ms = self.now_ms();
        self.sweep_if_due(now_ms);
        let slot = format as usize;
        if let Some(r) = &self.rendered[slot] {
            if r.generation == self.generation && r.at.elapsed() < RENDER_REUSE {
                return r.body.clone();
            }
        }
        let mut body = String::with_capacity(
            self.last_rendering_bytes[slot] + self.last_rendering_bytes[slot] / 8,
        );
        let ttl_ms = self.ttl_ms;
        for family in self.families.iter().flatten() {
            exposition::render_family(
                family,
                format,
                |s| now_ms.saturating_sub(s.seen_ms) <= ttl_ms,
                &mut body,
            );
        }
        self.last_rendering_bytes[slot] = body.len();
        let body = Arc::new(RenderedFamilies {
            text: body.into_bytes(),
            deflated: OnceLock::new(),
        });
        // Large bodies (scraped every few seconds at most) are not kept:
        // a copy of them would cost more memory than the series themselves.
        self.rendered[slot] = (body.text.len() <= MAX_KEPT_RENDERING_BYTES).then(|| Rendered {
            generation: self.generation,
            at: Instant::now(),
            body: body.clone(),
        });
        body
    }
}

enum Update {
    Done,
    Refused,
    Invalid,
}

/// The label set of a point: built-in labels (empty values omitted) and
/// every attribute, sanitised, the first of duplicate names kept.
fn write_labels(point: &MeasurementPoint, key: &mut String, names: &mut Vec<(usize, usize)>) {
    write_labels_where(point, key, names, |_| true);
}

/// [`write_labels`] with only the attributes whose key `keep` accepts.
fn write_labels_where(
    point: &MeasurementPoint,
    key: &mut String,
    names: &mut Vec<(usize, usize)>,
    keep: impl Fn(&str) -> bool,
) {
    use std::fmt::Write;
    push_label(key, "resource_kind", |out| {
        naming::push_label_value(point.resource.kind(), out)
    });
    push_label(key, "resource_id", |out| {
        let _ = point.resource.write_id(&mut Escaping(out));
    });
    push_label(key, "consumer_kind", |out| {
        naming::push_label_value(point.consumer.kind(), out)
    });
    push_label(key, "consumer_id", |out| {
        let _ = point.consumer.write_id(&mut Escaping(out));
    });
    for (name, value) in point.attributes.iter().filter(|(k, _)| keep(k)) {
        let start = key.len();
        if start > 0 {
            key.push(',');
        }
        let name_start = key.len();
        naming::push_label_name(name, key);
        let name_end = key.len();
        let duplicate = names
            .iter()
            .any(|&(s, e)| key[s..e] == key[name_start..name_end]);
        if duplicate {
            key.truncate(start);
            continue;
        }
        key.push_str("=\"");
        let value_start = key.len();
        let _ = write!(Escaping(key), "{value}");
        if key.len() == value_start {
            key.truncate(start);
            continue;
        }
        key.push('"');
        names.push((name_start, name_end));
    }
}

/// Appends `name="value"` unless the value is empty.
fn push_label(key: &mut String, name: &str, value: impl FnOnce(&mut String)) {
    let start = key.len();
    if start > 0 {
        key.push(',');
    }
    key.push_str(name);
    key.push_str("=\"");
    let value_start = key.len();
    value(key);
    if key.len() == value_start {
        key.truncate(start);
    } else {
        key.push('"');
    }
}

/// The point's value in the family's representation and base unit; `None`
/// for a delta that cannot be summed (negative or not finite).
fn convert(value: MeasurementValue, family: &Family, delta: bool) -> Option<u64> {
    if family.integer {
        return match value {
            MeasurementValue::U64(v) => Some(v),
            // A float point in an integer metric: kept if it is a whole number.
            MeasurementValue::F64(v) if v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 => {
                Some(v as u64)
            }
            MeasurementValue::F64(_) => None,
        };
    }
    let v = value.as_f64() * family.meta.scale;
    if delta && !(v.is_finite() && v >= 0.0) {
        return None;
    }
    Some(v.to_bits())
}

fn add(total: u64, delta: u64, integer: bool) -> u64 {
    if integer {
        total.saturating_add(delta)
    } else {
        (f64::from_bits(total) + f64::from_bits(delta)).to_bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alumet::measurement::{Resource, ResourceConsumer, Timestamp};
    use alumet::metrics::{Metric, Unit};

    fn store() -> Store {
        Store::new(
            StoreSettings {
                prefix: "alumet_".into(),
                series_ttl: Duration::from_secs(60),
                max_series: 100,
            },
            Arc::new(ExporterStats::default()),
            LossReporter::default(),
        )
    }

    #[test]
    fn a_metric_whose_names_clash_is_not_exported() {
        let mut registry = MetricRegistry::new();
        let kinds = [
            ("foo", MetricKind::Delta),
            ("foo_total", MetricKind::Gauge),
            ("foo_created", MetricKind::Gauge),
            ("prometheus_series", MetricKind::Gauge),
            ("bar", MetricKind::Gauge),
        ];
        let ids: Vec<_> = kinds
            .iter()
            .map(|(name, kind)| {
                registry
                    .register(Metric::new(*name, Unit::Unity, ValueType::F64, *kind, "x"))
                    .unwrap()
            })
            .collect();
        let points: Vec<_> = ids
            .iter()
            .map(|id| {
                MeasurementPoint::new(
                    Timestamp::from_unix_nanos(1),
                    *id,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    1.0,
                )
            })
            .collect();
        let mut s = store();
        s.update(&points, &registry);
        assert_eq!(s.series_count(), 2);
        assert_eq!(s.stats.invalid_points.load(Relaxed), 3);
        let text = String::from_utf8(s.render(Format::Text).text.clone()).unwrap();
        assert!(text.contains("# TYPE alumet_foo_total counter\n"), "{text}");
        assert!(text.contains("# TYPE alumet_bar gauge\n"), "{text}");
        assert_eq!(text.matches("# TYPE").count(), 2, "{text}");
    }

    #[test]
    fn metrics_registered_later_are_exported_and_still_checked_for_clashes() {
        let point = |id| {
            MeasurementPoint::new(
                Timestamp::from_unix_nanos(1),
                id,
                Resource::LocalMachine,
                ResourceConsumer::LocalMachine,
                1.0,
            )
        };
        let gauge =
            |name: &str| Metric::new(name, Unit::Unity, ValueType::F64, MetricKind::Gauge, "x");
        let mut registry = MetricRegistry::new();
        let first = registry.register(gauge("first")).unwrap();
        let mut s = store();
        s.update(&[point(first)], &registry);
        // A plugin started by a reload adds metrics to the registry.
        let counter = Metric::new("later", Unit::Unity, ValueType::F64, MetricKind::Delta, "x");
        let later = registry.register(counter).unwrap();
        let clash = registry.register(gauge("later_total")).unwrap();
        s.update(&[point(first), point(later)], &registry);
        assert_eq!(s.series_count(), 2);
        let text = String::from_utf8(s.render(Format::Text).text.clone()).unwrap();
        assert!(
            text.contains("# TYPE alumet_later_total counter\n"),
            "{text}"
        );
        let invalid = s.stats.invalid_points.load(Relaxed);
        s.update(&[point(clash)], &registry);
        assert_eq!(s.stats.invalid_points.load(Relaxed), invalid + 1, "{text}");
    }

    #[test]
    fn names_that_come_late_relabel_the_series_and_its_sum_goes_on() {
        let mut registry = MetricRegistry::new();
        let cpu = registry
            .register(Metric::new(
                "cgroup_cpu_time",
                Unit::Second,
                ValueType::F64,
                MetricKind::Delta,
                "x",
            ))
            .unwrap();
        let point = |names: &[(&'static str, &'static str)]| {
            let mut p = MeasurementPoint::new(
                Timestamp::from_unix_nanos(1),
                cpu,
                Resource::LocalMachine,
                ResourceConsumer::ControlGroup {
                    path: "/docker/abc".into(),
                },
                1.5,
            )
            .with_attr("workload", "container");
            for (k, v) in names {
                p = p.with_attr(*k, *v);
            }
            p
        };
        let mut s = store();
        s.update(&[point(&[])], &registry);
        s.update(
            &[point(&[("container_name", "web"), ("label_app", "shop")])],
            &registry,
        );
        s.update(
            &[point(&[("container_name", "web"), ("label_app", "shop")])],
            &registry,
        );
        assert_eq!(s.series_count(), 1);
        let text = String::from_utf8(s.render(Format::Text).text.clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("alumet_cgroup_cpu_time_seconds_total{"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains("container_name=\"web\"") && line.contains("label_app=\"shop\""),
            "{line}"
        );
        assert!(line.ends_with(" 4.5"), "the sum goes on: {line}");
    }
}
