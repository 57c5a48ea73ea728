//! Test helpers: real InfluxDB 1.x and VictoriaMetrics servers started on a
//! free loopback port with a temporary data directory (killed on drop), a
//! tiny scripted HTTP server for failure cases, and a test source that emits
//! known points through a real pipeline.
//!
//! The scripted server is in `fake_server.rs`.
//!
//! A missing server binary fails the test with the command that installs it:
//! `scripts/install-test-servers.sh`. All traffic stays on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, clippy::panic)]

mod fake_server;
// Not every test binary uses the scripted server.
#[allow(unused_imports)]
pub use fake_server::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::plugin::PluginDefinition;
pub use alumet::testing::peer::{free_port, ChildProcess};
pub use alumet_delivery::testing::{register_test_metrics, wait_until, OutputHarness};
use plugin_influxdb::{InfluxDbConfig, InfluxDbPlugin};

/// The path of an installed binary, or a failure that says how to install it.
pub fn require_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed: run scripts/install-test-servers.sh (as root) to install the test servers (Debian packages influxdb and victoria-metrics)"
    );
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// GET `url`; status and body, or None when nothing answers.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let mut r = agent().get(url).call().ok()?;
    let status = r.status().as_u16();
    Some((status, r.body_mut().read_to_string().unwrap_or_default()))
}

/// An `influxd` (InfluxDB 1.x) on loopback with its own data directory.
pub struct InfluxServer {
    pub port: u16,
    rpc_port: u16,
    dir: tempfile::TempDir,
    process: ChildProcess,
}

