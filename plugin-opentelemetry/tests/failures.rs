//! Delivery failures against the Python receiver: down at start, killed
//! and restarted mid-run, a 400 for one batch, a 429 with Retry-After, and
//! a tiny buffer whose drop count must be exact. The shared delivery code
//! (`alumet-delivery`) does the work; these check it through this output.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use plugin_opentelemetry::OpenTelemetryConfig;

fn small_batches(endpoint: &str) -> OpenTelemetryConfig {
    OpenTelemetryConfig {
        batch_size: 10,
        ..test_config(endpoint)
    }
}

/// Distinct points the receiver accepted.
fn distinct(receiver: &Receiver) -> BTreeSet<(String, u64, String, String, String, String)> {
    receiver.accepted_points().iter().map(point_key).collect()
}

#[test]
fn receiver_down_at_start_then_killed_and_restarted_loses_nothing() {
    let mut receiver = Receiver::not_started("");
    let h = start_harness(Workload::new(10), small_batches(&receiver.endpoint()));
    h.poll(5);
    h.wait_for("a failed attempt", |s| s.retries >= 1);
    receiver.restart();
    h.wait_for("delivery after the start", |s| s.delivered_points >= 60);
    receiver.kill();
    h.poll(5);
    h.wait_for("a failed attempt while down", |s| {
        s.retries >= 2 && s.received_points >= 110
    });
    receiver.restart();
    h.poll(3);
    let (polls, plugin, pipeline_drops) = h.finish();
    let s = plugin.stats().snapshot();
    assert_eq!(s.received_points, polls * 10);
    assert_eq!(s.delivered_points, s.received_points, "{s:?}");
    assert_eq!((s.dropped_points(), pipeline_drops), (0, 0));
    // At least once: a batch whose answer was lost may come twice, but every point came.
    assert_eq!(distinct(&receiver).len() as u64, s.received_points);
}

#[test]
fn a_400_drops_exactly_that_batch() {
    let receiver = Receiver::start_with("200,200,200,400", None);
    let h = start_harness(Workload::new(10), small_batches(&receiver.endpoint()));
    h.poll(8);
    let (polls, plugin, pipeline_drops) = h.finish();
    let s = plugin.stats().snapshot();
    let requests = receiver.requests();
    let refused = &requests[3];
    assert_eq!(refused["status"], 400);
    let refused_points = refused["points"].as_array().unwrap().len() as u64;
    assert_eq!(refused_points, 10);
    assert_eq!(s.rejected_points, refused_points);
    assert_eq!(s.retries, 0, "a 400 is not retried");
    assert_eq!(
        pipeline_drops, refused_points,
        "the loss is the pipeline's too"
    );
    // The refusal may add one alumet_dropped_points point to the stream.
    assert!((polls * 10..=polls * 10 + 1).contains(&s.received_points));
    assert_eq!(s.delivered_points, s.received_points - refused_points);
    assert_eq!(distinct(&receiver).len() as u64, s.delivered_points);
}

#[test]
fn a_429_with_retry_after_waits_that_long() {
    let receiver = Receiver::start_with("429:2", None);
    let h = start_harness(Workload::new(4), small_batches(&receiver.endpoint()));
    h.poll(1);
    h.wait_for("the first batch delivered", |s| s.delivered_points >= 4);
    let (_, plugin, _) = h.finish();
    let requests = receiver.requests();
    assert_eq!(requests[0]["status"], 429);
    assert_eq!(requests[1]["status"], 200);
    let waited = requests[1]["at"].as_f64().unwrap() - requests[0]["at"].as_f64().unwrap();
    // The backoff alone would be 20 ms; Retry-After says 2 s.
    assert!(waited >= 1.9, "retried after {waited:.3} s");
    assert_eq!(
        requests[1]["points"], requests[0]["points"],
        "the same batch again"
    );
    assert_eq!(plugin.dropped_points(), 0);
}

#[test]
fn a_tiny_buffer_drops_the_oldest_and_counts_exactly() {
    let mut receiver = Receiver::not_started("");
    let config = OpenTelemetryConfig {
        max_buffer_points: 20,
        retry_initial_delay: Duration::from_millis(500),
        retry_max_delay: Duration::from_millis(500),
        ..small_batches(&receiver.endpoint())
    };
    let h = start_harness(Workload::new(10), config);
    h.poll(12);
    h.wait_for("evictions", |s| {
        s.buffer_dropped_points > 0 && s.received_points >= 130
    });
    receiver.restart();
    let (_, plugin, pipeline_drops) = h.finish();
    let s = plugin.stats().snapshot();
    assert!(s.buffer_dropped_points >= 80, "{s:?}");
    assert_eq!(s.dropped_points(), s.buffer_dropped_points);
    assert_eq!(
        pipeline_drops, s.buffer_dropped_points,
        "exact, and the pipeline's count"
    );
    assert_eq!(
        s.delivered_points + s.buffer_dropped_points,
        s.received_points
    );
    assert_eq!(distinct(&receiver).len() as u64, s.delivered_points);
    assert!(s.peak_buffered_points <= 30, "{s:?}");
}
