//! Building and starting the pipeline: the plugin order, the stage, the
//! first commit of what plugins staged (see `staging.rs`, whose context
//! types are re-exported here).
//!
//! Plugins add their metrics and elements through a [`PluginStartContext`].
//! What a plugin adds is staged and kept only if its `start` succeeds, so a
//! plugin that fails half-way leaves nothing behind.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::error::PluginError;
use crate::exec::ExecTarget;
use crate::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};

use super::control::{HandleInner, PipelineHandle};
use super::registry::{LocalMetrics, MetricsCell};
use super::running::RunningPipeline;
use super::stage::Stage;
pub use super::staging::{
    AutonomousContext, AutonomousFuture, AutonomousSourceFactory, BufferSender, PluginStartContext,
};
use super::staging::{Elements, Staging};
use super::stats::PipelineStats;
use super::topology::Topology;
use super::PipelineConfig;
pub use super::PipelineError;

/// Collects metrics and elements, then starts the pipeline.
pub struct PipelineBuilder {
    config: PipelineConfig,
    staging: Staging,
}

/// Name of the self-metric that counts dropped points.
pub const DROPPED_POINTS_METRIC: &str = "alumet_dropped_points";

impl PipelineBuilder {
    /// An empty pipeline.
    pub fn new(config: PipelineConfig) -> Self {
        Self {
            config,
            staging: Staging {
                metrics: MetricRegistry::new(),
                elements: Elements::default(),
                existing: Vec::new(),
                exec_target: ExecTarget::new(),
                dropped_points: Arc::default(),
                plugin_order: Vec::new(),
            },
        }
    }

    /// Declares the order of the plugins, which is the order their
    /// transforms run in, including plugins started later into the running
    /// pipeline. Plugins not named rank after these, in the order they start.
    pub fn plugin_order<S: Into<String>>(&mut self, plugins: impl IntoIterator<Item = S>) {
        let mut order: Vec<String> = plugins.into_iter().map(Into::into).collect();
        for p in self.staging.plugin_order.drain(..) {
            if !order.contains(&p) {
                order.push(p);
            }
        }
        self.staging.plugin_order = order;
    }

    /// The shared exec target that plugins see.
    pub fn exec_target(&self) -> ExecTarget {
        self.staging.exec_target.clone()
    }

    /// Metrics registered so far.
    pub fn metrics(&self) -> &MetricRegistry {
        &self.staging.metrics
    }

    /// Runs `f` (usually a plugin's `start`) with a context for `plugin`;
    /// the elements it adds are kept only if it succeeds.
    pub fn with_plugin_context<T>(
        &mut self,
        plugin: &str,
        f: impl FnOnce(&mut PluginStartContext) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        self.staging.with_plugin_context(plugin, f)
    }

    /// Number of sources (managed and autonomous) added so far.
    pub fn source_count(&self) -> usize {
        self.staging.elements.sources.len() + self.staging.elements.autonomous.len()
    }

    /// Number of outputs added so far.
    pub fn output_count(&self) -> usize {
        self.staging.elements.outputs.len()
    }

    /// Starts every thread and task. The pipeline runs until
    /// [`PipelineHandle::shutdown`].
    pub fn start(self) -> Result<RunningPipeline, PipelineError> {
        let Staging {
            mut metrics,
            elements,
            exec_target,
            dropped_points,
            plugin_order,
            ..
        } = self.staging;
        let dropped_metric = metrics.register(Metric::new(
            DROPPED_POINTS_METRIC,
            Unit::Unity,
            ValueType::U64,
            MetricKind::Delta,
            "Points the pipeline dropped since the previous report (queues full, outputs failed).",
        ))?;
        super::memory::return_large_buffers_to_the_system();
        let metrics = Arc::new(MetricsCell::new(metrics));
        let config = self.config;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("alumet-pipeline")
            .enable_all()
            .build()?;
        let stats = Arc::new(PipelineStats {
            total_dropped_points: dropped_points.clone(),
            ..PipelineStats::default()
        });
        let draining = Arc::new(AtomicBool::new(false));
        let (source_tx, source_rx) =
            tokio::sync::mpsc::channel(config.source_queue_capacity.max(1));
        let stage = Stage {
            transforms: Vec::new(),
            outputs: Vec::new(),
            metrics: LocalMetrics::new(metrics.clone()),
            stats: stats.clone(),
            draining: draining.clone(),
            dropped_metric,
            reported_drops: 0,
            held: None,
            plan: Default::default(),
        };
        let stage_task = runtime.spawn(stage.run(source_rx));
        let handle = PipelineHandle {
            inner: Arc::new(HandleInner {
                topology: Mutex::new(Topology {
                    pollers: Vec::new(),
                    autonomous: Vec::new(),
                    outputs: Vec::new(),
                    transforms: Vec::new(),
                    source_tx: Some(source_tx),
                    plugin_order,
                    next_poller_id: 0,
                }),
                stats,
                metrics,
                shutdown_requested: draining,
                exec_target,
                config,
            }),
        };
        let running = RunningPipeline {
            runtime,
            handle,
            stage_task,
            dropped_points,
        };
        running.commit(elements, true)?;
        Ok(running)
    }
}
