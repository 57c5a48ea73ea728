//! The bearer token and the basic password never reach the log, at any
//! level, whatever the requests (wrong credentials, right ones, garbage).
//! Its own test binary, because it installs a capturing logger for the
//! whole process.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Mutex;

use alumet::measurement::Resource;
use common::*;
use plugin_prometheus::PrometheusConfig;

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        // The test's own HTTP client (ureq) dumps its requests at trace
        // level; the agent caps that target, and it is not the server's log.
        if record.target().starts_with("ureq") {
            return;
        }
        LOGS.lock().unwrap().push(format!(
            "{} {}: {}",
            record.level(),
            record.target(),
            record.args()
        ));
    }
    fn flush(&self) {}
}

const TOKEN: &str = "tok-SECRET-42";
const PASSWORD: &str = "pw-SECRET-43";

fn exercise(endpoint: &Endpoint, right: &str) {
    endpoint.push(vec![spec("energy", 1.0).on(Resource::CpuPackage { id: 0 })]);
    let url = endpoint.url();
    for header in ["Bearer nope", "Basic bm9wZTpub3Bl", right, "garbage"] {
        let _ = get(&url, &[("Authorization", header)]);
    }
    let _ = raw(
        endpoint.addr,
        format!("GET /metrics HTTP/1.1\r\nAuthorization: {right}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let _ = raw(endpoint.addr, b"NOT HTTP AT ALL\r\n\r\n");
}

#[test]
fn credentials_never_reach_the_log() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    let config = PrometheusConfig {
        bearer_token: TOKEN.into(),
        ..Default::default()
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    let endpoint = Endpoint::start(config);
    exercise(&endpoint, &format!("Bearer {TOKEN}"));
    endpoint.stop();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, PASSWORD).unwrap();
    let endpoint = Endpoint::start(PrometheusConfig {
        basic_username: "me".into(),
        basic_password_file: file.display().to_string(),
        ..Default::default()
    });
    let credentials =
        alumet::secret::http_basic_authorization("me", &alumet::secret::Secret::new(PASSWORD));
    exercise(&endpoint, credentials.expose());
    endpoint.stop();

    let logs = LOGS.lock().unwrap();
    assert!(
        logs.iter().any(|l| l.contains("serving http://")),
        "{logs:#?}"
    );
    let base64_part = credentials.expose().trim_start_matches("Basic ");
    for line in logs.iter() {
        for secret in [TOKEN, PASSWORD, base64_part] {
            assert!(!line.contains(secret), "a secret reached the log: {line}");
        }
    }
}
