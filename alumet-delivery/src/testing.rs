//! Test and bench kit of the network outputs (feature `testing`), shared by
//! the tests and benches of every output built on this crate:
//!
//! - [`wait_until`]: waiting for a peer (its port and process:
//!   `alumet::testing::peer`);
//! - [`register_test_metrics`]: the metrics of the test workloads;
//! - [`OutputHarness`]: a real pipeline with a source polled by hand and
//!   the output plugin under test;
//! - [`agent_like_points`]: the points of the encoding benchmarks;
//! - [`deliver_load_once`] and [`bench_sustained_delivery`]: the sustained
//!   delivery benchmark (200 000 RAPL-like and per-process points through
//!   the real plugin in a real pipeline, until the peer acknowledged all).
//!
//! A kit fails the test or bench that uses it: it panics on purpose.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test kit fails the test that uses it"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricId, MetricKind, MetricRegistry, Unit, ValueType};
use alumet::pipeline::PluginStartContext;
use alumet::plugin::{Plugin, PluginError};
use alumet::testing::{FnSource, RunningTest, TestPipeline};
use criterion::{Criterion, SamplingMode, Throughput};

use crate::stats::{DeliveryStats, StatsHandle};

/// Polls `ready` every 20 ms until it holds; fails after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not happen within {timeout:?}");
}

/// Name of the outputs' test energy metric (F64 joules, delta).
pub const TEST_ENERGY: &str = "test_energy";
/// Name of the outputs' test memory metric (U64 bytes, gauge).
pub const TEST_MEMORY: &str = "test_memory";

/// Registers [`TEST_ENERGY`] and [`TEST_MEMORY`], the metrics of the
/// outputs' test workloads; their ids in that order.
pub fn register_test_metrics(
    ctx: &mut PluginStartContext,
) -> Result<(MetricId, MetricId), PluginError> {
    let energy = ctx.create_metric(Metric::new(
        TEST_ENERGY,
        Unit::Joule,
        ValueType::F64,
        MetricKind::Delta,
        "test energy",
    ))?;
    let memory = ctx.create_metric(Metric::new(
        TEST_MEMORY,
        Unit::Byte,
        ValueType::U64,
        MetricKind::Gauge,
        "test memory",
    ))?;
    Ok((energy, memory))
}

/// A test pipeline: plugin `workload` with one source, polled by hand, and
/// the output plugin under test.
pub struct OutputHarness<P> {
    /// The running pipeline.
    pub running: RunningTest,
    /// The output plugin under test.
    pub plugin: P,
    /// Polls of the source so far.
    pub polls: Arc<AtomicU64>,
    stats: StatsHandle,
}

