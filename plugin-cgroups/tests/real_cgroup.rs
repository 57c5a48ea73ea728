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
    dir_of, kernel_cpu_seconds, CgroupLayout, CommandCgroup, HierarchyChoice, ParentChoice,
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
