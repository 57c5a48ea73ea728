//! Failure handling against a scripted local HTTP server: rejected batches,
//! Retry-After, server errors, dropped connections, shutdown with a server
//! that never recovers, and what the requests look like (path, auth, gzip).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use plugin_influxdb::http::ApiVersion;
use plugin_influxdb::InfluxDbConfig;

fn small_batches(url: &str) -> InfluxDbConfig {
    InfluxDbConfig {
        batch_size: 10,
        ..test_config(url)
    }
}

#[test]
fn a_rejected_batch_is_dropped_and_counted_and_the_rest_arrives() {
    let server = FakeServer::start(|n| {
        if n == 3 {
            (
                400,
                Vec::new(),
                r#"{"error":"unable to parse line"}"#.into(),
            )
        } else {
            ok()
        }
    });
    let h = start_harness(Workload::new(10), small_batches(&server.url()));
    h.poll(20);
    let (polls, plugin, pipeline_drops) = h.finish();
    let stats = plugin.stats().snapshot();
    let received = server.received();
    // The refusal is reported to the pipeline, which may send one
    // `alumet_dropped_points` point about it to this output as well.
    let total = stats.received_points;
    assert!(
        (polls * 10..=polls * 10 + 1).contains(&total),
        "{total} points for {polls} polls"
    );
    // Every point reached the server exactly once; one batch of 10 was refused.
    assert_eq!(
        received.iter().map(Received::points).sum::<usize>() as u64,
        total
    );
    assert_eq!(received.len() as u64, stats.requests);
    assert_eq!(stats.retries, 0, "a 400 is not retried");
    assert_eq!(stats.rejected_points, received[3].points() as u64);
    assert_eq!(stats.rejected_points, 10);
    assert_eq!(stats.delivered_points, total - 10);
    assert_eq!(plugin.dropped_points(), 10);
    assert_eq!(
        pipeline_drops, 10,
        "the loss is counted by the pipeline too"
    );
}

#[test]
fn retry_after_is_honoured_on_503_and_429() {
    let server = FakeServer::start(|n| match n {
        0 => (503, vec![("Retry-After".into(), "1".into())], "busy".into()),
        1 => (
            429,
            vec![("Retry-After".into(), "1".into())],
            "slow down".into(),
        ),
        _ => ok(),
    });
    let h = start_harness(Workload::new(4), small_batches(&server.url()));
    h.poll(1);
    h.wait_for("the first batch delivered", |s| s.delivered_points >= 4);
    let (_, plugin, _) = h.finish();
    let received = server.received();
    assert!(received.len() >= 3);
    // The same batch, sent again no sooner than the server asked.
    assert_eq!(received[0].body, received[1].body);
    assert_eq!(received[1].body, received[2].body);
    for pair in received[..3].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    }
    assert_eq!(plugin.dropped_points(), 0);
}

#[test]
fn server_errors_and_dropped_connections_are_retried_until_delivered() {
    let server = FakeServer::start(|n| match n {
        0 => (500, Vec::new(), "internal error".into()),
        1 => (0, Vec::new(), String::new()),
        2 => (502, Vec::new(), "bad gateway".into()),
        _ => ok(),
    });
    let h = start_harness(Workload::new(6), small_batches(&server.url()));
    h.poll(5);
    let (polls, plugin, _) = h.finish();
    let stats = plugin.stats().snapshot();
    let received = server.received();
    assert_eq!(received[0].body, received[1].body);
    assert_eq!(received[1].body, received[2].body);
    assert_eq!(received[2].body, received[3].body);
    assert_eq!(stats.retries, 3);
    assert_eq!(stats.delivered_points, polls * 6);
    assert_eq!(stats.dropped_points(), 0);
    // Delivered once each, after the retries.
    let delivered: usize = received[3..].iter().map(Received::points).sum();
    assert_eq!(delivered as u64, polls * 6);
}

#[test]
fn at_shutdown_what_cannot_be_delivered_in_time_is_counted() {
    let server = FakeServer::start(|_| (503, Vec::new(), "down for maintenance".into()));
    let config = InfluxDbConfig {
        shutdown_timeout: Duration::from_millis(300),
        ..small_batches(&server.url())
    };
    let h = start_harness(Workload::new(10), config);
    h.poll(5);
    let (polls, plugin, _) = h.finish();
    let stats = plugin.stats().snapshot();
    assert_eq!(stats.received_points, polls * 10);
    assert_eq!(stats.delivered_points, 0);
    assert_eq!(stats.undelivered_at_shutdown_points, polls * 10);
    assert_eq!(stats.buffered_points, 0);
}

