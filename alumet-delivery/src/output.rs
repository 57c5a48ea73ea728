//! The pipeline output every network output is: encodes buffers with its
//! [`BatchEncoder`] and hands the batches to the sender thread, without
//! ever waiting on the network.
//!
//! A batch is sealed when it holds `batch_size` points, or at each flush
//! (the pipeline calls `flush` every `flush_interval` while data comes), so
//! points wait at most about `flush_interval` before they are sent. At
//! `close`, the sender gets `shutdown_timeout` to deliver what is queued.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alumet::measurement::{MeasurementBuffer, MeasurementPoint};
use alumet::metrics::MetricRegistry;
use alumet::pipeline::{ElementContext, Output, OutputOptions, PluginStartContext, WriteError};
use alumet::plugin::PluginError;

use crate::http::Transport;
use crate::queue::Batch;
use crate::sender::{Sender, Shared};
use crate::settings::DeliverySettings;
use crate::spill::DiskBuffer;
use crate::stats::{Counters, StatsHandle};

/// What an output plugin provides: the encoding of points into request
/// bodies. Points are added one by one; `finish` writes the body of those
/// added since the previous `finish`.
pub trait BatchEncoder: Send {
    /// Why a point cannot be encoded (logged once per distinct reason).
    type Skip: std::fmt::Display + PartialEq + Send;

    /// Adds a point to the batch being built; on error nothing is added.
    fn add(&mut self, point: &MeasurementPoint, metrics: &MetricRegistry)
        -> Result<(), Self::Skip>;

    /// Points added since the last `finish`.
    fn points(&self) -> usize;

    /// Writes the body of the points added since the last `finish` into
    /// `out` (empty on entry) and starts a new batch.
    fn finish(&mut self, out: &mut Vec<u8>);

    /// Whether two bodies one after the other are one valid body (line
    /// protocol, protobuf messages: yes; a JSON document: no), so that the
    /// sender may merge small queued batches into one request.
    fn concatenable(&self) -> bool;

    /// The encoding of the bodies, one word (`influx-line-protocol`,
    /// `otlp-protobuf`): batches kept on disk in another encoding (the
    /// output's protocol changed between two runs) are not sent.
    fn format(&self) -> &'static str;
}

/// Adds output `output_name` to the plugin being started: a
/// [`DeliveryOutput`] of `encoder` over `transport`, flushed every
/// `settings.flush_interval`, counting into `stats`, whose losses are also
/// reported to the pipeline. What every network output's `start` ends with.
pub fn add_delivery_output<E, T>(
    ctx: &mut PluginStartContext,
    output_name: &str,
    encoder: E,
    transport: T,
    settings: DeliverySettings,
    stats: &StatsHandle,
) -> Result<(), PluginError>
where
    E: BatchEncoder + 'static,
    T: Transport + 'static,
{
    stats.attach_loss_reporter(ctx.loss_reporter());
    crate::self_metrics::add_self_metrics(ctx, settings.name, stats, settings.own_metrics_interval);
    let flush_interval = settings.flush_interval;
    let output = DeliveryOutput::new(encoder, transport, settings, stats)?;
    ctx.add_output(
        output_name,
        Box::new(output),
        OutputOptions {
            flush_interval: Some(flush_interval),
            thinned: true,
        },
    );
    Ok(())
}

/// The disk part of an output's buffer, if `settings` give a `buffer_dir`:
/// batches a previous run left there are queued first (and counted as
/// received, so that every point still ends in exactly one counter).
fn open_disk_buffer(
    settings: &DeliverySettings,
    format: &str,
    counters: &Counters,
) -> Result<Option<DiskBuffer>, PluginError> {
    if settings.buffer_dir.as_os_str().is_empty() {
        return Ok(None);
    }
    let dir = &settings.buffer_dir;
    let (disk, recovered) =
        DiskBuffer::open(dir, format, settings.max_buffer_disk_bytes).map_err(|e| {
            PluginError::unavailable(
                format!("cannot use the disk buffer {}: {e}", dir.display()),
                "make buffer_dir a directory the agent can write, or set buffer_dir = \"\" to buffer in memory only",
            )
        })?;
    if recovered.points > 0 {
        log::info!(
            "{}: {} points left in {} by a previous run are delivered first",
            settings.name,
            recovered.points,
            dir.display()
        );
    }
    let unusable = recovered.unusable_points;
    if unusable > 0 || recovered.unreadable_files > 0 {
        log::warn!(
            "{}: {unusable} points in {} were in another format or beyond max_buffer_disk_bytes, and {} files were unreadable: removed, not sent",
            settings.name,
            dir.display(),
            recovered.unreadable_files
        );
    }
    Counters::add(&counters.received_points, recovered.points + unusable);
    if unusable > 0 {
        counters.lose(&counters.buffer_dropped_points, unusable);
    }
    Ok(Some(disk))
}

