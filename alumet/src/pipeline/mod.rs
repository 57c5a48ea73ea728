//! The concurrent three-stage pipeline: sources → transforms → outputs.
//!
//! Threads and queues, in order of the data:
//!
//! - **pollers** (`poller.rs`): OS threads that own the managed sources and
//!   poll them on absolute deadlines (no drift; late ticks are counted as
//!   missed, never silently skipped). Sources that may block for long (NVML)
//!   get a poller of their own; all others share one, so 10 sources at 1 kHz
//!   cost 1 000 wake-ups per second, not 10 000. Each source accumulates its
//!   points and hands a buffer on at its flush interval.
//! - **autonomous sources**: tasks on the pipeline's tokio runtime that push
//!   buffers whenever they like.
//! - **transform stage** (`stage.rs`): one tokio task that receives every
//!   buffer from a bounded queue, applies the transforms in order, and hands
//!   the buffer (shared, in an `Arc`) to every output's bounded queue.
//!   A transform may be scoped to some outputs (`routes.rs`): it then runs
//!   after the others, on a copy that only those outputs receive.
//! - **outputs** (`output.rs`): one OS thread each, so a slow or blocking
//!   output (file, HTTP) never holds a tokio worker, a source or another
//!   output. A retryable error re-delivers the same batch with backoff.
//!
//! A full queue drops the buffer **and counts it** ([`stats`]); the drop is
//! logged (rate-limited) and reported as the `alumet_dropped_points` metric.
//! Shutdown never drops: pollers do a last poll and block until their buffers
//! are queued, the stage drains, outputs write everything and close.

pub mod builder;
pub mod control;
mod memory;
mod messages;
mod output;
mod poller;
mod queue;
mod registry;
pub mod routes;
mod running;
mod stage;
mod staging;
pub mod stats;
mod thinning;
mod topology;

use std::time::Duration;

use crate::error::BoxError;
use crate::measurement::{MeasurementBuffer, Timestamp};
use crate::metrics::{MetricError, MetricRegistry};

pub use builder::{PipelineBuilder, PluginStartContext};
pub use control::PipelineHandle;
pub use messages::SourceSelector;
pub use routes::{OutputScope, RouteConflict};
pub use running::{PipelineExtension, RunningPipeline};
pub use stats::{
    LossReporter, OutputStatsSnapshot, PipelineStatsSnapshot, SourceStatsSnapshot,
    TransformStatsSnapshot,
};

/// Why the pipeline could not start, or take new elements.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A thread or the runtime could not be created.
    #[error("cannot start the pipeline: {0}")]
    Io(#[from] std::io::Error),
    /// The self-metric could not be registered.
    #[error(transparent)]
    Metric(#[from] MetricError),
    /// The pipeline is shutting down: it takes no new element.
    #[error("the pipeline is stopped")]
    Stopped,
    /// Scoped transforms whose routes to the outputs cross.
    #[error(transparent)]
    Route(#[from] Box<RouteConflict>),
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// This poll failed but the next one may work (a file briefly missing):
    /// logged, the source keeps running.
    #[error("{0}")]
    Transient(BoxError),
    /// The source cannot go on; it is stopped, the rest of the pipeline runs.
    #[error("{0}")]
    Fatal(BoxError),
}

impl PollError {
    /// A transient error.
    pub fn transient(e: impl Into<BoxError>) -> Self {
        PollError::Transient(e.into())
    }
    /// A fatal error.
    pub fn fatal(e: impl Into<BoxError>) -> Self {
        PollError::Fatal(e.into())
    }
}

/// Why a transform failed.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// This buffer could not be transformed; it goes on unchanged.
    #[error("{0}")]
    Transient(BoxError),
    /// The transform is disabled; buffers pass through it unchanged.
    #[error("{0}")]
    Fatal(BoxError),
}

/// Why an output failed to write.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Try the same batch again after a backoff (a server briefly down).
    /// `after` overrides the backoff (e.g. from a Retry-After header).
    #[error("{error}")]
    Retry {
        /// The cause.
        error: BoxError,
        /// Wait at least this long before retrying.
        after: Option<Duration>,
    },
    /// The output cannot go on; it is stopped, the others go on.
    #[error("{0}")]
    Fatal(BoxError),
}

impl WriteError {
    /// A retryable error with the default backoff.
    pub fn retry(e: impl Into<BoxError>) -> Self {
        WriteError::Retry {
            error: e.into(),
            after: None,
        }
    }
    /// A fatal error.
    pub fn fatal(e: impl Into<BoxError>) -> Self {
        WriteError::Fatal(e.into())
    }
}

/// A source polled by the pipeline on a timer.
pub trait Source: Send {
    /// Measures once and appends the points to `into`. `timestamp` is the
    /// time of this poll; use it for every point so that they line up.
    fn poll(&mut self, into: &mut MeasurementBuffer, timestamp: Timestamp)
        -> Result<(), PollError>;
}

/// What the transforms and outputs can read about the pipeline.
#[derive(Debug)]
pub struct ElementContext<'a> {
    /// Every registered metric (a plugin started later may add some; ids
    /// never change).
    pub metrics: &'a MetricRegistry,
}

/// A transform: edits, adds or removes points of every buffer, in order.
pub trait Transform: Send {
    /// Transforms one buffer in place.
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), TransformError>;

    /// Called once at shutdown after the last buffer, so that a transform
    /// holding points back (to align intervals) can emit them.
    fn finish(
        &mut self,
        _buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        Ok(())
    }
}

/// An output: writes buffers somewhere. Runs on its own thread, may block.
pub trait Output: Send {
    /// Writes (or queues) one buffer.
    fn write(&mut self, buffer: &MeasurementBuffer, ctx: &ElementContext)
        -> Result<(), WriteError>;

