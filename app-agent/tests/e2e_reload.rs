//! SIGHUP, tried on the agent as a process: `run` reloads its configuration
//! (a new interval shows in the timestamps, every poll is in the CSV once,
//! an invalid file keeps the old configuration, a file renamed by logrotate
//! is left complete and a new one starts with its header); `exec` passes it
//! on to the command; `config check` validates without running. With
//! several plugins: e2e_reload_plugins.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::reload::{
    assert_continuous, hup, hup_and_wait, median_gap_ms, now_ns, poll_times, spawn_run,
    write_config,
};
use common::{read_csv, sigterm_and_wait};

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn two_reloads_with_new_intervals_keep_every_poll_once() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 200);
    let child = spawn_run(dir.path());
    std::thread::sleep(Duration::from_millis(1200));

    write_config(dir.path(), 100);
    let first_hup = now_ns();
    hup_and_wait(dir.path(), &child);
    std::thread::sleep(Duration::from_millis(1500));

    write_config(dir.path(), 300);
    let second_hup = now_ns();
    hup_and_wait(dir.path(), &child);
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
    hup_and_wait(dir.path(), &child);
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
    rename_then_sighup(None);
}

/// `ctl reopen` does only the reopening, without reading the configuration.
#[test]
fn a_file_renamed_before_ctl_reopen_is_left_complete_and_a_new_one_starts() {
    rename_then(None, |dir, _| {
        let out = common::reload::ctl_ok(dir, &["reopen"]);
        assert!(
            String::from_utf8_lossy(&out).contains("reopened"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    });
}

/// logrotate's `postrotate` sends SIGHUP whatever the configuration file
/// holds: the outputs reopen all the same, and the agent goes on.
#[test]
fn a_file_renamed_before_sighup_with_a_broken_configuration_is_left_complete_too() {
    rename_then_sighup(Some(("[plugins.csv]", "[plugins.csv\n")));
}

/// A value `config check` used to accept and that aborted the agent at
/// reload (a 2^63 − 1 slot queue): refused, the agent goes on, reopened.
#[test]
fn a_file_renamed_before_sighup_with_an_impossible_queue_is_left_complete_too() {
    rename_then_sighup(Some((
        "[plugins.procfs]",
        "[agent]\noutput_queue_capacity = 9223372036854775807\n\n[plugins.procfs]",
    )));
}

/// Renames the CSV file, edits the configuration (`(from, to)` replaced
/// in it, if given), sends SIGHUP: the renamed file is complete and
/// closed, a new one goes on with every poll.
fn rename_then_sighup(edit: Option<(&str, &str)>) {
    rename_then(edit, |_, child| hup(child));
}

/// [`rename_then_sighup`] with `reopen` instead of SIGHUP.
fn rename_then(edit: Option<(&str, &str)>, reopen: impl Fn(&Path, &std::process::Child)) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 100);
    let child = spawn_run(dir.path());
    std::thread::sleep(Duration::from_millis(800));

    let live = dir.path().join("out.csv");
    let rotated = dir.path().join("out.csv.1");
    std::fs::rename(&live, &rotated).unwrap();
    if let Some((from, to)) = edit {
        let config = dir.path().join("alumet-config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(from));
        std::fs::write(&config, text.replacen(from, to, 1)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    reopen(dir.path(), &child);
    assert!(common::wait_until(Duration::from_secs(3), || live.exists()));
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !holds_open(child.id(), &rotated),
        "the rotated file is closed"
    );
    assert!(holds_open(child.id(), &live), "the new file is open");

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    if edit.is_some() {
        assert!(
            stderr.contains("still running on the previous one"),
            "{stderr}"
        );
    }
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
