//! Counters of one network output, shared by the output, its sender thread
//! and the plugin (public getter).
//!
//! Every point handed to the output ends in exactly one of: delivered,
//! dropped because the buffer was full, rejected by the server (its whole
//! batch, or the points a partial success names), skipped because the
//! format cannot carry it, or not delivered before the shutdown timeout.
//! The counters make that sum checkable.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The live counters (atomics); read them through [`StatsHandle`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub received_points: AtomicU64,
    pub delivered_points: AtomicU64,
    pub buffer_dropped_points: AtomicU64,
    pub rejected_points: AtomicU64,
    pub skipped_points: AtomicU64,
    pub undelivered_at_shutdown_points: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// A level, not a counter: points queued or in flight now.
    pub buffered_points: AtomicU64,
    /// The highest `buffered_points` seen.
    pub peak_buffered_points: AtomicU64,
    /// Reports losses to the pipeline (self-metric `alumet_dropped_points`);
    /// set when the plugin starts.
    pub loss: std::sync::OnceLock<alumet::pipeline::LossReporter>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }

    /// Counts `n` lost points on `counter` (one of this struct's loss
    /// counters) and reports them to the pipeline.
    pub(crate) fn lose(&self, counter: &AtomicU64, n: usize) {
        Self::add(counter, n);
        if let Some(loss) = self.loss.get() {
            loss.report(n as u64);
        }
    }
}

/// A cloneable view on the counters of one network output.
#[derive(Debug, Clone, Default)]
pub struct StatsHandle {
    pub(crate) counters: Arc<Counters>,
}

impl StatsHandle {
    /// Reports every later loss to the pipeline too (its
    /// `alumet_dropped_points`). Only the first reporter set is kept, so a
    /// second start of the same plugin keeps counting in the same place.
    pub fn attach_loss_reporter(&self, reporter: alumet::pipeline::LossReporter) {
        let _ = self.counters.loss.set(reporter);
    }

    /// The counters now.
    pub fn snapshot(&self) -> DeliveryStats {
        let c = &self.counters;
        DeliveryStats {
            received_points: c.received_points.load(Relaxed),
            delivered_points: c.delivered_points.load(Relaxed),
            buffer_dropped_points: c.buffer_dropped_points.load(Relaxed),
            rejected_points: c.rejected_points.load(Relaxed),
            skipped_points: c.skipped_points.load(Relaxed),
            undelivered_at_shutdown_points: c.undelivered_at_shutdown_points.load(Relaxed),
            requests: c.requests.load(Relaxed),
            retries: c.retries.load(Relaxed),
            buffered_points: c.buffered_points.load(Relaxed),
            peak_buffered_points: c.peak_buffered_points.load(Relaxed),
        }
    }

    /// Points lost so far, whatever the reason.
    pub fn dropped_points(&self) -> u64 {
        self.snapshot().dropped_points()
    }

    /// What output `name` delivered and dropped, and why: the line every
    /// network output logs when it stops (logged by the plugin, under its
    /// own log target, which the agent's log filter knows).
    pub fn summary(&self, name: &str) -> String {
        let s = self.snapshot();
        format!(
            "{name}: {} points delivered, {} dropped (buffer full: {}, rejected: {}, unrepresentable: {}, undelivered at shutdown: {})",
            s.delivered_points,
            s.dropped_points(),
            s.buffer_dropped_points,
            s.rejected_points,
            s.skipped_points,
            s.undelivered_at_shutdown_points
        )
    }
}

/// The counters of one network output at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryStats {
    /// Points handed to the output by the pipeline.
    pub received_points: u64,
    /// Points the server acknowledged (2xx).
    pub delivered_points: u64,
    /// Points evicted from the buffer because it held `max_buffer_points`
    /// (the server was down or slow for too long); the oldest go first.
    pub buffer_dropped_points: u64,
    /// Points of batches the server rejected with a 4xx status (not 429),
    /// plus the points a partial success says were rejected.
    pub rejected_points: u64,
    /// Points the output's format cannot carry (e.g. a NaN in line protocol).
    pub skipped_points: u64,
    /// Points still queued when `shutdown_timeout` ran out.
    pub undelivered_at_shutdown_points: u64,
    /// HTTP requests sent (including retries).
    pub requests: u64,
    /// Requests that failed in a retryable way and were sent again.
    pub retries: u64,
    /// Points waiting in the buffer or being sent right now (a level, not
    /// a total): at most `max_buffer_points` plus one batch.
    pub buffered_points: u64,
    /// The highest `buffered_points` seen since start.
    pub peak_buffered_points: u64,
}

impl DeliveryStats {
    /// Points lost, whatever the reason.
    pub fn dropped_points(&self) -> u64 {
        self.buffer_dropped_points
            + self.rejected_points
            + self.skipped_points
            + self.undelivered_at_shutdown_points
    }
}
