//! The disk buffer (`buffer_dir`) against a scripted local server: an
//! outage longer than the memory buffer loses nothing, and what is left at
//! a shutdown during an outage is delivered by the next start, exactly once.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use plugin_influxdb::InfluxDbConfig;

/// A server down until `up` is set; the index of its first accepted request.
fn switchable_server() -> (FakeServer, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let up = Arc::new(AtomicBool::new(false));
    let first_ok = Arc::new(AtomicUsize::new(usize::MAX));
    let (u, f) = (up.clone(), first_ok.clone());
    let server = FakeServer::start(move |n| {
        if u.load(Ordering::SeqCst) {
            f.fetch_min(n, Ordering::SeqCst);
            ok()
        } else {
            (503, Vec::new(), "down".into())
        }
    });
    (server, up, first_ok)
}

/// How many times each line was accepted by the server.
fn accepted_lines(server: &FakeServer, first_ok: usize) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    for r in server.received().iter().skip(first_ok) {
        for line in r.body.lines().filter(|l| !l.is_empty()) {
            *lines.entry(line.to_owned()).or_insert(0) += 1;
        }
    }
    lines
}

fn config(url: &str, dir: &std::path::Path) -> InfluxDbConfig {
    InfluxDbConfig {
        batch_size: 10,
        // Memory for two batches: the rest of the outage goes to disk.
        max_buffer_points: 20,
        buffer_dir: dir.to_str().unwrap().into(),
        ..test_config(url)
    }
}

#[test]
fn an_outage_longer_than_the_memory_buffer_loses_nothing() {
    let (server, up, first_ok) = switchable_server();
    let dir = tempfile::tempdir().unwrap();
    let h = start_harness(Workload::new(10), config(&server.url(), dir.path()));
    h.poll(30);
    h.wait_for("the memory buffer full", |s| s.buffered_points >= 200);
    h.wait_for("nothing dropped", |s| s.buffer_dropped_points == 0);
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files >= 10, "{files} batch files on disk");
    up.store(true, Ordering::SeqCst);
    h.wait_for("everything delivered", |s| {
        s.delivered_points >= 300 && s.buffered_points == 0
    });
    let (polls, plugin, pipeline_drops) = h.finish();
    let stats = plugin.stats().snapshot();
    assert_eq!(stats.dropped_points(), 0, "{stats:?}");
    assert_eq!(pipeline_drops, 0);
    assert_eq!(stats.delivered_points, polls * 10);
    let lines = accepted_lines(&server, first_ok.load(Ordering::SeqCst));
    assert_eq!(lines.len() as u64, polls * 10, "every point arrived");
    assert!(lines.values().all(|&n| n == 1), "and only once");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn points_left_at_a_shutdown_during_an_outage_are_delivered_by_the_next_start() {
    let (server, up, first_ok) = switchable_server();
    let dir = tempfile::tempdir().unwrap();
    let first_run = InfluxDbConfig {
        shutdown_timeout: Duration::from_millis(300),
        ..config(&server.url(), dir.path())
    };
    let h = start_harness(Workload::new(10), first_run);
    h.poll(12);
    let (polls_1, plugin, _) = h.finish();
    let stats = plugin.stats().snapshot();
    assert_eq!(stats.delivered_points, 0);
    assert_eq!(
        stats.dropped_points(),
        0,
        "kept on disk, not lost: {stats:?}"
    );
    let on_disk: usize = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
                - 1
        })
        .sum();
    assert_eq!(
        on_disk as u64,
        polls_1 * 10,
        "every point on disk: {stats:?}"
    );
    assert_eq!(stats.buffered_points, polls_1 * 10, "{stats:?}");
    drop(plugin);

    up.store(true, Ordering::SeqCst);
    let h = start_harness(Workload::new(10), config(&server.url(), dir.path()));
    h.poll(3);
    h.wait_for("both runs delivered", |s| {
        s.buffered_points == 0 && s.delivered_points >= 50
    });
    let (polls_2, plugin, _) = h.finish();
    let stats = plugin.stats().snapshot();
    assert_eq!(stats.dropped_points(), 0, "{stats:?}");
    assert_eq!(stats.received_points, (polls_1 + polls_2) * 10);
    assert_eq!(stats.delivered_points, (polls_1 + polls_2) * 10);
    let lines = accepted_lines(&server, first_ok.load(Ordering::SeqCst));
    assert_eq!(lines.len() as u64, (polls_1 + polls_2) * 10);
    assert!(lines.values().all(|&n| n == 1), "each point once");
    // The first run's points were sent first: they are the oldest.
    let first_body = &server.received()[first_ok.load(Ordering::SeqCst)].body;
    let second_run_first_ts = lines
        .keys()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert!(first_body
        .lines()
        .all(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap() < second_run_first_ts));
}

#[test]
fn a_buffer_dir_that_cannot_be_used_is_one_clear_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let config = InfluxDbConfig {
        buffer_dir: file.path().join("sub").to_str().unwrap().into(),
        ..test_config("http://127.0.0.1:9")
    };
    use alumet::plugin::PluginDefinition;
    let mut plugin = plugin_influxdb::InfluxDbPlugin::init(config).unwrap();
    let mut pipeline = alumet::testing::TestPipeline::builder();
    let err = pipeline
        .start_plugin("influxdb", &mut plugin)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot use the disk buffer"), "{err}");
    assert!(err.contains("buffer_dir"), "{err}");
}
