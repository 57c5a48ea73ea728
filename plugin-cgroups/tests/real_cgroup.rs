//! The plugin on this machine's real cgroup filesystem: the test creates a
//! cgroup (in the hierarchy that accounts CPU time here: v2, or v1 cpuacct),
//! runs a busy child and a loop of 150 short-lived children in it, and
//! checks that the plugin's `cgroup_cpu_time` total equals the kernel's own
//! figure within 2 %, while the process source (procfs, polled alongside)
//! sees only a small part of it.
//!
//! Needs root (to create a cgroup). Without it the test says so and passes,
//! except in CI (`CI=true`), where it must run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use alumet::measurement::ResourceConsumer;
use alumet::plugin::PluginDefinition;
use alumet::testing::TestPipeline;
use alumet_kernelfs::cgroup::{
    dir_of, kernel_cpu_seconds, Accounting, CgroupLayout, CommandCgroup, HierarchyChoice,
    ParentChoice,
};
use plugin_cgroups::{CgroupsConfig, CgroupsPlugin};
use plugin_procfs::{ProcfsConfig, ProcfsPlugin};

fn spawn_in(cgroup: &CommandCgroup, script: &str) -> std::process::Child {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    cgroup.join_on_exec(&mut cmd);
    cmd.spawn().unwrap()
}

#[test]
fn a_real_cgroup_is_measured_in_full_short_lived_children_included() {
    let layout = match CgroupLayout::detect(Path::new("/sys/fs/cgroup"), Path::new("/proc")) {
        Ok(l) => l,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI must have cgroups: {e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let accounting = layout.accounting(HierarchyChoice::Auto).unwrap();
    let name = format!("alumet-test-{}", std::process::id());
    let cgroup = match CommandCgroup::create_for_command(
        &accounting,
        Path::new("/proc"),
        &[ParentChoice::Own, ParentChoice::Root],
        &name,
    ) {
        Ok(c) => c,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI runs as root: {e:?}");
            eprintln!("skipped: cannot create a cgroup here ({e:?})");
            return;
        }
    };
    let path = cgroup.path().to_owned();
    let cpu_dir = dir_of(&accounting.cpu, &path);

    let config = CgroupsConfig {
        include: vec![format!("*/{name}")],
        ..CgroupsConfig::default()
    };
    let mut cgroups = CgroupsPlugin::init(config).unwrap();
    let procfs_config = ProcfsConfig {
        system: false,
        process_refresh_interval: Duration::from_millis(1),
        ..ProcfsConfig::default()
    };
    let mut procfs = ProcfsPlugin::init(procfs_config).unwrap();
    let mut pipeline = TestPipeline::builder();
    pipeline
        .start_plugin(CgroupsPlugin::NAME, &mut cgroups)
        .unwrap();
    pipeline
        .start_plugin(ProcfsPlugin::NAME, &mut procfs)
        .unwrap();
    let running = pipeline.start();
    running.trigger_all();

    // A busy child, and a loop of short-lived children (each lives a few ms).
    let mut busy = spawn_in(&cgroup, "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done");
    let mut short_lived = spawn_in(
        &cgroup,
        "for j in $(seq 150); do sh -c 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done'; done",
    );
    let loop_pid = short_lived.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    for child in [&mut busy, &mut short_lived] {
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "children did not finish");
            // Both sources poll every 100 ms or so while the children run.
            std::thread::sleep(Duration::from_millis(100));
            running.trigger_all();
        }
    }
    let kernel_s = kernel_cpu_seconds(&accounting, &path).unwrap();
    running.trigger_all();
    let result = running.finish();
    let removed = cgroup.remove(Duration::from_secs(2));
    assert!(removed.is_ok(), "{removed:?}");
    assert!(!cpu_dir.exists());

    let consumer = ResourceConsumer::ControlGroup {
        path: path.clone().into(),
    };
    let agent_s: f64 = result
        .points_of("cgroup_cpu_time")
        .iter()
        .filter(|p| p.consumer == consumer)
        .map(|p| p.value.as_f64())
        .sum();
    assert!(kernel_s > 0.2, "the children used {kernel_s} s of CPU");
    assert!(
        (agent_s - kernel_s).abs() <= 0.02 * kernel_s,
        "agent {agent_s} s vs kernel {kernel_s} s"
    );
    // Sampling processes sees the loop's shell and the few children alive at
    // a poll (the rest only later, as the shell's `mode=children` time).
    let procfs_s: f64 = result
        .points_of("process_cpu_time")
        .iter()
        .filter(|p| matches!(p.consumer, ResourceConsumer::Process { pid } if pid == loop_pid || pid == busy.id()))
        .filter(|p| p.attr("mode").is_some_and(|m| m.to_string() != "children"))
        .map(|p| p.value.as_f64())
        .sum();
    eprintln!("kernel {kernel_s:.3} s, cgroups plugin {agent_s:.3} s, procfs (the two shells' own time) {procfs_s:.3} s");
    assert!(
        procfs_s < 0.9 * kernel_s,
        "procfs {procfs_s} s vs kernel {kernel_s} s"
    );
}

