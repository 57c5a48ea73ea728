//! Output threads: write batches, retry the same batch on retryable errors,
//! flush on an interval, reopen on request, close at the end (when the
//! stage drops the queue's sender: at shutdown, or when its plugin stops).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::measurement::MeasurementBuffer;

use super::messages::OutputMessage;
use super::registry::LocalMetrics;
use super::stats::{LossReporter, OutputStats};
use super::{ElementContext, Output, OutputOptions, PipelineConfig, WriteError};

pub(crate) struct OutputRunner {
    pub name: String,
    pub output: Box<dyn Output>,
    pub options: OutputOptions,
    /// Present when the output takes thinned series (`OutputOptions::thinned`).
    pub thinner: Option<super::thinning::Thinner>,
    pub rx: super::queue::QueueReceiver<OutputMessage>,
    pub stats: Arc<OutputStats>,
    /// The pipeline-wide drop counter (for the self-metric).
    pub loss: LossReporter,
    pub metrics: LocalMetrics,
    pub config: PipelineConfig,
}

enum Outcome {
    Done,
    GaveUp,
    Fatal,
}

impl OutputRunner {
    pub(crate) fn run(mut self) {
        let mut dirty = false;
        let mut last_flush = Instant::now();
        loop {
            let received = match self.options.flush_interval {
                Some(interval) if dirty => {
                    let wait = (last_flush + interval).saturating_duration_since(Instant::now());
                    self.rx.recv_timeout(wait)
                }
                _ => self
                    .rx
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(OutputMessage::Batch(mut buffer)) => {
                    self.stats.queued_batches.fetch_sub(1, Relaxed);
                    if let Some(thinner) = &mut self.thinner {
                        self.metrics.refresh();
                        let left_out = thinner.thin_shared(&mut buffer, self.metrics.get());
                        self.stats.thinned_points.fetch_add(left_out, Relaxed);
                    }
                    let outcome = self.write_with_retry(&buffer);
                    super::memory::recycle(buffer);
                    match outcome {
                        Outcome::Done => dirty = true,
                        Outcome::GaveUp => {}
                        Outcome::Fatal => return self.drain_after_failure(),
                    }
                }
                Ok(OutputMessage::Reopen) => {
                    if !self.flush() || !self.reopen() {
                        return self.drain_after_failure();
                    }
                    // A new file (logrotate) starts every series again: it
                    // holds its own first points, as a file of its own should.
                    if let Some(thinner) = &mut self.thinner {
                        *thinner = Default::default();
                    }
                    dirty = false;
                    last_flush = Instant::now();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if let Some(interval) = self.options.flush_interval {
                if dirty && last_flush.elapsed() >= interval {
                    if !self.flush() {
                        return self.drain_after_failure();
                    }
                    dirty = false;
                    last_flush = Instant::now();
                }
            }
        }
        if self.flush() {
            let _busy = self.stats.busy.enter();
            let ctx = ElementContext {
                metrics: self.metrics.get(),
            };
            if let Err(e) = self.output.close(&ctx) {
                log::error!("output {}: closing failed: {e}", self.name);
            }
        }
    }

    fn write_with_retry(&mut self, buffer: &MeasurementBuffer) -> Outcome {
        self.metrics.refresh();
        let ctx = ElementContext {
            metrics: self.metrics.get(),
        };
        let n = buffer.len() as u64;
        let mut delay = self.config.retry_initial_delay;
        let attempts = self.config.max_write_attempts.max(1);
        for attempt in 1..=attempts {
            // Busy only inside the call: a retry's backoff sleep is not a stall.
            let written = {
                let _busy = self.stats.busy.enter();
                self.output.write(buffer, &ctx)
            };
            match written {
                Ok(()) => {
                    self.stats.written_points.fetch_add(n, Relaxed);
                    self.stats.written_batches.fetch_add(1, Relaxed);
                    return Outcome::Done;
                }
                Err(WriteError::Retry { error, after }) if attempt < attempts => {
                    self.stats.last_error.set(&error);
                    self.stats.retries.fetch_add(1, Relaxed);
                    let wait = after
                        .unwrap_or(delay)
                        .min(self.config.retry_max_delay.max(delay));
                    log::warn!(
                        "output {}: write failed (attempt {attempt}/{attempts}), retrying the same {n} points in {wait:?}: {error}",
                        self.name
                    );
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(self.config.retry_max_delay);
                }
                Err(WriteError::Retry { error, .. }) => {
                    self.stats.last_error.set(&error);
                    self.count_lost(n);
                    log::error!(
                        "output {}: giving up on {n} points after {attempts} attempts: {error}",
                        self.name
                    );
                    return Outcome::GaveUp;
                }
                Err(WriteError::Fatal(error)) => {
                    self.stats.last_error.set(&error);
                    self.count_lost(n);
                    log::error!("output {} stopped: {error}", self.name);
                    return Outcome::Fatal;
                }
            }
        }
        Outcome::GaveUp
    }

    /// Returns false if the output failed fatally.
    fn flush(&mut self) -> bool {
        let ctx = ElementContext {
            metrics: self.metrics.get(),
        };
        let mut delay = self.config.retry_initial_delay;
        for attempt in 1..=self.config.max_write_attempts.max(1) {
            let flushed = {
                let _busy = self.stats.busy.enter();
                self.output.flush(&ctx)
            };
            match flushed {
                Ok(()) => return true,
                Err(WriteError::Retry { error, after }) => {
                    self.stats.last_error.set(&error);
                    log::warn!(
                        "output {}: flush failed (attempt {attempt}): {error}",
                        self.name
                    );
                    std::thread::sleep(after.unwrap_or(delay));
                    delay = (delay * 2).min(self.config.retry_max_delay);
                }
                Err(WriteError::Fatal(error)) => {
                    self.stats.last_error.set(&error);
                    log::error!("output {} stopped: flush failed: {error}", self.name);
                    return false;
                }
            }
        }
        true
    }

    /// Returns false if the output failed fatally; a retryable failure is
    /// logged and the output goes on with what it has open.
    fn reopen(&mut self) -> bool {
        let ctx = ElementContext {
            metrics: self.metrics.get(),
        };
        let reopened = {
            let _busy = self.stats.busy.enter();
            self.output.reopen(&ctx)
        };
        match reopened {
            Ok(()) => true,
            Err(WriteError::Retry { error, .. }) => {
                self.stats.last_error.set(&error);
                log::warn!(
                    "output {}: cannot reopen, going on as before: {error}",
                    self.name
                );
                true
            }
            Err(WriteError::Fatal(error)) => {
                self.stats.last_error.set(&error);
                log::error!("output {} stopped: reopening failed: {error}", self.name);
                false
            }
        }
    }

    fn count_lost(&self, n: u64) {
        self.stats.dropped_points.fetch_add(n, Relaxed);
        self.loss.report(n);
    }

    /// After a fatal error, keep receiving so that the loss is counted
    /// exactly, until the pipeline closes the queue.
    fn drain_after_failure(self) {
        while let Ok(message) = self.rx.recv() {
            if let OutputMessage::Batch(buffer) = message {
                self.stats.queued_batches.fetch_sub(1, Relaxed);
                self.count_lost(buffer.len() as u64);
            }
        }
    }
}
