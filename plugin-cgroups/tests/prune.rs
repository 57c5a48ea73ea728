//! Pruning (`src/prune.rs`): the CPU time of cgroups under an idle ancestor
//! is carried over instead of read, and the figures stay exact.
//!
//! On this machine's real cgroup filesystem (root needed to create cgroups;
//! without it the test says so and passes, except in CI, where it must
//! run), and on a tree of ordinary files, where the plugin does not prune.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alumet::exec::ExecTarget;
use alumet::measurement::{MeasurementBuffer, MeasurementPoint, ResourceConsumer, Timestamp};
use alumet::metrics::MetricRegistry;
use alumet::pipeline::Source;
use alumet::plugin::PluginDefinition;
use alumet::testing::TestPipeline;
use alumet_kernelfs::cgroup::{
    dir_of, kernel_cpu_seconds, Accounting, CgroupLayout, HierarchyChoice,
};
use alumet_kernelfs::host::HostParams;
use plugin_cgroups::discovery::Discovery;
use plugin_cgroups::source::{CgroupMetricIds, CgroupSource};
use plugin_cgroups::{CgroupsConfig, CgroupsPlugin};

const CHILDREN: usize = 6;

/// The cgroups a test made, removed (after their process) even when it fails.
struct Made {
    dirs: Vec<PathBuf>,
    process: Option<Child>,
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn cpu_seconds_of(points: &[MeasurementPoint], ids: &CgroupMetricIds, path: &str) -> Vec<f64> {
    let consumer = ResourceConsumer::ControlGroup { path: path.into() };
    points
        .iter()
        .filter(|p| p.consumer == consumer && p.metric == ids.cpu_time)
        .map(|p| p.value.as_f64())
        .collect()
}

#[test]
fn on_a_real_cgroup_filesystem_idle_subtrees_are_not_read_and_the_figures_are_exact() {
    let accounting = match CgroupLayout::detect(Path::new("/sys/fs/cgroup"), Path::new("/proc"))
        .map_err(|e| e.to_string())
        .and_then(|l| {
            l.accounting(HierarchyChoice::Auto)
                .map_err(|e| e.to_string())
        }) {
        Ok(a) => a,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI must have cgroups: {e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let base = format!("/alumet-prune-test-{}", std::process::id());
    let base_dir = dir_of(&accounting.cpu, &base);
    if let Err(e) = std::fs::create_dir(&base_dir) {
        assert!(std::env::var("CI").is_err(), "CI runs as root: {e}");
        eprintln!("skipped: cannot create a cgroup here ({e})");
        return;
    }
    let mut made = Made {
        dirs: vec![base_dir.clone()],
        process: None,
    };
    for i in 0..CHILDREN {
        let d = base_dir.join(format!("c{i}"));
        std::fs::create_dir(&d).unwrap();
        made.dirs.push(d);
    }
    assert!(alumet_kernelfs::cgroup::is_cgroup_filesystem(
        &accounting.cpu
    ));
    let (mut source, ids) = source_over(&accounting, &base);
    let mut points = MeasurementBuffer::new();
    let mut poll = |source: &mut CgroupSource| {
        source.poll(&mut points, Timestamp::now()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    };

    // Idle: after the first poll (the baseline), the slice is read and found
    // idle, and its children's figures are carried over.
    for _ in 0..4 {
        poll(&mut source);
    }
    assert_eq!(source.guard_paths(), std::slice::from_ref(&base));
    let skipped_while_idle = source.cpu_reads_skipped();
    assert!(
        skipped_while_idle >= (CHILDREN as u64) * 3,
        "{skipped_while_idle} reads skipped in 3 idle polls of {CHILDREN} cgroups"
    );

    // A busy process in c2: the slice moves, so its children are read.
    let busy_path = format!("{base}/c2");
    let mut busy = Command::new("sh")
        .args([
            "-c",
            "read _; i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(
        dir_of(&accounting.cpu, &busy_path).join("cgroup.procs"),
        busy.id().to_string(),
    )
    .unwrap();
    // Its end of input starts the loop, in the cgroup.
    let mut stdin = busy.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    made.process = Some(busy);
    let deadline = Instant::now() + Duration::from_secs(60);
    while made.process.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the busy loop did not end");
        poll(&mut source);
    }
    // Idle again: carried over again.
    for _ in 0..3 {
        poll(&mut source);
    }
    assert!(source.cpu_reads_skipped() >= skipped_while_idle + CHILDREN as u64);
    let kernel_s = kernel_cpu_seconds(&accounting, &busy_path).unwrap();

    let busy_series = cpu_seconds_of(&points, &ids, &busy_path);
    let reported: f64 = busy_series.iter().sum();
    assert!(kernel_s > 0.05, "the loop used {kernel_s} s");
    // The sum of user and system is the total, to the microsecond of each.
    assert!(
        (reported - kernel_s).abs() < 1e-4,
        "reported {reported} s, the kernel says {kernel_s} s"
    );
    for i in (0..CHILDREN).filter(|&i| i != 2) {
        let series = cpu_seconds_of(&points, &ids, &format!("{base}/c{i}"));
        // One point per mode at every poll after the first, like the busy one.
        assert_eq!(series.len(), busy_series.len(), "c{i}");
        assert!(series.iter().all(|&s| s == 0.0), "c{i}: {series:?}");
    }
}

/// The plugin's source over `base/*` of `accounting`, with its default settings.
fn source_over(accounting: &Accounting, base: &str) -> (CgroupSource, CgroupMetricIds) {
    let config = CgroupsConfig {
        include: vec![format!("{base}/*")],
        inotify_delay: Duration::ZERO,
        ..CgroupsConfig::default()
    };
    let options = config.source_options(accounting);
    assert!(options.prune_idle_subtrees);
    let ids = CgroupMetricIds::register_in(&mut MetricRegistry::new()).unwrap();
    let source = CgroupSource::new(
        accounting.clone(),
        Discovery::new(&accounting.cpu, 12, true),
        options,
        ExecTarget::new(),
        HostParams::detect(),
        2,
        ids,
    );
    (source, ids)
}

/// A fixture tree need not keep the kernel's invariant (here a slice whose
/// `cpu.stat` never moves while its services' do): the plugin does not
/// prune there, and every service's time is reported at the poll it moved.
#[test]
fn on_ordinary_files_the_plugin_reads_every_cgroup() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cgroup.controllers"), "cpu memory io\n").unwrap();
    let stat = |usec: u64| {
        format!(
            "usage_usec {}\nuser_usec {usec}\nsystem_usec {usec}\n",
            2 * usec
        )
    };
    std::fs::write(root.path().join("cpu.stat"), stat(10)).unwrap();
    let slice = root.path().join("app.slice");
    std::fs::create_dir(&slice).unwrap();
    std::fs::write(slice.join("cpu.stat"), stat(5)).unwrap();
    for s in ["a.service", "b.service"] {
        std::fs::create_dir(slice.join(s)).unwrap();
        std::fs::write(slice.join(s).join("cpu.stat"), stat(1)).unwrap();
    }
    let proc_root = tempfile::tempdir().unwrap();
    std::fs::write(
        proc_root.path().join("stat"),
        "cpu  1 0 1 1 0 0 0 0 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\n",
    )
    .unwrap();
    let config = CgroupsConfig {
        cgroup_root: root.path().to_path_buf(),
        proc_root: proc_root.path().to_path_buf(),
        inotify_delay: Duration::ZERO,
        poll_interval: Duration::from_secs(86_400),
        flush_interval: Duration::from_secs(86_400),
        ..CgroupsConfig::default()
    };
    let accounting = config.accounting().unwrap();
    assert!(!config.source_options(&accounting).prune_idle_subtrees);
    let mut plugin = CgroupsPlugin::init(config).unwrap();
    let mut pipeline = TestPipeline::builder();
    pipeline
        .start_plugin(CgroupsPlugin::NAME, &mut plugin)
        .unwrap();
    let running = pipeline.start();
    running.trigger_all();
    running.trigger_all();
    // a.service moves by 0.5 s of user time; its slice's file does not.
    std::fs::write(
        slice.join("a.service/cpu.stat"),
        "usage_usec 500001\nuser_usec 500000\nsystem_usec 1\n",
    )
    .unwrap();
    running.trigger_all();
    let result = running.finish();
    let consumer = ResourceConsumer::ControlGroup {
        path: "/app.slice/a.service".into(),
    };
    let user: Vec<f64> = result
        .points_of("cgroup_cpu_time")
        .iter()
        .filter(|p| p.consumer == consumer)
        .filter(|p| p.attr("mode").is_some_and(|m| m.to_string() == "user"))
        .map(|p| p.value.as_f64())
        .collect();
    // Reported at the poll after the change (the polls before it and the
    // last one, at the end, see no change); pruned, it would stay at 0.
    let moved = user.iter().position(|&v| v != 0.0);
    assert_eq!(moved, Some(2), "{user:?}");
    assert_eq!(user.iter().sum::<f64>(), 0.499_999, "{user:?}");
}
