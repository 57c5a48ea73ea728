//! Test kit: run elements in a real pipeline and look at what comes out.
//!
//! ```
//! use std::time::Duration;
//! use alumet::measurement::*;
//! use alumet::metrics::*;
//! use alumet::pipeline::SourceTrigger;
//! use alumet::testing::{FnSource, TestPipeline};
//!
//! let mut t = TestPipeline::builder();
//! t.plugin("demo", |ctx| {
//!     let m = ctx.create_metric(Metric::new("demo_count", Unit::Unity, ValueType::U64, MetricKind::Gauge, "demo"))?;
//!     let source = FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
//!         buf.push(MeasurementPoint::new(ts, m, Resource::LocalMachine, ResourceConsumer::LocalMachine, 1u64));
//!         Ok(())
//!     });
//!     ctx.add_source("count", Box::new(source), TestPipeline::manual_trigger());
//!     Ok(())
//! }).unwrap();
//! let running = t.start();
//! running.trigger_all();
//! let result = running.finish();
//! // the first poll at start, the triggered one, and the last one at shutdown
//! assert_eq!(result.points_of("demo_count").len(), 3);
//! ```

pub mod fixture;
pub mod peer;
#[cfg(feature = "fixtures")]
pub mod points;
pub mod series;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::measurement::{MeasurementBuffer, MeasurementPoint, Timestamp};
use crate::metrics::{Metric, MetricError, MetricId, MetricKind, MetricRegistry, Unit, ValueType};
use crate::pipeline::stats::PipelineStatsSnapshot;
use crate::pipeline::{
    ElementContext, Output, OutputOptions, PipelineBuilder, PipelineConfig, PipelineHandle,
    PluginStartContext, PollError, RunningPipeline, Source, SourceSelector, SourceTrigger,
    WriteError,
};
use crate::plugin::{Plugin, PluginError};

/// A source made of a closure.
pub struct FnSource<F>(F);

impl<F> FnSource<F>
where
    F: FnMut(&mut MeasurementBuffer, Timestamp) -> Result<(), PollError> + Send,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F> Source for FnSource<F>
where
    F: FnMut(&mut MeasurementBuffer, Timestamp) -> Result<(), PollError> + Send,
{
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        (self.0)(into, timestamp)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An output that keeps every point it receives, in order.
#[derive(Clone, Default)]
pub struct CollectingOutput {
    points: Arc<Mutex<Vec<MeasurementPoint>>>,
}

impl CollectingOutput {
    /// A new, empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything received so far.
    pub fn points(&self) -> Vec<MeasurementPoint> {
        lock(&self.points).clone()
    }

    /// Number of points received so far.
    pub fn len(&self) -> usize {
        lock(&self.points).len()
    }

    /// True if nothing was received.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Output for CollectingOutput {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        lock(&self.points).extend(buffer.iter().cloned());
        Ok(())
    }
}

/// Builds a pipeline for a test, with a [`CollectingOutput`] attached.
pub struct TestPipeline {
    builder: PipelineBuilder,
    collector: CollectingOutput,
}

impl TestPipeline {
    /// A test pipeline with small retry delays.
    pub fn builder() -> Self {
        Self::with_config(PipelineConfig {
            retry_initial_delay: Duration::from_millis(10),
            retry_max_delay: Duration::from_millis(50),
            ..PipelineConfig::default()
        })
    }

    /// A test pipeline whose collector is an output that stores rows: it
    /// receives thinned series (`alumet::metrics::Thinning`), as CSV does.
    pub fn thinned() -> Self {
        Self::with_collector(
            PipelineConfig {
                retry_initial_delay: Duration::from_millis(10),
                retry_max_delay: Duration::from_millis(50),
                ..PipelineConfig::default()
            },
            true,
        )
    }

    /// A test pipeline with the given configuration; its collector receives
    /// every point.
    pub fn with_config(config: PipelineConfig) -> Self {
        Self::with_collector(config, false)
    }

    fn with_collector(config: PipelineConfig, thinned: bool) -> Self {
        let mut builder = PipelineBuilder::new(config);
        let collector = CollectingOutput::new();
        let c = collector.clone();
        let _ = builder.with_plugin_context("test", |ctx| {
            ctx.add_output(
                "collector",
                Box::new(c),
                OutputOptions {
                    flush_interval: None,
                    thinned,
                },
            );
            Ok(())
        });
        Self { builder, collector }
    }

