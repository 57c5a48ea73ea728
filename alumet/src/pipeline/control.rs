//! The control handle: pause, resume, re-time, trigger and shut down sources.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::metrics::MetricRegistry;

use super::stats::{PipelineStats, PipelineStatsSnapshot};

/// Which managed sources a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSelector {
    /// Every source.
    All,
    /// Every source of a plugin.
    Plugin(String),
    /// One source by its full name, `plugin/source`.
    Name(String),
}

impl SourceSelector {
    pub(crate) fn matches(&self, plugin: &str, full_name: &str) -> bool {
        match self {
            SourceSelector::All => true,
            SourceSelector::Plugin(p) => p == plugin,
            SourceSelector::Name(n) => n == full_name,
        }
    }
}

/// A command to a poller thread.
pub(crate) enum PollerCommand {
    Pause(SourceSelector),
    Resume(SourceSelector),
    SetInterval(SourceSelector, Duration),
    /// Poll now; the sender is told when done.
    TriggerNow(SourceSelector, mpsc::Sender<()>),
    /// Answer at once (between polls): the poller is alive.
    Ping(mpsc::Sender<()>),
    /// Last poll, flush everything, stop.
    Shutdown,
}

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

/// A poller's command channel and the `(plugin, full name)` of its sources.
pub(crate) type PollerLink = (mpsc::Sender<PollerCommand>, Vec<(String, String)>);

pub(crate) struct HandleInner {
    pub(crate) pollers: Vec<PollerLink>,
    pub(crate) autonomous_shutdown: tokio::sync::watch::Sender<bool>,
    pub(crate) stats: Arc<PipelineStats>,
    pub(crate) metrics: Arc<MetricRegistry>,
    pub(crate) shutdown_requested: Arc<AtomicBool>,
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
    /// Sends `make()` to every poller that owns a matching source.
    fn send(
        &self,
        selector: &SourceSelector,
        make: impl Fn() -> PollerCommand,
    ) -> Result<usize, ControlError> {
        if self.inner.shutdown_requested.load(Ordering::Acquire) {
            return Err(ControlError::Stopped);
        }
        let mut matched = 0;
        for (tx, names) in &self.inner.pollers {
            let n = names.iter().filter(|(p, n)| selector.matches(p, n)).count();
            if n > 0 {
                matched += n;
                tx.send(make()).map_err(|_| ControlError::Stopped)?;
            }
        }
        if matched == 0 {
            return Err(ControlError::NoSuchSource(
                selector.clone(),
                self.source_names().join(", "),
            ));
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
        let (ack_tx, ack_rx) = mpsc::channel();
        let s = selector.clone();
        let mut pollers = 0;
        // One ack per poller that got the command.
        for (tx, names) in &self.inner.pollers {
            if names.iter().any(|(p, n)| s.matches(p, n)) {
                tx.send(PollerCommand::TriggerNow(s.clone(), ack_tx.clone()))
                    .map_err(|_| ControlError::Stopped)?;
                pollers += 1;
            }
        }
        if pollers == 0 {
            return Err(ControlError::NoSuchSource(
                selector,
                self.source_names().join(", "),
            ));
        }
        drop(ack_tx);
        let deadline = std::time::Instant::now() + timeout;
        for _ in 0..pollers {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if ack_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// The pipeline's heartbeat: whether every poller thread answered
    /// within `timeout`. A poller answers between polls, paused or not, so
    /// `false` means one is stuck in a source's poll (or gone). Blocks the
    /// calling thread for at most `timeout`.
    pub fn heartbeat(&self, timeout: Duration) -> bool {
        if self.inner.shutdown_requested.load(Ordering::Acquire) {
            return false;
        }
        let (ack_tx, ack_rx) = mpsc::channel();
        for (tx, _) in &self.inner.pollers {
            if tx.send(PollerCommand::Ping(ack_tx.clone())).is_err() {
                return false;
            }
        }
        drop(ack_tx);
        let deadline = std::time::Instant::now() + timeout;
        for _ in 0..self.inner.pollers.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if ack_rx.recv_timeout(left).is_err() {
                return false;
            }
        }
        true
    }

    /// Asks the pipeline to stop: last poll of every source, drain, flush,
    /// close. Returns at once; `RunningPipeline::wait` waits for the end.
    /// Calling it twice is harmless.
    pub fn shutdown(&self) {
        if self.inner.shutdown_requested.swap(true, Ordering::AcqRel) {
            return;
        }
        for (tx, _) in &self.inner.pollers {
            let _ = tx.send(PollerCommand::Shutdown);
        }
        let _ = self.inner.autonomous_shutdown.send(true);
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown_requested.load(Ordering::Acquire)
    }

    /// Full names (`plugin/source`) of the managed sources.
    pub fn source_names(&self) -> Vec<String> {
        self.inner
            .pollers
            .iter()
            .flat_map(|(_, names)| names.iter().map(|(_, n)| n.clone()))
            .collect()
    }

    /// Current counters.
    pub fn stats(&self) -> PipelineStatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The metric registry.
    pub fn metrics(&self) -> &Arc<MetricRegistry> {
        &self.inner.metrics
    }
}
