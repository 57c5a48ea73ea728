//! Cost of one poll of the cgroups source with 1 000 measured cgroups, and
//! the memory the source holds for them.
//!
//! As root on a machine with a writable cgroup hierarchy the cgroups are
//! real (created under `<hierarchy>/alumet-bench-PID/`, removed at the end),
//! so the kernel's own cost of producing `cpu.stat` is included; otherwise
//! a fixture tree on a tmpfs-like temporary directory stands in.
//!
//! Run: `cargo bench -p plugin-cgroups --bench poll` (prints the figures);
//! `ALUMET_BENCH_FIXTURE=1` forces the fixture tree (with memory and I/O files);
//! `ALUMET_BENCH_NO_PRUNE=1` reads every cgroup's CPU time at every poll
//! (see `prune.rs`), for the figure without pruning.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alumet::exec::ExecTarget;
use alumet::measurement::{MeasurementBuffer, Timestamp};
use alumet::metrics::MetricRegistry;
use alumet::pipeline::Source;
use alumet_kernelfs::cgroup::{Accounting, CgroupLayout, CgroupVersion, HierarchyChoice};
use alumet_kernelfs::host::HostParams;
use plugin_cgroups::discovery::Discovery;
use plugin_cgroups::source::{CgroupMetricIds, CgroupSource};
use plugin_cgroups::CgroupsConfig;

const CGROUPS: usize = 1000;
const POLLS: usize = 200;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Real cgroups under the CPU hierarchy, or a fixture tree: (accounting, base path, cleanup dir).
fn setup(tmp: &Path) -> (Accounting, String, Vec<PathBuf>, &'static str) {
    let forced_fixture = std::env::var_os("ALUMET_BENCH_FIXTURE").is_some();
    if forced_fixture {
        // fall through to the fixture tree
    } else if let Ok(layout) = CgroupLayout::detect(Path::new("/sys/fs/cgroup"), Path::new("/proc"))
    {
        if let Ok(acc) = layout.accounting(HierarchyChoice::Auto) {
            let base = format!("/alumet-bench-{}", std::process::id());
            let dirs: Vec<PathBuf> = acc
                .mount_points()
                .iter()
                .map(|m| alumet_kernelfs::cgroup::dir_of(m, &base))
                .collect();
            if dirs.iter().all(|d| std::fs::create_dir(d).is_ok()) {
                for d in &dirs {
                    for i in 0..CGROUPS {
                        std::fs::create_dir(d.join(format!("svc{i}.service"))).unwrap();
                    }
                }
                return (
                    acc,
                    base,
                    dirs,
                    "real cgroups (the kernel's own cost included)",
                );
            }
            for d in &dirs {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
    let root = tmp.join("cg");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("cgroup.controllers"), "cpu memory io\n").unwrap();
    for i in 0..CGROUPS {
        let d = root.join(format!("bench/svc{i}.service"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("cpu.stat"),
            "usage_usec 1000\nuser_usec 600\nsystem_usec 400\nnice_usec 0\n",
        )
        .unwrap();
        std::fs::write(d.join("memory.current"), "1048576\n").unwrap();
        std::fs::write(d.join("memory.peak"), "2097152\n").unwrap();
        std::fs::write(
            d.join("io.stat"),
            "8:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n",
        )
        .unwrap();
    }
    let acc = Accounting {
        version: CgroupVersion::V2,
        cpu: root.clone(),
        memory: Some((root.clone(), CgroupVersion::V2)),
        io: Some((root, CgroupVersion::V2)),
    };
    (acc, "/bench".into(), Vec::new(), "fixture tree")
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let (accounting, base, cleanup, kind) = setup(tmp.path());
    let rss_before = rss_kib();
    let config = CgroupsConfig {
        include: vec![format!("{base}/*")],
        inotify_delay: Duration::ZERO,
        memory_io_interval: Duration::from_nanos(
            std::env::var("ALUMET_BENCH_MEMORY_IO_EVERY_NS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5_000_000_000),
        ),
        ..CgroupsConfig::default()
    };
    let mut options = config.source_options(&accounting);
    if std::env::var_os("ALUMET_BENCH_NO_PRUNE").is_some() {
        options.prune_idle_subtrees = false;
    }
    let discovery = Discovery::new(&accounting.cpu, 12, true);
    let mut source = CgroupSource::new(
        accounting,
        discovery,
        options,
        ExecTarget::new(),
        HostParams::detect(),
        2,
        CgroupMetricIds::register_in(&mut MetricRegistry::new()).unwrap(),
    );
    let mut buf = MeasurementBuffer::with_capacity(8 * CGROUPS);
    source.poll(&mut buf, Timestamp::now()).unwrap();
    let measured = source.measured_paths().len();
    buf.clear();
    let start = Instant::now();
    let mut points = 0;
    for _ in 0..POLLS {
        source.poll(&mut buf, Timestamp::now()).unwrap();
        points += buf.len();
        buf.clear();
    }
    let per_poll = start.elapsed() / POLLS as u32;
    let rss_after = rss_kib();
    let core_percent = per_poll.as_secs_f64() / Duration::from_secs(1).as_secs_f64() * 100.0;
    println!("cgroups source, {kind}: {measured} cgroups measured (root included)");
    println!(
        "  one poll: {:.0} us, {} points -> {core_percent:.3} % of one core at a 1 s interval",
        per_poll.as_secs_f64() * 1e6,
        points / POLLS
    );
    println!(
        "  CPU-time reads carried over from an idle ancestor: {} of {} ({} guard(s): {:?}; ALUMET_BENCH_NO_PRUNE=1 reads every one)",
        source.cpu_reads_skipped(),
        (POLLS + 1) * (measured + source.guard_paths().len()),
        source.guard_paths().len(),
        source.guard_paths(),
    );
    println!(
        "  memory held by the source: {} KiB of RSS ({:.1} KiB per cgroup)",
        rss_after.saturating_sub(rss_before),
        rss_after.saturating_sub(rss_before) as f64 / CGROUPS as f64
    );
    drop(source);
    for dir in cleanup {
        for i in 0..CGROUPS {
            let _ = std::fs::remove_dir(dir.join(format!("svc{i}.service")));
        }
        let _ = std::fs::remove_dir(&dir);
    }
}
