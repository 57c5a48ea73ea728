//! Counters kept by the pipeline, readable at any time through the handle.
//!
//! Loss is never silent: every point dropped anywhere is counted here.
//! Elements come and go while the pipeline runs (a plugin restarted at a
//! reload), so the tables are behind locks taken only to add or remove an
//! element and to take a snapshot; the counters themselves are atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// The most recent error of an element, as its log line says it.
#[derive(Debug, Default)]
pub(crate) struct LastError(Mutex<Option<String>>);

impl LastError {
    pub(crate) fn set(&self, error: &dyn std::fmt::Display) {
        if let Ok(mut e) = self.0.lock() {
            *e = Some(error.to_string());
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|e| e.clone())
    }
}

/// When the element's current call (a write, a transform) began; zero while
/// it waits for work. A call that does not return is how a stalled element
/// shows, whatever its queue looks like (a slow but live output is not
/// stalled: it returns, drops and counts).
#[derive(Debug, Default)]
pub(crate) struct Busy(AtomicU64);

fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn monotonic_ns() -> u64 {
    // +1: zero means idle.
    clock_origin().elapsed().as_nanos() as u64 + 1
}

/// Marks its [`Busy`] idle again when dropped (every return path).
pub(crate) struct BusyGuard<'a>(&'a Busy);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        (self.0).0.store(0, Relaxed);
    }
}

impl Busy {
    /// Marks the start of a call into the element.
    pub(crate) fn enter(&self) -> BusyGuard<'_> {
        self.0.store(monotonic_ns(), Relaxed);
        BusyGuard(self)
    }

    /// How long the current call has lasted, if one is under way.
    pub(crate) fn running_for(&self) -> Option<Duration> {
        match self.0.load(Relaxed) {
            0 => None,
            since => Some(Duration::from_nanos(monotonic_ns().saturating_sub(since))),
        }
    }
}

/// Counters of one managed source.
#[derive(Debug, Default)]
pub(crate) struct SourceStats {
    pub polls: AtomicU64,
    pub points: AtomicU64,
    pub missed_ticks: AtomicU64,
    pub errors: AtomicU64,
    pub dropped_points: AtomicU64,
    /// Points polled and held until the source's next flush.
    pub buffered_points: AtomicU64,
    pub last_error: LastError,
}

/// Counters of one transform.
#[derive(Debug, Default)]
pub(crate) struct TransformStats {
    pub points_in: AtomicU64,
    pub points_out: AtomicU64,
    pub errors: AtomicU64,
    pub disabled: AtomicBool,
    pub last_error: LastError,
}

/// Counters of one output.
#[derive(Debug, Default)]
pub(crate) struct OutputStats {
    pub written_points: AtomicU64,
    /// Points of thinned metrics left out before this output (not losses).
    pub thinned_points: AtomicU64,
    pub written_batches: AtomicU64,
    pub retries: AtomicU64,
    pub dropped_points: AtomicU64,
    /// Batches in its queue: added by the stage, taken off by the output.
    pub queued_batches: AtomicU64,
    pub busy: Busy,
    pub last_error: LastError,
}

/// One element's counters, with the plugin it belongs to.
#[derive(Debug)]
pub(crate) struct Entry<T> {
    pub plugin: String,
    pub name: String,
    pub stats: Arc<T>,
}

/// A table of elements' counters, in the order they were added.
#[derive(Debug)]
pub(crate) struct Table<T>(RwLock<Vec<Entry<T>>>);

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self(RwLock::new(Vec::new()))
    }
}

impl<T> Table<T> {
    pub(crate) fn add(&self, plugin: &str, name: &str, stats: Arc<T>) {
        if let Ok(mut t) = self.0.write() {
            t.push(Entry {
                plugin: plugin.to_owned(),
                name: name.to_owned(),
                stats,
            });
        }
    }

    pub(crate) fn remove_plugins(&self, plugins: &[String]) {
        if let Ok(mut t) = self.0.write() {
            t.retain(|e| !plugins.contains(&e.plugin));
        }
    }

    pub(crate) fn map<R>(&self, f: impl Fn(&Entry<T>) -> R) -> Vec<R> {
        self.0
            .read()
            .map(|t| t.iter().map(f).collect())
            .unwrap_or_default()
    }
}

/// All counters.
#[derive(Debug, Default)]
pub(crate) struct PipelineStats {
    pub sources: Table<SourceStats>,
    pub transforms: Table<TransformStats>,
    pub outputs: Table<OutputStats>,
    /// The transform stage's current call into a transform.
    pub stage_busy: Busy,
    /// Points dropped anywhere (sum of every drop counter, plus what
    /// elements report through a [`LossReporter`]), for the self-metric.
    pub total_dropped_points: Arc<AtomicU64>,
}

/// Lets an element that keeps its own queue (an output buffering while its
/// server is down, say) report the points it had to drop, so that they are
/// counted and reported as `alumet_dropped_points` like the pipeline's own.
#[derive(Debug, Clone, Default)]
pub struct LossReporter {
    total: Arc<AtomicU64>,
}

impl LossReporter {
    pub(crate) fn new(total: Arc<AtomicU64>) -> Self {
        Self { total }
    }

    /// Adds `points` to the pipeline's count of dropped points.
    pub fn report(&self, points: u64) {
        self.total.fetch_add(points, Relaxed);
    }
}

impl PipelineStats {
    pub(crate) fn count_drop(&self, points: u64) {
        self.total_dropped_points.fetch_add(points, Relaxed);
    }

