//! The transform stage: receives every buffer, applies the transforms in
//! order, and hands the result to every output's queue, through the
//! transforms scoped to that output on the way (`routes.rs`).
//!
//! Elements are added and removed by commands that travel in the same
//! queue as the buffers, so a command takes effect exactly between the
//! buffers sent before it and those sent after: a stopped plugin's sources
//! have queued their last buffers before its transforms finish and its
//! outputs close.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use crate::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use crate::metrics::MetricId;

use super::messages::{NamedTransform, OutputMessage, OutputQueue, StageCommand, StageMessage};
use super::registry::LocalMetrics;
use super::routes::{RouteNode, RoutePlan};
use super::stats::{should_log, PipelineStats};
use super::{ElementContext, TransformError};

/// How long a reopen request waits for room in an output's queue: a slow
/// output gets it late, a stuck one (whose write never returns) must not
/// hold the stage, and with it the reload, for ever.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Queues a reopen request behind what `out` has queued, waiting up to
/// [`REOPEN_WAIT`] for room.
fn reopen(out: &OutputQueue) {
    let deadline = std::time::Instant::now() + REOPEN_WAIT;
    loop {
        match out.tx.try_send(OutputMessage::Reopen) {
            Ok(()) | Err(mpsc::TrySendError::Disconnected(_)) => return,
            Err(mpsc::TrySendError::Full(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(mpsc::TrySendError::Full(_)) => {
                log::warn!(
                    "output {}: its queue stayed full for {REOPEN_WAIT:?}; not reopened",
                    out.name
                );
                return;
            }
        }
    }
}

pub(crate) struct Stage {
    pub transforms: Vec<NamedTransform>,
    pub outputs: Vec<OutputQueue>,
    pub metrics: LocalMetrics,
    pub stats: Arc<PipelineStats>,
    pub draining: Arc<AtomicBool>,
    /// The `alumet_dropped_points` self-metric.
    pub dropped_metric: MetricId,
    /// Drops already reported as the self-metric.
    pub reported_drops: u64,
    /// Buffers held while plugins restart, and since when.
    pub held: Option<(std::time::Instant, Vec<MeasurementBuffer>)>,
    /// Which transforms lead to which outputs; planned again whenever
    /// transforms or outputs come or go.
    pub plan: RoutePlan,
}

/// The longest a restart may hold the buffers: past it they go on to the
/// elements there are, so a restart that never completes cannot hold the
/// whole pipeline (or its memory).
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10);

impl Stage {
    pub(crate) async fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<StageMessage>) {
        while let Some(message) = rx.recv().await {
            match message {
                StageMessage::Buffer(buffer) => match &mut self.held {
                    Some((since, held)) if since.elapsed() < HOLD_AT_MOST => held.push(buffer),
                    Some(_) => {
                        log::warn!("plugins restarting for over {HOLD_AT_MOST:?}: the buffers held for them go on without them");
                        self.release();
                        self.process(buffer);
                    }
                    None => self.process(buffer),
                },
                StageMessage::Control(command) => self.handle(command),
            }
        }
        self.release();
        // Every source is done: let the transforms emit what they held back.
        let all = vec![true; self.transforms.len()];
        self.metrics.refresh();
        self.flow(MeasurementBuffer::new(), &all);
        // Dropping the output senders closes the output queues.
    }

    fn process(&mut self, buffer: MeasurementBuffer) {
        self.metrics.refresh();
        self.flow(buffer, &[]);
    }

    /// Plans the routes again, after a change of transforms or outputs.
    fn replan(&mut self) {
        let scopes: Vec<_> = self.transforms.iter().map(|t| &t.scope).collect();
        let outputs: Vec<_> = self
            .outputs
            .iter()
            .map(|o| (o.plugin.as_str(), o.name.as_str()))
            .collect();
        self.plan = super::routes::plan(&scopes, &outputs);
        for &t in &self.plan.unrouted {
            let t = &self.transforms[t];
            log::warn!(
                "transform {}: none of its {} is running; it receives no points",
                t.name,
                t.scope
            );
        }
        for c in &self.plan.conflicts {
            // Refused at commit; should one get through, it runs on one stream only.
            log::error!(
                "transform {}: its outputs' routes cross; it only runs for the first",
                self.transforms[c.transform].name
            );
        }
    }

    /// Takes `buffer` through the trunk, then down the routing tree to
    /// the outputs. The transforms marked in `finishing` (by index; empty:
    /// none) then emit what they held back, and those points go through
    /// every transform after them on the way to their outputs.
    fn flow(&mut self, mut buffer: MeasurementBuffer, finishing: &[bool]) {
        let plan = std::mem::take(&mut self.plan);
        for &i in &plan.trunk {
            self.step(i, &mut buffer, finishing);
        }
        self.report_drops(&mut buffer);
        self.flow_node(&plan.root, buffer, finishing);
        self.plan = plan;
    }

    fn flow_node(&mut self, node: &RouteNode, mut buffer: MeasurementBuffer, finishing: &[bool]) {
        if let (Some(i), false) = (node.transform, node.skip) {
            self.step(i, &mut buffer, finishing);
        }
        let finishing_below = !finishing.is_empty();
        let Some((last, others)) = node.children.split_last() else {
            self.dispatch(buffer, &node.outputs);
            return;
        };
        // Each branch gets its own copy: what one transform changes, the
        // others and the outputs here must not see.
        if !node.outputs.is_empty() && !buffer.is_empty() {
            self.dispatch(buffer.clone(), &node.outputs);
        }
        for child in others {
            if !buffer.is_empty() || finishing_below {
                self.flow_node(child, buffer.clone(), finishing);
            }
        }
        if !buffer.is_empty() || finishing_below {
            self.flow_node(last, buffer, finishing);
        }
    }

    /// Applies transform `i` (when there is something to transform), then
    /// lets it finish if it is marked in `finishing`.
    fn step(&mut self, i: usize, buffer: &mut MeasurementBuffer, finishing: &[bool]) {
        if !buffer.is_empty() {
            self.apply_one(i, buffer);
        }
        if finishing.get(i).copied().unwrap_or(false) {
            self.finish_one(i, buffer);
        }
    }

    /// Handles the held buffers, in the order they came.
    fn release(&mut self) {
        if let Some((_, held)) = self.held.take() {
            for buffer in held {
                self.process(buffer);
            }
        }
    }

    fn handle(&mut self, command: StageCommand) {
        match command {
            StageCommand::Add {
                transforms,
                outputs,
            } => {
                for t in transforms {
                    let at = self.transforms.partition_point(|x| x.rank <= t.rank);
                    self.transforms.insert(at, t);
                }
                self.outputs.extend(outputs);
                self.replan();
                self.release();
            }
            StageCommand::Release => self.release(),
            StageCommand::Remove {
                plugins,
                done,
                hold,
            } => {
                self.metrics.refresh();
                let leaving: Vec<bool> = self
                    .transforms
                    .iter()
                    .map(|t| plugins.contains(&t.plugin))
                    .collect();
                if leaving.contains(&true) {
                    self.flow(MeasurementBuffer::new(), &leaving);
                }
                self.transforms.retain(|t| !plugins.contains(&t.plugin));
                // Dropping a queue's sender closes it: the output writes what
                // is queued, flushes and closes.
                self.outputs.retain(|o| !plugins.contains(&o.plugin));
                self.replan();
                if hold && self.held.is_none() {
                    self.held = Some((std::time::Instant::now(), Vec::new()));
                }
                let _ = done.send(());
            }
            StageCommand::ReopenOutputs { done } => {
                for out in &self.outputs {
                    tokio::task::block_in_place(|| reopen(out));
                }
                let _ = done.send(());
            }
        }
    }

    /// Lets transform `i` emit what it held back, into `buffer`.
    fn finish_one(&mut self, i: usize, buffer: &mut MeasurementBuffer) {
        let t = &mut self.transforms[i];
        if t.disabled {
            return;
        }
        let _busy = self.stats.stage_busy.enter();
        let ctx = ElementContext {
            metrics: self.metrics.get(),
        };
        if let Err(e) = t.transform.finish(buffer, &ctx) {
            t.stats.last_error.set(&e);
            log::error!("transform {}: finishing failed: {e}", t.name);
        }
    }

    fn apply_one(&mut self, i: usize, buffer: &mut MeasurementBuffer) {
        let t = &mut self.transforms[i];
        if t.disabled {
            return;
        }
        let ctx = ElementContext {
            metrics: self.metrics.get(),
        };
        t.stats
            .points_in
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        let result = {
            let _busy = self.stats.stage_busy.enter();
            t.transform.apply(buffer, &ctx)
        };
        t.stats
            .points_out
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {}
            Err(TransformError::Transient(e)) => {
                t.stats.last_error.set(&e);
                let n = t.stats.errors.fetch_add(1, Ordering::Relaxed) + 1;
                if should_log(n) {
                    log::warn!(
                        "transform {}: {e}; buffer passed on unchanged ({n} failures so far)",
                        t.name
                    );
                }
            }
            Err(TransformError::Fatal(e)) => {
                t.stats.last_error.set(&e);
                t.stats.errors.fetch_add(1, Ordering::Relaxed);
                t.stats.disabled.store(true, Ordering::Relaxed);
                log::error!("transform {} disabled: {e}", t.name);
                t.disabled = true;
            }
        }
    }

    fn report_drops(&mut self, buffer: &mut MeasurementBuffer) {
        let reported = &mut self.reported_drops;
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

    /// Hands `buffer` to the outputs at `targets` (indices).
    fn dispatch(&mut self, buffer: MeasurementBuffer, targets: &[usize]) {
        if buffer.is_empty() || targets.is_empty() {
            return;
        }
        let n = buffer.len() as u64;
        let shared = Arc::new(buffer);
        let draining = self.draining.load(Ordering::Acquire);
        for out in targets.iter().filter_map(|&i| self.outputs.get(i)) {
            // Counted before the send, so the output never takes off more than was put on.
            out.stats.queued_batches.fetch_add(1, Ordering::Relaxed);
            let message = OutputMessage::Batch(shared.clone());
            let sent = if draining {
                // Shutdown loses nothing: wait for room. This blocks a worker
                // thread, which is acceptable only because nothing else runs now.
                tokio::task::block_in_place(|| out.tx.send(message).is_ok())
            } else {
                match out.tx.try_send(message) {
                    Ok(()) => true,
                    Err(mpsc::TrySendError::Full(_)) => {
                        out.stats.queued_batches.fetch_sub(1, Ordering::Relaxed);
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
                out.stats.queued_batches.fetch_sub(1, Ordering::Relaxed);
                // The output has stopped (fatal error); its loss is counted.
                out.stats.dropped_points.fetch_add(n, Ordering::Relaxed);
                self.stats.count_drop(n);
            }
        }
    }
}
