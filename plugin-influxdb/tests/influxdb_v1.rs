//! The plugin against a real InfluxDB 1.x (`influxd` 1.6.7 from Debian),
//! v1 API: every point arrives with its tags and values, through a server
//! down at start, a server killed and restarted mid-run, and a full buffer.
//!
//! Needs the test servers: `scripts/install-test-servers.sh`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use plugin_influxdb::http::ApiVersion;
use plugin_influxdb::InfluxDbConfig;

const DB: &str = "alumet_test";

fn v1_config(url: &str) -> InfluxDbConfig {
    InfluxDbConfig {
        api: ApiVersion::V1,
        database: DB.into(),
        ..test_config(url)
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

/// Checks that the server holds exactly the points of polls `0..polls`.
fn assert_all_points(server: &InfluxServer, workload: Workload, polls: u64) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let mut expected_energy = BTreeMap::new();
    let mut expected_memory = BTreeMap::new();
    for poll in 0..polls {
        let time = (workload.start_ms + poll) * 1_000_000;
        for i in 0..workload.per_poll as u64 {
            if i % 2 == 0 {
                expected_energy.insert((time, i.to_string()), Workload::energy_value(poll, i));
            } else {
                let exe = NASTY_NAMES[(i as usize / 2) % NASTY_NAMES.len()];
                expected_memory.insert(
                    (time, (1000 + i).to_string()),
                    (poll * 1_000_000 + i, exe.to_owned()),
                );
            }
        }
    }

    let mut energy = BTreeMap::new();
    for row in server.rows(DB, ENERGY) {
        assert_eq!(text(&row["resource_kind"]), "cpu_package");
        assert_eq!(text(&row["consumer_kind"]), "local_machine");
        assert!(
            !row.contains_key("consumer_id"),
            "empty ids are omitted: {row:?}"
        );
        assert_eq!(text(&row["domain"]), "package");
        assert_eq!(text(&row["host"]), host);
        let key = (row["time"].as_u64().unwrap(), text(&row["resource_id"]));
        let old = energy.insert(key, row["value"].as_f64().unwrap());
        assert!(old.is_none(), "duplicate row {row:?}");
    }
    assert_eq!(energy.len(), expected_energy.len(), "energy points");
    assert_eq!(energy, expected_energy);

    let mut memory = BTreeMap::new();
    for row in server.rows(DB, MEMORY) {
        assert_eq!(text(&row["resource_kind"]), "local_machine");
        assert!(!row.contains_key("resource_id"));
        assert_eq!(text(&row["consumer_kind"]), "process");
        let key = (row["time"].as_u64().unwrap(), text(&row["consumer_id"]));
        memory.insert(key, (row["value"].as_u64().unwrap(), text(&row["exe"])));
    }
    assert_eq!(memory.len(), expected_memory.len(), "memory points");
    assert_eq!(memory, expected_memory);
}

#[test]
fn every_point_arrives_with_its_tags_values_and_escaped_names() {
    let server = InfluxServer::start(DB);
    let workload = Workload::new(40);
    let h = start_harness(workload, v1_config(&server.url()));
    h.poll(25);
    let (polls, plugin, _) = h.finish();
    assert_all_points(&server, workload, polls);
    let stats = plugin.stats().snapshot();
    assert_eq!(stats.received_points, polls * 40);
    assert_eq!(stats.delivered_points, polls * 40);
    assert_eq!(stats.dropped_points(), 0);
}

#[test]
fn attributes_written_as_string_fields_read_back_the_same() {
    let server = InfluxServer::start(DB);
    let workload = Workload::new(12);
    let config = InfluxDbConfig {
        attributes_as: plugin_influxdb::line_protocol::AttributeRole::Field,
        tag_attributes: vec!["domain".into()],
        ..v1_config(&server.url())
    };
    let h = start_harness(workload, config);
    h.poll(5);
    let (polls, _, _) = h.finish();
    assert_all_points(&server, workload, polls);
    // `exe` is a field now, not a tag.
    let tags = server.query(DB, &format!("SHOW TAG KEYS FROM {MEMORY}"));
    assert!(!tags.to_string().contains("\"exe\""), "{tags}");
    let fields = server.query(DB, &format!("SHOW FIELD KEYS FROM {MEMORY}"));
    assert!(
        fields.to_string().contains("[\"exe\",\"string\"]"),
        "{fields}"
    );
}

#[test]
fn server_down_at_start_then_started_loses_nothing() {
    let mut server = InfluxServer::start(DB);
    server.kill();
    let workload = Workload::new(20);
    let h = start_harness(workload, v1_config(&server.url()));
    h.poll(10);
    h.wait_for("a failed attempt", |s| s.retries > 0);
    assert_eq!(h.plugin.stats().snapshot().delivered_points, 0);
    server.restart();
    h.poll(10);
    let (polls, plugin, _) = h.finish();
    assert_all_points(&server, workload, polls);
    let stats = plugin.stats().snapshot();
    assert!(stats.retries > 0, "the outage was seen: {stats:?}");
    assert_eq!(stats.delivered_points, polls * 20);
    assert_eq!(stats.dropped_points(), 0);
}

#[test]
fn server_killed_and_restarted_mid_run_loses_nothing() {
    let mut server = InfluxServer::start(DB);
    let workload = Workload::new(20);
    let h = start_harness(workload, v1_config(&server.url()));
    h.poll(10);
    h.wait_delivered(200);
    server.kill();
    h.poll(10);
    h.wait_for("a failed attempt", |s| s.retries > 0);
    server.restart();
    h.poll(10);
    let (polls, plugin, _) = h.finish();
    assert_all_points(&server, workload, polls);
    let stats = plugin.stats().snapshot();
    assert_eq!(stats.delivered_points, polls * 20);
    assert_eq!(stats.dropped_points(), 0);
}

#[test]
fn full_buffer_drops_the_oldest_points_and_counts_them_exactly() {
    let mut server = InfluxServer::start(DB);
    server.kill();
    let workload = Workload::new(10);
    let config = InfluxDbConfig {
        batch_size: 10,
        max_buffer_points: 100,
        ..v1_config(&server.url())
    };
    let h = start_harness(workload, config);
    h.poll(60);
    h.wait_received_all(10);
    let during = h.plugin.stats().snapshot();
    // Memory is bounded: the queue plus the batch being retried.
    assert!(during.peak_buffered_points <= 100 + 10, "{during:?}");
    assert!(during.peak_buffered_points >= 100, "{during:?}");
    // 61 polls of 10 points went in (plus the pipeline's own drop reports);
    // what is kept is the queue (100), the batch being retried (10), and the
    // few points not yet sealed into a batch: the oldest were dropped. The
    // exact accounting is checked at the end.
    let kept = during.received_points - during.buffer_dropped_points;
    assert!(kept <= 150, "{during:?}");
    assert!(during.buffer_dropped_points >= 610 - 150, "{during:?}");
    server.restart();
    let (polls, plugin, pipeline_drops) = h.finish();
    let end = plugin.stats().snapshot();
    // The output's own losses are counted by the pipeline too, which reports
    // them downstream as `alumet_dropped_points` points: this output gets
    // some of those besides the workload's points.
    assert_eq!(pipeline_drops, end.dropped_points());
    assert!(end.received_points >= polls * 10);
    assert_eq!(end.undelivered_at_shutdown_points, 0);
    // Exact: every point not counted as dropped is in the database.
    let rows = server.rows(DB, ENERGY).len()
        + server.rows(DB, MEMORY).len()
        + server.rows(DB, "alumet_dropped_points").len();
    assert_eq!(rows as u64, end.delivered_points);
    assert_eq!(
        end.delivered_points + end.buffer_dropped_points,
        end.received_points
    );
    // The newest points survived: the last poll (at shutdown) is there.
    let last = (workload.start_ms + polls - 1) * 1_000_000;
    let answer = server.query(
        DB,
        &format!("SELECT count(value) FROM {ENERGY} WHERE time = {last}"),
    );
    assert_eq!(answer["results"][0]["series"][0]["values"][0][1], 5);
}

#[test]
fn the_escaping_fixtures_parse_in_influxd_and_read_back_unescaped() {
    let server = InfluxServer::start(DB);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // number_edges holds a timestamp beyond 2262 and a field type change on
    // purpose: InfluxDB refuses those, as documented in the README.
    for case in ["rapl_and_processes", "escaping", "attributes_as_fields"] {
        let body = std::fs::read_to_string(fixtures.join(case).join("expected.lp")).unwrap();
        let status = server.write(DB, &body);
        assert_eq!(status, 204, "case {case}");
    }
    let rows = server.rows(DB, "process_cpu_time");
    assert_eq!(rows.len(), 8);
    let by_pid = |pid: &str| {
        rows.iter()
            .find(|r| r["consumer_id"] == pid)
            .unwrap_or_else(|| panic!("no row for pid {pid}: {rows:?}"))
    };
    assert_eq!(by_pid("1")["data center"], "eu,west=1");
    assert_eq!(by_pid("1")["location place"], "us-midwest");
    assert_eq!(by_pid("2")["location"], "us,midwest");
    assert_eq!(by_pid("3")["temp=rature"], "82");
    assert_eq!(by_pid("4")["resource_id"], "sd a,1=x");
    assert_eq!(by_pid("4")["resource_kind"], "my disk");
    assert_eq!(by_pid("4")["exe"], "my prog");
    assert_eq!(by_pid("5")["comment"], "too \"hot\" C:\\temp");
    assert_eq!(by_pid("7")["exe"], "🍭");
    assert_eq!(by_pid("7")["comment"], "Launch 🚀");
    assert!(!by_pid("8").contains_key("exe"));
}
