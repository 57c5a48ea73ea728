//! TLS through the shared delivery code, against the Python receiver
//! served over HTTPS with certificates from a CA the test creates
//! (`scripts/make-test-certs.sh`, openssl): refused without `ca_file`,
//! delivered with it; mutual TLS with a client certificate; a wrong-host
//! certificate is one error line naming the host, not a silent retry loop.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use plugin_opentelemetry::OpenTelemetryConfig;

fn certs() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-certs.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "make-test-certs.sh failed (is openssl installed? run scripts/install-test-servers.sh)"
    );
    let path = dir.path().to_owned();
    (dir, path)
}

fn https_receiver(certs: &Path, leaf: &str, client_ca: bool) -> Receiver {
    Receiver::start_with(
        "",
        Some(ServerTls {
            cert: certs.join(format!("{leaf}.pem")),
            key: certs.join(format!("{leaf}.key")),
            client_ca: client_ca.then(|| certs.join("ca.pem")),
        }),
    )
}

fn config(receiver: &Receiver) -> OpenTelemetryConfig {
    OpenTelemetryConfig {
        batch_size: 10,
        shutdown_timeout: Duration::from_millis(500),
        ..test_config(&receiver.endpoint())
    }
}

/// Runs 3 polls of 10 points; (points received by the output, its stats).
fn deliver(config: OpenTelemetryConfig) -> (u64, plugin_opentelemetry::DeliveryStats) {
    let h = start_harness(Workload::new(10), config);
    h.poll(3);
    h.wait_for("an attempt", |s| s.requests >= 1);
    let (polls, plugin, _) = h.finish();
    (polls * 10, plugin.stats().snapshot())
}

#[test]
fn a_private_ca_is_refused_without_ca_file_and_trusted_with_it() {
    capture_logs();
    let (_dir, certs) = certs();
    let receiver = https_receiver(&certs, "server", false);
    let host = format!("127.0.0.1:{}", receiver.port);

    let (_, refused) = deliver(config(&receiver));
    assert_eq!(refused.delivered_points, 0, "{refused:?}");
    assert!(receiver.accepted_points().is_empty());
    let errors = errors_about(&host);
    assert_eq!(
        errors.len(),
        1,
        "one line, not one per attempt: {errors:#?}"
    );
    assert!(
        !errors[0].contains('\n') && errors[0].contains("certificate"),
        "{}",
        errors[0]
    );

    let trusted = OpenTelemetryConfig {
        ca_file: certs.join("ca.pem").display().to_string(),
        ..config(&receiver)
    };
    let (received, s) = deliver(trusted);
    assert_eq!(s.delivered_points, received, "{s:?}");
    assert_eq!(receiver.accepted_points().len() as u64, received);
}

#[test]
fn mutual_tls_delivers_with_the_client_certificate_only() {
    capture_logs();
    let (_dir, certs) = certs();
    let receiver = https_receiver(&certs, "server", true);
    let ca_file = certs.join("ca.pem").display().to_string();

    let without = OpenTelemetryConfig {
        ca_file: ca_file.clone(),
        ..config(&receiver)
    };
    let (_, s) = deliver(without);
    assert_eq!(s.delivered_points, 0, "{s:?}");

    let with = OpenTelemetryConfig {
        ca_file,
        client_cert_file: certs.join("client.pem").display().to_string(),
        client_key_file: certs.join("client.key").display().to_string(),
        ..config(&receiver)
    };
    let (received, s) = deliver(with);
    assert_eq!(s.delivered_points, received, "{s:?}");
    assert_eq!(receiver.accepted_points().len() as u64, received);
}

#[test]
fn a_wrong_host_certificate_is_one_line_naming_the_host() {
    capture_logs();
    let (_dir, certs) = certs();
    let receiver = https_receiver(&certs, "wrong-host", false);
    let host = format!("127.0.0.1:{}", receiver.port);
    let config = OpenTelemetryConfig {
        ca_file: certs.join("ca.pem").display().to_string(),
        ..config(&receiver)
    };
    let (_, s) = deliver(config);
    assert_eq!(s.delivered_points, 0);
    assert!(
        s.undelivered_at_shutdown_points > 0,
        "counted, not silently lost: {s:?}"
    );
    let errors = errors_about(&host);
    assert_eq!(errors.len(), 1, "{errors:#?} {:#?}", LOGS.lock().unwrap());
    let line = &errors[0];
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("not valid for"), "{line}");
    eprintln!("the error: {line}");
}
