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

use std::process::{Command, Stdio};
use std::time::Duration;

use alumet::plugin::PluginDefinition;
use alumet::testing::peer::{free_port, ChildProcess};
use alumet_delivery::testing::{bench_sustained_delivery, wait_until};
use criterion::{criterion_group, criterion_main, Criterion};
use plugin_influxdb::{InfluxDbConfig, InfluxDbPlugin};

struct Vm {
    _process: ChildProcess,
    port: u16,
    _dir: tempfile::TempDir,
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
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", dir.path().display()))
        .arg("-retentionPeriod=100y")
        .arg("-search.disableCache")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let process = ChildProcess::new(child);
    let agent = ureq::Agent::new_with_defaults();
    wait_until("victoria-metrics start", Duration::from_secs(15), || {
        agent
            .get(format!("http://127.0.0.1:{port}/health"))
            .call()
            .is_ok()
    });
    Vm {
        _process: process,
        port,
        _dir: dir,
    }
}

fn bench_delivery(c: &mut Criterion) {
    let vm = start_vm();
    let url = format!("http://127.0.0.1:{}", vm.port);
    bench_sustained_delivery(c, "victoria_metrics_v2_200k_points", "influxdb", || {
        let plugin = InfluxDbPlugin::init(InfluxDbConfig {
            url: url.clone(),
            host_tag: "host".into(),
            own_metrics_interval: std::time::Duration::ZERO,
            ..InfluxDbConfig::default()
        })
        .unwrap();
        let stats = plugin.stats();
        (plugin, stats)
    });
}

criterion_group!(benches, bench_delivery);
criterion_main!(benches);
