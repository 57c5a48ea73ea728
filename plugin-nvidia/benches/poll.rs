//! The plugin's own cost per poll, over the fake driver (so NVML's cost, a
//! few hundred µs to milliseconds per poll on real hardware, is excluded):
//! the points for one GPU with every metric, and with 0 or 50 processes.
//!
//! Run: `cargo bench -p plugin-nvidia --bench poll`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use alumet::measurement::{MeasurementBuffer, Timestamp};
use alumet::metrics::MetricRegistry;
use alumet::pipeline::Source;
use criterion::{criterion_group, criterion_main, Criterion};
use plugin_nvidia::metrics::GpuMetrics;
use plugin_nvidia::nvml::{GpuProcess, ProcessSample};
use plugin_nvidia::source::{GpuSource, MonitoredGpu};
use plugin_nvidia::testing::FakeGpu;

fn source_with_processes(n: u32) -> (GpuSource, FakeGpu) {
    let gpu = FakeGpu::new("00000000:3B:00.0");
    gpu.update(|s| {
        s.processes = Ok((0..n)
            .map(|i| GpuProcess {
                pid: 1000 + i,
                used_memory_bytes: Some(1 << 30),
            })
            .collect());
    });
    let mut registry = MetricRegistry::new();
    let metrics = GpuMetrics::register(|m| registry.register(m)).unwrap();
    let monitored = MonitoredGpu::open(Box::new(gpu.clone()), true, 0).unwrap();
    (GpuSource::new(monitored, metrics), gpu)
}

fn bench_poll(c: &mut Criterion) {
    for n in [0u32, 50] {
        let (mut source, gpu) = source_with_processes(n);
        let mut energy_mj = 0u64;
        let mut t_us = 0u64;
        let mut buffer = MeasurementBuffer::with_capacity(256);
        c.bench_function(&format!("poll one GPU, {n} processes"), |b| {
            b.iter(|| {
                energy_mj += 100;
                t_us += 1000;
                // New samples every poll, as on a busy GPU.
                gpu.update(|s| {
                    s.total_energy_mj = Ok(energy_mj);
                    s.process_samples = Ok((0..n)
                        .map(|i| ProcessSample {
                            pid: 1000 + i,
                            timestamp_us: t_us,
                            sm_percent: 50,
                        })
                        .collect());
                });
                buffer.clear();
                source
                    .poll(&mut buffer, Timestamp::from_unix_nanos(t_us * 1000))
                    .unwrap();
                black_box(buffer.len())
            })
        });
    }
}

criterion_group!(benches, bench_poll);
criterion_main!(benches);
