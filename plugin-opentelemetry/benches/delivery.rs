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

use alumet::plugin::PluginDefinition;
use alumet_delivery::testing::{bench_sustained_delivery, BENCH_POINTS};
use criterion::{criterion_group, criterion_main, Criterion};
use plugin_opentelemetry::{OpenTelemetryConfig, OpenTelemetryPlugin};

fn bench_delivery(c: &mut Criterion) {
    let receiver = common::Receiver::start_counting();
    let endpoint = receiver.endpoint();
    let runs =
        bench_sustained_delivery(c, "otlp_protobuf_gzip_200k_points", "opentelemetry", || {
            let plugin = OpenTelemetryPlugin::init(OpenTelemetryConfig {
                endpoint: endpoint.clone(),
                own_metrics_interval: std::time::Duration::ZERO,
                ..OpenTelemetryConfig::default()
            })
            .unwrap();
            let stats = plugin.stats();
            (plugin, stats)
        });
    // The receiver decoded and counted every point of every run.
    assert_eq!(receiver.counted_points(), runs * BENCH_POINTS);
}

criterion_group!(benches, bench_delivery);
criterion_main!(benches);
