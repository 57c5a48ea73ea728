//! SIGHUP, tried on the agent as a process: `run` reloads its configuration
//! (a new interval shows in the timestamps, every poll is in the CSV once,
//! an invalid file keeps the old configuration, a file renamed by logrotate
//! is left complete and a new one starts with its header); only the plugin
//! whose section changed restarts (the Prometheus endpoint keeps its socket
//! and its counters while procfs restarts; procfs keeps its poll ticks
//! while the endpoint moves to another port), a change of `[agent]`
//! restarts everything and says why; `exec` passes it on to the command;
//! `config check` validates without running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{read_csv, sigterm_and_wait, Row};

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The per-poll gauge whose timestamps tell the polls of `procfs/system`.
const POLL_METRIC: &str = "tasks_running";

/// A configuration with procfs (system source every `interval_ms`) and csv.
fn write_config(dir: &Path, interval_ms: u64) {
    write_config_with(dir, interval_ms, "");
}

/// [`write_config`] followed by `more` (other sections).
fn write_config_with(dir: &Path, interval_ms: u64, more: &str) {
    std::fs::write(
        dir.join("alumet-config.toml"),
        format!(
            r#"[plugins.procfs]
enabled = true
system_poll_interval = "{interval_ms}ms"
process_poll_interval = "1h"
flush_interval = "50ms"

[plugins.csv]
enabled = true
output_path = "out.csv"
timestamp_format = "unix_ns"
flush_interval = "100ms"
{more}"#
        ),
    )
    .unwrap();
}

fn spawn_run(dir: &Path) -> Child {
    spawn_run_with(dir, "procfs,csv")
}

fn spawn_run_with(dir: &Path, plugins: &str) -> Child {
    common::agent_command()
        .current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .args(["--control-socket", dir.join("ctl.sock").to_str().unwrap()])
        .args(["--plugins", plugins])
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn hup(child: &Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Timestamps of the polls of `procfs/system`, in order, checked to be
/// unique.
fn poll_times(rows: &[Row]) -> Vec<u64> {
    let mut times: Vec<u64> = rows
        .iter()
        .filter(|r| r.metric == POLL_METRIC)
        .map(|r| r.timestamp_ns)
        .collect();
    times.sort_unstable();
    let before = times.len();
    times.dedup();
    assert_eq!(before, times.len(), "a poll is in the CSV twice");
    times
}

fn median_gap_ms(times: &[u64], from_ns: u64, to_ns: u64) -> f64 {
    let inside: Vec<u64> = times
        .iter()
        .copied()
        .filter(|t| (from_ns..to_ns).contains(t))
        .collect();
    let mut gaps: Vec<u64> = inside.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.len() >= 3,
        "too few polls between {from_ns} and {to_ns}: {inside:?}"
    );
    gaps.sort_unstable();
    gaps[gaps.len() / 2] as f64 / 1e6
}

/// How long a reload may hold the cadence up: the old pipeline's last poll
/// is taken at the signal, the new one's first when it has started (a few
/// ms, see BENCHMARKS.md; more on a loaded 2-core CI machine).
const RESTART_ALLOWANCE_MS: f64 = 500.0;

/// No poll missing: no gap reaches twice the longer of the intervals around
/// it, except the restart gap after each reload (`reloads`: when SIGHUP was
/// sent), which may be as long as an interval plus the restart allowance.
fn assert_continuous(times: &[u64], longest_interval_ms: u64, reloads: &[u64]) {
    // After SIGHUP come at most one regular poll of the old pipeline, its
    // last poll, then the new pipeline's first: the restart is one of the
    // two gaps that start at the first poll after the signal or the next.
    let restart_gaps: Vec<usize> = reloads
        .iter()
        .filter_map(|&r| times.iter().position(|&t| t > r))
        .flat_map(|i| [i, i + 1])
        .collect();
    for (j, w) in times.windows(2).enumerate() {
        let gap_ms = (w[1] - w[0]) as f64 / 1e6;
        let after_reload = restart_gaps.contains(&j);
        let limit = if after_reload {
            longest_interval_ms as f64 + RESTART_ALLOWANCE_MS
        } else {
            1.9 * longest_interval_ms as f64
        };
        assert!(
            gap_ms < limit,
            "a poll is missing: {gap_ms:.0} ms between {} and {} (after a reload: {after_reload})",
            w[0],
            w[1]
        );
    }
}

#[test]
fn two_reloads_with_new_intervals_keep_every_poll_once() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 200);
    let child = spawn_run(dir.path());
    std::thread::sleep(Duration::from_millis(1200));

    write_config(dir.path(), 100);
    let first_hup = now_ns();
    hup(&child);
    std::thread::sleep(Duration::from_millis(1500));

    write_config(dir.path(), 300);
    let second_hup = now_ns();
    hup(&child);
    std::thread::sleep(Duration::from_millis(1800));

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr.matches("reloaded").count(), 2, "{stderr}");

    let csv = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
    assert_eq!(
        csv.matches("timestamp,metric").count(),
        1,
        "one header only"
    );
    let times = poll_times(&read_csv(&dir.path().join("out.csv")));
    assert_continuous(&times, 300, &[first_hup, second_hup]);
    let settle = 300_000_000;
    let before = median_gap_ms(&times, 0, first_hup);
    let middle = median_gap_ms(&times, first_hup + settle, second_hup);
    let after = median_gap_ms(&times, second_hup + settle, u64::MAX);
    assert!((170.0..260.0).contains(&before), "before: {before} ms");
    assert!(
        (80.0..140.0).contains(&middle),
        "between the reloads: {middle} ms"
    );
    assert!((260.0..360.0).contains(&after), "after: {after} ms");
}

