//! Building and starting the pipeline.
//!
//! Plugins add their metrics and elements through a [`PluginStartContext`].
//! What a plugin adds is staged and kept only if its `start` succeeds, so a
//! plugin that fails half-way leaves nothing behind.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::exec::ExecTarget;
use crate::measurement::MeasurementBuffer;
use crate::metrics::{Metric, MetricError, MetricId, MetricKind, MetricRegistry, Unit, ValueType};
use crate::plugin::{BoxError, Plugin, PluginError};

use super::control::{HandleInner, PipelineHandle};
use super::output::OutputRunner;
use super::poller::{tighten_timer_slack, ManagedSource, Poller};
use super::stage::{NamedTransform, OutputQueue, Stage};
use super::stats::{LossReporter, OutputStats, PipelineStats, PipelineStatsSnapshot, SourceStats};
use super::{Output, OutputOptions, PipelineConfig, Source, SourceTrigger, Transform};

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
    tx: tokio::sync::mpsc::Sender<MeasurementBuffer>,
}

impl BufferSender {
    /// Sends a buffer, waiting for room in the queue (back-pressure on the
    /// autonomous source only). Fails only once the pipeline is gone.
    pub async fn send(&self, buffer: MeasurementBuffer) -> Result<(), BoxError> {
        if buffer.is_empty() {
            return Ok(());
        }
        self.tx
            .send(buffer)
            .await
            .map_err(|_| "the pipeline is stopped".into())
    }
}

#[derive(Default)]
struct Elements {
    sources: Vec<ManagedSource>,
    autonomous: Vec<(String, AutonomousSourceFactory)>,
    transforms: Vec<(String, Box<dyn Transform>)>,
    outputs: Vec<(String, Box<dyn Output>, OutputOptions)>,
}

impl Elements {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.sources
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.autonomous.iter().map(|(n, _)| n.as_str()))
            .chain(self.transforms.iter().map(|(n, _)| n.as_str()))
            .chain(self.outputs.iter().map(|(n, _, _)| n.as_str()))
    }
}

/// Collects metrics and elements, then starts the pipeline.
pub struct PipelineBuilder {
    config: PipelineConfig,
    metrics: MetricRegistry,
    elements: Elements,
    exec_target: ExecTarget,
    dropped_points: Arc<AtomicU64>,
}

