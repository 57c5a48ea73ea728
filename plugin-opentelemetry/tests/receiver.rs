//! Against the Python receiver, which decodes with the reference
//! `opentelemetry-proto` definitions: every point arrives once with its
//! attributes, types, units and the resource; delta metrics become
//! cumulative running totals (or delta sums), gauges stay gauges; JSON
//! bodies decode too; a partial success counts the refused points.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use plugin_opentelemetry::{BodyFormat, OpenTelemetryConfig, Temporality};
use serde_json::Value;

const PER_POLL: usize = 30;
const POLLS: usize = 12;

/// Polls POLLS times (the pipeline adds one poll at start and one at
/// shutdown); returns the workload, the polls done and the points received.
fn run(config: OpenTelemetryConfig, receiver: &Receiver) -> (Workload, usize, Vec<Value>) {
    let workload = Workload::new(PER_POLL);
    let h = start_harness(workload, config);
    h.poll(POLLS);
    let (polls, plugin, pipeline_drops) = h.finish();
    let s = plugin.stats().snapshot();
    assert!(polls as usize >= POLLS);
    assert_eq!(s.received_points, polls * PER_POLL as u64);
    assert_eq!(s.delivered_points, s.received_points, "{s:?}");
    assert_eq!((s.dropped_points(), pipeline_drops), (0, 0));
    (workload, polls as usize, receiver.accepted_points())
}

