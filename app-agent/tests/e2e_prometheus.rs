//! The agent with `procfs,rapl,csv,prometheus` on a RAPL fixture, scraped
//! every second by a real Prometheus server (Debian package `prometheus`)
//! on loopback: through Prometheus's query API, each energy counter equals
//! the CSV total and `increase()` over the run equals the energy the test
//! added; `promtool check metrics` accepts both exposition formats; SIGTERM
//! with scrapes in flight stops the agent cleanly. Also: with a bearer
//! token, no credentials get 401, the right ones 200, and the token never
//! reaches the agent's log. And the README shows the block `config regen` writes.
//!
//! Needs `prometheus` and `promtool`: run `scripts/install-test-servers.sh`.
//! Without them the tests are skipped with a message, except under CI
//! (`CI=true`), where that is a failure. All traffic stays on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use alumet::testing::fixture::copy_tree;
use common::{encode, free_port, http, http_with_headers, read_u64, write_in_place};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alumet::testing::peer::ChildProcess;

const ENERGY: &str = "alumet_rapl_consumed_energy_joules_total";
const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0";

/// `prometheus` and `promtool`, or `None` (skip) when absent outside CI.
fn prometheus_binaries() -> Option<(PathBuf, PathBuf)> {
    match (
        common::find_binary("prometheus"),
        common::find_binary("promtool"),
    ) {
        (Some(server), Some(tool)) => Some((server, tool)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("`prometheus`/`promtool` are not installed (CI=true): run scripts/install-test-servers.sh")
        }
        _ => {
            eprintln!("SKIPPED: `prometheus`/`promtool` are not installed: run scripts/install-test-servers.sh (as root)");
            None
        }
    }
}

struct Prometheus {
    _process: ChildProcess,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// A server with a temporary data dir scraping `target` every second.
    fn start(binary: &Path, target_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: alumet\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
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
        let ready = common::wait_until(Duration::from_secs(20), || {
            matches!(http(port, "GET", "/-/ready"), Some((200, _)))
        });
        if !ready {
            let log = std::fs::read_to_string(server.dir.path().join("prometheus.log"));
            panic!("prometheus did not start: {log:?}");
        }
        server
    }