impl<P: Plugin> OutputHarness<P> {
    /// Starts the pipeline: `metrics` registers the source's metrics (in
    /// plugin `workload`), `points(poll, &metrics)` gives the points of
    /// each poll; `plugin` (with its counters `stats`) is started as
    /// `plugin_name`. Logs go to the test's output.
    pub fn start<M: Send + 'static>(
        plugin_name: &str,
        mut plugin: P,
        stats: StatsHandle,
        metrics: impl FnOnce(&mut PluginStartContext) -> Result<M, PluginError>,
        mut points: impl FnMut(u64, &M) -> MeasurementBuffer + Send + 'static,
    ) -> Self {
        let mut t = TestPipeline::builder();
        let polls = Arc::new(AtomicU64::new(0));
        let p = polls.clone();
        t.plugin("workload", move |ctx| {
            let metrics = metrics(ctx)?;
            let source = FnSource::new(move |buf: &mut MeasurementBuffer, _ts| {
                let poll = p.fetch_add(1, Ordering::SeqCst);
                buf.extend(points(poll, &metrics));
                Ok(())
            });
            ctx.add_source("points", Box::new(source), TestPipeline::manual_trigger());
            Ok(())
        })
        .unwrap();
        t.start_plugin(plugin_name, &mut plugin).unwrap();
        Self {
            running: t.start(),
            plugin,
            polls,
            stats,
        }
    }

    /// Polls the source `n` more times.
    pub fn poll(&self, n: usize) {
        for _ in 0..n {
            self.running.trigger_all();
        }
    }

    /// Waits until `done(stats)` holds (for up to 15 s).
    pub fn wait_for(&self, what: &str, done: impl Fn(&DeliveryStats) -> bool) {
        wait_until(what, Duration::from_secs(15), || {
            done(&self.stats.snapshot())
        });
    }

    /// Waits until the output has delivered `n` points in all.
    pub fn wait_delivered(&self, n: u64) {
        self.wait_for(&format!("delivery of {n} points"), |s| {
            s.delivered_points >= n
        });
    }

    /// Waits until the output has received every point polled so far.
    pub fn wait_received_all(&self, per_poll: u64) {
        let expected = self.polls.load(Ordering::SeqCst) * per_poll;
        self.wait_for(&format!("the output receiving {expected} points"), |s| {
            s.received_points >= expected
        });
    }

    /// Shuts the pipeline down (the output delivers what is queued) and
    /// stops the plugin: (polls done, the plugin, points the pipeline
    /// counted as dropped, which includes what the output reported).
    pub fn finish(self) -> (u64, P, u64) {
        let result = self.running.finish();
        let mut plugin = self.plugin;
        plugin.stop().unwrap();
        (
            self.polls.load(Ordering::SeqCst),
            plugin,
            result.stats.total_dropped_points,
        )
    }
}

/// `count` points of the shapes the agent produces, for the encoding
/// benchmarks: RAPL energy of 2 packages with a `domain` attribute,
/// CPU time of 500 processes with `mode` and `exe`, and their resident
/// memory with `exe`, in equal thirds, 100 points a millisecond from now.
/// Their metrics are registered in `registry`.
pub fn agent_like_points(registry: &mut MetricRegistry, count: usize) -> Vec<MeasurementPoint> {
    let mut metric = |name: &str, unit, value_type, kind| {
        registry
            .register(Metric::new(name, unit, value_type, kind, ""))
            .unwrap()
    };
    let energy = metric(
        "rapl_consumed_energy",
        Unit::Joule,
        ValueType::F64,
        MetricKind::Delta,
    );
    let cpu = metric(
        "process_cpu_time",
        Unit::Second,
        ValueType::F64,
        MetricKind::Delta,
    );
    let memory = metric(
        "process_memory_resident",
        Unit::Byte,
        ValueType::U64,
        MetricKind::Gauge,
    );
    let domains = ["package", "core", "uncore", "dram"];
    let exes = ["stress-ng", "postgres", "kworker/0:1", "my benchmark"];
    let base = Timestamp::now().unix_nanos();
    (0..count)
        .map(|i| {
            let ts = Timestamp::from_unix_nanos(base + (i as u64 / 100) * 1_000_000);
            match i % 3 {
                0 => MeasurementPoint::new(
                    ts,
                    energy,
                    Resource::CpuPackage { id: (i % 2) as u32 },
                    ResourceConsumer::LocalMachine,
                    0.012_345 * i as f64,
                )
                .with_attr("domain", domains[i % 4]),
                1 => MeasurementPoint::new(
                    ts,
                    cpu,
                    Resource::LocalMachine,
                    ResourceConsumer::Process {
                        pid: (i % 500) as u32,
                    },
                    0.01,
                )
                .with_attr("mode", if i % 2 == 0 { "user" } else { "system" })
                .with_attr("exe", exes[i % 4]),
                _ => MeasurementPoint::new(
                    ts,
                    memory,
                    Resource::LocalMachine,
                    ResourceConsumer::Process {
                        pid: (i % 500) as u32,
                    },
                    123_456_789 + i as u64,
                )
                .with_attr("exe", exes[i % 4]),
            }
        })
        .collect()
}

