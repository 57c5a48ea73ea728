//! Sustained delivery to a local OTLP receiver through the real plugin in a
//! real pipeline: each iteration pushes 200 000 points (20 polls of 10 000:
//! RAPL-like energy and per-process CPU time with attributes), protobuf and
//! gzip, and ends when the output has closed, i.e. when the receiver has
//! acknowledged every point. Target: at least 300 000 points per second.
//!
//! The receiver is the tests' Python one (`tests/otlp_receiver.py
//! --count-only`: it decodes every request with the reference
//! opentelemetry-proto package and counts the points); install it with
//! `scripts/install-test-servers.sh`. Source, pipeline, encoder, sender and
//! receiver share the machine's cores, so this is an end-to-end figure.
//!
//! Run: `cargo bench -p plugin-opentelemetry --bench delivery`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::plugin::PluginDefinition;
use alumet::testing::{FnSource, TestPipeline};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use plugin_opentelemetry::{OpenTelemetryConfig, OpenTelemetryPlugin};

const POINTS_PER_POLL: usize = 10_000;
const POLLS: usize = 20;

/// One iteration: a pipeline, 200 000 points, delivered and acknowledged.
fn deliver_once(endpoint: &str, next_ms: &Arc<AtomicU64>) -> Duration {
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
            buf.reserve(POINTS_PER_POLL);
            for i in 0..POINTS_PER_POLL {
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
    let mut plugin = OpenTelemetryPlugin::init(OpenTelemetryConfig {
        endpoint: endpoint.into(),
        ..OpenTelemetryConfig::default()
    })
    .unwrap();
    t.start_plugin("opentelemetry", &mut plugin).unwrap();
    let start = Instant::now();
    let running = t.start();
    // The pipeline polls once at start and once at shutdown.
    for _ in 0..POLLS - 2 {
        running.trigger_all();
    }
    let _ = running.finish();
    let elapsed = start.elapsed();
    let stats = plugin.stats().snapshot();
    assert_eq!(
        stats.delivered_points,
        (POLLS * POINTS_PER_POLL) as u64,
        "{stats:?}"
    );
    elapsed
}

fn bench_delivery(c: &mut Criterion) {
    let receiver = common::Receiver::start_counting();
    let endpoint = receiver.endpoint();
    let next_ms = Arc::new(AtomicU64::new(
        Timestamp::now().unix_nanos() / 1_000_000 - 3_600_000,
    ));
    let mut runs = 0u64;
    let mut group = c.benchmark_group("delivery");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements((POLLS * POINTS_PER_POLL) as u64));
    group.bench_function("otlp_protobuf_gzip_200k_points", |b| {
        b.iter_custom(|iters| {
            runs += iters;
            (0..iters).map(|_| deliver_once(&endpoint, &next_ms)).sum()
        })
    });
    group.finish();
    // The receiver decoded and counted every point of every run.
    assert_eq!(
        receiver.counted_points(),
        runs * (POLLS * POINTS_PER_POLL) as u64
    );
}

criterion_group!(benches, bench_delivery);
criterion_main!(benches);
