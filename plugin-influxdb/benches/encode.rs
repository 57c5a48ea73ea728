//! Line protocol encoding throughput on one core: 10 000 points of the
//! shapes the agent produces (RAPL energy with a `domain` tag, per-process
//! CPU time with `mode` and `exe`, process memory), plus a `host` tag.
//! Target: at least 2 million points per second.
//!
//! Run: `cargo bench -p plugin-influxdb --bench encode`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use alumet::measurement::{MeasurementPoint, Resource, ResourceConsumer, Timestamp};
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plugin_influxdb::line_protocol::{EncoderOptions, LineProtocolEncoder};

const POINTS: usize = 10_000;

fn workload(registry: &mut MetricRegistry) -> Vec<MeasurementPoint> {
    let energy = registry
        .register(Metric::new(
            "rapl_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))
        .unwrap();
    let cpu = registry
        .register(Metric::new(
            "process_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))
        .unwrap();
    let memory = registry
        .register(Metric::new(
            "process_memory_resident",
            Unit::Byte,
            ValueType::U64,
            MetricKind::Gauge,
            "",
        ))
        .unwrap();
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
                        pid: 1000 + i as u32,
                    },
                    0.01 * (i % 97) as f64,
                )
                .with_attr("mode", if i % 2 == 0 { "user" } else { "system" })
                .with_attr("exe", exes[i % 4]),
                _ => MeasurementPoint::new(
                    ts,
                    memory,
                    Resource::LocalMachine,
                    ResourceConsumer::Process {
                        pid: 1000 + i as u32,
                    },
                    (i as u64) * 4096,
                ),
            }
        })
        .collect()
}

fn bench_encode(c: &mut Criterion) {
    let mut registry = MetricRegistry::new();
    let points = workload(&mut registry);
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
