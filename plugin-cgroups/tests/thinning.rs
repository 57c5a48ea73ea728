//! The default (`keep_zero = false`) against `keep_zero = true` over one
//! synthetic cgroup v2 tree: the same CPU-time totals per cgroup, every
//! series starting at the same poll, every removed cgroup's series ending
//! at the poll it was last seen, and at least 5× fewer rows.
//!
//! The tree: 80 services under `system.slice` over 30 one-second polls;
//! most sleep, a few run now and then, 20 are removed half-way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use alumet::measurement::Timestamp;
use alumet::plugin::PluginDefinition;
use alumet::testing::series::{poll_index, series_totals, SeriesTotal};
use alumet::testing::TestPipeline;
use alumet_kernelfs::host::HostParams;
use plugin_cgroups::{CgroupsConfig, CgroupsPlugin};

const POLLS: u64 = 30;
const SERVICES: u32 = 80;

fn runs(i: u32, n: u64) -> bool {
    (i % 10 == 0 && n % 4 == 0) || i == 7
}

fn alive(i: u32, n: u64) -> bool {
    !((20..40).contains(&i) && n >= 15)
}

fn cpu_stat(usage_usec: u64) -> String {
    format!(
        "usage_usec {usage_usec}\nuser_usec {}\nsystem_usec {}\nnice_usec 0\n",
        usage_usec * 3 / 4,
        usage_usec - usage_usec * 3 / 4
    )
}

fn write_tree(root: &Path, n: u64) {
    std::fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    let slice = root.join("system.slice");
    std::fs::create_dir_all(&slice).unwrap();
    let mut slice_usec = 0;
    for i in 0..SERVICES {
        let dir = slice.join(format!("svc{i}.service"));
        if !alive(i, n) {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).unwrap();
            }
            continue;
        }
        let runs_so_far = (0..=n).filter(|&k| runs(i, k)).count() as u64;
        let usage = 1_000 + runs_so_far * 25_000;
        slice_usec += usage;
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), cpu_stat(usage)).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        std::fs::write(
            dir.join("memory.current"),
            format!("{}\n", 1_000_000 + runs_so_far * 40_000),
        )
        .unwrap();
        std::fs::write(dir.join("memory.peak"), "5000000\n").unwrap();
    }
    std::fs::write(slice.join("cpu.stat"), cpu_stat(slice_usec)).unwrap();
    std::fs::write(slice.join("cgroup.procs"), "").unwrap();
    std::fs::write(root.join("cpu.stat"), cpu_stat(slice_usec + 10_000 * n)).unwrap();
    std::fs::write(root.join("cgroup.procs"), "1\n").unwrap();
}

struct Run {
    rows: usize,
    series: std::collections::BTreeMap<String, SeriesTotal>,
    polls: Vec<Timestamp>,
}

fn run(keep_zero: bool) -> Run {
    let root = tempfile::tempdir().unwrap();
    write_tree(root.path(), 0);
    let proc_root = tempfile::tempdir().unwrap();
    std::fs::write(
        proc_root.path().join("stat"),
        "cpu  1 0 1 1 0 0 0 0 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\n",
    )
    .unwrap();
    let config: CgroupsConfig = toml::from_str(&format!(
        r#"
        cgroup_root = "{}"
        proc_root = "{}"
        select = "all"
        poll_interval = "24h"
        flush_interval = "24h"
        memory_io_interval = "1s"
        idle_memory_io_max_age = "10s"
        inotify_delay = "0s"
        io = false
        keep_zero = {keep_zero}
        [names]
        enabled = false
        "#,
        root.path().display(),
        proc_root.path().display()
    ))
    .unwrap();
    let (host, clock) = HostParams::simulated();
    let mut plugin = CgroupsPlugin::init(config).unwrap().with_host(host);
    let mut pipeline = TestPipeline::thinned();
    pipeline
        .start_plugin(CgroupsPlugin::NAME, &mut plugin)
        .unwrap();
    let running = pipeline.start();
    running.trigger_all();
    let mut polls = Vec::new();
    for n in 1..=POLLS {
        clock.advance_ns(1_000_000_000);
        write_tree(root.path(), n);
        running.trigger_all();
        polls.push(Timestamp::now());
    }
    let result = running.finish();
    Run {
        rows: result.points.len(),
        series: series_totals(&result.points, &result.metrics),
        polls,
    }
}

#[test]
fn thinned_cgroup_series_keep_every_total_their_start_and_their_end_with_5x_fewer_rows() {
    let full = run(true);
    let thin = run(false);
    assert_eq!(
        full.series.keys().collect::<Vec<_>>(),
        thin.series.keys().collect::<Vec<_>>()
    );
    let (mut cpu_series, mut busy) = (0, 0);
    for (key, total) in &full.series {
        let other = thin.series[key];
        if key.starts_with("cgroup_cpu_time") {
            cpu_series += 1;
            assert_eq!(total.sum, other.sum, "{key}: CPU-time total");
            busy += usize::from(total.sum > 0.0);
        }
        assert_eq!(
            poll_index(&full.polls, total.first),
            poll_index(&thin.polls, other.first),
            "{key}: start"
        );
    }
    assert!(
        cpu_series >= 2 * SERVICES as usize,
        "{cpu_series} CPU series"
    );
    assert!(busy >= 10, "{busy} series with CPU time");

    let mut ended = 0;
    for (key, total) in full
        .series
        .iter()
        .filter(|(k, _)| (20..40).any(|i| k.contains(&format!("/svc{i}.service "))))
    {
        ended += 1;
        assert_eq!(
            poll_index(&full.polls, total.last),
            poll_index(&thin.polls, thin.series[key].last),
            "{key}: end"
        );
    }
    assert!(ended >= 20 * 3, "{ended} series of removed cgroups checked");

    let ratio = full.rows as f64 / thin.rows as f64;
    println!(
        "rows: keep_zero = true {}, default {} ({ratio:.1}x fewer)",
        full.rows, thin.rows
    );
    assert!(ratio >= 5.0, "only {ratio:.2}x fewer rows");
}
