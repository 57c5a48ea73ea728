//! Line protocol encoding throughput on one core: 10 000 points of the
//! shapes the agent produces (RAPL energy with a `domain` tag, per-process
//! CPU time with `mode` and `exe`, process memory with `exe`: the shared
//! `alumet_delivery::testing::agent_like_points`), plus a `host` tag.
//! Target: at least 2 million points per second.
//!
//! Run: `cargo bench -p plugin-influxdb --bench encode`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use alumet::metrics::MetricRegistry;
use alumet_delivery::testing::agent_like_points;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plugin_influxdb::line_protocol::{EncoderOptions, LineProtocolEncoder};

const POINTS: usize = 10_000;

fn bench_encode(c: &mut Criterion) {
    let mut registry = MetricRegistry::new();
    let points = agent_like_points(&mut registry, POINTS);
    let mut encoder = LineProtocolEncoder::new(EncoderOptions {
        constant_tags: vec![("host".into(), "node-042.cluster".into())],
        ..EncoderOptions::default()
    });
    let mut out = Vec::with_capacity(POINTS * 160);
    let mut group = c.benchmark_group("line_protocol");
    group.throughput(Throughput::Elements(POINTS as u64));
    group.bench_function("encode_10k_points", |b| {
        b.iter(|| {
            out.clear();
            for p in &points {
                encoder.encode(p, &registry, &mut out).unwrap();
            }
            black_box(out.len())
        })
    });
    group.finish();
    println!(
        "line_protocol/encode_10k_points: {} bytes per point on average",
        out.len() / POINTS
    );
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