    /// Forgets the counters of the elements of `plugins` (stopped).
    pub(crate) fn remove_plugins(&self, plugins: &[String]) {
        self.sources.remove_plugins(plugins);
        self.transforms.remove_plugins(plugins);
        self.outputs.remove_plugins(plugins);
    }

    /// The names of the elements whose current call has lasted `limit` or
    /// more (`stage` for the transform stage).
    pub(crate) fn stalled(&self, limit: Duration) -> Vec<String> {
        let late = |b: &Busy| b.running_for().is_some_and(|d| d >= limit);
        let mut names: Vec<String> = self
            .outputs
            .map(|e| late(&e.stats.busy).then(|| e.name.clone()))
            .into_iter()
            .flatten()
            .collect();
        if late(&self.stage_busy) {
            names.push("the transform stage".into());
        }
        names
    }

    pub(crate) fn snapshot(&self, transform_queue_depth: u64) -> PipelineStatsSnapshot {
        PipelineStatsSnapshot {
            sources: self.sources.map(|e| {
                let s = &e.stats;
                SourceStatsSnapshot {
                    name: e.name.clone(),
                    polls: s.polls.load(Relaxed),
                    points: s.points.load(Relaxed),
                    missed_ticks: s.missed_ticks.load(Relaxed),
                    errors: s.errors.load(Relaxed),
                    dropped_points: s.dropped_points.load(Relaxed),
                    buffered_points: s.buffered_points.load(Relaxed),
                    last_error: s.last_error.get(),
                }
            }),
            transforms: self.transforms.map(|e| {
                let t = &e.stats;
                TransformStatsSnapshot {
                    name: e.name.clone(),
                    points_in: t.points_in.load(Relaxed),
                    points_out: t.points_out.load(Relaxed),
                    errors: t.errors.load(Relaxed),
                    disabled: t.disabled.load(Relaxed),
                    last_error: t.last_error.get(),
                }
            }),
            outputs: self.outputs.map(|e| {
                let o = &e.stats;
                OutputStatsSnapshot {
                    name: e.name.clone(),
                    written_points: o.written_points.load(Relaxed),
                    thinned_points: o.thinned_points.load(Relaxed),
                    written_batches: o.written_batches.load(Relaxed),
                    retries: o.retries.load(Relaxed),
                    dropped_points: o.dropped_points.load(Relaxed),
                    queue_depth: o.queued_batches.load(Relaxed),
                    last_error: o.last_error.get(),
                }
            }),
            transform_queue_depth,
            total_dropped_points: self.total_dropped_points.load(Relaxed),
        }
    }
}

/// Counters of one managed source at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatsSnapshot {
    /// `plugin/source`.
    pub name: String,
    /// Polls done.
    pub polls: u64,
    /// Points produced.
    pub points: u64,
    /// Ticks that came too late to be honoured (the poller was busy).
    pub missed_ticks: u64,
    /// Failed polls.
    pub errors: u64,
    /// Points dropped because the queue to the transforms was full.
    pub dropped_points: u64,
    /// Points polled and held until the source's next flush (its own queue).
    pub buffered_points: u64,
    /// The most recent failed poll's error, if any.
    pub last_error: Option<String>,
}

/// Counters of one transform at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformStatsSnapshot {
    /// `plugin/transform`.
    pub name: String,
    /// Points in the buffers it was given.
    pub points_in: u64,
    /// Points in those buffers after it (it may add or remove points).
    pub points_out: u64,
    /// Failed applications.
    pub errors: u64,
    /// Whether a fatal error disabled it (buffers then pass it unchanged).
    pub disabled: bool,
    /// The most recent error, if any.
    pub last_error: Option<String>,
}

/// Counters of one output at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputStatsSnapshot {
    /// `plugin/output`.
    pub name: String,
    /// Points written successfully.
    pub written_points: u64,
    /// Points of thinned metrics left out before this output: zeros and
    /// repeated gauge values, not losses (`alumet::metrics::Thinning`).
    pub thinned_points: u64,
    /// Batches written successfully.
    pub written_batches: u64,
    /// Write attempts that were retried.
    pub retries: u64,
    /// Points this output never wrote (queue full, retry budget spent, output failed).
    pub dropped_points: u64,
    /// Batches waiting in its queue.
    pub queue_depth: u64,
    /// The most recent failed write's or flush's error, if any.
    pub last_error: Option<String>,
}

/// All counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PipelineStatsSnapshot {
    /// Per managed source.
    pub sources: Vec<SourceStatsSnapshot>,
    /// Per transform.
    pub transforms: Vec<TransformStatsSnapshot>,
    /// Per output.
    pub outputs: Vec<OutputStatsSnapshot>,
    /// Buffers waiting in the queue from the sources to the transforms.
    pub transform_queue_depth: u64,
    /// Points dropped anywhere.
    pub total_dropped_points: u64,
}

impl PipelineStatsSnapshot {
    /// The counters of output `name`.
    pub fn output(&self, name: &str) -> Option<&OutputStatsSnapshot> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// The counters of source `name`.
    pub fn source(&self, name: &str) -> Option<&SourceStatsSnapshot> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The counters of transform `name`.
    pub fn transform(&self, name: &str) -> Option<&TransformStatsSnapshot> {
        self.transforms.iter().find(|t| t.name == name)
    }
}

/// Logs at the 1st, 2nd, 4th, 8th... occurrence, so a failing source at 1 kHz
/// cannot flood the log while the count stays visible.
pub(crate) fn should_log(count: u64) -> bool {
    count.is_power_of_two()
}