#[test]
fn an_invalid_file_at_reload_keeps_the_old_configuration() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 100);
    let mut child = spawn_run(dir.path());
    std::thread::sleep(Duration::from_millis(700));

    let config = dir.path().join("alumet-config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"100ms\"", "\"100 parsecs\"")).unwrap();
    let hup_at = now_ns();
    hup(&child);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent is still running"
    );

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    let path = config.display().to_string();
    assert!(
        stderr.contains(&format!("{path}:3:")),
        "the error names the file and line 3: {stderr}"
    );
    assert!(
        stderr.contains("still running on the previous one"),
        "{stderr}"
    );
    assert!(!stderr.contains("reloaded"), "{stderr}");
    let times = poll_times(&read_csv(&dir.path().join("out.csv")));
    // Nothing restarts: no allowance.
    assert_continuous(&times, 100, &[]);
    let after = median_gap_ms(&times, hup_at, u64::MAX);
    assert!(
        (80.0..140.0).contains(&after),
        "the old 100 ms goes on: {after} ms"
    );
}

/// The pids whose open files include `path`.
fn holds_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| target == path)
}

#[test]
fn a_file_renamed_before_sighup_is_left_complete_and_a_new_one_starts() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 100);
    let child = spawn_run(dir.path());
    std::thread::sleep(Duration::from_millis(800));

    let live = dir.path().join("out.csv");
    let rotated = dir.path().join("out.csv.1");
    std::fs::rename(&live, &rotated).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    hup(&child);
    assert!(common::wait_until(Duration::from_secs(3), || live.exists()));
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !holds_open(child.id(), &rotated),
        "the rotated file is closed"
    );
    assert!(holds_open(child.id(), &live), "the new file is open");

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    let old_text = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old_text.ends_with('\n'),
        "the last row of the old file is whole"
    );
    let old = poll_times(&read_csv(&rotated));
    let new = poll_times(&read_csv(&live));
    assert!(
        old.len() >= 8 && new.len() >= 5,
        "{} + {}",
        old.len(),
        new.len()
    );
    assert!(old.last().unwrap() < new.first().unwrap());
    let all: Vec<u64> = old.iter().chain(new.iter()).copied().collect();
    assert_continuous(&all, 100, &[*old.last().unwrap() - 1]);
}

