//! The transform stage: receives every buffer, applies the transforms in
//! order, and hands the result to every output's queue.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use crate::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use crate::metrics::{MetricId, MetricRegistry};

use super::poller::should_log;
use super::stats::{OutputStats, PipelineStats};
use super::{ElementContext, Transform, TransformError};

/// The sending side of one output's queue.
pub(crate) struct OutputQueue {
    pub name: String,
    pub tx: mpsc::SyncSender<Arc<MeasurementBuffer>>,
    pub stats: Arc<OutputStats>,
}

pub(crate) struct NamedTransform {
    pub name: String,
    pub transform: Box<dyn Transform>,
    pub disabled: bool,
}

pub(crate) struct Stage {
    pub transforms: Vec<NamedTransform>,
    pub outputs: Vec<OutputQueue>,
    pub metrics: Arc<MetricRegistry>,
    pub stats: Arc<PipelineStats>,
    pub draining: Arc<AtomicBool>,
    /// The `alumet_dropped_points` self-metric.
    pub dropped_metric: MetricId,
}

impl Stage {
    pub(crate) async fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<MeasurementBuffer>) {
        let mut reported_drops = 0u64;
        while let Some(mut buffer) = rx.recv().await {
            self.apply_transforms(&mut buffer, 0);
            self.report_drops(&mut buffer, &mut reported_drops);
            self.dispatch(buffer);
        }
        // Every source is done: let the transforms emit what they held back.
        // Points emitted by transform i still go through transforms i+1...
        let mut tail = MeasurementBuffer::new();
        for i in 0..self.transforms.len() {
            if !tail.is_empty() {
                self.apply_one(i, &mut tail);
            }
            let t = &mut self.transforms[i];
            if !t.disabled {
                let ctx = ElementContext {
                    metrics: &self.metrics,
                };
                if let Err(e) = t.transform.finish(&mut tail, &ctx) {
                    log::error!("transform {}: finishing failed: {e}", t.name);
                }
            }
        }
        self.report_drops(&mut tail, &mut reported_drops);
        self.dispatch(tail);
        // Dropping the output senders closes the output queues.
    }

    fn apply_transforms(&mut self, buffer: &mut MeasurementBuffer, from: usize) {
        for i in from..self.transforms.len() {
            self.apply_one(i, buffer);
        }
    }

    fn apply_one(&mut self, i: usize, buffer: &mut MeasurementBuffer) {
        let t = &mut self.transforms[i];
        if t.disabled {
            return;
        }
        let ctx = ElementContext {
            metrics: &self.metrics,
        };
        match t.transform.apply(buffer, &ctx) {
            Ok(()) => {}
            Err(TransformError::Transient(e)) => {
                log::warn!("transform {}: {e}; buffer passed on unchanged", t.name)
            }
            Err(TransformError::Fatal(e)) => {
                log::error!("transform {} disabled: {e}", t.name);
                t.disabled = true;
            }
        }
    }

    fn report_drops(&self, buffer: &mut MeasurementBuffer, reported: &mut u64) {
        let total = self.stats.total_dropped_points.load(Ordering::Relaxed);
        if total > *reported {
            buffer.push(
                MeasurementPoint::new(
                    Timestamp::now(),
                    self.dropped_metric,
                    Resource::LocalMachine,
                    ResourceConsumer::Custom {
                        kind: Cow::Borrowed("alumet"),
                        id: Cow::Borrowed("pipeline"),
                    },
                    total - *reported,
                )
                .with_attr("stage", "pipeline"),
            );
            *reported = total;
        }
    }

    fn dispatch(&mut self, buffer: MeasurementBuffer) {
        if buffer.is_empty() {
            return;
        }
        let n = buffer.len() as u64;
        let shared = Arc::new(buffer);
        let draining = self.draining.load(Ordering::Acquire);
        for out in &self.outputs {
            let sent = if draining {
                // Shutdown loses nothing: wait for room. This blocks a worker
                // thread, which is acceptable only because nothing else runs now.
                tokio::task::block_in_place(|| out.tx.send(shared.clone()).is_ok())
            } else {
                match out.tx.try_send(shared.clone()) {
                    Ok(()) => true,
                    Err(mpsc::TrySendError::Full(_)) => {
                        let total = out.stats.dropped_points.fetch_add(n, Ordering::Relaxed) + n;
                        self.stats.count_drop(n);
                        if should_log(total.div_ceil(n)) {
                            log::warn!("output {}: its queue is full (output too slow); dropped {n} points ({total} so far)", out.name);
                        }
                        continue;
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => false,
                }
            };
            if !sent {
                // The output has stopped (fatal error); its loss is counted.
                out.stats.dropped_points.fetch_add(n, Ordering::Relaxed);
                self.stats.count_drop(n);
            }
        }
    }
}
