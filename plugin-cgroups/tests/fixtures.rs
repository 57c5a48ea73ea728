//! Fixture-driven tests of the cgroups plugin, one case per directory of
//! `tests/fixtures/`: snapshots `cgroup0/`, `cgroup1/`... of a cgroup root
//! (every layout: pure v2, pure v1 with its controller directories,
//! hybrid), an optional `config.toml` of overrides, and `expected.csv`
//! (then `expected2.csv`...): the points the plugin must emit at the poll
//! after each snapshot, one snapshot per simulated second (format in
//! `alumet::testing::fixture`). Files are overwritten in place between polls,
//! cgroups appear and vanish as directories do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use alumet::measurement::Timestamp;
use alumet::plugin::PluginDefinition;
use alumet::testing::fixture::{
    apply_snapshot, assert_cases_are, check_windows, with_case_overrides,
};
use alumet::testing::TestPipeline;
use alumet_kernelfs::host::HostParams;
use plugin_cgroups::{CgroupsConfig, CgroupsPlugin};

const CASES: [&str; 7] = [
    "cap",
    "idle_memory_io",
    "v2_systemd",
    "v1_cgroupfs",
    "hybrid",
    "rescan_only",
    "select_all_depth",
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn run_case(name: &str) {
    // No lookups of this machine's engines or Slurm for the fixtures' ids
    // (the names have tests of their own, against real managers).
    let mut names = toml::Table::new();
    names.insert("enabled".to_owned(), toml::Value::Boolean(false));
    run_case_with(name, names);
}

fn run_case_with(name: &str, names: toml::Table) {
    let case = fixtures_dir().join(name);
    let root = tempfile::tempdir().unwrap();
    apply_snapshot(root.path(), &case.join("cgroup0"));
    // A /proc with four CPUs (the bound of cgroup_cpu_usage) and no mountinfo.
    let proc_root = tempfile::tempdir().unwrap();
    std::fs::write(
        proc_root.path().join("stat"),
        "cpu  1 0 1 1 0 0 0 0 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0 0 0\ncpu3 0 0 0 0 0 0 0 0 0 0\n",
    )
    .unwrap();

    let mut table = alumet::config::serialize_config(&CgroupsConfig::default()).unwrap();
    // Memory and I/O at every simulated second, unless the case says otherwise.
    table.insert(
        "memory_io_interval".to_owned(),
        toml::Value::String("1s".to_owned()),
    );
    // Idle cgroups' memory and I/O too.
    table.insert(
        "idle_memory_io_max_age".to_owned(),
        toml::Value::String("0s".to_owned()),
    );
    table.insert("names".to_owned(), toml::Value::Table(names));
    // inotify from the first poll, as in a long run.
    table.insert(
        "inotify_delay".to_owned(),
        toml::Value::String("0s".to_owned()),
    );
    let mut table = with_case_overrides(table, &case);
    let set = |t: &mut toml::Table, k: &str, v: &str| {
        t.insert(k.to_owned(), toml::Value::String(v.to_owned()));
    };
    set(&mut table, "cgroup_root", root.path().to_str().unwrap());
    set(&mut table, "proc_root", proc_root.path().to_str().unwrap());
    set(&mut table, "poll_interval", "24h");
    set(&mut table, "flush_interval", "24h");
    let config: CgroupsConfig = alumet::config::deserialize_config(table).unwrap();

    let (host, clock) = HostParams::simulated();
    let mut plugin = CgroupsPlugin::init(config).unwrap().with_host(host);
    let mut pipeline = TestPipeline::builder();
    pipeline
        .start_plugin(CgroupsPlugin::NAME, &mut plugin)
        .unwrap();
    let running = pipeline.start();
    // After this trigger the poll every source gets at start is done too.
    running.trigger_all();

    let mut windows = Vec::new();
    for n in 1.. {
        let snapshot = case.join(format!("cgroup{n}"));
        if !snapshot.exists() {
            break;
        }
        clock.advance_ns(1_000_000_000);
        apply_snapshot(root.path(), &snapshot);
        let before = Timestamp::now();
        running.trigger_all();
        let after = Timestamp::now();
        windows.push((n, before, after));
    }
    let result = running.finish();
    check_windows(&case, "cgroup", &result.points, &result.metrics, &windows);
}

#[test]
fn v2_systemd_driver_slurm_kubernetes_docker_and_a_cgroup_that_comes_and_one_that_goes() {
    run_case("v2_systemd");
}

/// Names on, with every source of them absent (no engine socket, no
/// squeue, no Kubernetes, no process of the jobs): the same points, exactly.
#[test]
fn with_every_lookup_source_absent_the_points_are_exactly_the_same() {
    for case in ["v2_systemd", "v1_cgroupfs"] {
        let names: toml::Table = toml::from_str(
            r#"
            enabled = true
            docker_socket = "/nonexistent/docker.sock"
            podman_sockets = ["/nonexistent/podman.sock"]
            squeue = ""
            kubernetes = "off"
            "#,
        )
        .unwrap();
        run_case_with(case, names);
    }
}

#[test]
fn v1_cgroupfs_driver_with_memory_and_blkio_hierarchies() {
    run_case("v1_cgroupfs");
}

#[test]
fn hybrid_layout_reads_each_cgroup_from_the_hierarchy_that_accounts_it() {
    run_case("hybrid");
}

#[test]
fn without_inotify_a_new_cgroup_waits_for_the_rescan() {
    run_case("rescan_only");
}

#[test]
fn select_all_with_a_depth_limit_and_an_exclusion() {
    run_case("select_all_depth");
}

#[test]
fn an_idle_cgroup_keeps_its_last_memory_and_io_until_they_are_old_enough() {
    run_case("idle_memory_io");
}

#[test]
fn max_cgroups_holds_and_the_rest_are_not_measured() {
    run_case("cap");
}

#[test]
fn all_fixture_directories_have_a_test() {
    assert_cases_are(&fixtures_dir(), &CASES);
}