    /// Makes what was written durable/visible. Called at the output's flush
    /// interval when there was something to flush, and before `close`.
    fn flush(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        Ok(())
    }

    /// Called once after the last flush at shutdown (or when its plugin stops).
    fn close(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        Ok(())
    }

    /// Reopens what the output writes to, after a flush (SIGHUP: a file
    /// renamed by logrotate is left complete and a new one is started).
    /// Outputs with nothing to reopen keep the default, which does nothing.
    fn reopen(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        Ok(())
    }
}

/// When a managed source is polled and flushed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceTrigger {
    /// Time between two polls.
    pub poll_interval: Duration,
    /// Time between two hand-overs of the accumulated points (≥ poll_interval
    /// in practice; larger batches cost less per point).
    pub flush_interval: Duration,
    /// Whether the source gets its own thread: set it when a poll can take
    /// long (milliseconds) so that it cannot delay other sources.
    pub dedicated_thread: bool,
    /// Whether `poll_interval` stands even where the pipeline polls every
    /// source more often (`PipelineConfig::max_poll_interval`, as `exec`
    /// does): a device read over the network (a BMC) that refreshes its
    /// readings every few seconds gains nothing from faster polls, and
    /// faster polls would load it.
    pub keeps_interval: bool,
}

impl SourceTrigger {
    /// Polled every `poll_interval`, flushed at every poll, on the shared thread.
    pub fn every(poll_interval: Duration) -> Self {
        Self {
            poll_interval,
            flush_interval: poll_interval,
            dedicated_thread: false,
            keeps_interval: false,
        }
    }

    /// Sets the flush interval.
    pub fn flush_every(mut self, flush_interval: Duration) -> Self {
        self.flush_interval = flush_interval;
        self
    }

    /// The same trigger, polled at least every `max` (a slower poll
    /// interval is shortened to `max`, and so is its flush interval;
    /// faster ones are left as they are).
    pub fn polled_at_most_every(mut self, max: Duration) -> Self {
        if !max.is_zero() && self.poll_interval > max && !self.keeps_interval {
            self.poll_interval = max;
            self.flush_interval = self.flush_interval.min(max);
        }
        self
    }

    /// Keeps `poll_interval` where the pipeline would poll faster (see
    /// [`SourceTrigger::keeps_interval`]).
    pub fn keeping_interval(mut self) -> Self {
        self.keeps_interval = true;
        self
    }

    /// Gives the source its own poller thread.
    pub fn on_dedicated_thread(mut self) -> Self {
        self.dedicated_thread = true;
        self
    }
}

/// Options of an output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputOptions {
    /// How often `flush` is called while data keeps coming (`None`: only at close).
    pub flush_interval: Option<Duration>,
    /// Whether the points of thinned metrics ([`crate::metrics::Thinning`])
    /// are thinned before this output (true: an output that stores rows).
    /// An output that keeps current totals (Prometheus) or needs every
    /// point (the `exec` report) sets false.
    pub thinned: bool,
}

impl Default for OutputOptions {
    fn default() -> Self {
        Self {
            flush_interval: Some(Duration::from_secs(1)),
            thinned: true,
        }
    }
}

/// Sizes and budgets of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Buffers waiting between sources and the transform stage.
    pub source_queue_capacity: usize,
    /// Buffers waiting in front of each output.
    pub output_queue_capacity: usize,
    /// How many times a batch is written before it is given up (1 = no retry).
    pub max_write_attempts: u32,
    /// First retry delay; doubles at each attempt.
    pub retry_initial_delay: Duration,
    /// Upper bound of the retry delay.
    pub retry_max_delay: Duration,
    /// A source's buffer is handed on early when it holds this many points
    /// (default 8 192: a few MiB of points, whatever the flush interval;
    /// 100 000 let 3 000 processes hold 75 000 points between 5 s flushes).
    pub max_points_per_buffer: usize,
    /// Whether every source is polled as soon as the pipeline starts (the
    /// service: the first figures at once). `exec` turns it off: its first
    /// poll is the one it asks for right before the command starts, so a
    /// short command costs one poll of every source less.
    pub first_poll_at_start: bool,
    /// Every managed source is polled at least this often (`None`: each at
    /// its own interval). `exec` sets it so that a short command gets
    /// enough points (a plot and a CSV of a 1 s command have ten).
    pub max_poll_interval: Option<Duration>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            source_queue_capacity: 1024,
            output_queue_capacity: 1024,
            max_write_attempts: 5,
            retry_initial_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            max_points_per_buffer: 8_192,
            first_poll_at_start: true,
            max_poll_interval: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_is_polled_at_most_every_the_cap_and_faster_ones_are_kept() {
        let ms = Duration::from_millis;
        let slow = SourceTrigger::every(ms(1000)).flush_every(ms(5000));
        let capped = slow.polled_at_most_every(ms(100));
        assert_eq!(
            (capped.poll_interval, capped.flush_interval),
            (ms(100), ms(100))
        );
        let fast = SourceTrigger::every(ms(10)).flush_every(ms(5000));
        let kept = fast.polled_at_most_every(ms(100));
        assert_eq!(
            (kept.poll_interval, kept.flush_interval),
            (ms(10), ms(5000))
        );
        assert_eq!(slow.polled_at_most_every(Duration::ZERO), slow);
        let bmc = SourceTrigger::every(ms(10_000)).keeping_interval();
        assert_eq!(
            bmc.polled_at_most_every(ms(100)),
            bmc,
            "a BMC keeps its 10 s"
        );
    }
}