/// What a plugin's `start` uses to register metrics and pipeline elements.
pub struct PluginStartContext<'a> {
    plugin: &'a str,
    metrics: &'a mut MetricRegistry,
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
        let taken =
            |n: &str| self.committed.names().any(|x| x == n) || self.staged.names().any(|x| x == n);
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
        self.staged.autonomous.push((full, factory));
    }

    /// Adds a transform; transforms run in the order they are added.
    pub fn add_transform(&mut self, name: &str, transform: Box<dyn Transform>) {
        let full = self.full_name(name);
        self.staged.transforms.push((full, transform));
    }

    /// Adds an output.
    pub fn add_output(&mut self, name: &str, output: Box<dyn Output>, options: OutputOptions) {
        let full = self.full_name(name);
        self.staged.outputs.push((full, output, options));
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A thread or the runtime could not be created.
    #[error("cannot start the pipeline: {0}")]
    Io(#[from] std::io::Error),
    /// The self-metric could not be registered.
    #[error(transparent)]
    Metric(#[from] MetricError),
}

/// Name of the self-metric that counts dropped points.
pub const DROPPED_POINTS_METRIC: &str = "alumet_dropped_points";

impl PipelineBuilder {
    /// An empty pipeline.
    pub fn new(config: PipelineConfig) -> Self {
        Self {
            config,
            metrics: MetricRegistry::new(),
            elements: Elements::default(),
            exec_target: ExecTarget::new(),
            dropped_points: Arc::default(),
        }
    }

    /// The shared exec target that plugins see.
    pub fn exec_target(&self) -> ExecTarget {
        self.exec_target.clone()
    }

    /// Metrics registered so far.
    pub fn metrics(&self) -> &MetricRegistry {
        &self.metrics
    }

    /// Runs `f` (usually a plugin's `start`) with a context for `plugin`;
    /// the elements it adds are kept only if it succeeds.
    pub fn with_plugin_context<T>(
        &mut self,
        plugin: &str,
        f: impl FnOnce(&mut PluginStartContext) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let mut ctx = PluginStartContext {
            plugin,
            metrics: &mut self.metrics,
            committed: &self.elements,
            staged: Elements::default(),
            exec_target: &self.exec_target,
            dropped_points: &self.dropped_points,
        };
        let result = f(&mut ctx);
        let staged = ctx.staged;
        if result.is_ok() {
            self.elements.sources.extend(staged.sources);
            self.elements.autonomous.extend(staged.autonomous);
            self.elements.transforms.extend(staged.transforms);
            self.elements.outputs.extend(staged.outputs);
        }
        result
    }

    /// Starts a plugin (see [`Plugin::start`]).
    pub fn start_plugin(&mut self, name: &str, plugin: &mut dyn Plugin) -> Result<(), PluginError> {
        self.with_plugin_context(name, |ctx| plugin.start(ctx))
    }

    /// Number of sources (managed and autonomous) added so far.
    pub fn source_count(&self) -> usize {
        self.elements.sources.len() + self.elements.autonomous.len()
    }

    /// Number of outputs added so far.
    pub fn output_count(&self) -> usize {
        self.elements.outputs.len()
    }

    /// Starts every thread and task. The pipeline runs until
    /// [`PipelineHandle::shutdown`].
    pub fn start(mut self) -> Result<RunningPipeline, PipelineError> {
        let dropped_metric = self.metrics.register(Metric::new(
            DROPPED_POINTS_METRIC,
            Unit::Unity,
            ValueType::U64,
            MetricKind::Delta,
            "Points the pipeline dropped since the previous report (queues full, outputs failed).",
        ))?;
        super::memory::return_large_buffers_to_the_system();
        let metrics = Arc::new(self.metrics);
        let config = self.config;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("alumet-pipeline")
            .enable_all()
            .build()?;

        let mut stats = PipelineStats {
            total_dropped_points: self.dropped_points.clone(),
            ..PipelineStats::default()
        };
        for s in &self.elements.sources {
            stats.sources.push((s.name.clone(), s.stats.clone()));
        }
        let mut output_queues = Vec::new();
        let mut runners = Vec::new();
        for (name, output, options) in self.elements.outputs {
            let (tx, rx) = mpsc::sync_channel(config.output_queue_capacity.max(1));
            let ostats = Arc::new(OutputStats::default());
            stats.outputs.push((name.clone(), ostats.clone()));
            output_queues.push(OutputQueue {
                name: name.clone(),
                tx,
                stats: ostats.clone(),
            });
            runners.push(OutputRunner {
                name,
                output,
                options,
                rx,
                stats: ostats,
                loss: LossReporter::new(self.dropped_points.clone()),
                metrics: metrics.clone(),
                config: config.clone(),
            });
        }
        let stats = Arc::new(stats);
        let mut output_threads = Vec::new();
        for runner in runners {
            let thread_name = format!("out-{}", runner.name);
            output_threads.push(
                std::thread::Builder::new()
                    .name(thread_name)
                    .spawn(move || runner.run())?,
            );
        }

        let draining = Arc::new(AtomicBool::new(false));
        let (source_tx, source_rx) =
            tokio::sync::mpsc::channel(config.source_queue_capacity.max(1));
        let stage = Stage {
            transforms: self
                .elements
                .transforms
                .into_iter()
                .map(|(name, transform)| NamedTransform {
                    name,
                    transform,
                    disabled: false,
                })
                .collect(),
            outputs: output_queues,
            metrics: metrics.clone(),
            stats: stats.clone(),
            draining: draining.clone(),
            dropped_metric,
        };
        let stage_task = runtime.spawn(stage.run(source_rx));

        // Group managed sources: one shared poller, plus one per dedicated source.
        let mut groups: Vec<Vec<ManagedSource>> = vec![Vec::new()];
        for s in self.elements.sources {
            if s.trigger.dedicated_thread {
                groups.push(vec![s]);
            } else {
                groups[0].push(s);
            }
        }
        let mut pollers = Vec::new();
        let mut poller_threads = Vec::new();
        for (i, group) in groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
        {
            let (cmd_tx, cmd_rx) = mpsc::channel();
            let names = group
                .iter()
                .map(|s| (s.plugin.clone(), s.name.clone()))
                .collect();
            pollers.push((cmd_tx, names));
            let min_interval = group
                .iter()
                .map(|s| s.trigger.poll_interval)
                .min()
                .unwrap_or_default();
            let poller = Poller::new(
                group,
                cmd_rx,
                source_tx.clone(),
                stats.clone(),
                config.max_points_per_buffer,
                config.first_poll_at_start,
            );
            poller_threads.push(
                std::thread::Builder::new()
                    .name(format!("poller-{i}"))
                    .spawn(move || {
                        tighten_timer_slack(min_interval);
                        poller.run()
                    })?,
            );
        }

        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut autonomous_tasks = Vec::new();
        for (name, factory) in self.elements.autonomous {
            let ctx = AutonomousContext {
                sender: BufferSender {
                    tx: source_tx.clone(),
                },
                shutdown: shutdown_rx.clone(),
            };
            let future = factory(ctx);
            autonomous_tasks.push(runtime.spawn(async move {
                if let Err(e) = future.await {
                    log::error!("source {name} stopped: {e}");
                }
            }));
        }
        // From now on the queue closes when the last source has finished.
        drop(source_tx);

        let handle = PipelineHandle {
            inner: Arc::new(HandleInner {
                pollers,
                autonomous_shutdown: shutdown_tx,
                stats,
                metrics,
                shutdown_requested: draining,
            }),
        };
        Ok(RunningPipeline {
            runtime,
            handle,
            poller_threads,
            output_threads,
            stage_task,
            autonomous_tasks,
        })
    }
}

/// A started pipeline.
pub struct RunningPipeline {
    runtime: tokio::runtime::Runtime,
    handle: PipelineHandle,
    poller_threads: Vec<JoinHandle<()>>,
    output_threads: Vec<JoinHandle<()>>,
    stage_task: tokio::task::JoinHandle<()>,
    autonomous_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningPipeline {
    /// The control handle.
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// The pipeline's tokio runtime, for plugins and the agent that need one.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Waits until the pipeline has stopped (after [`PipelineHandle::shutdown`]):
    /// every source polled a last time, every buffer written, every output
    /// closed. Call it from a plain thread, not from inside an async task.
    pub fn wait(self) -> PipelineStatsSnapshot {
        for t in self.poller_threads {
            if t.join().is_err() {
                log::error!("a poller thread panicked");
            }
        }
        let stage_task = self.stage_task;
        let autonomous = self.autonomous_tasks;
        self.runtime.block_on(async move {
            for t in autonomous {
                let _ = t.await;
            }
            if stage_task.await.is_err() {
                log::error!("the transform stage panicked");
            }
        });
        for t in self.output_threads {
            if t.join().is_err() {
                log::error!("an output thread panicked");
            }
        }
        let stats = self.handle.stats();
        self.runtime.shutdown_background();
        stats
    }

    /// Shuts down and waits (see [`RunningPipeline::wait`]).
    pub fn shutdown_and_wait(self) -> PipelineStatsSnapshot {
        self.handle.shutdown();
        self.wait()
    }
}
