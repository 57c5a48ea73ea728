//! The running elements, as the control handle and the running pipeline
//! both see them: poller threads, autonomous tasks, output threads, and the
//! stage's queue.

use std::sync::mpsc;
use std::thread::JoinHandle;

use super::messages::{PollerCommand, StageMessage};
use super::routes::OutputScope;
use super::stats::PipelineStats;

/// A poller thread as the handle knows it.
pub(crate) struct PollerEntry {
    pub id: usize,
    pub tx: mpsc::Sender<PollerCommand>,
    /// `(plugin, full name)` of its sources.
    pub sources: Vec<(String, String)>,
    /// A source that asked for a thread of its own; others share one.
    pub dedicated: bool,
    pub thread: Option<JoinHandle<()>>,
}

/// An autonomous source's task.
pub(crate) struct AutonomousEntry {
    pub plugin: String,
    pub name: String,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

/// An output's thread.
pub(crate) struct OutputEntry {
    pub plugin: String,
    pub name: String,
    pub thread: JoinHandle<()>,
}

/// A running transform, as far as routing goes (the stage owns it).
pub(crate) struct TransformEntry {
    pub plugin: String,
    pub name: String,
    pub rank: usize,
    pub scope: OutputScope,
}

/// The running elements.
pub(crate) struct Topology {
    pub pollers: Vec<PollerEntry>,
    pub autonomous: Vec<AutonomousEntry>,
    pub outputs: Vec<OutputEntry>,
    /// The transforms, in the stage's order.
    pub transforms: Vec<TransformEntry>,
    /// Into the stage; `None` once shutdown is asked.
    pub source_tx: Option<tokio::sync::mpsc::Sender<StageMessage>>,
    /// Plugins by rank: transforms run in this order.
    pub plugin_order: Vec<String>,
    pub next_poller_id: usize,
}

impl Topology {
    /// The names of every running element (taken for new ones).
    pub(crate) fn element_names(&self, stats: &PipelineStats) -> Vec<String> {
        let mut names: Vec<String> = self
            .pollers
            .iter()
            .flat_map(|p| p.sources.iter().map(|(_, n)| n.clone()))
            .collect();
        names.extend(self.autonomous.iter().map(|a| a.name.clone()));
        names.extend(stats.transforms.map(|e| e.name.clone()));
        names.extend(stats.outputs.map(|e| e.name.clone()));
        names
    }
}
