//! Fixture-driven tests of the procfs plugin.
//!
//! Each directory `tests/fixtures/<case>/` holds snapshots of /proc files,
//! `proc0/`, `proc1/` (and optionally `proc2/`...), an optional `config.toml`
//! with overrides of the plugin's configuration, an optional `exec_target`
//! (the pid `alumet-agent exec` would have spawned; `exec_target_late`: the
//! same, but set only after the first poll, as `exec` does), and `expected.csv` (then
//! `expected2.csv`...): the points the plugin must emit at the poll that
//! follows each snapshot, one snapshot per simulated second.
//!
//! The runner copies `proc0` into a temporary proc_root, starts the real
//! plugin in a `TestPipeline` (USER_HZ 100, 4096-byte pages, a hand-driven
//! clock), polls, then for each later snapshot overwrites the files in place
//! (kept descriptors see the new content, as with the kernel), removes those
//! absent from it, advances the clock by 1 s and polls again.
//!
//! `expected.csv` columns: `metric,resource_kind,resource_id,consumer_kind,
//! consumer_id,attributes,value`; `attributes` is `k=v` pairs sorted by key
//! and joined by `;`; lines starting with `#` are comments. Fields are split
//! on `,` (fixtures avoid commas in names). Values match within 1e-9
//! (relative); the order of rows does not matter.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use alumet::measurement::Timestamp;
use alumet::plugin::PluginDefinition;
use alumet::testing::fixture::{
    apply_snapshot, assert_cases_are, check_windows, with_case_overrides,
};
use alumet::testing::TestPipeline;
use plugin_procfs::host::HostParams;
use plugin_procfs::{ProcfsConfig, ProcfsPlugin};

/// Every case directory; `all_fixture_directories_have_a_test` keeps this honest.
const CASES: [&str; 12] = [
    "schedstat_idle",
    "orphan_reparented",
    "reaped_children",
    "exec_child_same_tick",
    "basic",
    "cpu_backwards",
    "usage_clamped",
    "process_vanishes",
    "pid_reuse",
    "comm_spaces",
    "garbage",
    "watch_rules",
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn run_case(name: &str) {
    let case = fixtures_dir().join(name);
    let root = tempfile::tempdir().unwrap();
    apply_snapshot(root.path(), &case.join("proc0"));

    let table = alumet::config::serialize_config(&ProcfsConfig::default()).unwrap();
    let mut table = with_case_overrides(table, &case);
    // Polls happen only when the test says so; the refresh follows the hand-driven clock.
    let set = |t: &mut toml::Table, k: &str, v: &str| {
        t.insert(k.to_owned(), toml::Value::String(v.to_owned()));
    };
    set(&mut table, "proc_root", root.path().to_str().unwrap());
    set(&mut table, "system_poll_interval", "24h");
    set(&mut table, "process_poll_interval", "24h");
    set(&mut table, "flush_interval", "24h");
    set(&mut table, "process_refresh_interval", "1s");
    let config: ProcfsConfig = alumet::config::deserialize_config(table).unwrap();

    let (host, clock) = HostParams::simulated();
    let mut plugin = ProcfsPlugin::init(config).unwrap().with_host(host);
    let mut pipeline = TestPipeline::builder();
    let target = case.join("exec_target");
    if target.exists() {
        let pid: u32 = std::fs::read_to_string(&target)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        pipeline.pipeline_builder().exec_target().set(pid);
    }
    let late_target = std::fs::read_to_string(case.join("exec_target_late"))
        .ok()
        .map(|t| t.trim().parse::<u32>().unwrap());
    let exec_target = pipeline.pipeline_builder().exec_target();
    pipeline.start_plugin("procfs", &mut plugin).unwrap();
    let running = pipeline.start();
    // Two triggers: after the second, the poll every source gets at start is done too.
    running.trigger_all();
    running.trigger_all();

    let mut windows = Vec::new();
    for n in 1.. {
        let snapshot = case.join(format!("proc{n}"));
        if !snapshot.exists() {
            break;
        }
        clock.advance_ns(1_000_000_000);
        apply_snapshot(root.path(), &snapshot);
        if let (1, Some(pid)) = (n, late_target) {
            exec_target.set(pid);
        }
        let before = Timestamp::now();
        running.trigger_all();
        let after = Timestamp::now();
        windows.push((n, before, after));
    }
    let result = running.finish();
    check_windows(&case, "proc", &result.points, &result.metrics, &windows);
}

#[test]
fn basic_system_and_processes() {
    run_case("basic");
}

#[test]
fn cpu_counter_going_backwards_is_skipped_then_reprimed() {
    run_case("cpu_backwards");
}

#[test]
fn cpu_usage_never_exceeds_100_percent_per_cpu() {
    run_case("usage_clamped");
}

#[test]
fn vanished_process_ends_quietly() {
    run_case("process_vanishes");
}

#[test]
fn cpu_time_of_reaped_children_is_reported_once_on_their_parent() {
    run_case("reaped_children");
}

#[test]
fn pid_reuse_restarts_the_series() {
    run_case("pid_reuse");
}

#[test]
fn names_with_spaces_and_parentheses() {
    run_case("comm_spaces");
}

#[test]
fn truncated_and_garbage_lines_are_skipped() {
    run_case("garbage");
}

#[test]
fn explicit_pids_patterns_and_exec_tree_select_processes() {
    run_case("watch_rules");
}

#[test]
fn exec_child_born_in_the_same_tick_as_the_previous_poll_keeps_its_first_interval() {
    run_case("exec_child_same_tick");
}

#[test]
fn idle_single_threaded_process_is_not_re_read_until_its_runtime_moves_or_its_memory_max_age() {
    run_case("schedstat_idle");
}

#[test]
fn an_idle_orphan_is_re_read_for_its_new_parent_so_its_cpu_time_counts_once() {
    run_case("orphan_reparented");
}

#[test]
fn all_fixture_directories_have_a_test() {
    assert_cases_are(&fixtures_dir(), &CASES);
}

#[test]
fn plugin_name_is_the_shared_one() {
    assert_eq!(ProcfsPlugin::NAME, "procfs");
}
