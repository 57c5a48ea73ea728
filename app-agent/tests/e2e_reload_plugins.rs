//! SIGHUP on `run` with several plugins, the agent as a process: only the
//! plugin whose section changed restarts (the Prometheus endpoint keeps its
//! socket and its counters while procfs restarts; procfs keeps its poll
//! ticks while the endpoint moves to another port); a plugin enabled or
//! disabled starts or stops alone; a new section that cannot run gives way
//! to the previous one; a change of `[agent]` restarts everything and says
//! which key. The CSV keeps every poll once throughout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::reload::{
    assert_continuous, counter, ctl_ok, ctl_status, element_names, hup, hup_and_wait,
    listening_inode, median_gap_ms, now_ns, poll_times, prometheus_section, spawn_run,
    spawn_run_with, write_config, write_config_with,
};
use common::{read_csv, sigterm_and_wait};

use std::time::Duration;

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
    hup_and_wait(dir.path(), &child);
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
    hup_and_wait(dir.path(), &child);
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
    // A restarted source polls a last time and its successor at once: two
    // polls a few ms apart. A late tick is caught up on its deadline, so
    // a legitimate gap is rarely below 30 ms even on a loaded machine.
    assert!(
        around.iter().all(|gap| *gap >= 30),
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
    hup_and_wait(dir.path(), &child);
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

/// energy-to-carbon cannot run without a carbon intensity; a reload that
/// gives it one starts it into the running pipeline: its transform runs
/// behind cpu-power-model's, and its new metric reaches the outputs that
/// kept running (the CSV file names it, the endpoint exports it). A later
/// section it cannot run with gives way to the previous one.
#[test]
fn a_transform_started_by_a_reload_feeds_the_outputs_that_kept_running() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // procfs, csv, prometheus and cpu-power-model run; energy-to-carbon is off.
    let base = |carbon: &str| {
        format!(
            "{}\n[plugins.cpu-power-model]\nenabled = true\nmodel = \"linear\"\n{carbon}\n[plugins.cgroups]\nenabled = false\n[plugins.rapl]\nenabled = false\n[plugins.nvidia]\nenabled = false\n[plugins.energy-attribution]\nenabled = false\n",
            prometheus_section(port)
        )
    };
    let carbon_off = "[plugins.energy-to-carbon]\nenabled = false\n";
    write_config_with(dir.path(), 100, &base(carbon_off));
    let child = spawn_run_with(dir.path(), "");
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::http(port, "GET", "/metrics").is_some_and(|(s, _)| s == 200)
    }));
    std::thread::sleep(Duration::from_millis(500));
    let socket = listening_inode(port).expect("the endpoint listens");
    let before = ctl_status(dir.path());

    let carbon = "[plugins.energy-to-carbon]\nenabled = true\ncountry = \"FR\"\n";
    write_config_with(dir.path(), 100, &base(carbon));
    let hup_at = now_ns();
    hup_and_wait(dir.path(), &child);
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::http(port, "GET", "/metrics")
            .is_some_and(|(_, body)| body.contains("carbon_emission"))
    }));
    std::thread::sleep(Duration::from_millis(300));
    let after = ctl_status(dir.path());
    assert_eq!(
        listening_inode(port),
        Some(socket),
        "the endpoint kept running"
    );
    let (b, a) = (
        counter(&before, "csv/file", "written_points"),
        counter(&after, "csv/file", "written_points"),
    );
    assert!(a > b, "csv counts on from {b}: {a}");
    let transforms: Vec<&str> = after["transforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(transforms.len(), 2, "{after}");
    assert!(
        transforms[0].starts_with("cpu-power-model/"),
        "{transforms:?}"
    );
    assert!(
        transforms[1].starts_with("energy-to-carbon/"),
        "{transforms:?}"
    );

    // The TDP model on a CPU that the table does not know (a fixture
    // cpuinfo): the model cannot start so, and goes on as it was.
    let proc = dir.path().join("proc");
    std::fs::create_dir_all(&proc).unwrap();
    std::fs::copy("/proc/stat", proc.join("stat")).unwrap();
    std::fs::write(
        proc.join("cpuinfo"),
        "processor\t: 0\nmodel name\t: Unknown CPU 9000\n",
    )
    .unwrap();
    let broken = base(carbon).replace(
        "model = \"linear\"",
        &format!("model = \"tdp\"\nproc_root = {:?}", proc.to_str().unwrap()),
    );
    write_config_with(dir.path(), 100, &broken);
    hup_and_wait(dir.path(), &child);
    std::thread::sleep(Duration::from_millis(800));
    let carbon_rows_at = |rows: &[common::Row]| {
        rows.iter()
            .filter(|r| r.metric == "carbon_emission")
            .map(|r| r.timestamp_ns)
            .max()
    };
    let last_carbon = carbon_rows_at(&read_csv(&dir.path().join("out.csv")));
    // The same file again: what runs is still not what it says, so it is tried again.
    hup_and_wait(dir.path(), &child);
    std::thread::sleep(Duration::from_millis(600));

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("starting energy-to-carbon (their sections changed)"),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .matches("plugin cpu-power-model cannot run with its new section")
            .count(),
        2,
        "{stderr}"
    );
    assert!(
        stderr.contains("\"Unknown CPU 9000\" is not in the bundled table"),
        "{stderr}"
    );
    assert!(
        stderr.contains("going back to its previous one"),
        "{stderr}"
    );
    let rows = read_csv(&dir.path().join("out.csv"));
    let first_carbon = rows
        .iter()
        .filter(|r| r.metric == "carbon_emission")
        .map(|r| r.timestamp_ns)
        .min()
        .expect("carbon rows in the CSV");
    assert!(first_carbon > hup_at, "carbon only after the reload");
    assert!(
        carbon_rows_at(&rows) > last_carbon,
        "carbon of the estimate goes on after the second reload (the model on its previous section)"
    );
    let times = poll_times(&rows);
    assert_continuous(&times, 100, &[]);
}

