//! Cost of the attribution transform on a realistic stream: one minute of
//! RAPL at 100 ms (4 domains: 2 packages, DRAM, psys) and procfs at 1 s with
//! N processes (user + system points each), delivered as the sources flush.
//!
//! Criterion reports the time to process the whole minute and the input
//! points per second; the line printed first gives the same as a share of
//! one core (time per minute of data / 60 s).
//!
//! Run with `cargo bench -p plugin-energy-attribution` (`-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use alumet::pipeline::{ElementContext, Transform};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use plugin_energy_attribution::{
    register_output_metrics, AttributionTransform, Config, OutputMetrics,
};

const BASE_NS: u64 = 1_700_000_000_000_000_000;

fn setup(processes: u32) -> (MetricRegistry, OutputMetrics, Vec<MeasurementBuffer>, usize) {
    let mut r = MetricRegistry::new();
    let energy = r
        .register(Metric::new(
            "rapl_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let cpu = r
        .register(Metric::new(
            "process_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let outputs = register_output_metrics(&mut r).unwrap_or_else(|e| panic!("{e}"));
    let domains = [
        ("package", Resource::CpuPackage { id: 0 }),
        ("package", Resource::CpuPackage { id: 1 }),
        ("dram", Resource::Dram { pkg_id: 0 }),
        ("psys", Resource::LocalMachine),
    ];
    let mut buffers = Vec::new();
    let mut points = 0;
    for tick in 0..=600u64 {
        // rapl polls 3 ms after the 100 ms tick, procfs on the second.
        let t = Timestamp::from_unix_nanos(BASE_NS + tick * 100_000_000 + 3_000_000);
        let mut b: MeasurementBuffer = domains
            .iter()
            .map(|(name, res)| {
                MeasurementPoint::new(
                    t,
                    energy,
                    res.clone(),
                    ResourceConsumer::LocalMachine,
                    2.5 + (tick % 7) as f64 * 0.1,
                )
                .with_attr("domain", *name)
            })
            .collect();
        points += b.len();
        buffers.push(std::mem::take(&mut b));
        if tick % 10 == 0 {
            let t = Timestamp::from_unix_nanos(BASE_NS + tick * 100_000_000);
            for pid in 1..=processes {
                for (mode, share) in [("user", 0.7), ("system", 0.3)] {
                    let busy = ((pid as u64 * 7919 + tick) % 100) as f64 / 1000.0 * share;
                    b.push(
                        MeasurementPoint::new(
                            t,
                            cpu,
                            Resource::LocalMachine,
                            ResourceConsumer::Process { pid },
                            busy,
                        )
                        .with_attr("mode", mode)
                        .with_attr("exe", format!("proc{pid}")),
                    );
                }
            }
            points += b.len();
            buffers.push(b);
        }
    }
    (r, outputs, buffers, points)
}

fn config() -> Config {
    Config {
        idle_power_w: [("package".to_owned(), 10.0)].into(),
        ..Config::default()
    }
}

fn run_minute(
    r: &MetricRegistry,
    outputs: OutputMetrics,
    buffers: Vec<MeasurementBuffer>,
) -> usize {
    let mut t = AttributionTransform::new(config(), outputs);
    let ctx = ElementContext { metrics: r };
    let mut out = 0;
    for mut b in buffers {
        let _ = t.apply(&mut b, &ctx);
        out += b.len();
    }
    let mut tail = Vec::new();
    let _ = t.finish(&mut tail, &ctx);
    out + tail.len()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("attribution_one_minute");
    for processes in [50u32, 500] {
        let (r, outputs, buffers, points) = setup(processes);
        // A plain measurement first, as a share of one core.
        let start = Instant::now();
        let rounds = 5;
        let mut out = 0;
        for _ in 0..rounds {
            out = run_minute(&r, outputs, buffers.clone());
        }
        let per_minute = start.elapsed() / rounds;
        println!(
            "{processes} processes: {points} input points/min -> {out} points out; {:.2} ms per minute of data = {:.4} % of one core",
            per_minute.as_secs_f64() * 1e3,
            per_minute.as_secs_f64() / 60.0 * 100.0
        );
        group.throughput(Throughput::Elements(points as u64));
        group.bench_function(format!("{processes}_processes"), |b| {
            b.iter_batched(
                || buffers.clone(),
                |bufs| run_minute(&r, outputs, bufs),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(20);
    targets = bench
}
criterion_main!(benches);
