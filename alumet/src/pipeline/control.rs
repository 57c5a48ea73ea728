//! The control handle: pause, resume, re-time, trigger and shut down
//! sources; counters; the heartbeat; reopening the outputs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::exec::ExecTarget;
use crate::metrics::MetricRegistry;

pub use super::messages::SourceSelector;
use super::messages::{PollerCommand, StageCommand, StageMessage};
use super::registry::MetricsCell;
use super::stats::{PipelineStats, PipelineStatsSnapshot};
use super::topology::Topology;
use super::PipelineConfig;

/// Why a control command failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// No source matches the selector.
    #[error("no source matches {0:?}; known sources: {1}")]
    NoSuchSource(SourceSelector, String),
    /// The pipeline is shutting down or stopped.
    #[error("the pipeline is stopped")]
    Stopped,
    /// An interval of zero was requested.
    #[error("the poll interval must be greater than zero")]
    ZeroInterval,
}

pub(crate) struct HandleInner {
    pub(crate) topology: Mutex<Topology>,
    pub(crate) stats: Arc<PipelineStats>,
    pub(crate) metrics: Arc<MetricsCell>,
    pub(crate) shutdown_requested: Arc<AtomicBool>,
    pub(crate) exec_target: ExecTarget,
    pub(crate) config: PipelineConfig,
}

impl HandleInner {
    pub(crate) fn topology(&self) -> MutexGuard<'_, Topology> {
        self.topology.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a command to the stage, behind the buffers already queued,
    /// waiting for room. Call from a plain thread, not from an async task.
    pub(crate) fn send_to_stage(&self, command: StageCommand) -> Result<(), ControlError> {
        let tx = self
            .topology()
            .source_tx
            .clone()
            .ok_or(ControlError::Stopped)?;
        match tx.try_send(StageMessage::Control(command)) {
            Ok(()) => Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(message)) => {
                tx.blocking_send(message).map_err(|_| ControlError::Stopped)
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(ControlError::Stopped),
        }
    }
}

/// Controls a running pipeline. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct PipelineHandle {
    pub(crate) inner: Arc<HandleInner>,
}

impl std::fmt::Debug for PipelineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineHandle").finish_non_exhaustive()
    }
}

impl PipelineHandle {
    /// The command channels of the pollers that own a source `selector`
    /// matches, and how many sources match.
    fn matching_pollers(
        &self,
        selector: &SourceSelector,
    ) -> (Vec<mpsc::Sender<PollerCommand>>, usize) {
        let topology = self.inner.topology();
        let mut matched = 0;
        let mut senders = Vec::new();
        for p in &topology.pollers {
            let n = p
                .sources
                .iter()
                .filter(|(plugin, name)| selector.matches(plugin, name))
                .count();
            if n > 0 {
                matched += n;
                senders.push(p.tx.clone());
            }
        }
        (senders, matched)
    }

    /// Sends `make()` to every poller that owns a matching source.
    fn send(
        &self,
        selector: &SourceSelector,
        make: impl Fn() -> PollerCommand,
    ) -> Result<usize, ControlError> {
        if self.is_shutting_down() {
            return Err(ControlError::Stopped);
        }
        let (senders, matched) = self.matching_pollers(selector);
        if matched == 0 {
            return Err(ControlError::NoSuchSource(
                selector.clone(),
                self.source_names().join(", "),
            ));
        }
        for tx in senders {
            tx.send(make()).map_err(|_| ControlError::Stopped)?;
        }
        Ok(matched)
    }

    /// Stops polling the selected sources until `resume`.
    pub fn pause(&self, selector: SourceSelector) -> Result<(), ControlError> {
        let s = selector.clone();
        self.send(&selector, || PollerCommand::Pause(s.clone()))
            .map(|_| ())
    }

    /// Polls the selected sources again, from now on their interval.
    pub fn resume(&self, selector: SourceSelector) -> Result<(), ControlError> {
        let s = selector.clone();
        self.send(&selector, || PollerCommand::Resume(s.clone()))
            .map(|_| ())
    }

    /// Changes the poll interval of the selected sources; the next poll is
    /// one new interval after the last one.
    pub fn set_poll_interval(
        &self,
        selector: SourceSelector,
        interval: Duration,
    ) -> Result<(), ControlError> {
        if interval.is_zero() {
            return Err(ControlError::ZeroInterval);
        }
        let s = selector.clone();
        self.send(&selector, || {
            PollerCommand::SetInterval(s.clone(), interval)
        })
        .map(|_| ())
    }

