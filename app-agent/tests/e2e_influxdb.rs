//! The agent with `procfs`, `cgroups`, `csv` and `influxdb` (v1 API) writing
//! to a real InfluxDB 1.x started on a loopback port, stopped by SIGTERM:
//! every point the CSV output received is in the database too, with its
//! tags (a cgroup's classification among them, so a query groups by it).
//!
//! Needs `influxd`: run `scripts/install-test-servers.sh` (Debian package
//! `influxdb`). All traffic stays on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::influxd::Influxd;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const DB: &str = "alumet_e2e";

fn spawn_agent(dir: &Path, csv: &Path, port: u16) -> Child {
    let url = format!("plugins.influxdb.url=\"http://127.0.0.1:{port}\"");
    let database = format!("plugins.influxdb.database=\"{DB}\"");
    let sets = [
        "plugins.influxdb.api=\"v1\"",
        url.as_str(),
        database.as_str(),
        "plugins.influxdb.flush_interval=\"100ms\"",
        "plugins.procfs.system_poll_interval=\"100ms\"",
        "plugins.procfs.process_poll_interval=\"200ms\"",
        "plugins.procfs.flush_interval=\"200ms\"",
        "plugins.cgroups.poll_interval=\"200ms\"",
        "plugins.cgroups.flush_interval=\"200ms\"",
    ];
    common::agent_command()
        .env("RUST_LOG", "warn,plugin_influxdb=info")
        .current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .args(["--plugins", "procfs,cgroups,csv,influxdb"])
        .args(["--output-file", csv.to_str().unwrap()])
        .args(sets.iter().flat_map(|kv| ["--set", kv]))
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Rows per metric in the agent's CSV.
fn csv_counts(path: &Path) -> BTreeMap<String, u64> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap();
    let mut counts = BTreeMap::new();
    for record in reader.records() {
        let record = record.expect("every row parses");
        *counts.entry(record[1].to_owned()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn agent_writes_every_point_to_influxdb_v1_and_stops_cleanly_on_sigterm() {
    let server = Influxd::start(DB);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("out.csv");
    let agent = spawn_agent(dir.path(), &csv, server.port);

    // Running: points reach the database while the agent works.
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.counts().get("cpu_time").copied().unwrap_or(0) < 50 {
        assert!(
            Instant::now() < deadline,
            "no cpu_time points reached influxd"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("points delivered, 0 dropped"),
        "the plugin reports its deliveries at stop: {stderr}"
    );

    // Every point the CSV output got, the database has: same stream, both outputs.
    let in_csv = csv_counts(&csv);
    let in_db = server.counts();
    assert!(in_csv.contains_key("cpu_time"), "{in_csv:?}");
    assert!(in_csv.contains_key("process_cpu_time"), "{in_csv:?}");
    assert_eq!(in_db, in_csv);
    eprintln!("points per metric: {in_db:?}");

    // Tags: kinds, ids, attributes and the host.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let states = server.query("SHOW TAG VALUES FROM cpu_time WITH KEY = \"state\"");
    let text = states.to_string();
    for state in ["user", "system", "idle"] {
        assert!(text.contains(&format!("\"{state}\"")), "{text}");
    }
    let row = server.query("SELECT * FROM process_cpu_time LIMIT 1");
    let columns = row["results"][0]["series"][0]["columns"].to_string();
    for column in [
        "consumer_id",
        "consumer_kind",
        "exe",
        "host",
        "mode",
        "resource_kind",
        "value",
    ] {
        assert!(columns.contains(&format!("\"{column}\"")), "{columns}");
    }
    // The cgroup of the whole machine, grouped by its classification tag.
    assert!(in_csv.contains_key("cgroup_cpu_time"), "{in_csv:?}");
    let by_workload = server
        .query("SELECT sum(value) FROM cgroup_cpu_time WHERE consumer_id = '/' GROUP BY workload");
    let text = by_workload.to_string();
    assert!(text.contains("\"workload\":\"other\""), "{text}");
    let hosts = server.query("SHOW TAG VALUES FROM cpu_time WITH KEY = \"host\"");
    assert!(
        hosts.to_string().contains(&format!("\"{host}\"")),
        "{hosts}"
    );
}
