//! A receiver that echoes the request headers (the API key) in its
//! refusals: the key reaches the receiver but never the log, and each
//! refusal status is logged once.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use plugin_opentelemetry::OpenTelemetryConfig;

const KEY: &str = "k3y-SECRET-42";

#[test]
fn the_api_key_is_redacted_and_refusals_are_logged_once_per_status() {
    capture_logs();
    let receiver = Receiver::start_with("echo:503,echo:401,echo:401,echo:403", None);
    let config = OpenTelemetryConfig {
        headers: format!("api-key={KEY}"),
        batch_size: 10,
        ..test_config(&receiver.endpoint())
    };
    let h = start_harness(Workload::new(10), config);
    h.poll(4);
    let (_, plugin, _) = h.finish();
    assert_eq!(receiver.requests()[0]["status"], 503);
    assert_eq!(plugin.stats().snapshot().rejected_points, 30);
    let logs = LOGS.lock().unwrap().clone();
    for (_, message) in &logs {
        assert!(!message.contains(KEY), "the key leaked into: {message}");
    }
    let port = receiver.port.to_string();
    let about = |status: &str| {
        errors_about(&port)
            .iter()
            .filter(|m| m.contains(status))
            .count()
    };
    assert_eq!((about("HTTP 401"), about("HTTP 403")), (1, 1), "{logs:#?}");
    assert!(
        logs.iter().any(|(_, m)| m.contains("<redacted>")),
        "{logs:#?}"
    );
}
