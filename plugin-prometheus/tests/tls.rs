//! TLS: with a certificate and key, the endpoint speaks HTTPS (verified
//! against that certificate) with authentication on top; plain HTTP and a
//! broken handshake are refused without hurting the next client; bad PEM
//! files are a clear start error.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use alumet::measurement::Resource;
use alumet::plugin::PluginDefinition;
use alumet::testing::TestPipeline;
use common::*;
use plugin_prometheus::{PrometheusConfig, PrometheusPlugin};

fn https_client(cert_der: &[u8]) -> ureq::Agent {
    let cert = ureq::tls::Certificate::from_der(cert_der).to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])))
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls)
        .build()
        .into()
}

#[test]
fn https_with_a_bearer_token() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
    let endpoint = Endpoint::start(PrometheusConfig {
        tls_cert_file: cert_file.display().to_string(),
        tls_key_file: key_file.display().to_string(),
        bearer_token: "tls-token".into(),
        ..Default::default()
    });
    endpoint.push(vec![spec("energy", 2.5)
        .on(Resource::CpuPackage { id: 0 })
        .attr("domain", "package")]);
    let url = format!("https://{}/metrics", endpoint.addr);
    let client = https_client(certified.cert.der());
    assert_eq!(client.get(&url).call().unwrap().status().as_u16(), 401);

    // Plain HTTP on the TLS port: the handshake fails, the connection closes.
    let mut plain = TcpStream::connect(endpoint.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("alumet_"),
        "served over plain HTTP"
    );

    let body = (0..200)
        .find_map(|_| {
            let mut r = client
                .get(&url)
                .header("Authorization", "Bearer tls-token")
                .call()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let body = r.body_mut().read_to_string().unwrap();
            if body.contains("alumet_energy_joules_total{") {
                Some(body)
            } else {
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        })
        .unwrap();
    assert!(body.contains("domain=\"package\"} 2.5"), "{body}");
    endpoint.stop();
}

#[test]
fn unreadable_or_wrong_pem_files_fail_the_start_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file").unwrap();
    for (cert, key, named) in [
        (
            "/nonexistent/cert.pem",
            "/nonexistent/key.pem",
            "tls_cert_file",
        ),
        (
            garbage.to_str().unwrap(),
            garbage.to_str().unwrap(),
            "tls_cert_file",
        ),
    ] {
        let mut plugin = PrometheusPlugin::init(PrometheusConfig {
            listen_address: "127.0.0.1:0".into(),
            tls_cert_file: cert.into(),
            tls_key_file: key.into(),
            ..Default::default()
        })
        .unwrap();
        let mut t = TestPipeline::builder();
        let err = t
            .start_plugin("prometheus", &mut plugin)
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "{err}");
        assert!(plugin.local_addr().is_none());
    }
}
