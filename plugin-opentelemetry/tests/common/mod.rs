//! Test helpers: the Python OTLP receiver (`tests/otlp_receiver.py`, which
//! decodes with the reference `opentelemetry-proto` package) started on a
//! loopback port and killed on drop, and a pipeline with a source of known
//! points and the plugin.
//!
//! A missing Python package fails the test with the command that installs
//! it: `scripts/install-test-servers.sh`. All traffic stays on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::plugin::PluginDefinition;
use alumet_delivery::testing::{register_test_metrics, OutputHarness};
use plugin_opentelemetry::{OpenTelemetryConfig, OpenTelemetryPlugin};
use serde_json::Value;

fn python() -> String {
    std::env::var("ALUMET_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fails with the fix when the reference protobuf package is missing.
pub fn require_opentelemetry_proto() {
    let ok = Command::new(python())
        .args([
            "-c",
            "import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python package opentelemetry-proto is missing: run scripts/install-test-servers.sh (as root)"
    );
}

/// TLS files for the receiver.
#[derive(Debug, Clone, Default)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require a client certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// The Python receiver, killed (SIGKILL) on drop.
pub struct Receiver {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    script: String,
    tls: Option<ServerTls>,
    count_only: bool,
}

impl Receiver {
    /// Starts a receiver that decodes but records only point counts (for
    /// the delivery benchmark); read them with `counted_points`.
    pub fn start_counting() -> Self {
        require_opentelemetry_proto();
        let mut r = Self::not_started("");
        r.count_only = true;
        r.restart();
        r
    }

    /// Points of the requests a counting receiver answered.
    pub fn counted_points(&self) -> u64 {
        self.requests()
            .iter()
            .filter_map(|r| r["count"].as_u64())
            .sum()
    }

    /// Starts a receiver answering 200 to everything.
    pub fn start() -> Self {
        Self::start_with("", None)
    }

    /// Starts a receiver answering from `script` (see the Python file).
    pub fn start_with(script: &str, tls: Option<ServerTls>) -> Self {
        require_opentelemetry_proto();
        let mut r = Self {
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            script: script.into(),
            tls,
            count_only: false,
        };
        r.restart();
        r
    }

    /// A receiver's port with nothing listening yet: `restart` starts it there.
    pub fn not_started(script: &str) -> Self {
        require_opentelemetry_proto();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            script: script.into(),
            tls: None,
            count_only: false,
        }
    }

    fn script_path() -> PathBuf {
        // Also used by app-agent's tests (through #[path]): from either crate.
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-opentelemetry/tests/otlp_receiver.py")
    }

    /// The metrics URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/v1/metrics", self.port)
    }

    /// Kills the receiver (SIGKILL); what it recorded stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the receiver on the same port (a new one the first time);
    /// its script starts again from request 0.
    pub fn restart(&mut self) {
        self.kill();
        let port_file = self.dir.path().join("port");
        let _ = std::fs::remove_file(&port_file);
        let log = std::fs::File::create(self.dir.path().join("receiver.log")).unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(Self::script_path())
            .args(["--port", &self.port.to_string()])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--out")
            .arg(self.dir.path().join("received.jsonl"))
            .args(["--script", &self.script]);
        if self.count_only {
            cmd.arg("--count-only");
        }
        if let Some(tls) = &self.tls {
            cmd.arg("--cert").arg(&tls.cert).arg("--key").arg(&tls.key);
            if let Some(ca) = &tls.client_ca {
                cmd.arg("--client-ca").arg(ca);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                self.port = text.trim().parse().unwrap();
                return;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("receiver.log"));
                panic!("the receiver did not start: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every request recorded so far (one JSON object each).
    pub fn requests(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("received.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every point of the requests answered with 200.
    pub fn accepted_points(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["status"] == 200)
            .flat_map(|r| r["points"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Names of the test metrics (F64 joules, delta; U64 bytes, gauge).
pub const ENERGY: &str = alumet_delivery::testing::TEST_ENERGY;
pub const MEMORY: &str = alumet_delivery::testing::TEST_MEMORY;
/// Name of the test metric (U64 count, delta).
pub const SWITCHES: &str = "test_switches";

/// `per_poll` points per poll: energy (F64 delta, CPU package i, `domain`),
/// memory (U64 gauge, process, `exe`) and switches (U64 delta), in turn;
/// unique timestamps per poll.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub per_poll: usize,
    pub start_ns: u64,
}

impl Workload {
    pub fn new(per_poll: usize) -> Self {
        Self {
            per_poll,
            start_ns: Timestamp::now().unix_nanos() - 60_000_000_000,
        }
    }

    /// The timestamp of poll `poll`.
    pub fn time(&self, poll: u64) -> u64 {
        self.start_ns + poll * 1_000_000
    }

    pub fn points(&self, poll: u64, ids: [alumet::metrics::MetricId; 3]) -> MeasurementBuffer {
        let ts = Timestamp::from_unix_nanos(self.time(poll));
        (0..self.per_poll as u64)
            .map(|i| match i % 3 {
                0 => MeasurementPoint::new(
                    ts,
                    ids[0],
                    Resource::CpuPackage { id: i as u32 },
                    ResourceConsumer::LocalMachine,
                    Self::energy(poll, i),
                )
                .with_attr("domain", "package"),
                1 => MeasurementPoint::new(
                    ts,
                    ids[1],
                    Resource::LocalMachine,
                    ResourceConsumer::Process {
                        pid: 1000 + i as u32,
                    },
                    poll * 1_000_000 + i,
                )
                .with_attr("exe", "a b,c=d")
                .with_attr("threads", 3u64),
                _ => MeasurementPoint::new(
                    ts,
                    ids[2],
                    Resource::CpuCore { id: i as u32 },
                    ResourceConsumer::LocalMachine,
                    poll + i,
                ),
            })
            .collect()
    }

    /// The energy of (poll, point index).
    pub fn energy(poll: u64, i: u64) -> f64 {
        poll as f64 * 0.5 + i as f64 / 8.0
    }
}

/// A test pipeline with the workload source (polled by hand) and the plugin.
pub type Harness = OutputHarness<OpenTelemetryPlugin>;

/// Starts a [`Harness`]: the workload's metrics and source, the plugin with `config`.
pub fn start_harness(workload: Workload, config: OpenTelemetryConfig) -> Harness {
    let _ = env_logger::builder().is_test(true).try_init();
    let plugin = OpenTelemetryPlugin::init(config).unwrap();
    let stats = plugin.stats();
    OutputHarness::start(
        "opentelemetry",
        plugin,
        stats,
        |ctx| {
            let (energy, memory) = register_test_metrics(ctx)?;
            let switches = ctx.create_metric(Metric::new(
                SWITCHES,
                Unit::Custom {
                    ucum: "{switch}".into(),
                    symbol: "switches".into(),
                },
                ValueType::U64,
                MetricKind::Delta,
                "test switches",
            ))?;
            Ok([energy, memory, switches])
        },
        move |poll, ids| workload.points(poll, *ids),
    )
}

/// A config for tests: small delays so that retries are quick.
pub fn test_config(endpoint: &str) -> OpenTelemetryConfig {
    OpenTelemetryConfig {
        endpoint: endpoint.into(),
        flush_interval: Duration::from_millis(50),
        retry_initial_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(200),
        request_timeout: Duration::from_secs(3),
        shutdown_timeout: Duration::from_secs(10),
        // Exact point counts: no `output_*` points of the output's own.
        own_metrics_interval: Duration::ZERO,
        ..OpenTelemetryConfig::default()
    }
}

/// Identifies a point: (metric, time, resource kind, resource id, consumer kind, consumer id).
pub fn point_key(p: &Value) -> (String, u64, String, String, String, String) {
    let a = &p["attributes"];
    (
        p["metric"].as_str().unwrap().to_owned(),
        p["time"].as_u64().unwrap(),
        a["resource_kind"].as_str().unwrap().to_owned(),
        a["resource_id"].as_str().unwrap().to_owned(),
        a["consumer_kind"].as_str().unwrap().to_owned(),
        a["consumer_id"].as_str().unwrap().to_owned(),
    )
}

/// Every log record at `Info` or above, captured once `capture_logs` ran
/// (one logger per test binary; filter by something the test owns).
pub static LOGS: std::sync::Mutex<Vec<(log::Level, String)>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Debug
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            LOGS.lock()
                .unwrap()
                .push((record.level(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

/// Sends the log to [`LOGS`] (instead of env_logger) for this test binary.
pub fn capture_logs() {
    if log::set_logger(&Capture).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// Error lines that mention `needle`.
pub fn errors_about(needle: &str) -> Vec<String> {
    LOGS.lock()
        .unwrap()
        .iter()
        .filter(|(l, m)| *l == log::Level::Error && m.contains(needle))
        .map(|(_, m)| m.clone())
        .collect()
}
