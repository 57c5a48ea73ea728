//! OTLP protobuf encoding throughput on one core: 10 000 points of the
//! shapes the agent produces (RAPL energy with `domain`, per-process CPU
//! time with `mode` and `exe`, process memory: the shared
//! `alumet_delivery::testing::agent_like_points`), in cumulative mode (so the
//! running total of every series is kept), sealed into batches of 5 000
//! like the output does. Target: at least 2 million points per second.
//!
//! Run: `cargo bench -p plugin-opentelemetry --bench encode`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use alumet::measurement::Timestamp;
use alumet::metrics::MetricRegistry;
use alumet_delivery::testing::agent_like_points;
use alumet_delivery::BatchEncoder;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plugin_opentelemetry::encode::{BodyFormat, EncoderOptions, OtlpEncoder, Temporality};

const POINTS: usize = 10_000;
const BATCH: usize = 5_000;

fn bench_encode(c: &mut Criterion) {
    let mut registry = MetricRegistry::new();
    let points = agent_like_points(&mut registry, POINTS);
    let mut encoder = OtlpEncoder::new(EncoderOptions {
        temporality: Temporality::Cumulative,
        format: BodyFormat::Protobuf,
        resource_attributes: vec![
            ("service.name".into(), "alumet".into()),
            ("host.name".into(), "node-17".into()),
        ],
        start_time_unix_nano: Timestamp::now().unix_nanos(),
    });
    let mut body = Vec::new();
    let mut bytes = 0;
    let mut group = c.benchmark_group("otlp");
    group.throughput(Throughput::Elements(POINTS as u64));
    group.bench_function("encode_10k_mixed_points_protobuf_cumulative", |b| {
        b.iter(|| {
            for chunk in points.chunks(BATCH) {
                for p in chunk {
                    encoder.add(black_box(p), &registry).unwrap();
                }
                body.clear();
                encoder.finish(&mut body);
                bytes = body.len();
                black_box(&body);
            }
        })
    });
    group.finish();
    eprintln!("{} bytes per point", bytes / BATCH);
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
