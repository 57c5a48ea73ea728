//! Throughput of the aggregation transform on one core: buffers of 8,192
//! points from 1,024 series (a process's CPU time, f64 deltas with shared
//! attributes; a machine's power gauge with mean, min and max; a u64
//! counter), eight 10 ms polls per buffer, 1 s windows that close as the
//! time advances (so closing and emitting are in the measure).
//!
//! Two measures of the same work: wall-clock time, and the thread's CPU
//! time (`cpu_time`), which a loaded machine (CI, other builds) does not
//! inflate: points per CPU-second on one core.
//!
//! Run with `cargo bench -p plugin-aggregate` (`-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::time::Duration;

use alumet::measurement::{
    Attributes, MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use alumet::pipeline::{ElementContext, Transform};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use plugin_aggregate::{late_metric, AggregateTransform, GaugeFn, GaugeFns, Settings};

const BASE_NS: u64 = 1_700_000_000_000_000_000;
const SERIES: u32 = 1024;
const POLLS_PER_BUFFER: u64 = 8;
const STEP_NS: u64 = 10_000_000;

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn settings() -> Settings {
    Settings {
        window: Duration::from_secs(1),
        max_delay: Duration::ZERO,
        metrics: vec!["*".to_owned()],
        gauge: GaugeFns::from(&[GaugeFn::Mean, GaugeFn::Min, GaugeFn::Max][..]),
        gauge_per_metric: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let mut r = MetricRegistry::new();
    let cpu = r
        .register(Metric::new(
            "process_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))
        .unwrap();
    let power = r
        .register(Metric::new(
            "power",
            Unit::Watt,
            ValueType::F64,
            MetricKind::Gauge,
            "",
        ))
        .unwrap();
    let total = r
        .register(Metric::new(
            "reads",
            Unit::Unity,
            ValueType::U64,
            MetricKind::Counter,
            "",
        ))
        .unwrap();
    let late = r.register(late_metric()).unwrap();
    let attributes: Vec<Attributes> = (0..SERIES)
        .map(|i| {
            vec![
                ("mode".into(), "user".into()),
                ("exe".into(), format!("worker-{}", i % 17).into()),
            ]
            .into()
        })
        .collect();
    let mut template = MeasurementBuffer::new();
    for poll in 0..POLLS_PER_BUFFER {
        let ts = Timestamp::from_unix_nanos(BASE_NS + poll * STEP_NS);
        for i in 0..SERIES {
            let p = match i % 64 {
                0 => MeasurementPoint::new(
                    ts,
                    power,
                    Resource::CpuPackage { id: i },
                    ResourceConsumer::LocalMachine,
                    42.5 + f64::from(i),
                ),
                1 => MeasurementPoint::new(
                    ts,
                    total,
                    Resource::LocalMachine,
                    ResourceConsumer::Process { pid: i },
                    u64::from(i) + poll,
                ),
                _ => MeasurementPoint::new(
                    ts,
                    cpu,
                    Resource::LocalMachine,
                    ResourceConsumer::Process { pid: i },
                    0.003_f64,
                )
                .with_attributes(&attributes[i as usize]),
            };
            template.push(p);
        }
    }
    let mut group = c.benchmark_group("aggregate");
    group.throughput(Throughput::Elements(template.len() as u64));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("8192_points_1024_series_1s_windows", |b| {
        let mut transform = AggregateTransform::new(settings(), late);
        let ctx = ElementContext { metrics: &r };
        let shift = Cell::new(0u64);
        b.iter_batched(
            || {
                let offset = shift.get();
                shift.set(offset + POLLS_PER_BUFFER * STEP_NS);
                let mut buffer = template.clone();
                for p in &mut buffer {
                    p.timestamp = Timestamp::from_unix_nanos(p.timestamp.unix_nanos() + offset);
                }
                buffer
            },
            |mut buffer| {
                transform.apply(&mut buffer, &ctx).unwrap();
                buffer
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("cpu_time", |b| {
        let mut transform = AggregateTransform::new(settings(), late);
        let ctx = ElementContext { metrics: &r };
        let mut offset = 0u64;
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for _ in 0..iterations {
                offset += POLLS_PER_BUFFER * STEP_NS;
                let mut buffer = template.clone();
                for p in &mut buffer {
                    p.timestamp = Timestamp::from_unix_nanos(p.timestamp.unix_nanos() + offset);
                }
                let start = thread_cpu_time();
                transform.apply(&mut buffer, &ctx).unwrap();
                spent += thread_cpu_time() - start;
                drop(buffer);
            }
            spent
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