/// The plugins enabled by default that these tests do not use, disabled.
const OTHERS_OFF: &str = "
[plugins.cgroups]
enabled = false
[plugins.rapl]
enabled = false
[plugins.nvidia]
enabled = false
[plugins.cpu-power-model]
enabled = false
[plugins.energy-attribution]
enabled = false
[plugins.energy-to-carbon]
enabled = false
";

/// The endpoint with `enabled = on`.
fn endpoint(port: u16, on: bool) -> String {
    prometheus_section(port).replace("enabled = true", &format!("enabled = {on}")) + OTHERS_OFF
}

#[test]
fn a_plugin_disabled_by_a_reload_stops_alone_and_enabled_again_starts() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    write_config_with(dir.path(), 100, &endpoint(port, true));
    // No --plugins: the file says which plugins run.
    let child = spawn_run_with(dir.path(), "");
    let serves = || common::http(port, "GET", "/metrics").is_some_and(|(s, _)| s == 200);
    assert!(common::wait_until(Duration::from_secs(5), serves));
    std::thread::sleep(Duration::from_millis(1000));
    let before = ctl_status(dir.path());
    assert_eq!(
        before["plugins"],
        serde_json::json!(["procfs", "csv", "prometheus"])
    );

    write_config_with(dir.path(), 100, &endpoint(port, false));
    hup_and_wait(dir.path(), &child);
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::http(port, "GET", "/metrics").is_none()
    }));
    let off = ctl_status(dir.path());
    assert_eq!(off["plugins"], serde_json::json!(["procfs", "csv"]));
    assert_eq!(
        element_names(&off),
        ["csv/file", "procfs/processes", "procfs/system"],
        "{off}"
    );
    let (b, a) = (
        counter(&before, "procfs/system", "polls"),
        counter(&off, "procfs/system", "polls"),
    );
    // Stopping the endpoint takes less than a poll: not fewer is enough (a
    // restarted source would count from 0).
    assert!(a >= b, "procfs counts on from {b}: {a}");

    write_config_with(dir.path(), 100, &endpoint(port, true));
    let on_at = now_ns();
    hup_and_wait(dir.path(), &child);
    assert!(common::wait_until(Duration::from_secs(5), serves));
    let on = ctl_status(dir.path());
    assert_eq!(element_names(&on), element_names(&before));

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("stopping prometheus (their sections changed)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("starting prometheus (their sections changed)"),
        "{stderr}"
    );
    let times = poll_times(&read_csv(&dir.path().join("out.csv")));
    assert_continuous(&times, 100, &[]);
    assert!(times.iter().any(|t| *t > on_at), "polls after both reloads");
}

#[test]
fn a_restarted_csv_output_misses_no_point_measured_while_it_restarts() {
    let dir = tempfile::tempdir().unwrap();
    // Polls every 10 ms, so that several land inside the csv's restarts.
    let section = |flush_ms: u64| {
        format!("\n[plugins.csv]\nenabled = true\noutput_path = \"out.csv\"\ntimestamp_format = \"unix_ns\"\nflush_interval = \"{flush_ms}ms\"\n")
    };
    let config = |flush_ms: u64| {
        let text = format!(
            // keep_zero: every point is a row, so that rows can be counted against points.
            "[plugins.procfs]\nenabled = true\nsystem_poll_interval = \"10ms\"\nprocess_poll_interval = \"1h\"\nflush_interval = \"10ms\"\nkeep_zero = true\n{}",
            section(flush_ms)
        );
        std::fs::write(dir.path().join("alumet-config.toml"), text).unwrap();
    };
    config(100);
    let child = spawn_run(dir.path());
    assert!(common::wait_until(Duration::from_secs(5), || dir
        .path()
        .join("ctl.sock")
        .exists()));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..8 {
        config(if i % 2 == 0 { 90 } else { 100 });
        hup(&child);
        std::thread::sleep(Duration::from_millis(150));
    }
    // Stop the sources, let the csv write what it has: every point the
    // sources sent must be in the file, whichever csv output wrote it.
    ctl_ok(dir.path(), &["pause", "*"]);
    std::thread::sleep(Duration::from_millis(600));
    let status = ctl_status(dir.path());
    // What left the sources (a source's buffer is handed on at its flush,
    // at the earliest at its next poll: procfs/processes holds its start poll).
    let sent: u64 = ["procfs/system", "procfs/processes"]
        .iter()
        .map(|s| counter(&status, s, "points_out") - counter(&status, s, "buffered_points"))
        .sum();
    let rows = read_csv(&dir.path().join("out.csv")).len() as u64;
    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("restarting csv").count(),
        8,
        "the csv restarted at each reload:\n{stderr}"
    );
    assert_eq!(
        rows, sent,
        "points sent by the sources vs rows in the file\n{stderr}"
    );
}