/// Checks every point against the workload: once each, attributes, types, units.
fn check_points(workload: &Workload, polls: usize, points: &[Value], temporality: Temporality) {
    assert_eq!(points.len(), polls * PER_POLL);
    let mut seen = BTreeMap::new();
    for p in points {
        *seen.entry(point_key(p)).or_insert(0) += 1;
        let r = &p["resource"];
        assert_eq!(r["service.name"], "alumet", "{p}");
        assert!(
            r["service.version"].is_string() && r["host.name"].is_string(),
            "{p}"
        );
        assert_eq!(p["scope"], "alumet");
        match p["metric"].as_str().unwrap() {
            ENERGY => {
                assert_eq!(
                    (p["unit"].as_str(), p["type"].as_str()),
                    (Some("J"), Some("sum"))
                );
                assert_eq!(p["monotonic"], true);
                assert_eq!(p["value_type"], "as_double");
                assert_eq!(p["attributes"]["domain"], "package");
                assert_eq!(p["attributes"]["resource_kind"], "cpu_package");
                assert_eq!(p["attributes"]["consumer_kind"], "local_machine");
            }
            MEMORY => {
                assert_eq!(
                    (p["unit"].as_str(), p["type"].as_str()),
                    (Some("By"), Some("gauge"))
                );
                assert_eq!(p["value_type"], "as_int");
                assert_eq!(p["attributes"]["exe"], "a b,c=d");
                assert_eq!(p["attributes"]["threads"], 3);
                assert_eq!(p["attributes"]["consumer_kind"], "process");
                let poll = (p["time"].as_u64().unwrap() - workload.start_ns) / 1_000_000;
                let pid: u64 = p["attributes"]["consumer_id"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(
                    p["value"].as_u64().unwrap(),
                    poll * 1_000_000 + (pid - 1000)
                );
            }
            SWITCHES => {
                assert_eq!(p["unit"], "{switch}");
                assert_eq!(
                    (p["type"].as_str(), p["value_type"].as_str()),
                    (Some("sum"), Some("as_int"))
                );
            }
            other => panic!("unexpected metric {other}"),
        }
        if p["type"] == "sum" {
            let expected = match temporality {
                Temporality::Cumulative => "cumulative",
                Temporality::Delta => "delta",
            };
            assert_eq!(p["temporality"], expected, "{p}");
            assert!(p["start"].as_u64().unwrap() <= p["time"].as_u64().unwrap());
        }
    }
    assert!(seen.values().all(|n| *n == 1), "a point arrived twice");

    // Energy values: running totals per package (cumulative) or the deltas.
    let mut energy: Vec<&Value> = points.iter().filter(|p| p["metric"] == ENERGY).collect();
    energy.sort_by_key(|p| p["time"].as_u64());
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_time: BTreeMap<String, u64> = BTreeMap::new();
    for p in energy {
        let id = p["attributes"]["resource_id"].as_str().unwrap().to_owned();
        let i: u64 = id.parse().unwrap();
        let poll = (p["time"].as_u64().unwrap() - workload.start_ns) / 1_000_000;
        let delta = Workload::energy(poll, i);
        let total = totals.entry(id.clone()).or_default();
        *total += delta;
        let value = p["value"].as_f64().unwrap();
        match temporality {
            Temporality::Cumulative => {
                assert!(
                    (value - *total).abs() < 1e-9,
                    "{value} != running total {total}"
                );
                assert_eq!(p["start"], p_first_start(points, &id));
            }
            Temporality::Delta => {
                assert_eq!(value, delta);
                if let Some(prev) = last_time.get(&id) {
                    assert_eq!(
                        p["start"].as_u64(),
                        Some(*prev),
                        "start = the previous point"
                    );
                }
            }
        }
        last_time.insert(id, p["time"].as_u64().unwrap());
    }
}

/// The start time of the first energy point of package `id`.
fn p_first_start(points: &[Value], id: &str) -> Value {
    points
        .iter()
        .filter(|p| p["metric"] == ENERGY && p["attributes"]["resource_id"] == id)
        .min_by_key(|p| p["time"].as_u64())
        .map(|p| p["start"].clone())
        .unwrap()
}

#[test]
fn every_point_arrives_once_as_protobuf_with_cumulative_sums() {
    let receiver = Receiver::start();
    let config = OpenTelemetryConfig {
        headers: "api-key=k%2Cey,x-tenant=t1".into(),
        ..test_config(&receiver.endpoint())
    };
    let (workload, polls, points) = run(config, &receiver);
    check_points(&workload, polls, &points, Temporality::Cumulative);
    let requests = receiver.requests();
    let r = &requests[0];
    assert_eq!(r["path"], "/v1/metrics");
    assert_eq!(r["content_type"], "application/x-protobuf");
    assert_eq!(r["headers"]["api-key"], "k,ey");
    assert_eq!(r["headers"]["x-tenant"], "t1");
    // Cumulative sums start when the agent started: before the first point here.
    assert!(requests.iter().any(|r| r["gzip"] == true) || points.len() < 100);
}

#[test]
fn delta_temporality_and_json_bodies_decode_too() {
    let receiver = Receiver::start();
    let config = OpenTelemetryConfig {
        protocol: BodyFormat::Json,
        temporality: Temporality::Delta,
        ..test_config(&receiver.endpoint())
    };
    let (workload, polls, points) = run(config, &receiver);
    check_points(&workload, polls, &points, Temporality::Delta);
    assert_eq!(receiver.requests()[0]["content_type"], "application/json");
}

#[test]
fn a_partial_success_counts_the_refused_points() {
    let receiver = Receiver::start_with("200,partial:7", None);
    let config = OpenTelemetryConfig {
        batch_size: 30,
        ..test_config(&receiver.endpoint())
    };
    let workload = Workload::new(30);
    let h = start_harness(workload, config);
    h.poll(4);
    let (polls, plugin, pipeline_drops) = h.finish();
    let s = plugin.stats().snapshot();
    // The loss is reported to the pipeline, which may send one
    // alumet_dropped_points point about it to this output too.
    assert!(
        (polls * 30..=polls * 30 + 1).contains(&s.received_points),
        "{s:?}"
    );
    assert_eq!(s.rejected_points, 7);
    assert_eq!(s.delivered_points, s.received_points - 7);
    assert_eq!(pipeline_drops, 7);
}