#[test]
fn exec_passes_sighup_on_and_reports_when_the_command_exits() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 100);
    let marker = dir.path().join("got-hup");
    let script = format!(
        "trap 'echo hup > {}; exit 3' HUP; while :; do sleep 0.05; done",
        marker.display()
    );
    let child = common::agent_command()
        .current_dir(dir.path())
        .args([
            "--config",
            dir.path().join("alumet-config.toml").to_str().unwrap(),
        ])
        .args(["exec", "--json", "summary.json", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    hup(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the command's exit code: {stderr}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "hup\n");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["exit_code"], 3, "{summary}");
    assert!(!poll_times(&read_csv(&dir.path().join("out.csv"))).is_empty());
}

#[test]
fn config_check_validates_without_running() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 100);
    let config = dir.path().join("alumet-config.toml");
    let check = |path: &Path| {
        common::agent_command()
            .current_dir(dir.path())
            .args(["--config", path.to_str().unwrap(), "config", "check"])
            .output()
            .unwrap()
    };
    let ok = check(&config);
    assert_eq!(ok.status.code(), Some(0));
    assert!(!dir.path().join("out.csv").exists(), "nothing ran");

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("flush_interval = \"50ms\"", "flush_intervall = \"50ms\""),
    )
    .unwrap();
    let bad = check(&config);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:5:", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("flush_interval"), "did you mean: {stderr}");

    let missing = check(&dir.path().join("absent.toml"));
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        !dir.path().join("absent.toml").exists(),
        "check creates nothing"
    );
}

/// The `[plugins.prometheus]` section listening on `port`.
fn prometheus_section(port: u16) -> String {
    format!("\n[plugins.prometheus]\nenabled = true\nlisten_address = \"127.0.0.1:{port}\"\n")
}

/// The inode of the socket listening on 127.0.0.1:`port` (/proc/net/tcp).
fn listening_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// `ctl status --json` of the agent in `dir`.
fn ctl_status(dir: &Path) -> serde_json::Value {
    let out = common::agent_command()
        .args(["--control-socket", dir.join("ctl.sock").to_str().unwrap()])
        .args(["ctl", "status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Counter `key` of the element `name` in a `ctl status` answer.
fn counter(status: &serde_json::Value, name: &str, key: &str) -> u64 {
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .chain(status["outputs"].as_array().unwrap())
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {status}"))[key]
        .as_u64()
        .unwrap()
}

/// Every element's name in a `ctl status` answer, sorted.
fn element_names(status: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = ["sources", "transforms", "outputs"]
        .iter()
        .flat_map(|k| status[*k].as_array().unwrap().iter())
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_change_in_procfs_restarts_it_alone_and_the_endpoint_keeps_its_socket_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    write_config_with(dir.path(), 100, &prometheus_section(port));
    let child = spawn_run_with(dir.path(), "procfs,csv,prometheus");
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::http(port, "GET", "/metrics").is_some_and(|(s, _)| s == 200)
    }));
    std::thread::sleep(Duration::from_millis(1000));
    let socket = listening_inode(port).expect("the endpoint listens");
    let before = ctl_status(dir.path());

    write_config_with(dir.path(), 200, &prometheus_section(port));
    let hup_at = now_ns();
    hup(&child);
    std::thread::sleep(Duration::from_millis(1500));
    let after = ctl_status(dir.path());
    assert_eq!(
        listening_inode(port),
        Some(socket),
        "the endpoint was not restarted: the same listening socket"
    );
    assert_eq!(
        element_names(&after),
        element_names(&before),
        "the same names"
    );
    for output in ["prometheus/endpoint", "csv/file"] {
        let (b, a) = (
            counter(&before, output, "written_points"),
            counter(&after, output, "written_points"),
        );
        assert!(a > b, "{output} counts on from {b}: {a}");
    }
    let (b, a) = (
        counter(&before, "procfs/system", "polls"),
        counter(&after, "procfs/system", "polls"),
    );
    assert!(
        a < b,
        "procfs restarted: its polls count from 0 ({b} before, {a} after)"
    );

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("restarting procfs (their sections changed)"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("reloaded").count(), 1, "{stderr}");
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    let csv = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
    assert_eq!(
        csv.matches("timestamp,metric").count(),
        1,
        "one header only"
    );
    let times = poll_times(&read_csv(&dir.path().join("out.csv")));
    assert_continuous(&times, 200, &[hup_at]);
    let later = median_gap_ms(&times, hup_at + 300_000_000, u64::MAX);
    assert!(
        (170.0..260.0).contains(&later),
        "procfs has its new interval: {later} ms"
    );
}