    /// A trigger for sources driven by hand: an interval so long that the
    /// source is polled only at start (every source is), at each
    /// [`RunningTest::trigger_all`], and at shutdown.
    pub fn manual_trigger() -> SourceTrigger {
        SourceTrigger::every(Duration::from_secs(24 * 3600))
    }

    /// Adds elements as plugin `name` would.
    pub fn plugin(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut PluginStartContext) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        self.builder.with_plugin_context(name, f)
    }

    /// Starts a real plugin.
    pub fn start_plugin(&mut self, name: &str, plugin: &mut dyn Plugin) -> Result<(), PluginError> {
        self.builder.start_plugin(name, plugin)
    }

    /// The builder, for anything else.
    pub fn pipeline_builder(&mut self) -> &mut PipelineBuilder {
        &mut self.builder
    }

    /// Starts the pipeline. Panics (failing the test) if it cannot start.
    #[allow(clippy::panic, reason = "a test kit fails the test that uses it")]
    pub fn start(self) -> RunningTest {
        match self.try_start() {
            Ok(r) => r,
            Err(e) => panic!("test pipeline failed to start: {e}"),
        }
    }

    /// Starts the pipeline, or says why it cannot (for tests of refusals).
    pub fn try_start(self) -> Result<RunningTest, crate::pipeline::PipelineError> {
        let running = self.builder.start()?;
        Ok(RunningTest {
            handle: running.handle(),
            running,
            collector: self.collector,
        })
    }
}

/// A running test pipeline.
pub struct RunningTest {
    running: RunningPipeline,
    handle: PipelineHandle,
    collector: CollectingOutput,
}

impl RunningTest {
    /// The control handle.
    pub fn handle(&self) -> &PipelineHandle {
        &self.handle
    }

    /// The collector attached to the pipeline.
    pub fn collector(&self) -> &CollectingOutput {
        &self.collector
    }

    /// Polls every source now and waits until they have been polled.
    /// Panics (failing the test) if the pipeline is stopped.
    #[allow(clippy::panic, reason = "a test kit fails the test that uses it")]
    pub fn trigger_all(&self) {
        if let Err(e) = self
            .handle
            .trigger_now(SourceSelector::All, Duration::from_secs(10))
        {
            panic!("trigger failed: {e}");
        }
    }

    /// Waits until the collector holds at least `n` points, or `timeout`.
    /// Returns whether it did.
    pub fn wait_for_points(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.collector.len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.collector.len() >= n
    }

    /// Waits until source `name` (`plugin/source`) has been polled `n`
    /// times (the poll at start is the first), at most `timeout`; whether it was.
    pub fn wait_for_polls(&self, name: &str, n: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let polls = self.handle.stats().source(name).map_or(0, |s| s.polls);
            if polls >= n {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Shuts down, waits, and returns everything collected.
    pub fn finish(self) -> TestResult {
        let metrics = self.handle.metrics().clone();
        let stats = self.running.shutdown_and_wait();
        TestResult {
            points: self.collector.points(),
            metrics,
            stats,
        }
    }
}

/// What a test pipeline produced.
pub struct TestResult {
    /// Every point the collector received, in order.
    pub points: Vec<MeasurementPoint>,
    /// The metric registry.
    pub metrics: Arc<MetricRegistry>,
    /// Final counters.
    pub stats: PipelineStatsSnapshot,
}

impl TestResult {
    /// The points of metric `name`, in order.
    pub fn points_of(&self, name: &str) -> Vec<&MeasurementPoint> {
        match self.metrics.by_name(name) {
            Some(id) => self.points.iter().filter(|p| p.metric == id).collect(),
            None => Vec::new(),
        }
    }
}

/// Registers a unitless `u64` gauge named `name`: the metric tests' sources
/// emit when what they measure does not matter.
pub fn test_gauge(ctx: &mut PluginStartContext, name: &str) -> Result<MetricId, MetricError> {
    ctx.create_metric(Metric::new(
        name,
        Unit::Unity,
        ValueType::U64,
        MetricKind::Gauge,
        "test",
    ))
}
