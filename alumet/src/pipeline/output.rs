//! Output threads: write batches, retry the same batch on retryable errors,
//! flush on an interval, close at the end.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::measurement::MeasurementBuffer;
use crate::metrics::MetricRegistry;

use super::stats::{LossReporter, OutputStats};
use super::{ElementContext, Output, OutputOptions, PipelineConfig, WriteError};

pub(crate) struct OutputRunner {
    pub name: String,
    pub output: Box<dyn Output>,
    pub options: OutputOptions,
    pub rx: mpsc::Receiver<Arc<MeasurementBuffer>>,
    pub stats: Arc<OutputStats>,
    /// The pipeline-wide drop counter (for the self-metric).
    pub loss: LossReporter,
    pub metrics: Arc<MetricRegistry>,
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
                Ok(buffer) => {
                    let outcome = self.write_with_retry(&buffer);
                    super::memory::recycle(buffer);
                    match outcome {
                        Outcome::Done => dirty = true,
                        Outcome::GaveUp => {}
                        Outcome::Fatal => return self.drain_after_failure(),
                    }
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
            let ctx = ElementContext {
                metrics: &self.metrics,
            };
            if let Err(e) = self.output.close(&ctx) {
                log::error!("output {}: closing failed: {e}", self.name);
            }
        }
    }

    fn write_with_retry(&mut self, buffer: &MeasurementBuffer) -> Outcome {
        let ctx = ElementContext {
            metrics: &self.metrics,
        };
        let n = buffer.len() as u64;
        let mut delay = self.config.retry_initial_delay;
        let attempts = self.config.max_write_attempts.max(1);
        for attempt in 1..=attempts {
            match self.output.write(buffer, &ctx) {
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
            metrics: &self.metrics,
        };
        let mut delay = self.config.retry_initial_delay;
        for attempt in 1..=self.config.max_write_attempts.max(1) {
            match self.output.flush(&ctx) {
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

    fn count_lost(&self, n: u64) {
        self.stats.dropped_points.fetch_add(n, Relaxed);
        self.loss.report(n);
    }

    /// After a fatal error, keep receiving so that the loss is counted
    /// exactly, until the pipeline closes the queue.
    fn drain_after_failure(self) {
        while let Ok(buffer) = self.rx.recv() {
            self.count_lost(buffer.len() as u64);
        }
    }
}
