//! HTTPS to an InfluxDB-protocol endpoint (VictoriaMetrics with `-tls`)
//! whose certificate comes from a CA the test creates
//! (`scripts/make-test-certs.sh`): refused without `ca_file`, with one
//! error line naming the host; delivered with it. The TLS code is the
//! shared `alumet-delivery` crate's (mutual TLS is tested through the
//! opentelemetry output: VictoriaMetrics' free edition has no client
//! certificates).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use plugin_influxdb::InfluxDbConfig;

static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Error
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            ERRORS.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[test]
fn https_with_a_private_ca_needs_ca_file() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Error);
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-certs.sh");
    let made = std::process::Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        made.success(),
        "make-test-certs.sh failed (openssl: run scripts/install-test-servers.sh)"
    );
    let server = VictoriaMetrics::start_https(
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    );
    let url = format!("https://127.0.0.1:{}", server.port);
    let config = InfluxDbConfig {
        batch_size: 10,
        shutdown_timeout: Duration::from_millis(500),
        ..test_config(&url)
    };

    let h = start_harness(Workload::new(10), config.clone());
    h.poll(2);
    h.wait_for("an attempt", |s| s.requests >= 1);
    let (_, plugin, _) = h.finish();
    let s = plugin.stats().snapshot();
    assert_eq!(s.delivered_points, 0, "{s:?}");
    assert_eq!(s.undelivered_at_shutdown_points, s.received_points);
    let errors = ERRORS.lock().unwrap().clone();
    let host = format!("127.0.0.1:{}", server.port);
    let about_host: Vec<_> = errors.iter().filter(|e| e.contains(&host)).collect();
    assert_eq!(about_host.len(), 1, "{errors:#?}");
    assert!(about_host[0].contains("certificate") && !about_host[0].contains('\n'));

    let trusted = InfluxDbConfig {
        ca_file: dir.path().join("ca.pem").display().to_string(),
        ..config
    };
    let h = start_harness(Workload::new(10), trusted);
    h.poll(2);
    let (polls, plugin, _) = h.finish();
    let s = plugin.stats().snapshot();
    assert_eq!(s.received_points, polls * 10);
    assert_eq!(s.delivered_points, s.received_points, "{s:?}");
}