impl InfluxServer {
    /// Starts a server with database `db` created, and waits until it answers.
    pub fn start(db: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Self {
            port: free_port(),
            rpc_port: free_port(),
            dir,
            process: ChildProcess::default(),
        };
        s.restart();
        s.create_database(db);
        s
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL); its data stays for `restart`.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// (Re)starts the server on the same port and data directory.
    pub fn restart(&mut self) {
        self.process.kill();
        let bin = require_binary("influxd");
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("influxd.log")).unwrap();
        let child = Command::new(bin)
            .args(["-config", "/dev/null"])
            .env(
                "INFLUXDB_HTTP_BIND_ADDRESS",
                format!("127.0.0.1:{}", self.port),
            )
            .env(
                "INFLUXDB_BIND_ADDRESS",
                format!("127.0.0.1:{}", self.rpc_port),
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
        self.process = ChildProcess::new(child);
        let url = format!("{}/ping", self.url());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if matches!(http_get(&url), Some((204, _))) {
                return;
            }
            if self.process.exited() || Instant::now() > deadline {
                let log = std::fs::read_to_string(d.join("influxd.log")).unwrap_or_default();
                panic!("influxd did not start on port {}:\n{log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `CREATE DATABASE db`.
    pub fn create_database(&self, db: &str) {
        let mut r = agent()
            .post(format!("{}/query", self.url()))
            .send_form([("q", format!("CREATE DATABASE \"{db}\"").as_str())])
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "{:?}",
            r.body_mut().read_to_string()
        );
        // influxd acknowledges before its meta store reaches the disk; a
        // kill right after would forget the database. Wait for the file.
        let meta = self.dir.path().join("meta").join("meta.db");
        wait_until(
            "the database reaching influxd's meta.db",
            Duration::from_secs(10),
            || {
                std::fs::read(&meta)
                    .map(|bytes| bytes.windows(db.len()).any(|w| w == db.as_bytes()))
                    .unwrap_or(false)
            },
        );
    }

    /// Writes line protocol to `db` directly; the HTTP status.
    pub fn write(&self, db: &str, body: &str) -> u16 {
        let mut r = agent()
            .post(format!("{}/write", self.url()))
            .query("db", db)
            .query("precision", "ns")
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        if status != 204 {
            eprintln!(
                "influxd: {}",
                r.body_mut().read_to_string().unwrap_or_default()
            );
        }
        status
    }

    /// Runs an InfluxQL query with nanosecond epochs; the JSON answer.
    pub fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let mut r = agent()
            .get(format!("{}/query", self.url()))
            .query("db", db)
            .query("epoch", "ns")
            .query("q", q)
            .call()
            .unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Every row of `measurement`, as column name → value.
    pub fn rows(&self, db: &str, measurement: &str) -> Vec<BTreeMap<String, serde_json::Value>> {
        let answer = self.query(db, &format!("SELECT * FROM \"{measurement}\""));
        let mut rows = Vec::new();
        let Some(series) = answer["results"][0]["series"].as_array() else {
            return rows;
        };
        for s in series {
            let columns: Vec<String> = s["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            for values in s["values"].as_array().unwrap() {
                let row = columns
                    .iter()
                    .cloned()
                    .zip(values.as_array().unwrap().iter().cloned())
                    .filter(|(_, v)| !v.is_null())
                    .collect();
                rows.push(row);
            }
        }
        rows
    }
}

/// A VictoriaMetrics server on loopback with its own data directory.
pub struct VictoriaMetrics {
    pub port: u16,
    dir: tempfile::TempDir,
    process: ChildProcess,
}

impl VictoriaMetrics {
    /// Starts a server and waits until /health answers.
    pub fn start() -> Self {
        Self::start_with(&[], true)
    }

    /// Starts a server serving HTTPS with this certificate and key; waits
    /// until its port accepts connections (the test's HTTP client does not
    /// trust the test CA).
    pub fn start_https(cert: &Path, key: &Path) -> Self {
        Self::start_with(
            &[
                "-tls".to_owned(),
                format!("-tlsCertFile={}", cert.display()),
                format!("-tlsKeyFile={}", key.display()),
            ],
            false,
        )
    }

    fn start_with(extra_args: &[String], plain_http: bool) -> Self {
        let bin = require_binary("victoria-metrics");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("vm.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .arg("-retentionPeriod=100y")
            .arg("-search.disableCache")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Self {
            port,
            dir,
            process: ChildProcess::new(child),
        };
        let url = format!("{}/health", s.url());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = if plain_http {
                matches!(http_get(&url), Some((200, _)))
            } else {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            };
            if ready {
                return s;
            }
            if s.process.exited() || Instant::now() > deadline {
                let log = std::fs::read_to_string(s.dir.path().join("vm.log")).unwrap_or_default();
                panic!("victoria-metrics did not start on port {port}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The data directory (for a size check).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every sample of the series matching `selector`, as exported: one
    /// JSON object per series with `metric`, `values`, `timestamps`.
    pub fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        let _ = http_get(&format!("{}/internal/force_flush", self.url()));
        let mut r = agent()
            .get(format!("{}/api/v1/export", self.url()))
            .query("match[]", selector)
            .call()
            .unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Polls the export until it holds `samples` samples (new series take a
    /// moment to become visible), for up to 15 s; returns the last export.
    pub fn export_when(&self, selector: &str, samples: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let series = self.export(selector);
            let n: usize = series
                .iter()
                .map(|s| s["values"].as_array().map_or(0, |v| v.len()))
                .sum();
            if n >= samples || Instant::now() > deadline {
                return series;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A known point set: `polls` polls of `per_poll` points each, with unique
/// millisecond timestamps (VictoriaMetrics keeps milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub per_poll: usize,
    pub start_ms: u64,
}

/// Names of the test metrics (F64 joules; U64 bytes).
pub const ENERGY: &str = alumet_delivery::testing::TEST_ENERGY;
pub const MEMORY: &str = alumet_delivery::testing::TEST_MEMORY;

/// Process names with every character the line protocol must escape.
pub const NASTY_NAMES: [&str; 6] = [
    "plain",
    "with space",
    "comma,here",
    "equals=sign",
    "quote\"d",
    "back\\slash",
];

impl Workload {
    /// `per_poll` points per poll, timestamps from about now.
    pub fn new(per_poll: usize) -> Self {
        Self {
            per_poll,
            start_ms: Timestamp::now().unix_nanos() / 1_000_000 - 60_000,
        }
    }

    /// The points of poll number `poll`: alternating energy (F64, CPU
    /// package, attribute `domain`) and memory (U64, process with `exe`).
    pub fn points(
        &self,
        poll: u64,
        energy: alumet::metrics::MetricId,
        memory: alumet::metrics::MetricId,
    ) -> MeasurementBuffer {
        let ts = Timestamp::from_unix_nanos((self.start_ms + poll) * 1_000_000);
        (0..self.per_poll)
            .map(|i| {
                let i = i as u64;
                if i % 2 == 0 {
                    MeasurementPoint::new(
                        ts,
                        energy,
                        Resource::CpuPackage { id: i as u32 },
                        ResourceConsumer::LocalMachine,
                        poll as f64 + i as f64 / 8.0,
                    )
                    .with_attr("domain", "package")
                } else {
                    MeasurementPoint::new(
                        ts,
                        memory,
                        Resource::LocalMachine,
                        ResourceConsumer::Process {
                            pid: 1000 + i as u32,
                        },
                        poll * 1_000_000 + i,
                    )
                    .with_attr("exe", NASTY_NAMES[(i as usize / 2) % NASTY_NAMES.len()])
                }
            })
            .collect()
    }

    /// The expected energy value of (poll, package id).
    pub fn energy_value(poll: u64, id: u64) -> f64 {
        poll as f64 + id as f64 / 8.0
    }
}

/// A test pipeline with the workload source (polled by hand) and the
/// influxdb plugin.
pub type Harness = OutputHarness<InfluxDbPlugin>;

/// Starts a [`Harness`]: the workload's metrics and source, the plugin with `config`.
pub fn start_harness(workload: Workload, config: InfluxDbConfig) -> Harness {
    let _ = env_logger::builder().is_test(true).try_init();
    let plugin = InfluxDbPlugin::init(config).unwrap();
    let stats = plugin.stats();
    OutputHarness::start(
        "influxdb",
        plugin,
        stats,
        register_test_metrics,
        move |poll, &(energy, memory)| workload.points(poll, energy, memory),
    )
}

/// A config for tests: small delays so that retries are quick.
pub fn test_config(url: &str) -> InfluxDbConfig {
    InfluxDbConfig {
        url: url.into(),
        host_tag: "host".into(),
        flush_interval: Duration::from_millis(50),
        retry_initial_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(200),
        request_timeout: Duration::from_secs(3),
        shutdown_timeout: Duration::from_secs(10),
        // Exact point counts: no `output_*` points of the output's own.
        own_metrics_interval: Duration::ZERO,
        ..InfluxDbConfig::default()
    }
}
