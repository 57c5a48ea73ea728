//! Cost of one poll of the hwmon source on the Grace Hopper fixture (eight
//! ACPI power meters, powers integrated) and on the Jetson one (INA3221
//! rails: a voltage and a current read per rail).
//!
//! The fixture files live on a regular file system, so this measures the
//! plugin's own overhead: on real sysfs, an ACPI power meter's read may
//! also wait for the firmware.
//!
//! Run: `cargo bench -p plugin-hwmon --bench poll`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use alumet::measurement::Timestamp;
use alumet::metrics::MetricRegistry;
use alumet::pipeline::Source;
use alumet_kernelfs::host::MonotonicClock;
use criterion::{criterion_group, criterion_main, Criterion};
use plugin_hwmon::discovery::{discover, DriverFilter};
use plugin_hwmon::source::{ChannelReader, HwmonSource, SourceMetrics};

fn source_on(case: &str) -> (HwmonSource, tempfile::TempDir) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
        .join("sys0");
    let dir = tempfile::tempdir().unwrap();
    alumet::testing::fixture::copy_tree(&fixture, dir.path());
    let channels = discover(dir.path(), &DriverFilter::all()).unwrap();
    let readers: Vec<ChannelReader> = channels.iter().filter_map(ChannelReader::new).collect();
    let mut registry = MetricRegistry::new();
    let metrics = SourceMetrics {
        energy: registry.register(plugin_hwmon::energy_metric()).unwrap(),
        power: registry.register(plugin_hwmon::power_metric()).unwrap(),
        unmeasured: registry
            .register(alumet_energy::unmeasured_metric())
            .unwrap(),
    };
    let source = HwmonSource::new(metrics, readers, Arc::new(MonotonicClock::new()), 20_000.0);
    (source, dir)
}

fn bench_poll(c: &mut Criterion) {
    for case in ["grace_hopper", "jetson_orin_ina3221"] {
        let (mut source, _dir) = source_on(case);
        let mut buffer = Vec::with_capacity(64);
        source.poll(&mut buffer, Timestamp::now()).unwrap(); // primes
        c.bench_function(&format!("hwmon_poll_{case}"), |b| {
            b.iter(|| {
                buffer.clear();
                source.poll(&mut buffer, Timestamp::now()).unwrap();
                black_box(buffer.len());
            })
        });
    }
}

criterion_group!(benches, bench_poll);
criterion_main!(benches);
