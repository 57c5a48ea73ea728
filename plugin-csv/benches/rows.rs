//! CSV rows per second on one core (target: at least 1 000 000).
//!
//! The batch looks like what procfs + rapl produce: per-process CPU time
//! with `mode` and `exe` attributes, machine-wide CPU time, package energy;
//! 10 polls of 1 000 points. `sink` measures formatting alone, `file` adds
//! the writes to a file on /tmp (page cache).
//!
//! Run: `cargo bench -p plugin-csv --bench rows`; criterion prints
//! `thrpt: [.. Melem/s ..]`, elements being rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::hint::black_box;
use std::path::Path;

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plugin_csv::output::CsvOutput;
use plugin_csv::row::{RowFormatter, TimestampFormat};

fn batch(metrics: &mut MetricRegistry) -> MeasurementBuffer {
    let cpu = metrics
        .register(Metric::new(
            "process_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let sys = metrics
        .register(Metric::new(
            "cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let energy = metrics
        .register(Metric::new(
            "rapl_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for poll in 0..10u64 {
        let ts = Timestamp::from_unix_nanos(1_795_341_600_000_000_000 + poll * 1_000_000_000);
        for i in 0..1000u32 {
            let p = match i % 10 {
                0 => MeasurementPoint::new(
                    ts,
                    energy,
                    Resource::CpuPackage { id: 0 },
                    ResourceConsumer::LocalMachine,
                    1.234_567 * f64::from(i),
                )
                .with_attr("domain", "package"),
                1 => MeasurementPoint::new(
                    ts,
                    sys,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    0.01 * f64::from(i),
                )
                .with_attr("state", "user"),
                _ => MeasurementPoint::new(
                    ts,
                    cpu,
                    Resource::LocalMachine,
                    ResourceConsumer::Process { pid: 1000 + i },
                    0.01 * f64::from(i % 100),
                )
                .with_attr("mode", if i % 2 == 0 { "user" } else { "system" })
                .with_attr("exe", Cow::Owned(format!("worker-{}", i % 7))),
            };
            out.push(p);
        }
    }
    out
}

fn rows(c: &mut Criterion) {
    let mut metrics = MetricRegistry::new();
    let points = batch(&mut metrics);
    let formatter = || RowFormatter::new(b',', TimestampFormat::Rfc3339, Vec::new());

    let mut group = c.benchmark_group("csv_rows");
    group.throughput(Throughput::Elements(points.len() as u64));

    let mut sink = CsvOutput::from_writer(Path::new("sink"), std::io::sink(), formatter());
    group.bench_function("sink", |b| {
        b.iter(|| {
            sink.write_rows(black_box(&points), &metrics)
                .unwrap_or_else(|e| panic!("{e}"));
        })
    });

    let dir = tempfile::tempdir_in("/tmp").unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("bench.csv");
    let mut file = CsvOutput::open(&path, false, formatter()).unwrap_or_else(|e| panic!("{e}"));
    group.bench_function("file", |b| {
        b.iter(|| {
            file.write_rows(black_box(&points), &metrics)
                .unwrap_or_else(|e| panic!("{e}"));
            file.flush_rows().unwrap_or_else(|e| panic!("{e}"));
        })
    });
    drop(file);
    // Keep the file from growing for long: criterion runs many iterations.
    drop(dir);

    let mut unix = CsvOutput::from_writer(
        Path::new("sink"),
        std::io::sink(),
        RowFormatter::new(b',', TimestampFormat::UnixNs, Vec::new()),
    );
    group.bench_function("sink_unix_ns", |b| {
        b.iter(|| {
            unix.write_rows(black_box(&points), &metrics)
                .unwrap_or_else(|e| panic!("{e}"));
        })
    });
    group.finish();
}

criterion_group!(benches, rows);
criterion_main!(benches);
