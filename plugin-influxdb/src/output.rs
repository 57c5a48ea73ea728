//! The pipeline output: encodes buffers into line protocol batches and
//! hands them to the sender thread, without ever waiting on the network.
//!
//! A batch is sealed when it holds `batch_size` points, or at each flush
//! (the pipeline calls `flush` every `flush_interval` while data comes), so
//! points wait at most about `flush_interval` before they are sent. At
//! `close`, the sender gets `shutdown_timeout` to deliver what is queued.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alumet::measurement::MeasurementBuffer;
use alumet::pipeline::{ElementContext, Output, WriteError};

use crate::http::Transport;
use crate::line_protocol::{LineProtocolEncoder, SkipReason};
use crate::queue::Batch;
use crate::sender::{Sender, SenderSettings, Shared};
use crate::stats::Counters;

/// Extra time `close` waits beyond `shutdown_timeout` for a request that
/// was already under way when the deadline came.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Minimum time between two log lines about a full buffer.
const EVICTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Writes measurements to an InfluxDB-compatible server.
pub struct InfluxDbOutput<T: Transport + 'static> {
    encoder: LineProtocolEncoder,
    current: Batch,
    batch_size: usize,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
    /// The transport and settings until the sender thread is started.
    pending_sender: Option<(T, SenderSettings)>,
    sender: Option<SenderThread>,
    evicted_since_log: usize,
    last_eviction_log: Option<Instant>,
    skip_logged: Vec<SkipReason>,
}

struct SenderThread {
    handle: JoinHandle<()>,
    done: mpsc::Receiver<()>,
}

impl<T: Transport + 'static> InfluxDbOutput<T> {
    /// An output that encodes with `encoder` and delivers through
    /// `transport` on a thread of its own (started at the first write).
    pub(crate) fn new(
        encoder: LineProtocolEncoder,
        transport: T,
        settings: SenderSettings,
        max_buffer_points: usize,
        shutdown_timeout: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        let batch_size = settings.batch_size.max(1);
        Self {
            encoder,
            current: Batch::default(),
            batch_size,
            shared: Arc::new(Shared::new(max_buffer_points, counters)),
            shutdown_timeout,
            pending_sender: Some((transport, settings)),
            sender: None,
            evicted_since_log: 0,
            last_eviction_log: None,
            skip_logged: Vec::new(),
        }
    }

    fn ensure_sender(&mut self) -> Result<(), WriteError> {
        let Some((transport, settings)) = self.pending_sender.take() else {
            return Ok(());
        };
        let (done_tx, done) = mpsc::channel();
        let sender = Sender::new(transport, self.shared.clone(), settings);
        let handle = std::thread::Builder::new()
            .name("influxdb-sender".into())
            .spawn(move || {
                sender.run();
                let _ = done_tx.send(());
            })
            .map_err(|e| WriteError::fatal(format!("cannot start the sender thread: {e}")))?;
        self.sender = Some(SenderThread { handle, done });
        Ok(())
    }

    /// Hands the batch being filled to the sender.
    fn seal(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let capacity = self.current.body.len();
        let batch = std::mem::replace(
            &mut self.current,
            Batch {
                body: Vec::with_capacity(capacity),
                points: 0,
            },
        );
        let evicted = self.shared.queue.push(batch);
        self.shared.refresh_buffered();
        if evicted > 0 {
            self.count_eviction(evicted);
        }
    }

    fn count_eviction(&mut self, evicted: usize) {
        self.shared
            .counters
            .lose(&self.shared.counters.buffer_dropped_points, evicted);
        self.evicted_since_log += evicted;
        let due = self
            .last_eviction_log
            .is_none_or(|t| t.elapsed() >= EVICTION_LOG_INTERVAL);
        if due {
            let total = self
                .shared
                .counters
                .buffer_dropped_points
                .load(Ordering::Relaxed);
            log::warn!(
                "influxdb: the buffer is full (max_buffer_points); dropped the {} oldest points (total dropped this way: {total})",
                self.evicted_since_log
            );
            self.evicted_since_log = 0;
            self.last_eviction_log = Some(Instant::now());
        }
    }

    fn log_skip(&mut self, reason: SkipReason) {
        if !self.skip_logged.contains(&reason) {
            self.skip_logged.push(reason);
            log::warn!("influxdb: a point was not written because {reason} (further such points are skipped silently and counted)");
        }
    }

    /// Stops the sender: deliver until `shutdown_timeout`, then count what is left.
    fn shut_down(&mut self) {
        self.seal();
        let deadline = Instant::now() + self.shutdown_timeout;
        self.shared.queue.close(deadline);
        let Some(sender) = self.sender.take() else {
            return;
        };
        let finished = sender
            .done
            .recv_timeout(self.shutdown_timeout + CLOSE_GRACE)
            .is_ok();
        if finished {
            if sender.handle.join().is_err() {
                log::error!("influxdb: the sender thread panicked");
            }
        } else {
            // A request is stuck past its deadline: give its points up
            // (the sender counts nothing it no longer owns) and let it go.
            self.shared.abandon_all();
        }
        let undelivered = self
            .shared
            .counters
            .undelivered_at_shutdown_points
            .load(Ordering::Relaxed);
        if undelivered > 0 {
            log::warn!(
                "influxdb: {undelivered} points were not delivered within shutdown_timeout ({:?})",
                self.shutdown_timeout
            );
        } else {
            log::debug!("influxdb: every queued point was delivered before shutdown");
        }
    }
}

impl<T: Transport + 'static> Output for InfluxDbOutput<T> {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        self.ensure_sender()?;
        Counters::add(&self.shared.counters.received_points, buffer.len());
        if self.current.body.capacity() == 0 {
            self.current
                .body
                .reserve(self.batch_size.min(buffer.len().max(64)) * 128);
        }
        for point in buffer {
            match self
                .encoder
                .encode(point, ctx.metrics, &mut self.current.body)
            {
                Ok(()) => {
                    self.current.points += 1;
                    if self.current.points >= self.batch_size {
                        self.seal();
                    }
                }
                Err(reason) => {
                    self.shared
                        .counters
                        .lose(&self.shared.counters.skipped_points, 1);
                    self.log_skip(reason);
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.ensure_sender()?;
        self.seal();
        Ok(())
    }

    fn close(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        // Points may still be in `current` if no write came after the last flush.
        if !self.current.is_empty() {
            self.ensure_sender()?;
        }
        self.shut_down();
        Ok(())
    }
}

impl<T: Transport + 'static> Drop for InfluxDbOutput<T> {
    fn drop(&mut self) {
        // Never closed (the pipeline failed): let the sender thread end.
        if self.sender.is_some() {
            self.shared.queue.close(Instant::now());
        }
    }
}
