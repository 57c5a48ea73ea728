//! The agent with `procfs`, `cgroups`, `csv` and `influxdb` (v1 API) writing
//! to a real InfluxDB 1.x started on a loopback port, stopped by SIGTERM:
//! every point the CSV output received is in the database too, with its
//! tags (a cgroup's classification among them, so a query groups by it).
//!
//! Needs `influxd`: run `scripts/install-test-servers.sh` (Debian package
//! `influxdb`). All traffic stays on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{encode, free_port, http};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alumet::testing::peer::ChildProcess;

const DB: &str = "alumet_e2e";

fn influxd_binary() -> PathBuf {
    common::find_binary("influxd").unwrap_or_else(|| {
        panic!("`influxd` is not installed: run scripts/install-test-servers.sh (as root)")
    })
}

struct Influxd {
    _process: ChildProcess,
    port: u16,
    dir: tempfile::TempDir,
}

impl Influxd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path();
        let log = std::fs::File::create(d.join("influxd.log")).unwrap();
        let child = Command::new(influxd_binary())
            .args(["-config", "/dev/null"])
            .env("INFLUXDB_HTTP_BIND_ADDRESS", format!("127.0.0.1:{port}"))
            .env(
                "INFLUXDB_BIND_ADDRESS",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("INFLUXDB_META_DIR", d.join("meta"))
            .env("INFLUXDB_DATA_DIR", d.join("data"))
            .env("INFLUXDB_DATA_WAL_DIR", d.join("wal"))
            .env("INFLUXDB_REPORTING_DISABLED", "true")
            .env("INFLUXDB_HTTP_LOG_ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Self {
            _process: ChildProcess::new(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !matches!(http(port, "GET", "/ping"), Some((204, _))) {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(server.dir.path().join("influxd.log"));
                panic!("influxd did not start: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let create = format!("/query?q={}", encode(&format!("CREATE DATABASE {DB}")));
        assert_eq!(http(port, "POST", &create).map(|r| r.0), Some(200));
        server
    }

    fn query(&self, q: &str) -> serde_json::Value {
        let path = format!("/query?db={DB}&epoch=ns&q={}", encode(q));
        let (status, body) = http(self.port, "GET", &path).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Number of points per measurement.
    fn counts(&self) -> BTreeMap<String, u64> {
        let answer = self.query("SELECT count(value) FROM /.*/");
        let mut counts = BTreeMap::new();
        if let Some(series) = answer["results"][0]["series"].as_array() {
            for s in series {
                let n = s["values"][0][1].as_u64().unwrap();
                counts.insert(s["name"].as_str().unwrap().to_owned(), n);
            }
        }
        counts
    }
}

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
    let server = Influxd::start();
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
