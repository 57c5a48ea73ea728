//! Cost of one poll of each procfs source on this machine's real /proc.
//!
//! `system`: /proc/stat, /proc/meminfo, /proc/net/dev through kept
//! descriptors. `processes`: every process's /proc/PID/stat (kept
//! descriptors), with and without the scan of /proc for new processes.
//! Run: `cargo bench -p plugin-procfs --bench poll`; the time is per poll.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use alumet::exec::ExecTarget;
use alumet::measurement::{MeasurementBuffer, Timestamp};
use alumet::metrics::{Metric, MetricId, MetricKind, MetricRegistry, Unit, ValueType};
use alumet::pipeline::Source;
use criterion::{criterion_group, criterion_main, Criterion};
use plugin_procfs::host::HostParams;
use plugin_procfs::process::{ProcessMetricIds, ProcessOptions, ProcessSource, WatchRules};
use plugin_procfs::system::{SystemMetricIds, SystemOptions, SystemSource};
use plugin_procfs::DEFAULT_MEMINFO_FIELDS;

fn id(r: &mut MetricRegistry, name: &str) -> MetricId {
    r.register(Metric::new(
        name,
        Unit::Unity,
        ValueType::F64,
        MetricKind::Gauge,
        "",
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn poll(source: &mut dyn Source, buf: &mut MeasurementBuffer) {
    buf.clear();
    source
        .poll(buf, Timestamp::now())
        .unwrap_or_else(|e| panic!("{e}"));
    black_box(buf.len());
}

fn sources(c: &mut Criterion) {
    let mut r = MetricRegistry::new();
    let system_ids = SystemMetricIds {
        cpu_time: id(&mut r, "a"),
        context_switches: id(&mut r, "b"),
        processes_created: id(&mut r, "c"),
        tasks_running: id(&mut r, "d"),
        tasks_blocked: id(&mut r, "e"),
        system_memory: id(&mut r, "f"),
        network_bytes: id(&mut r, "g"),
        network_packets: id(&mut r, "h"),
        network_errors: id(&mut r, "i"),
        network_drops: id(&mut r, "j"),
    };
    let process_ids = ProcessMetricIds {
        cpu_time: id(&mut r, "k"),
        cpu_usage: id(&mut r, "l"),
        memory_resident: id(&mut r, "m"),
        memory_virtual: id(&mut r, "n"),
    };
    let root = Path::new("/proc");
    let host = HostParams::detect();
    let mut buf = MeasurementBuffer::new();

    let options = SystemOptions {
        per_cpu: false,
        meminfo_fields: DEFAULT_MEMINFO_FIELDS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        network: true,
        network_interfaces: Vec::new(),
    };
    let mut system = SystemSource::new(root, host.clock_ticks_per_second, options, system_ids);
    poll(&mut system, &mut buf);
    c.bench_function("system", |b| b.iter(|| poll(&mut system, &mut buf)));

    let all = |refresh: Duration| ProcessOptions {
        rules: WatchRules {
            all: true,
            ..WatchRules::default()
        },
        refresh_interval_ns: refresh.as_nanos() as u64,
        open_budget: 4096,
        idle_full_read_max_age_ns: 30_000_000_000,
    };
    let mut no_scan = ProcessSource::new(
        root,
        all(Duration::from_secs(3600)),
        ExecTarget::new(),
        host.clone(),
        process_ids,
    );
    poll(&mut no_scan, &mut buf);
    let n = no_scan.watched_pids().len();
    c.bench_function(&format!("processes_{n}_without_scan"), |b| {
        b.iter(|| poll(&mut no_scan, &mut buf))
    });

    let mut scan = ProcessSource::new(
        root,
        all(Duration::ZERO),
        ExecTarget::new(),
        host,
        process_ids,
    );
    poll(&mut scan, &mut buf);
    c.bench_function(&format!("processes_{n}_with_scan"), |b| {
        b.iter(|| poll(&mut scan, &mut buf))
    });
}

criterion_group!(benches, sources);
criterion_main!(benches);
