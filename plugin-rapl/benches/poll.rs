//! Cost of one poll of the rapl source through powercap, 5 domains
//! (package, core, uncore, dram, psys) on a fixture tree, and of the file
//! reads it is made of: `pread` on a kept fd versus open/read/close.
//!
//! The fixture files live on a regular file system, so this measures the
//! plugin's own overhead; on real sysfs each read also costs the kernel's
//! MSR access (about 1–2 µs).
//!
//! Run: `cargo bench -p plugin-rapl --bench poll`
#![allow(clippy::unwrap_used)]

use std::fs;
use std::hint::black_box;
use std::path::Path;

use alumet::measurement::Timestamp;
use alumet::metrics::MetricRegistry;
use alumet::pipeline::Source;
use criterion::{criterion_group, criterion_main, Criterion};
use plugin_rapl::powercap::{self, EnergyFile, StdFileOpener};
use plugin_rapl::source::{EnergySource, SourceMetrics};

fn zone(root: &Path, dir: &str, name: &str) {
    let d = root.join("class/powercap").join(dir);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("name"), format!("{name}\n")).unwrap();
    fs::write(d.join("max_energy_range_uj"), "262143328850\n").unwrap();
    fs::write(d.join("energy_uj"), "123456789012\n").unwrap();
}

fn five_domain_tree(root: &Path) {
    zone(root, "intel-rapl:0", "package-0");
    zone(root, "intel-rapl:0:0", "core");
    zone(root, "intel-rapl:0:1", "uncore");
    zone(root, "intel-rapl:0:2", "dram");
    zone(root, "intel-rapl:1", "psys");
}

fn bench_poll(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    five_domain_tree(dir.path());
    let opened = powercap::open(dir.path(), &StdFileOpener, 500_000_000).unwrap();
    assert_eq!(opened.readers.len(), 5);
    let mut registry = MetricRegistry::new();
    let energy = registry.register(plugin_rapl::energy_metric()).unwrap();
    let unmeasured = registry.register(plugin_rapl::unmeasured_metric()).unwrap();
    let mut source = EnergySource::new(SourceMetrics { energy, unmeasured }, opened.readers);
    let mut buffer = Vec::with_capacity(16);
    source.poll(&mut buffer, Timestamp::now()).unwrap(); // primes

    c.bench_function("powercap_poll_5_domains", |b| {
        b.iter(|| {
            buffer.clear();
            source.poll(&mut buffer, Timestamp::now()).unwrap();
            black_box(buffer.len());
        })
    });

    let path = dir.path().join("class/powercap/intel-rapl:0/energy_uj");
    let file = EnergyFile::new(fs::File::open(&path).unwrap());
    c.bench_function("energy_uj_pread_kept_fd", |b| {
        b.iter(|| black_box(file.read_energy_uj().unwrap()))
    });
    c.bench_function("energy_uj_open_read_close", |b| {
        b.iter(|| {
            let text = fs::read(&path).unwrap();
            black_box(powercap::parse_energy_uj(&text).unwrap())
        })
    });
}

criterion_group!(benches, bench_poll);
criterion_main!(benches);
