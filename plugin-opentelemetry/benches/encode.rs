//! OTLP protobuf encoding throughput on one core: 10 000 points of the
//! shapes the agent produces (RAPL energy with `domain`, per-process CPU
//! time with `mode` and `exe`, process memory), in cumulative mode (so the
//! running total of every series is kept), sealed into batches of 5 000
//! like the output does. Target: at least 2 million points per second.
//!
//! Run: `cargo bench -p plugin-opentelemetry --bench encode`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use alumet::measurement::{MeasurementPoint, Resource, ResourceConsumer, Timestamp};
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use alumet_delivery::BatchEncoder;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plugin_opentelemetry::encode::{BodyFormat, EncoderOptions, OtlpEncoder, Temporality};

const POINTS: usize = 10_000;
const BATCH: usize = 5_000;

fn workload(registry: &mut MetricRegistry) -> Vec<MeasurementPoint> {
    let metric = |registry: &mut MetricRegistry, name: &str, unit, value_type, kind| {
        registry
            .register(Metric::new(name, unit, value_type, kind, ""))
            .unwrap()
    };
    let energy = metric(
        registry,
        "rapl_consumed_energy",
        Unit::Joule,
        ValueType::F64,
        MetricKind::Delta,
    );
    let cpu = metric(
        registry,
        "process_cpu_time",
        Unit::Second,
        ValueType::F64,
        MetricKind::Delta,
    );
    let memory = metric(
        registry,
        "process_memory_resident",
        Unit::Byte,
        ValueType::U64,
        MetricKind::Gauge,
    );
    let domains = ["package", "core", "uncore", "dram"];
    let exes = ["stress-ng", "postgres", "kworker/0:1", "my benchmark"];
    let base = Timestamp::now().unix_nanos();
    (0..POINTS)
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

fn bench_encode(c: &mut Criterion) {
    let mut registry = MetricRegistry::new();
    let points = workload(&mut registry);
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
