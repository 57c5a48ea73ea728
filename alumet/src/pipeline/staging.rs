//! What plugins add before their elements run: the context a plugin's
//! `start` sees ([`PluginStartContext`]), and the staging that keeps what it
//! added only if `start` succeeds. The same staging serves the first start
//! ([`super::PipelineBuilder`]) and plugins started into a running pipeline
//! ([`super::PipelineExtension`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::error::{BoxError, PluginError};
use crate::exec::ExecTarget;
use crate::measurement::MeasurementBuffer;
use crate::metrics::{Metric, MetricError, MetricId, MetricRegistry};

use super::messages::{ManagedSource, StageMessage};
use super::routes::OutputScope;
use super::stats::{LossReporter, SourceStats};
use super::{Output, OutputOptions, Source, SourceTrigger, Transform};

/// The future of an autonomous source.
pub type AutonomousFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// Creates the future of an autonomous source once the pipeline starts.
pub type AutonomousSourceFactory = Box<dyn FnOnce(AutonomousContext) -> AutonomousFuture + Send>;

/// What an autonomous source gets: where to send, and when to stop.
pub struct AutonomousContext {
    /// Sends buffers to the transforms.
    pub sender: BufferSender,
    /// Becomes `true` at shutdown: send what you have and return.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Sends buffers from an autonomous source into the pipeline.
#[derive(Clone)]
pub struct BufferSender {
    pub(crate) tx: tokio::sync::mpsc::Sender<StageMessage>,
}

impl BufferSender {
    /// Sends a buffer, waiting for room in the queue (back-pressure on the
    /// autonomous source only). Fails only once the pipeline is gone.
    pub async fn send(&self, buffer: MeasurementBuffer) -> Result<(), BoxError> {
        if buffer.is_empty() {
            return Ok(());
        }
        self.tx
            .send(StageMessage::Buffer(buffer))
            .await
            .map_err(|_| "the pipeline is stopped".into())
    }
}

/// Elements staged by plugins, each with its plugin's name and its own.
#[derive(Default)]
pub(crate) struct Elements {
    pub sources: Vec<ManagedSource>,
    pub autonomous: Vec<(String, String, AutonomousSourceFactory)>,
    pub transforms: Vec<(String, String, Box<dyn Transform>, OutputScope)>,
    pub outputs: Vec<(String, String, Box<dyn Output>, OutputOptions)>,
}

impl Elements {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.sources
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.autonomous.iter().map(|(_, n, _)| n.as_str()))
            .chain(self.transforms.iter().map(|(_, n, _, _)| n.as_str()))
            .chain(self.outputs.iter().map(|(_, n, _, _)| n.as_str()))
    }

    fn extend(&mut self, other: Elements) {
        self.sources.extend(other.sources);
        self.autonomous.extend(other.autonomous);
        self.transforms.extend(other.transforms);
        self.outputs.extend(other.outputs);
    }
}

/// What plugins register before their elements run: metrics, elements,
/// and the order of the plugins (which orders the transforms).
pub(crate) struct Staging {
    pub metrics: MetricRegistry,
    pub elements: Elements,
    /// Names of the elements already running (taken).
    pub existing: Vec<String>,
    pub exec_target: ExecTarget,
    pub dropped_points: Arc<AtomicU64>,
    pub plugin_order: Vec<String>,
}

impl Staging {
    pub(crate) fn with_plugin_context<T>(
        &mut self,
        plugin: &str,
        f: impl FnOnce(&mut PluginStartContext) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let mut ctx = PluginStartContext {
            plugin,
            metrics: &mut self.metrics,
            existing: &self.existing,
            committed: &self.elements,
            staged: Elements::default(),
            exec_target: &self.exec_target,
            dropped_points: &self.dropped_points,
        };
        let result = f(&mut ctx);
        let staged = ctx.staged;
        if result.is_ok() {
            self.elements.extend(staged);
            if !self.plugin_order.iter().any(|p| p == plugin) {
                self.plugin_order.push(plugin.to_owned());
            }
        }
        result
    }
}

