//! What the SIGHUP tests share: a procfs + csv configuration, the agent
//! run with it, the poll timestamps read back from the CSV and checked for
//! continuity, `ctl status` counters.
#![allow(clippy::panic, reason = "test helpers fail the test that uses them")]

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Row;

/// The per-poll gauge whose timestamps tell the polls of `procfs/system`.
pub const POLL_METRIC: &str = "tasks_running";

/// A configuration with procfs (system source every `interval_ms`, every
/// point written: `keep_zero`) and csv.
pub fn write_config(dir: &Path, interval_ms: u64) {
    write_config_with(dir, interval_ms, "");
}

/// [`write_config`] followed by `more` (other sections).
pub fn write_config_with(dir: &Path, interval_ms: u64, more: &str) {
    std::fs::write(
        dir.join("alumet-config.toml"),
        format!(
            r#"[plugins.procfs]
enabled = true
system_poll_interval = "{interval_ms}ms"
process_poll_interval = "1h"
flush_interval = "50ms"
# Every poll's rows: the polls are read back from `tasks_running`.
keep_zero = true

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

pub fn spawn_run(dir: &Path) -> Child {
    spawn_run_with(dir, "procfs,csv")
}

/// `run` with `--plugins plugins`, or, if it is empty, with the plugins
/// the file enables (which a reload may then change).
pub fn spawn_run_with(dir: &Path, plugins: &str) -> Child {
    let mut c = super::agent_command();
    c.current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .args(["--control-socket", dir.join("ctl.sock").to_str().unwrap()]);
    if !plugins.is_empty() {
        c.args(["--plugins", plugins]);
    }
    c.arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn hup(child: &Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
}

/// SIGHUP, then waits until the agent has finished that reload (`ctl
/// status`'s `reloads.done` grew), whatever its outcome: what the test
/// reads next is the reloaded pipeline, not a race with it (the endpoint
/// of a stopped plugin closes before the plugin list is updated).
pub fn hup_and_wait(dir: &Path, child: &Child) {
    let done = || try_ctl_status(dir)?["reloads"]["done"].as_u64();
    let before = done().unwrap_or_else(|| panic!("no status before the reload"));
    hup(child);
    assert!(
        super::wait_until(std::time::Duration::from_secs(15), || done()
            .is_some_and(|n| n > before)),
        "the reload did not finish within 15 s"
    );
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Timestamps of the polls of `procfs/system`, in order, checked to be
/// unique.
pub fn poll_times(rows: &[Row]) -> Vec<u64> {
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

pub fn median_gap_ms(times: &[u64], from_ns: u64, to_ns: u64) -> f64 {
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
pub const RESTART_ALLOWANCE_MS: f64 = 500.0;

/// No poll missing: no gap reaches twice the longer of the intervals around
/// it, except the restart gap after each reload (`reloads`: when SIGHUP was
/// sent), which may be as long as an interval plus the restart allowance.
pub fn assert_continuous(times: &[u64], longest_interval_ms: u64, reloads: &[u64]) {
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

/// The `[plugins.prometheus]` section listening on `port`.
pub fn prometheus_section(port: u16) -> String {
    format!("\n[plugins.prometheus]\nenabled = true\nlisten_address = \"127.0.0.1:{port}\"\n")
}

/// The inode of the socket listening on 127.0.0.1:`port` (/proc/net/tcp).
pub fn listening_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// `ctl ARGS` to the agent in `dir`, which must succeed; its stdout.
pub fn ctl_ok(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = super::agent_command()
        .args(["--control-socket", dir.join("ctl.sock").to_str().unwrap()])
        .arg("ctl")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ctl {args:?}: {out:?}");
    out.stdout
}

/// `ctl status --json` of the agent in `dir`.
pub fn ctl_status(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&ctl_ok(dir, &["status", "--json"])).unwrap()
}

/// [`ctl_status`], or None where the agent does not answer one (no
/// pipeline while a whole restart runs).
pub fn try_ctl_status(dir: &Path) -> Option<serde_json::Value> {
    let out = super::agent_command()
        .args(["--control-socket", dir.join("ctl.sock").to_str().unwrap()])
        .args(["ctl", "status", "--json"])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Counter `key` of the element `name` in a `ctl status` answer.
pub fn counter(status: &serde_json::Value, name: &str, key: &str) -> u64 {
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
pub fn element_names(status: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = ["sources", "transforms", "outputs"]
        .iter()
        .flat_map(|k| status[*k].as_array().unwrap().iter())
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}
