//! The agent with `procfs` and `csv` on this machine's real /proc, stopped
//! by SIGTERM: it exits 0 and the CSV is complete, down to the last poll
//! taken after the signal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::sigterm_and_wait;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const COLUMNS: [&str; 9] = [
    "timestamp",
    "metric",
    "unit",
    "value",
    "resource_kind",
    "resource_id",
    "consumer_kind",
    "consumer_id",
    "attributes",
];

fn spawn_agent(dir: &Path, csv: &Path, extra: &[&str]) -> Child {
    common::agent_command()
        .current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .args(["--plugins", "procfs,csv"])
        .args(["--output-file", csv.to_str().unwrap()])
        .args(extra.iter().flat_map(|kv| ["--set", kv]))
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Every record, checked to parse and to have exactly the 9 columns.
fn records(path: &Path) -> Vec<csv::StringRecord> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .unwrap();
    let all: Vec<csv::StringRecord> = reader
        .records()
        .map(|r| r.expect("every row parses"))
        .collect();
    assert_eq!(all[0].iter().collect::<Vec<_>>(), COLUMNS);
    for r in &all {
        assert_eq!(r.len(), 9, "row with {} fields: {r:?}", r.len());
    }
    all[1..].to_vec()
}

#[test]
fn sigterm_flushes_every_row_including_the_last_poll() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("out.csv");
    let child = spawn_agent(
        dir.path(),
        &csv,
        &[
            "plugins.procfs.system_poll_interval=\"50ms\"",
            "plugins.procfs.process_poll_interval=\"100ms\"",
            "plugins.procfs.flush_interval=\"100ms\"",
            // Rows reach the file only at shutdown: the flush on SIGTERM is what is tested.
            "plugins.csv.flush_interval=\"1h\"",
            "plugins.csv.timestamp_format=\"unix_ns\"",
            // Every point of every poll, so that a poll's rows are known
            // (thinned gauges would be written only when they move).
            "plugins.procfs.keep_zero=true",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let before_signal = now_ns();
    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");

    let rows = records(&csv);
    // Per poll timestamp of the system source, the metrics seen.
    let mut system_polls: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        let ts: u64 = r[0].parse().expect("unix_ns timestamp");
        if ["tasks_running", "tasks_blocked", "system_memory"].contains(&&r[1]) {
            system_polls.entry(ts).or_default().insert(r[1].to_owned());
        }
    }
    // ~30 polls in 1.5 s; at least a few even on a loaded machine.
    assert!(system_polls.len() >= 5, "{} polls", system_polls.len());
    // Every poll is complete: nothing of a batch went missing.
    for (ts, metrics) in &system_polls {
        assert_eq!(metrics.len(), 3, "poll at {ts} has only {metrics:?}");
    }
    // The poll taken after the signal is in the file.
    let last = *system_polls.keys().last().unwrap();
    assert!(
        last >= before_signal,
        "the last poll ({last}) is older than the signal ({before_signal})"
    );
    assert!(rows.iter().any(|r| &r[1] == "process_cpu_time"));
    assert!(rows.iter().any(|r| &r[1] == "cpu_time"));
}

#[test]
fn rfc3339_rows_read_back_with_python() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("out.csv");
    let child = spawn_agent(
        dir.path(),
        &csv,
        &["plugins.procfs.system_poll_interval=\"100ms\""],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&csv).is_ok_and(|t| t.contains("cpu_time")) {
        assert!(Instant::now() < deadline, "no cpu_time row after 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    let rows = records(&csv);
    // 2026-11-22T10:00:00.123456789Z: date, time, 9 fraction digits, UTC.
    for r in &rows {
        let ts = &r[0];
        assert_eq!(ts.len(), 30, "{ts}");
        assert!(
            ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".",
            "{ts}"
        );
    }
    let script = "import csv, sys\n\
                  rows = list(csv.reader(open(sys.argv[1], newline='')))\n\
                  assert all(len(r) == 9 for r in rows), 'ragged rows'\n\
                  print(len(rows) - 1)";
    let out = Command::new("python3")
        .args(["-c", script, csv.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python_rows: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(python_rows, rows.len());
}
