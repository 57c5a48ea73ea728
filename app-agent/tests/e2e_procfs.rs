//! The agent with `procfs` on this machine's real /proc: `exec` hands the
//! command's pid to the plugin, which follows its process tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::csv_rows as records;

use std::collections::BTreeSet;
use std::process::Stdio;

/// The exec'd shell prints its pid and its child's, burns CPU in the
/// child, and exits 3; only that tree is watched.
#[test]
fn exec_tree_is_measured_and_exit_code_passed_on() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("out.csv");
    let script = "echo $$; \
                  sh -c 'echo $$; i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'; \
                  exit 3";
    let out = common::agent_command()
        .current_dir(dir.path())
        .args(["--config", dir.path().join("c.toml").to_str().unwrap()])
        .args(["--plugins", "procfs,csv"])
        .args(["--output-file", csv.to_str().unwrap()])
        .args(["--set", "plugins.procfs.watch_all=false"])
        .args(["--set", "plugins.procfs.process_poll_interval=\"50ms\""])
        .args(["--set", "plugins.procfs.process_refresh_interval=\"50ms\""])
        .args(["exec", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(pids.len(), 2, "stdout: {pids:?}");
    let (shell, child) = (&pids[0], &pids[1]);

    let rows = records(&csv);
    let process_rows: Vec<&csv::StringRecord> =
        rows.iter().filter(|r| &r[6] == "process").collect();
    let seen: BTreeSet<&str> = process_rows.iter().map(|r| &r[7]).collect();
    // Only the exec'd tree: the shell and its child, nothing else.
    assert!(seen.contains(shell.as_str()), "{seen:?}");
    assert!(seen.contains(child.as_str()), "{seen:?}");
    assert_eq!(seen.len(), 2, "processes outside the tree: {seen:?}");

    let child_cpu: f64 = process_rows
        .iter()
        .filter(|r| &r[1] == "process_cpu_time" && &r[7] == child.as_str())
        .map(|r| r[3].parse::<f64>().unwrap())
        .sum();
    assert!(child_cpu > 0.0, "the busy child shows no CPU time");
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    for r in process_rows.iter().filter(|r| &r[1] == "process_cpu_usage") {
        let usage: f64 = r[3].parse().unwrap();
        assert!((0.0..=100.0 * cores).contains(&usage), "usage {usage}");
    }
}
