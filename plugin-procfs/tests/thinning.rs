//! The default (`keep_zero = false`) against `keep_zero = true`, over one
//! synthetic /proc: the same CPU-time totals per process and per CPU state,
//! every series starting at the same poll, every vanished process's series
//! ending at the poll it was last seen, and at least 5× fewer rows.
//!
//! The tree: 300 processes over 40 one-second polls, as on a quiet node:
//! most sleep, a few run now and then, 30 exit half-way and 20 are born.
//! Both runs read the same generated files through the real plugin and a
//! collecting output that stores rows (thinned series, as CSV gets).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use alumet::measurement::Timestamp;
use alumet::plugin::PluginDefinition;
use alumet::testing::series::{poll_index, series_totals, SeriesTotal};
use alumet::testing::TestPipeline;
use plugin_procfs::host::HostParams;
use plugin_procfs::{ProcfsConfig, ProcfsPlugin};

const POLLS: u64 = 40;
const PROCESSES: u32 = 300;
const FIRST_PID: u32 = 1000;

/// Whether process `pid` runs in the second before poll `n`.
fn runs(pid: u32, n: u64) -> bool {
    (pid % 25 == 0 && n % 3 == 0) || (pid % 97 == 0) || (pid == 1001 && n > 30)
}

fn alive(pid: u32, n: u64) -> bool {
    let exits = (1100..1130).contains(&pid) && n >= 20;
    let born_at = if pid >= FIRST_PID + PROCESSES { 10 } else { 0 };
    !exits && n >= born_at
}

/// Writes /proc as it is at poll `n`: CPU ticks are sums over the polls.
fn write_proc(root: &Path, n: u64) {
    let mut user_total = 0;
    for pid in FIRST_PID..FIRST_PID + PROCESSES + 20 {
        let dir = root.join(pid.to_string());
        if !alive(pid, n) {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).unwrap();
            }
            continue;
        }
        let ticks: u64 = (0..=n).filter(|&k| runs(pid, k)).count() as u64;
        let (utime, stime) = (ticks * 7, ticks * 2);
        user_total += utime;
        let rss = 100 + ticks * 3;
        let start = if pid >= FIRST_PID + PROCESSES {
            100_000 + 1_000
        } else {
            1_000
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!(
                "{pid} (p{}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} 1000000 {rss} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
                pid % 7
            ),
        )
        .unwrap();
    }
    // Machine-wide: user and system move, most states stay at 0.
    let idle = 400 * n;
    std::fs::write(
        root.join("stat"),
        format!(
            "cpu  {user_total} 0 {} {idle} 0 0 0 0 0 0\ncpu0 {user_total} 0 {} {idle} 0 0 0 0 0 0\n",
            n * 3,
            n * 3
        ),
    )
    .unwrap();
    // Uptime after each process's start, so none is taken as born since the previous poll.
    std::fs::write(root.join("uptime"), format!("{}.00 0.00\n", 2_000 + n)).unwrap();
}

struct Run {
    rows: usize,
    series: BTreeMap<String, SeriesTotal>,
    polls: Vec<Timestamp>,
}

fn run(keep_zero: bool) -> Run {
    let root = tempfile::tempdir().unwrap();
    write_proc(root.path(), 0);
    let mut config = ProcfsConfig {
        proc_root: root.path().to_path_buf(),
        network: false,
        meminfo_fields: Vec::new(),
        keep_zero,
        ..ProcfsConfig::default()
    };
    config.system_poll_interval = std::time::Duration::from_secs(86_400);
    config.process_poll_interval = std::time::Duration::from_secs(86_400);
    config.flush_interval = std::time::Duration::from_secs(86_400);
    config.process_refresh_interval = std::time::Duration::from_secs(1);
    let (host, clock) = HostParams::simulated();
    let mut plugin = ProcfsPlugin::init(config).unwrap().with_host(host);
    let mut pipeline = TestPipeline::thinned();
    pipeline.start_plugin("procfs", &mut plugin).unwrap();
    let running = pipeline.start();
    running.trigger_all();
    let mut polls = Vec::new();
    for n in 1..=POLLS {
        clock.advance_ns(1_000_000_000);
        write_proc(root.path(), n);
        running.trigger_all();
        polls.push(Timestamp::now());
    }
    let result = running.finish();
    let series = series_totals(&result.points, &result.metrics);
    Run {
        rows: result.points.len(),
        series,
        polls,
    }
}

#[test]
fn thinned_series_keep_every_total_their_start_and_their_end_with_5x_fewer_rows() {
    let full = run(true);
    let thin = run(false);

    // Same series, same totals, same start.
    assert_eq!(
        full.series.keys().collect::<Vec<_>>(),
        thin.series.keys().collect::<Vec<_>>()
    );
    let mut cpu_series = 0;
    for (key, total) in &full.series {
        let (sum, first) = (&total.sum, total.first);
        let (thin_sum, thin_first) = (thin.series[key].sum, thin.series[key].first);
        if key.starts_with("process_cpu_time") || key.starts_with("cpu_time") {
            cpu_series += 1;
            assert_eq!(*sum, thin_sum, "{key}: CPU-time total");
        }
        if !key.starts_with("process_memory") {
            assert!(
                (sum - thin_sum).abs() <= 1e-9 * sum.abs().max(1.0),
                "{key}: {sum} vs {thin_sum}"
            );
        }
        // Start: the first poll in both (timestamps differ between runs;
        // compare the poll's index).
        assert_eq!(
            poll_index(&full.polls, first),
            poll_index(&thin.polls, thin_first),
            "{key}: start"
        );
    }
    assert!(
        cpu_series > 2 * PROCESSES as usize,
        "{cpu_series} CPU series"
    );

    // End: a process that exited has its last point at the last poll it was seen.
    let mut ended = 0;
    for pid in 1100..1130 {
        for (key, total) in full
            .series
            .iter()
            .filter(|(k, _)| k.contains(&format!(" process:{pid} ")))
        {
            ended += 1;
            assert_eq!(
                poll_index(&full.polls, total.last),
                poll_index(&thin.polls, thin.series[key].last),
                "{key}: end"
            );
        }
    }

    assert!(
        ended >= 30 * 4,
        "{ended} series of exited processes checked"
    );

    let ratio = full.rows as f64 / thin.rows as f64;
    println!(
        "rows: keep_zero = true {}, default {} ({ratio:.1}x fewer)",
        full.rows, thin.rows
    );
    assert!(ratio >= 5.0, "only {ratio:.2}x fewer rows");
}