    /// Polls the selected sources now (paused ones too) and waits until they
    /// have been polled, or `timeout` has passed. Blocks the calling thread.
    pub fn trigger_now(
        &self,
        selector: SourceSelector,
        timeout: Duration,
    ) -> Result<(), ControlError> {
        let (senders, matched) = self.matching_pollers(&selector);
        if matched == 0 {
            return Err(ControlError::NoSuchSource(
                selector,
                self.source_names().join(", "),
            ));
        }
        let (ack_tx, ack_rx) = mpsc::channel();
        // One ack per poller that got the command.
        for tx in &senders {
            tx.send(PollerCommand::TriggerNow(selector.clone(), ack_tx.clone()))
                .map_err(|_| ControlError::Stopped)?;
        }
        drop(ack_tx);
        let deadline = Instant::now() + timeout;
        for _ in 0..senders.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if ack_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// The pipeline's heartbeat: whether every element is alive (see
    /// [`PipelineHandle::stalled`]). Blocks the calling thread for at most `timeout`.
    pub fn heartbeat(&self, timeout: Duration) -> bool {
        !self.is_shutting_down() && self.stalled(timeout).is_empty()
    }

    /// The elements that are stuck: the sources of every poller thread that
    /// does not answer within `timeout` (a poller answers between polls,
    /// paused or not, so it is inside a poll that does not return, or gone),
    /// and every output or the transform stage whose current call has
    /// lasted `timeout` or more (a write, flush or transform that does not
    /// return; an output that is slow but returns is not stuck, its queue
    /// drops and counts). Blocks the calling thread for at most `timeout`.
    pub fn stalled(&self, timeout: Duration) -> Vec<String> {
        let pollers: Vec<(mpsc::Sender<PollerCommand>, Vec<String>)> = self
            .inner
            .topology()
            .pollers
            .iter()
            .map(|p| {
                (
                    p.tx.clone(),
                    p.sources.iter().map(|(_, n)| n.clone()).collect(),
                )
            })
            .collect();
        let mut stalled = Vec::new();
        // One answer channel per poller, so that the late one is named.
        let mut waiting = Vec::new();
        for (tx, names) in pollers {
            let (ack_tx, ack_rx) = mpsc::channel();
            if tx.send(PollerCommand::Ping(ack_tx)).is_err() {
                stalled.extend(names);
            } else {
                waiting.push((ack_rx, names));
            }
        }
        let deadline = Instant::now() + timeout;
        for (ack_rx, names) in waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            if ack_rx.recv_timeout(left).is_err() {
                stalled.extend(names);
            }
        }
        stalled.extend(self.inner.stats.stalled(timeout));
        stalled
    }

    /// Asks the pipeline to stop: last poll of every source, drain, flush,
    /// close. Returns at once; `RunningPipeline::wait` waits for the end.
    /// Calling it twice is harmless.
    pub fn shutdown(&self) {
        if self.inner.shutdown_requested.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut topology = self.inner.topology();
        for p in &topology.pollers {
            let _ = p.tx.send(PollerCommand::Shutdown);
        }
        for a in &topology.autonomous {
            let _ = a.shutdown.send(true);
        }
        // The stage's queue closes once the last source has let go of it.
        topology.source_tx = None;
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown_requested.load(Ordering::Acquire)
    }

    /// Full names (`plugin/source`) of the managed sources.
    pub fn source_names(&self) -> Vec<String> {
        self.inner
            .topology()
            .pollers
            .iter()
            .flat_map(|p| p.sources.iter().map(|(_, n)| n.clone()))
            .collect()
    }

    /// Current counters.
    pub fn stats(&self) -> PipelineStatsSnapshot {
        let depth = self
            .inner
            .topology()
            .source_tx
            .as_ref()
            .map(|tx| (tx.max_capacity() - tx.capacity()) as u64)
            .unwrap_or(0);
        self.inner.stats.snapshot(depth)
    }

    /// The metric registry (the newest: a plugin started into the running
    /// pipeline may have added metrics).
    pub fn metrics(&self) -> Arc<MetricRegistry> {
        self.inner.metrics.current()
    }

    /// Every output flushes and reopens what it writes to
    /// ([`Output::reopen`](super::Output::reopen)), after the buffers
    /// already on their way; waits until each has been asked (an output
    /// whose queue stays full for 5 s, stuck in a write, is not asked: it
    /// is logged). Call from a plain thread, not from an async task.
    pub fn reopen_outputs(&self) -> Result<(), ControlError> {
        let (done_tx, done_rx) = mpsc::channel();
        self.inner
            .send_to_stage(StageCommand::ReopenOutputs { done: done_tx })?;
        done_rx.recv().map_err(|_| ControlError::Stopped)
    }
}
