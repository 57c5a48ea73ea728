//! The token never reaches the log, even when the server echoes it, and a
//! refusal is logged once per distinct HTTP status. Its own test binary,
//! because it installs a capturing logger for the whole process.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Mutex;

use common::*;
use plugin_influxdb::InfluxDbConfig;

static LOGS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

/// ureq-proto's wire dump: raw request and response bytes (headers
/// included), at trace level only. The agent's log filter must keep that
/// target below trace; everything else must be clean at every level.
const WIRE_DUMP_TARGET: &str = "ureq_proto";

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if record.target().starts_with(WIRE_DUMP_TARGET) && record.level() == log::Level::Trace {
            return;
        }
        LOGS.lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

const TOKEN: &str = "tok-SECRET-42";

#[test]
fn the_token_is_redacted_and_refusals_are_logged_once_per_status() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let server = FakeServer::start(|n| match n {
        0 => (503, Vec::new(), format!("overloaded, token {TOKEN}")),
        1..=3 => (
            401,
            Vec::new(),
            format!("authorization failed for token {TOKEN}"),
        ),
        4 => (403, Vec::new(), format!("{TOKEN} may not write")),
        _ => ok(),
    });
    let config = InfluxDbConfig {
        token: TOKEN.into(),
        batch_size: 10,
        ..test_config(&server.url())
    };
    let h = start_harness(Workload::new(10), config);
    h.poll(6);
    let (_, plugin, _) = h.finish();
    assert_eq!(
        server.received()[0].headers["authorization"],
        format!("Token {TOKEN}")
    );
    assert_eq!(plugin.stats().snapshot().rejected_points, 40);

    let logs = LOGS.lock().unwrap().clone();
    assert!(!logs.is_empty());
    for (_, message) in &logs {
        assert!(!message.contains(TOKEN), "the token leaked into: {message}");
    }
    let errors_401 = logs
        .iter()
        .filter(|(l, m)| *l == log::Level::Error && m.contains("HTTP 401"))
        .count();
    assert_eq!(errors_401, 1, "{logs:#?}");
    let errors_403 = logs
        .iter()
        .filter(|(l, m)| *l == log::Level::Error && m.contains("HTTP 403"))
        .count();
    assert_eq!(errors_403, 1, "{logs:#?}");
    assert!(logs.iter().any(|(_, m)| m.contains("<redacted>")));
}
