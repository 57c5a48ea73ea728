//! Bounded state: series of a process that ended leave after `series_ttl`
//! (and are counted as expired), and `max_series` holds with exact counts
//! of the refused series and points, in the stats and on the endpoint.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use alumet::measurement::{Resource, ResourceConsumer};
use common::*;
use plugin_prometheus::PrometheusConfig;

fn process(pid: u32) -> Vec<Spec> {
    vec![
        spec("cpu_usage", 25.0)
            .by(ResourceConsumer::Process { pid })
            .attr("exe", "worker"),
        spec("energy", 0.5)
            .on(Resource::CpuPackage { id: 0 })
            .by(ResourceConsumer::Process { pid })
            .attr("domain", "package"),
    ]
}

fn has_pid(body: &str, pid: u32) -> bool {
    let label = format!("consumer_id=\"{pid}\"");
    samples(body).iter().any(|l| l.contains(&label))
}

#[test]
fn series_of_a_process_that_ended_disappear_after_series_ttl() {
    // Long enough that process 200, pushed every loop turn below, never
    // expires too on a loaded machine (a turn is a push and a scrape; at
    // 600 ms a slow turn once let its series expire as well).
    let ttl = Duration::from_secs(2);
    let endpoint = Endpoint::start(PrometheusConfig {
        series_ttl: ttl,
        ..Default::default()
    });
    let mut both = process(100);
    both.extend(process(200));
    // Taken before the last update of 100 (its points' time and the store's
    // clock come after it), so that the elapsed time below is never less
    // than the series' true age.
    let last_update_of_100 = Instant::now();
    endpoint.push_and_wait(both, |b| has_pid(b, 100) && has_pid(b, 200));
    // From now on, only process 200 is measured.
    let gone = loop {
        let body = endpoint.push_and_wait(process(200), |b| has_pid(b, 200));
        let elapsed = last_update_of_100.elapsed();
        if !has_pid(&body, 100) {
            break elapsed;
        }
        assert!(
            elapsed < Duration::from_secs(15),
            "process 100 never left:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Never before its TTL (the update happened before the instant measured).
    assert!(
        gone >= ttl,
        "gone after {gone:?}, before the TTL of {ttl:?}"
    );
    let body = endpoint
        .scrape_until(|b| value_of(b, "alumet_prometheus_expired_series_total") == Some(2.0));
    assert_eq!(
        value_of(&body, "alumet_prometheus_series"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(endpoint.plugin.stats().expired_series, 2);
    endpoint.stop();
}

fn package(id: u32) -> Spec {
    spec("energy", 1.0)
        .on(Resource::CpuPackage { id })
        .attr("domain", "package")
}

#[test]
fn max_series_holds_and_every_refusal_is_counted_exactly() {
    let endpoint = Endpoint::start(PrometheusConfig {
        max_series: 3,
        ..Default::default()
    });
    let energy_series = |b: &str| {
        samples(b)
            .iter()
            .filter(|l| l.starts_with("alumet_energy_joules_total{"))
            .count()
    };
    // 5 new series, room for 3: 2 refused (2 points).
    let batch: Vec<Spec> = (0..5).map(package).collect();
    endpoint.push_and_wait(batch.clone(), |b| {
        value_of(b, "alumet_prometheus_dropped_points_total") == Some(2.0)
    });
    // The same 5 again: the same 2 series refused (counted once), 2 more points.
    endpoint.push_and_wait(batch, |b| {
        value_of(b, "alumet_prometheus_dropped_points_total") == Some(4.0)
    });
    // 3 known + 2 refused again + 2 new ones refused.
    let batch: Vec<Spec> = (0..7).map(package).collect();
    let body = endpoint.push_and_wait(batch, |b| {
        value_of(b, "alumet_prometheus_dropped_points_total") == Some(8.0)
    });
    assert_eq!(energy_series(&body), 3, "{body}");
    assert_eq!(
        value_of(&body, "alumet_prometheus_dropped_series_total"),
        Some(4.0),
        "{body}"
    );
    let s = endpoint.plugin.stats();
    assert_eq!((s.dropped_series, s.dropped_points), (4, 8));
    // The kept series go on counting.
    assert_eq!(
        value_of(
            &body,
            "alumet_energy_joules_total{resource_kind=\"cpu_package\",resource_id=\"0\",consumer_kind=\"local_machine\",domain=\"package\"}"
        ),
        Some(3.0)
    );
    // The loss reaches the pipeline's own counter (reported with the next
    // buffer through the pipeline), which the cap never hides.
    let body = endpoint.push_and_wait(vec![package(0)], |b| {
        value_of(
            b,
            "alumet_dropped_points_total{resource_kind=\"local_machine\",consumer_kind=\"alumet\",consumer_id=\"pipeline\",stage=\"pipeline\"}",
        ) == Some(8.0)
    });
    assert_eq!(energy_series(&body), 3);
    assert_eq!(endpoint.plugin.stats().dropped_points, 8);
    endpoint.stop();
}