    /// `/api/v1/query` at `time` (seconds, default now): the `data.result` array.
    fn query(&self, promql: &str, time: Option<f64>) -> Vec<serde_json::Value> {
        let mut path = format!("/api/v1/query?query={}", encode(promql));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        let (status, body) = http(self.port, "GET", &path).unwrap();
        assert_eq!(status, 200, "{promql}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The raw samples `(seconds, value)` of the series matching `selector` over the last 10 minutes.
    fn samples(&self, selector: &str) -> Vec<(f64, f64)> {
        let result = self.query(&format!("{selector}[10m]"), None);
        assert!(
            result.len() <= 1,
            "{selector} matches several series: {result:?}"
        );
        result
            .first()
            .map(|series| {
                series["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|pair| {
                        (
                            pair[0].as_f64().unwrap(),
                            pair[1].as_str().unwrap().parse().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A RAPL zone the helper advances.
struct Zone {
    energy_uj: PathBuf,
    selector: String,
    key: (String, String, String),
    added_uj: u64,
}

fn zones(powercap: &Path) -> Vec<Zone> {
    let zone = |name: &str, kind: &str, id: &str, domain: &str| {
        let id_label = if id.is_empty() {
            String::new()
        } else {
            format!(",resource_id=\"{id}\"")
        };
        Zone {
            energy_uj: powercap.join(name).join("energy_uj"),
            selector: format!("{ENERGY}{{resource_kind=\"{kind}\"{id_label},domain=\"{domain}\"}}"),
            key: (kind.into(), id.into(), domain.into()),
            added_uj: 0,
        }
    };
    vec![
        zone("intel-rapl:0", "cpu_package", "0", "package"),
        zone("intel-rapl:0:0", "cpu_package", "0", "core"),
        zone("intel-rapl:0:2", "dram", "0", "dram"),
        zone("intel-rapl:1", "local_machine", "", "psys"),
        zone("intel-rapl:2", "cpu_package", "1", "package"),
        zone("intel-rapl:2:2", "dram", "1", "dram"),
    ]
}

fn spawn_agent(dir: &Path, sys: &Path, csv: &Path, port: u16) -> Child {
    let sets = [
        "plugins.rapl.interface=\"powercap\"".into(),
        "plugins.rapl.poll_interval=\"100ms\"".into(),
        "plugins.rapl.flush_interval=\"100ms\"".into(),
        "plugins.csv.flush_interval=\"100ms\"".into(),
        "plugins.procfs.system_poll_interval=\"500ms\"".into(),
        "plugins.procfs.process_poll_interval=\"1s\"".into(),
        "plugins.procfs.flush_interval=\"500ms\"".into(),
        format!("plugins.prometheus.listen_address=\"127.0.0.1:{port}\""),
    ];
    common::agent_command()
        .current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .args(["--plugins", "procfs,rapl,csv,prometheus"])
        // the test moves the fixture's counters by hand
        .args(common::rapl_root_args(sys, false))
        .args(["--output-file", csv.to_str().unwrap()])
        .args(sets.iter().flat_map(|kv| ["--set", kv.as_str()]))
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(dir))
        .spawn()
        .unwrap()
}

/// Energy per (resource kind, id, domain) in the CSV, in joules.
fn csv_energy_totals(csv: &Path) -> BTreeMap<(String, String, String), f64> {
    let mut reader = csv::Reader::from_path(csv).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (metric, value, kind, id, attributes) = (
        col("metric"),
        col("value"),
        col("resource_kind"),
        col("resource_id"),
        col("attributes"),
    );
    let mut totals = BTreeMap::new();
    for record in reader.records() {
        let r = record.unwrap();
        if &r[metric] != "rapl_consumed_energy" {
            continue;
        }
        let domain = r[attributes].strip_prefix("domain=").unwrap().to_owned();
        *totals
            .entry((r[kind].to_owned(), r[id].to_owned(), domain))
            .or_insert(0.0) += r[value].parse::<f64>().unwrap();
    }
    totals
}

/// `promtool check metrics` on `body`: its findings, one per line.
fn promtool_findings(promtool: &Path, body: &str) -> Vec<String> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::to_owned)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// promtool (2.42) lints with the text-format parser only: in an
/// OpenMetrics body it sees a counter family `F` (with its HELP) and then
/// samples `F_total` and `F_created` that, to that parser, are other
/// families without help. Those findings, and only those, are expected.
fn is_openmetrics_counter_artefact(finding: &str, body: &str) -> bool {
    let Some(name) = finding.strip_suffix(" no help text") else {
        return false;
    };
    let Some(family) = name
        .strip_suffix("_total")
        .or_else(|| name.strip_suffix("_created"))
    else {
        return false;
    };
    body.contains(&format!("# TYPE {family} counter\n"))
        && body.contains(&format!("# HELP {family} "))
}

/// The agent's stderr goes to this file (a pipe nobody reads could fill
/// up and block it).
fn log_file(dir: &Path) -> std::fs::File {
    std::fs::File::create(dir.join("agent.log")).unwrap()
}

/// Waits for the agent to exit, at most `timeout`: exit code and its log.
fn wait_exit(mut child: Child, dir: &Path, timeout: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + timeout;
    let log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent did not stop in {timeout:?}: {}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), log())
}

/// SIGTERM, then [`wait_exit`].
fn sigterm_and_wait(agent: Child, dir: &Path) -> (Option<i32>, String) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    wait_exit(agent, dir, Duration::from_secs(15))
}

#[test]
fn prometheus_scrapes_the_agent_and_promql_agrees_with_the_csv() {
    let Some((prometheus, promtool)) = prometheus_binaries() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugin-rapl/tests/fixtures/intel_2socket/sys0"),
        &sys,
    );
    let mut zones = zones(&sys.join("class/powercap"));
    let csv = dir.path().join("out.csv");
    let port = free_port();
    let mut agent = spawn_agent(dir.path(), &sys, &csv, port);
    let up = common::wait_until(Duration::from_secs(30), || {
        http(port, "GET", "/metrics").is_some_and(|(s, b)| s == 200 && b.contains(ENERGY))
    });
    if !up {
        let _ = agent.kill();
        let _ = agent.wait();
        let log = std::fs::read_to_string(dir.path().join("agent.log"));
        panic!("no energy on the endpoint: {log:?}");
    }
    let server = Prometheus::start(&prometheus, port);

    // Two scrapes of every zone before any energy is added: the counters' start.
    let scraped_twice =
        |zones: &[Zone]| zones.iter().all(|z| server.samples(&z.selector).len() >= 2);
    assert!(
        common::wait_until(Duration::from_secs(20), || scraped_twice(&zones)),
        "prometheus did not scrape the agent: {:?}",
        server.query("up", None)
    );

    // Both formats pass promtool (taken while the agent runs, with procfs series too).
    let (status, text) = http(port, "GET", "/metrics").unwrap();
    assert_eq!(status, 200);
    let findings = promtool_findings(&promtool, &text);
    assert!(
        findings.is_empty(),
        "promtool on the text format: {findings:#?}"
    );
    let (status, om) =
        http_with_headers(port, "GET", "/metrics", &[("Accept", OPENMETRICS)]).unwrap();
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "not OpenMetrics: {om}");
    let findings: Vec<_> = promtool_findings(&promtool, &om)
        .into_iter()
        .filter(|f| !is_openmetrics_counter_artefact(f, &om))
        .collect();
    assert!(
        findings.is_empty(),
        "promtool on OpenMetrics: {findings:#?}"
    );

    // Energy added in 20 steps of 100 ms, distinct per zone, then frozen.
    for step in 0..20u64 {
        for (i, z) in zones.iter_mut().enumerate() {
            let delta_uj = (i as u64 + 1) * 200_003 + step * 7_919;
            write_in_place(&z.energy_uj, read_u64(&z.energy_uj) + delta_uj);
            z.added_uj += delta_uj;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let largest_step_j = zones.len() as f64 * 200_003e-6 + 19.0 * 7_919e-6;
    // Prometheus has the final value twice (a stable end for increase()).
    let settled = |zones: &[Zone]| {
        zones.iter().all(|z| {
            let s = server.samples(&z.selector);
            let end = z.added_uj as f64 * 1e-6;
            s.len() >= 2 && s[s.len() - 2..].iter().all(|(_, v)| (v - end).abs() < 1e-6)
        })
    };
    assert!(
        common::wait_until(Duration::from_secs(20), || settled(&zones)),
        "the counters never settled"
    );

    // Every scrape so far succeeded (Prometheus asks for OpenMetrics first).
    let (_, targets) = http(server.port, "GET", "/api/v1/targets").unwrap();
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(
        (&target["health"], &target["lastError"]),
        (&"up".into(), &"".into()),
        "{target}"
    );
    let up = server.query("min_over_time(up{job=\"alumet\"}[10m])", None);
    assert_eq!(up[0]["value"][1], "1", "a scrape failed: {up:?}");

    // Scrapes in flight when SIGTERM comes: a stalled request, a kept-alive
    // connection, and a client scraping in a loop (Prometheus scrapes too).
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut kept = TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let hammer = std::thread::spawn(move || {
        let mut served = 0;
        while let Some((200, _)) = http(port, "GET", "/metrics") {
            served += 1;
        }
        served
    });
    std::thread::sleep(Duration::from_millis(200));
    let (code, stderr) = sigterm_and_wait(agent, dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("scrapes served"), "{stderr}");
    assert!(hammer.join().unwrap() > 0);
    drop((stalled, kept));

    let totals = csv_energy_totals(&csv);
    for z in &zones {
        let added_j = z.added_uj as f64 * 1e-6;
        let csv_total = totals[&z.key];
        assert!(
            (csv_total - added_j).abs() < 1e-6,
            "{:?}: CSV {csv_total} J, added {added_j} J",
            z.key
        );
        let samples = server.samples(&z.selector);
        let (t_first, v_first) = samples[0];
        let (t_last, v_last) = *samples.last().unwrap();
        // The counter as Prometheus stored it: the CSV total (within one poll's energy; here exactly).
        assert!(
            (v_last - csv_total).abs() <= largest_step_j && (v_last - csv_total).abs() < 1e-6,
            "{}: Prometheus {v_last} J, CSV {csv_total} J",
            z.selector
        );
        assert_eq!(
            v_first, 0.0,
            "{}: nothing was added before the first scrape",
            z.selector
        );
        // increase() over exactly the run, first sample to last: no extrapolation.
        let range_ms = ((t_last - t_first) * 1000.0).round() as u64;
        let increase = server.query(
            &format!("increase({}[{range_ms}ms])", z.selector),
            Some(t_last),
        );
        assert_eq!(increase.len(), 1, "{increase:?}");
        let increase: f64 = increase[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!(
            (increase - added_j).abs() < 1e-6,
            "{}: increase() {increase} J, added {added_j} J",
            z.selector
        );
    }
}

#[test]
fn with_a_bearer_token_scrapes_need_it_and_it_never_reaches_the_log() {
    const TOKEN: &str = "tok-e2e-SECRET-7";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let sets = [
        format!("plugins.prometheus.listen_address=\"127.0.0.1:{port}\""),
        format!(
            "plugins.prometheus.bearer_token_file={:?}",
            token_file.to_str().unwrap()
        ),
        "plugins.procfs.system_poll_interval=\"100ms\"".into(),
        "plugins.procfs.flush_interval=\"100ms\"".into(),
    ];
    let agent = common::agent_command()
        .current_dir(dir.path())
        .args([
            "--config",
            dir.path().join("alumet-config.toml").to_str().unwrap(),
        ])
        .args(["--plugins", "procfs,prometheus", "-vv"])
        .args(sets.iter().flat_map(|kv| ["--set", kv.as_str()]))
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(dir.path()))
        .spawn()
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let authorised = || http_with_headers(port, "GET", "/metrics", &[("Authorization", &bearer)]);
    assert!(common::wait_until(Duration::from_secs(20), || {
        authorised().is_some_and(|(s, b)| s == 200 && b.contains("alumet_cpu_time_seconds_total{"))
    }));
    assert_eq!(http(port, "GET", "/metrics").map(|r| r.0), Some(401));
    let wrong = http_with_headers(
        port,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer tok-e2e-SECRET-8")],
    );
    assert_eq!(wrong.map(|r| r.0), Some(401));
    assert_eq!(authorised().map(|r| r.0), Some(200));
    let (code, stderr) = sigterm_and_wait(agent, dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("serving http://127.0.0.1"), "{stderr}");
    assert!(
        !stderr.contains(TOKEN),
        "the token reached the log:\n{stderr}"
    );
}

#[test]
fn readme_block_is_what_config_regen_writes() {
    let section = common::regen_section("prometheus");
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-prometheus/README.md"),
    )
    .unwrap();
    assert!(
        readme.contains(&section),
        "plugin-prometheus/README.md must show the block exactly as regen writes it:\n{section}"
    );
}
