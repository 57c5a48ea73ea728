//! The pipeline's messages and the elements they carry: what travels in
//! the stage's queue (buffers and commands), in an output's queue, and to a
//! poller thread. Every part of the pipeline imports them from here, so the
//! builder, the running pipeline, the control handle, the stage and the
//! pollers depend on each other one way only.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::measurement::MeasurementBuffer;

use super::routes::OutputScope;
use super::stats::{OutputStats, SourceStats, TransformStats};
use super::{Source, SourceTrigger, Transform};

/// What the stage receives, in one queue.
pub(crate) enum StageMessage {
    /// Points from a source.
    Buffer(MeasurementBuffer),
    /// A change of the stage's elements.
    Control(StageCommand),
}

/// A change of the stage's elements, or of its outputs' files.
pub(crate) enum StageCommand {
    /// New transforms (placed by rank) and outputs.
    Add {
        transforms: Vec<NamedTransform>,
        outputs: Vec<OutputQueue>,
    },
    /// The transforms of these plugins emit what they hold and go; their
    /// outputs' queues close (the output threads then flush and close).
    Remove {
        plugins: Vec<String>,
        done: mpsc::Sender<()>,
        /// The plugins start again: hold the buffers that come next until
        /// their new elements are added (or [`StageCommand::Release`]), so
        /// that a restarted output or transform misses none of them.
        hold: bool,
    },
    /// Handles the buffers held since a `Remove` with `hold`.
    Release,
    /// Every output flushes and reopens, after what is queued before.
    ReopenOutputs { done: mpsc::Sender<()> },
}

/// The sending side of one output's queue.
pub(crate) struct OutputQueue {
    pub plugin: String,
    pub name: String,
    pub tx: super::queue::QueueSender<OutputMessage>,
    pub stats: Arc<OutputStats>,
}

pub(crate) struct NamedTransform {
    pub plugin: String,
    pub name: String,
    /// Its plugin's place in the plugin order: transforms run by rank.
    pub rank: usize,
    pub transform: Box<dyn Transform>,
    /// The outputs that receive what it emits.
    pub scope: OutputScope,
    pub stats: Arc<TransformStats>,
    pub disabled: bool,
}

/// What goes through an output's queue, in order.
pub(crate) enum OutputMessage {
    /// A batch to write (shared by every output).
    Batch(Arc<MeasurementBuffer>),
    /// Flush, then [`Output::reopen`]: what was queued before goes to the old file.
    Reopen,
}

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
    /// Schedule these sources too.
    Add(Vec<ManagedSource>),
    /// Last poll of these plugins' sources, queue their points, forget
    /// them; answers whether the poller is left without sources (it then ends).
    Remove(Vec<String>, mpsc::Sender<bool>),
    /// Last poll, flush everything, stop.
    Shutdown,
}

/// A managed source as the poller owns it.
pub(crate) struct ManagedSource {
    pub plugin: String,
    pub name: String,
    pub source: Box<dyn Source>,
    pub trigger: SourceTrigger,
    pub stats: Arc<SourceStats>,
}
