//! Counters kept by the pipeline, readable at any time through the handle.
//!
//! Loss is never silent: every point dropped anywhere is counted here.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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

/// Counters of one managed source.
#[derive(Debug, Default)]
pub(crate) struct SourceStats {
    pub polls: AtomicU64,
    pub points: AtomicU64,
    pub missed_ticks: AtomicU64,
    pub errors: AtomicU64,
    pub dropped_points: AtomicU64,
    pub last_error: LastError,
}

/// Counters of one output.
#[derive(Debug, Default)]
pub(crate) struct OutputStats {
    pub written_points: AtomicU64,
    pub written_batches: AtomicU64,
    pub retries: AtomicU64,
    pub dropped_points: AtomicU64,
    pub last_error: LastError,
}

/// All counters.
#[derive(Debug, Default)]
pub(crate) struct PipelineStats {
    pub sources: Vec<(String, Arc<SourceStats>)>,
    pub outputs: Vec<(String, Arc<OutputStats>)>,
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

    pub(crate) fn snapshot(&self) -> PipelineStatsSnapshot {
        PipelineStatsSnapshot {
            sources: self
                .sources
                .iter()
                .map(|(name, s)| SourceStatsSnapshot {
                    name: name.clone(),
                    polls: s.polls.load(Relaxed),
                    points: s.points.load(Relaxed),
                    missed_ticks: s.missed_ticks.load(Relaxed),
                    errors: s.errors.load(Relaxed),
                    dropped_points: s.dropped_points.load(Relaxed),
                    last_error: s.last_error.get(),
                })
                .collect(),
            outputs: self
                .outputs
                .iter()
                .map(|(name, o)| OutputStatsSnapshot {
                    name: name.clone(),
                    written_points: o.written_points.load(Relaxed),
                    written_batches: o.written_batches.load(Relaxed),
                    retries: o.retries.load(Relaxed),
                    dropped_points: o.dropped_points.load(Relaxed),
                    last_error: o.last_error.get(),
                })
                .collect(),
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
    /// The most recent failed poll's error, if any.
    pub last_error: Option<String>,
}

/// Counters of one output at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputStatsSnapshot {
    /// `plugin/output`.
    pub name: String,
    /// Points written successfully.
    pub written_points: u64,
    /// Batches written successfully.
    pub written_batches: u64,
    /// Write attempts that were retried.
    pub retries: u64,
    /// Points this output never wrote (queue full, retry budget spent, output failed).
    pub dropped_points: u64,
    /// The most recent failed write's or flush's error, if any.
    pub last_error: Option<String>,
}

/// All counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PipelineStatsSnapshot {
    /// Per managed source.
    pub sources: Vec<SourceStatsSnapshot>,
    /// Per output.
    pub outputs: Vec<OutputStatsSnapshot>,
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
}