/// Extra time `close` waits beyond `shutdown_timeout` for a request that
/// was already under way when the deadline came.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Minimum time between two log lines about a full buffer.
const EVICTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Writes measurements to a server, through a bounded buffer and a sender thread.
pub struct DeliveryOutput<E: BatchEncoder, T: Transport + 'static> {
    encoder: E,
    /// Size of the last sealed body, to size the next one.
    last_body_len: usize,
    batch_size: usize,
    name: &'static str,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
    /// The transport and settings until the sender thread is started.
    pending_sender: Option<(T, DeliverySettings)>,
    sender: Option<SenderThread>,
    evicted_since_log: usize,
    last_eviction_log: Option<Instant>,
    skip_logged: Vec<E::Skip>,
}

struct SenderThread {
    handle: JoinHandle<()>,
    done: mpsc::Receiver<()>,
}

impl<E: BatchEncoder, T: Transport + 'static> DeliveryOutput<E, T> {
    /// An output that encodes with `encoder` and delivers through
    /// `transport` on a thread of its own (started at the first write),
    /// counting into `stats`.
    /// With a `buffer_dir`, its batches from a previous run are queued
    /// first; `Err` if it cannot be used.
    pub fn new(
        encoder: E,
        transport: T,
        settings: DeliverySettings,
        stats: &StatsHandle,
    ) -> Result<Self, PluginError> {
        let batch_size = settings.batch_size.max(1);
        let disk = open_disk_buffer(&settings, encoder.format(), &stats.counters)?;
        let shared = Shared::new(
            settings.max_buffer_points,
            encoder.concatenable(),
            disk,
            stats.counters.clone(),
        );
        let shared = Arc::new(shared);
        shared.refresh_buffered();
        Ok(Self {
            encoder,
            last_body_len: 0,
            batch_size,
            name: settings.name,
            shared,
            shutdown_timeout: settings.shutdown_timeout,
            pending_sender: Some((transport, settings)),
            sender: None,
            evicted_since_log: 0,
            last_eviction_log: None,
            skip_logged: Vec::new(),
        })
    }

    fn ensure_sender(&mut self) -> Result<(), WriteError> {
        let Some((transport, settings)) = self.pending_sender.take() else {
            return Ok(());
        };
        let (done_tx, done) = mpsc::channel();
        let sender = Sender::new(transport, self.shared.clone(), settings);
        let handle = std::thread::Builder::new()
            .name(format!("{}-sender", self.name))
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
        let points = self.encoder.points();
        if points == 0 {
            return;
        }
        let mut body = Vec::with_capacity(self.last_body_len);
        self.encoder.finish(&mut body);
        self.last_body_len = body.len();
        let batch = Batch { body, points };
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
                "{}: the buffer is full (max_buffer_points); dropped the {} oldest points (total dropped this way: {total})",
                self.name,
                self.evicted_since_log
            );
            self.evicted_since_log = 0;
            self.last_eviction_log = Some(Instant::now());
        }
    }

    fn log_skip(&mut self, reason: E::Skip) {
        if !self.skip_logged.contains(&reason) {
            log::warn!(
                "{}: a point was not written because {reason} (further such points are skipped silently and counted)",
                self.name
            );
            self.skip_logged.push(reason);
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
                log::error!("{}: the sender thread panicked", self.name);
            }
        } else {
            // A request is stuck past its deadline: give its points up
            // (the sender counts nothing it no longer owns) and let it go.
            self.shared.abandon_all();
        }
        let kept = self.shared.queue.disk_points();
        if kept > 0 {
            log::info!(
                "{}: {kept} points not delivered yet are kept in buffer_dir for the next start",
                self.name
            );
        }
        let undelivered = self
            .shared
            .counters
            .undelivered_at_shutdown_points
            .load(Ordering::Relaxed);
        if undelivered > 0 {
            log::warn!(
                "{}: {undelivered} points were not delivered within shutdown_timeout ({:?})",
                self.name,
                self.shutdown_timeout
            );
        } else {
            log::debug!(
                "{}: every queued point was delivered before shutdown",
                self.name
            );
        }
    }
}

impl<E: BatchEncoder, T: Transport + 'static> Output for DeliveryOutput<E, T> {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        self.ensure_sender()?;
        Counters::add(&self.shared.counters.received_points, buffer.len());
        for point in buffer {
            match self.encoder.add(point, ctx.metrics) {
                Ok(()) => {
                    if self.encoder.points() >= self.batch_size {
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
        // Points may still be in the encoder if no write came after the last flush.
        if self.encoder.points() > 0 {
            self.ensure_sender()?;
        }
        self.shut_down();
        Ok(())
    }
}

impl<E: BatchEncoder, T: Transport + 'static> Drop for DeliveryOutput<E, T> {
    fn drop(&mut self) {
        // Never closed (the pipeline failed): let the sender thread end.
        if self.sender.is_some() {
            self.shared.queue.close(Instant::now());
        }
    }
}