#[test]
fn a_change_in_the_endpoint_moves_it_and_procfs_keeps_its_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let (old_port, new_port) = (common::free_port(), common::free_port());
    write_config_with(dir.path(), 100, &prometheus_section(old_port));
    let child = spawn_run_with(dir.path(), "procfs,csv,prometheus");
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::http(old_port, "GET", "/metrics").is_some_and(|(s, _)| s == 200)
    }));
    std::thread::sleep(Duration::from_millis(1500));
    let before = ctl_status(dir.path());

    write_config_with(dir.path(), 100, &prometheus_section(new_port));
    let hup_at = now_ns();
    hup(&child);
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::http(new_port, "GET", "/metrics").is_some_and(|(s, _)| s == 200)
    }));
    assert!(
        common::http(old_port, "GET", "/metrics").is_none(),
        "the old port is closed"
    );
    std::thread::sleep(Duration::from_millis(600));
    let after = ctl_status(dir.path());
    // 1.5 s of polls before; a restarted source would count from 0.
    let (b, a) = (
        counter(&before, "procfs/system", "polls"),
        counter(&after, "procfs/system", "polls"),
    );
    assert!(a > b, "procfs counts on from {b}: {a}");

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    let times = poll_times(&read_csv(&dir.path().join("out.csv")));
    // Not restarted: no allowance, and no extra poll (a restart polls at once).
    assert_continuous(&times, 100, &[]);
    let around: Vec<u64> = times
        .windows(2)
        .filter(|w| w[1] > hup_at.saturating_sub(500_000_000) && w[0] < hup_at + 500_000_000)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    assert!(
        around.iter().all(|gap| (60..140).contains(gap)),
        "the 100 ms ticks go on through the reload: {around:?} ms"
    );
    assert!(
        stderr.contains("restarting prometheus (their sections changed)"),
        "{stderr}"
    );
}

#[test]
fn a_change_in_agent_restarts_the_whole_pipeline_and_says_which_key() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 100);
    let child = spawn_run(dir.path());
    std::thread::sleep(Duration::from_millis(1500));
    let before = ctl_status(dir.path());
    write_config_with(dir.path(), 100, "\n[agent]\noutput_queue_capacity = 64\n");
    let hup_at = now_ns();
    hup(&child);
    std::thread::sleep(Duration::from_millis(600));
    let after = ctl_status(dir.path());
    // 1.5 s of counts before, 0.6 s after: every element started again from 0.
    for (element, key) in [("procfs/system", "polls"), ("csv/file", "written_points")] {
        let (b, a) = (
            counter(&before, element, key),
            counter(&after, element, key),
        );
        assert!(a < b, "{element} restarted: {key} {b} before, {a} after");
    }
    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr
            .contains("[agent] output_queue_capacity changed, which applies to the whole pipeline"),
        "{stderr}"
    );
    let times = poll_times(&read_csv(&dir.path().join("out.csv")));
    assert_continuous(&times, 100, &[hup_at]);
}