/// On a hybrid machine (v1 `cpuacct` with a v2 tree beside it), a cgroup
/// that exists only in the v2 tree, as a manager configured for v2 leaves
/// it, is measured from v2's `cpu.stat`, in full; a cgroup present in both
/// is measured once, from `cpuacct`.
#[test]
fn on_a_hybrid_machine_a_cgroup_only_in_the_v2_tree_is_measured_from_it() {
    let layout = match CgroupLayout::detect(Path::new("/sys/fs/cgroup"), Path::new("/proc")) {
        Ok(l) => l,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI must have cgroups: {e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let (Ok(primary), Ok(v2)) = (
        layout.accounting(HierarchyChoice::V1),
        layout.accounting(HierarchyChoice::V2),
    ) else {
        eprintln!("skipped: not a hybrid machine ({})", layout.describe());
        return;
    };
    // The v2 tree alone: a cgroup created there is in no v1 hierarchy.
    let v2 = Accounting {
        memory: None,
        io: None,
        ..v2
    };
    let pid = std::process::id();
    let only_v2 = format!("alumet-lane-v2-{pid}");
    let both = format!("alumet-lane-both-{pid}");
    let v2_cgroup = match CommandCgroup::create(&v2, "/", &only_v2) {
        Ok(c) => c,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI runs as root: {e:?}");
            eprintln!("skipped: cannot create a cgroup here ({e:?})");
            return;
        }
    };
    // The same path in cpuacct and in v2: a manager that writes to both.
    let both_v1 = CommandCgroup::create(&primary, "/", &both).unwrap();
    let both_v2 = CommandCgroup::create(&v2, "/", &both).unwrap();

    let config = CgroupsConfig {
        include: vec!["/alumet-lane-*".to_owned()],
        ..CgroupsConfig::default()
    };
    let mut cgroups = CgroupsPlugin::init(config).unwrap();
    let mut pipeline = TestPipeline::builder();
    pipeline
        .start_plugin(CgroupsPlugin::NAME, &mut cgroups)
        .unwrap();
    let running = pipeline.start();
    running.trigger_all();

    let busy = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done";
    let mut in_v2 = spawn_in(&v2_cgroup, busy);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", busy]);
    both_v1.join_on_exec(&mut cmd);
    both_v2.join_on_exec(&mut cmd);
    let mut in_both = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for child in [&mut in_v2, &mut in_both] {
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "children did not finish");
            std::thread::sleep(Duration::from_millis(100));
            running.trigger_all();
        }
    }
    let kernel_v2_s = kernel_cpu_seconds(&v2, v2_cgroup.path()).unwrap();
    let kernel_both_s = kernel_cpu_seconds(&primary, both_v1.path()).unwrap();
    running.trigger_all();
    let result = running.finish();
    let (v2_path, both_path) = (v2_cgroup.path().to_owned(), both_v1.path().to_owned());
    for c in [v2_cgroup, both_v1, both_v2] {
        let removed = c.remove(Duration::from_secs(2));
        assert!(removed.is_ok(), "{removed:?}");
    }

    let seconds_of = |path: &str| -> (f64, usize) {
        let consumer = ResourceConsumer::ControlGroup {
            path: path.to_owned().into(),
        };
        let points: Vec<_> = result
            .points_of("cgroup_cpu_time")
            .into_iter()
            .filter(|p| p.consumer == consumer)
            .collect();
        let polls = points
            .iter()
            .map(|p| p.timestamp)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        (
            points.iter().map(|p| p.value.as_f64()).sum(),
            points.len() / polls.max(1),
        )
    };
    let (agent_v2_s, _) = seconds_of(&v2_path);
    let (agent_both_s, per_poll) = seconds_of(&both_path);
    eprintln!("v2 only: kernel {kernel_v2_s:.3} s, agent {agent_v2_s:.3} s; both: kernel {kernel_both_s:.3} s, agent {agent_both_s:.3} s");
    assert!(kernel_v2_s > 0.1, "the child used {kernel_v2_s} s of CPU");
    assert!(
        (agent_v2_s - kernel_v2_s).abs() <= 0.005 * kernel_v2_s,
        "v2-only cgroup: agent {agent_v2_s} s vs kernel {kernel_v2_s} s"
    );
    // Once: two modes (user, system) per poll, not four.
    assert_eq!(per_poll, 2, "the cgroup in both trees is read from one");
    assert!(
        (agent_both_s - kernel_both_s).abs() <= 0.005 * kernel_both_s,
        "cgroup in both: agent {agent_both_s} s vs cpuacct {kernel_both_s} s"
    );
    let measured = result.points_of("cgroups_measured");
    assert!(
        measured.iter().any(|p| p.value.as_f64() >= 3.0),
        "root and both cgroups are counted: {measured:?}"
    );
}