/// What a plugin's `start` uses to register metrics and pipeline elements.
pub struct PluginStartContext<'a> {
    plugin: &'a str,
    metrics: &'a mut MetricRegistry,
    existing: &'a [String],
    committed: &'a Elements,
    staged: Elements,
    exec_target: &'a ExecTarget,
    dropped_points: &'a Arc<AtomicU64>,
}

impl PluginStartContext<'_> {
    /// The name of the plugin being started.
    pub fn plugin_name(&self) -> &str {
        self.plugin
    }

    /// Registers a metric (see [`MetricRegistry::register`]).
    pub fn create_metric(&mut self, metric: Metric) -> Result<MetricId, MetricError> {
        self.metrics.register(metric)
    }

    /// Metrics registered so far (by this plugin and the ones started before it).
    pub fn metrics(&self) -> &MetricRegistry {
        self.metrics
    }

    /// The process `exec` measures, set once the command is spawned.
    pub fn exec_target(&self) -> ExecTarget {
        self.exec_target.clone()
    }

    /// For elements that drop points on their own (their own bounded
    /// queue): report them, so that the loss is counted with the pipeline's.
    pub fn loss_reporter(&self) -> LossReporter {
        LossReporter::new(self.dropped_points.clone())
    }

    fn full_name(&self, name: &str) -> String {
        let base = format!("{}/{}", self.plugin, name);
        let taken = |n: &str| {
            self.existing.iter().any(|x| x == n)
                || self.committed.names().any(|x| x == n)
                || self.staged.names().any(|x| x == n)
        };
        if !taken(&base) {
            return base;
        }
        let mut i = 2;
        loop {
            let candidate = format!("{base}#{i}");
            if !taken(&candidate) {
                log::warn!("element name {base} is used twice; the second is named {candidate}");
                return candidate;
            }
            i += 1;
        }
    }

    /// Adds a source polled by the pipeline. Its full name is `plugin/name`.
    pub fn add_source(&mut self, name: &str, source: Box<dyn Source>, trigger: SourceTrigger) {
        let full = self.full_name(name);
        let mut trigger = trigger;
        if trigger.poll_interval.is_zero() {
            log::warn!("source {full}: a poll interval of zero is not possible; using 1ms");
            trigger.poll_interval = std::time::Duration::from_millis(1);
        }
        trigger.flush_interval = trigger.flush_interval.max(trigger.poll_interval);
        self.staged.sources.push(ManagedSource {
            plugin: self.plugin.to_owned(),
            name: full,
            source,
            trigger,
            stats: Arc::new(SourceStats::default()),
        });
    }

    /// Adds a source that pushes buffers on its own, as a task on the
    /// pipeline's tokio runtime.
    pub fn add_autonomous_source(&mut self, name: &str, factory: AutonomousSourceFactory) {
        let full = self.full_name(name);
        self.staged
            .autonomous
            .push((self.plugin.to_owned(), full, factory));
    }

    /// Adds a transform. Transforms run in the order of their plugins (see
    /// [`super::PipelineBuilder::plugin_order`]), then in the order they are added.
    pub fn add_transform(&mut self, name: &str, transform: Box<dyn Transform>) {
        self.add_scoped_transform(name, transform, OutputScope::All);
    }

    /// Adds a transform whose points go only to the outputs of `scope`:
    /// it runs after every transform for all outputs (in plugin order
    /// among the scoped ones), on a copy of the buffer that only those
    /// outputs receive; the others never see its changes. Scopes of two
    /// transforms must be equal, nested or disjoint (else the commit fails
    /// with [`super::PipelineError::Route`]).
    pub fn add_scoped_transform(
        &mut self,
        name: &str,
        transform: Box<dyn Transform>,
        scope: OutputScope,
    ) {
        let full = self.full_name(name);
        self.staged
            .transforms
            .push((self.plugin.to_owned(), full, transform, scope));
    }

    /// Adds an output.
    pub fn add_output(&mut self, name: &str, output: Box<dyn Output>, options: OutputOptions) {
        let full = self.full_name(name);
        self.staged
            .outputs
            .push((self.plugin.to_owned(), full, output, options));
    }
}