/// Points of one poll of the delivery benchmark.
pub const BENCH_POINTS_PER_POLL: usize = 10_000;
/// Polls of one iteration of the delivery benchmark.
pub const BENCH_POLLS: usize = 20;
/// Points of one iteration of the delivery benchmark.
pub const BENCH_POINTS: u64 = (BENCH_POLLS * BENCH_POINTS_PER_POLL) as u64;

/// One iteration of the delivery benchmark: a pipeline whose source makes
/// [`BENCH_POINTS`] points (half RAPL-like energy per package, half CPU
/// time per process, each with an attribute) over [`BENCH_POLLS`] polls,
/// and `plugin` (whose counters are `stats`) started in it as
/// `plugin_name`. Returns the time from start until the output closed,
/// i.e. until every point was acknowledged (checked). `next_ms` is the
/// clock of the points, one millisecond a poll, shared by the iterations.
pub fn deliver_load_once(
    plugin_name: &str,
    plugin: &mut dyn Plugin,
    stats: &StatsHandle,
    next_ms: &Arc<AtomicU64>,
) -> Duration {
    let mut t = TestPipeline::builder();
    let clock = next_ms.clone();
    t.plugin("load", move |ctx| {
        let energy = ctx.create_metric(Metric::new(
            "bench_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))?;
        let cpu = ctx.create_metric(Metric::new(
            "bench_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))?;
        let source = FnSource::new(move |buf: &mut MeasurementBuffer, _| {
            let ms = clock.fetch_add(1, Ordering::Relaxed);
            let ts = Timestamp::from_unix_nanos(ms * 1_000_000);
            buf.reserve(BENCH_POINTS_PER_POLL);
            for i in 0..BENCH_POINTS_PER_POLL {
                let point = if i % 2 == 0 {
                    MeasurementPoint::new(
                        ts,
                        energy,
                        Resource::CpuPackage {
                            id: (i % 100) as u32,
                        },
                        ResourceConsumer::LocalMachine,
                        i as f64 * 0.001,
                    )
                    .with_attr("domain", "package")
                } else {
                    MeasurementPoint::new(
                        ts,
                        cpu,
                        Resource::LocalMachine,
                        ResourceConsumer::Process {
                            pid: (i % 1000) as u32,
                        },
                        0.01,
                    )
                    .with_attr("mode", "user")
                };
                buf.push(point);
            }
            Ok(())
        });
        ctx.add_source("points", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    t.start_plugin(plugin_name, plugin).unwrap();
    let before = stats.snapshot().delivered_points;
    let start = Instant::now();
    let running = t.start();
    // The pipeline polls once at start and once at shutdown.
    for _ in 0..BENCH_POLLS - 2 {
        running.trigger_all();
    }
    let _ = running.finish();
    let elapsed = start.elapsed();
    let stats = stats.snapshot();
    assert_eq!(stats.delivered_points - before, BENCH_POINTS, "{stats:?}");
    elapsed
}

/// The sustained delivery benchmark `delivery/<bench_name>`: flat sampling,
/// 10 samples over 15 s, throughput in points. Each iteration starts a new
/// plugin from `new_plugin` (the plugin and its counters) and runs
/// [`deliver_load_once`]. Returns how many iterations ran (the caller may
/// check that its peer received `BENCH_POINTS` for each).
pub fn bench_sustained_delivery<P: Plugin>(
    c: &mut Criterion,
    bench_name: &str,
    plugin_name: &str,
    mut new_plugin: impl FnMut() -> (P, StatsHandle),
) -> u64 {
    let next_ms = Arc::new(AtomicU64::new(
        Timestamp::now().unix_nanos() / 1_000_000 - 3_600_000,
    ));
    let mut runs = 0u64;
    let mut group = c.benchmark_group("delivery");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(BENCH_POINTS));
    group.bench_function(bench_name, |b| {
        b.iter_custom(|iters| {
            runs += iters;
            (0..iters)
                .map(|_| {
                    let (mut plugin, stats) = new_plugin();
                    deliver_load_once(plugin_name, &mut plugin, &stats, &next_ms)
                })
                .sum()
        })
    });
    group.finish();
    runs
}