#[test]
fn v2_requests_carry_the_path_the_token_and_gzip() {
    let server = FakeServer::start(|_| ok());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-123\n").unwrap();
    let config = InfluxDbConfig {
        api: ApiVersion::V2,
        org: "o 1".into(),
        bucket: "b".into(),
        token_file: token_file.display().to_string(),
        ..test_config(&server.url())
    };
    // 200 points of ~100 bytes: above the gzip threshold.
    let h = start_harness(Workload::new(200), config);
    let (polls, plugin, _) = h.finish();
    let received = server.received();
    let first = &received[0];
    assert_eq!(first.path, "/api/v2/write?org=o%201&bucket=b&precision=ns");
    assert_eq!(first.headers["authorization"], "Token tok-123");
    assert_eq!(first.headers["content-encoding"], "gzip");
    assert!(first.body.starts_with("test_"), "{}", first.body);
    let points: usize = received.iter().map(Received::points).sum();
    assert_eq!(points as u64, polls * 200);
    assert_eq!(plugin.dropped_points(), 0);
}

#[test]
fn v1_requests_carry_the_database_and_basic_auth() {
    let server = FakeServer::start(|_| ok());
    let config = InfluxDbConfig {
        api: ApiVersion::V1,
        database: "telemetry".into(),
        retention_policy: "one_week".into(),
        username: "agent".into(),
        token: "pa:ss".into(),
        gzip: false,
        ..test_config(&server.url())
    };
    let h = start_harness(Workload::new(200), config);
    let _ = h.finish();
    let first = &server.received()[0];
    assert_eq!(first.path, "/write?db=telemetry&rp=one_week&precision=ns");
    // base64("agent:pa:ss")
    assert_eq!(first.headers["authorization"], "Basic YWdlbnQ6cGE6c3M=");
    assert!(!first.headers.contains_key("content-encoding"));
}

/// The output's own figures reach the server as `output_*` points: the
/// retries of a failing server, by output name, and what was delivered.
#[test]
fn the_outputs_own_retries_and_deliveries_are_exported() {
    let server = FakeServer::start(|n| match n {
        0 | 1 => (500, Vec::new(), "internal error".into()),
        _ => ok(),
    });
    let config = InfluxDbConfig {
        // Read only when the test triggers every source.
        own_metrics_interval: Duration::from_secs(3600),
        ..small_batches(&server.url())
    };
    let h = start_harness(Workload::new(6), config);
    h.poll(1);
    h.wait_for("the first batch delivered", |s| s.delivered_points >= 6);
    // This poll's `output_*` points cover the two retries and the delivery.
    h.poll(1);
    h.wait_for("every point delivered", |s| {
        s.buffered_points == 0 && s.delivered_points >= 12 + 8
    });
    let (_, plugin, _) = h.finish();
    let stats = plugin.stats().snapshot();
    assert_eq!(stats.retries, 2);
    let lines: Vec<String> = server
        .received()
        .iter()
        .skip(2)
        .flat_map(|r| r.body.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let field_sum = |metric: &str, extra: &str| -> u64 {
        lines
            .iter()
            .filter(|l| {
                l.starts_with(&format!("{metric},"))
                    && l.contains("output=influxdb")
                    && l.contains(extra)
            })
            .map(|l| {
                let fields = l.split(' ').nth(1).unwrap();
                let value = fields
                    .split('=')
                    .nth(1)
                    .unwrap()
                    .trim_end_matches('u')
                    .trim_end_matches('i');
                value.parse::<u64>().unwrap_or_else(|_| panic!("{l}"))
            })
            .sum()
    };
    // Deltas: their sums are what the counters said at the last reading
    // (the source is also read once at start and once at the end).
    assert_eq!(field_sum("output_retries", ""), 2, "{lines:#?}");
    let requests = field_sum("output_requests", "");
    assert!(
        (3..=stats.requests).contains(&requests),
        "{requests} {lines:#?}"
    );
    let delivered = field_sum("output_delivered_points", "");
    assert!(
        (6..=stats.delivered_points).contains(&delivered),
        "{delivered} {lines:#?}"
    );
    let lost = lines
        .iter()
        .filter(|l| l.starts_with("output_lost_points,"));
    assert!(
        lost.clone().count() >= 8,
        "four reasons, at least at two readings"
    );
    assert_eq!(field_sum("output_lost_points", ""), 0, "nothing lost");
}
