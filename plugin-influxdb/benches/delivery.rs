//! Sustained delivery to a local VictoriaMetrics through the real plugin in
//! a real pipeline: each iteration pushes 200 000 points (20 polls of
//! 10 000: RAPL-like energy and per-process CPU time with attributes) and
//! ends when the output has closed, i.e. when the server has acknowledged
//! every point. Target: at least 200 000 points per second.
//!
//! VictoriaMetrics is started on a free loopback port with a temporary data
//! directory (install it with `scripts/install-test-servers.sh`). The
//! source, the pipeline, the encoder, the sender and the server share the
//! machine's cores, so this is an end-to-end figure.
//!
//! Run: `cargo bench -p plugin-influxdb --bench delivery`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::plugin::PluginDefinition;
use alumet::testing::{FnSource, TestPipeline};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use plugin_influxdb::{InfluxDbConfig, InfluxDbPlugin};

const POINTS_PER_POLL: usize = 10_000;
const POLLS: usize = 20;

struct Vm {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_vm() -> Vm {
    let bin = [
        "/usr/bin/victoria-metrics",
        "/usr/local/bin/victoria-metrics",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("victoria-metrics is not installed: run scripts/install-test-servers.sh");
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", dir.path().display()))
        .arg("-retentionPeriod=100y")
        .arg("-search.disableCache")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = ureq::Agent::new_with_defaults();
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent
        .get(format!("http://127.0.0.1:{port}/health"))
        .call()
        .is_err()
    {
        assert!(Instant::now() < deadline, "victoria-metrics did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Vm {
        child,
        port,
        _dir: dir,
    }
}

/// One iteration: a pipeline, 200 000 points, delivered and acknowledged.
fn deliver_once(url: &str, next_ms: &Arc<AtomicU64>) -> Duration {
    let mut t = TestPipeline::builder();
    let clock = next_ms.clone();
    t.plugin("load", move |ctx| {
        let energy = ctx.create_metric(Metric::new(
            "bench_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))?;
        let cpu = ctx.create_metric(Metric::new(
            "bench_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "",
        ))?;
        let source = FnSource::new(move |buf: &mut MeasurementBuffer, _| {
            let ms = clock.fetch_add(1, Ordering::Relaxed);
            let ts = Timestamp::from_unix_nanos(ms * 1_000_000);
            buf.reserve(POINTS_PER_POLL);
            for i in 0..POINTS_PER_POLL {
                let point = if i % 2 == 0 {
                    MeasurementPoint::new(
                        ts,
                        energy,
                        Resource::CpuPackage {
                            id: (i % 100) as u32,
                        },
                        ResourceConsumer::LocalMachine,
                        i as f64 * 0.001,
                    )
                    .with_attr("domain", "package")
                } else {
                    MeasurementPoint::new(
                        ts,
                        cpu,
                        Resource::LocalMachine,
                        ResourceConsumer::Process {
                            pid: (i % 1000) as u32,
                        },
                        0.01,
                    )
                    .with_attr("mode", "user")
                };
                buf.push(point);
            }
            Ok(())
        });
        ctx.add_source("points", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    let mut plugin = InfluxDbPlugin::init(InfluxDbConfig {
        url: url.into(),
        host_tag: "host".into(),
        ..InfluxDbConfig::default()
    })
    .unwrap();
    t.start_plugin("influxdb", &mut plugin).unwrap();
    let start = Instant::now();
    let running = t.start();
    // The pipeline polls once at start and once at shutdown.
    for _ in 0..POLLS - 2 {
        running.trigger_all();
    }
    let _ = running.finish();
    let elapsed = start.elapsed();
    let stats = plugin.stats().snapshot();
    assert_eq!(
        stats.delivered_points,
        (POLLS * POINTS_PER_POLL) as u64,
        "{stats:?}"
    );
    elapsed
}

fn bench_delivery(c: &mut Criterion) {
    let vm = start_vm();
    let url = format!("http://127.0.0.1:{}", vm.port);
    let next_ms = Arc::new(AtomicU64::new(
        Timestamp::now().unix_nanos() / 1_000_000 - 3_600_000,
    ));
    let mut group = c.benchmark_group("delivery");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements((POLLS * POINTS_PER_POLL) as u64));
    group.bench_function("victoria_metrics_v2_200k_points", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| deliver_once(&url, &next_ms)).sum())
    });
    group.finish();
}

criterion_group!(benches, bench_delivery);
criterion_main!(benches);
