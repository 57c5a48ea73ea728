//! Cost of the carbon transform on a buffer as energy-attribution hands it
//! on: 1,000 energy points (RAPL and attributed energy, 3 attributes each)
//! among 9,000 other points (process CPU time and memory), fixed intensity
//! and a time series of 8,760 hourly rows (a year).
//!
//! Run with `cargo bench -p plugin-energy-to-carbon` (`-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use alumet::pipeline::{ElementContext, Transform};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use plugin_energy_to_carbon::{carbon_metric, CarbonTransform, Intensity};

const BASE_NS: u64 = 1_700_000_000_000_000_000;

fn setup() -> (MetricRegistry, MeasurementBuffer) {
    let mut r = MetricRegistry::new();
    let j = |name: &str| Metric::new(name, Unit::Joule, ValueType::F64, MetricKind::Delta, "");
    let rapl = r.register(j("rapl_consumed_energy")).unwrap();
    let attributed = r.register(j("attributed_energy")).unwrap();
    let cpu = r
        .register(Metric::new(
            "process_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))
        .unwrap();
    r.register(carbon_metric()).unwrap();
    let mut buffer = MeasurementBuffer::new();
    for i in 0..10_000u32 {
        let t = Timestamp::from_unix_nanos(BASE_NS + u64::from(i) * 1_000_000);
        let p = match i % 10 {
            0 => MeasurementPoint::new(
                t,
                rapl,
                Resource::CpuPackage { id: 0 },
                ResourceConsumer::LocalMachine,
                1.5,
            )
            .with_attr("domain", "package"),
            1 => MeasurementPoint::new(
                t,
                attributed,
                Resource::CpuPackage { id: 0 },
                ResourceConsumer::Process { pid: i },
                0.5,
            )
            .with_attr("domain", "package")
            .with_attr("part", "dynamic")
            .with_attr("exe", "python3"),
            _ => MeasurementPoint::new(
                t,
                cpu,
                Resource::LocalMachine,
                ResourceConsumer::Process { pid: i },
                0.01,
            )
            .with_attr("mode", "user"),
        };
        buffer.push(p);
    }
    (r, buffer)
}

fn bench(c: &mut Criterion) {
    let (registry, buffer) = setup();
    let carbon = registry.by_name("carbon_emission").unwrap();
    let year: Vec<(u64, f64)> = (0..8760u64)
        .map(|h| {
            (
                BASE_NS - 4_000 * 3_600_000_000_000 + h * 3_600_000_000_000,
                50.0 + (h % 24) as f64,
            )
        })
        .collect();
    let mut group = c.benchmark_group("carbon");
    group.throughput(Throughput::Elements(buffer.len() as u64));
    for (name, intensity) in [
        ("fixed", Intensity::Fixed(56.0)),
        (
            "hourly_year",
            Intensity::TimeSeries {
                label: "year.csv".into(),
                rows: year.clone(),
            },
        ),
    ] {
        let mut transform = CarbonTransform::new(intensity, 1.2, carbon);
        group.bench_function(name, |b| {
            b.iter_batched(
                || buffer.clone(),
                |mut buf| {
                    transform
                        .apply(&mut buf, &ElementContext { metrics: &registry })
                        .unwrap();
                    buf
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
