//! The procfs plugin on this machine's real /proc: the files parse, deltas
//! are sane, and real process trees are followed.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use alumet::measurement::{AttributeValue, ResourceConsumer};
use alumet::plugin::PluginDefinition;
use alumet::testing::{TestPipeline, TestResult};
use plugin_procfs::{ProcfsConfig, ProcfsPlugin};

fn manual(config: ProcfsConfig) -> ProcfsConfig {
    ProcfsConfig {
        system_poll_interval: Duration::from_secs(24 * 3600),
        process_poll_interval: Duration::from_secs(24 * 3600),
        flush_interval: Duration::from_secs(24 * 3600),
        ..config
    }
}

/// Polls at start, then again after `work` has run.
fn run(config: ProcfsConfig, exec_target: Option<u32>, work: impl FnOnce()) -> TestResult {
    let mut plugin = ProcfsPlugin::init(manual(config)).unwrap();
    let mut pipeline = TestPipeline::builder();
    if let Some(pid) = exec_target {
        pipeline.pipeline_builder().exec_target().set(pid);
    }
    pipeline.start_plugin("procfs", &mut plugin).unwrap();
    let running = pipeline.start();
    running.trigger_all();
    work();
    running.trigger_all();
    running.finish()
}

fn online_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

#[test]
fn real_proc_gives_sane_values() {
    let me = std::process::id();
    let result = run(ProcfsConfig::default(), None, || {
        // Burn CPU in this process so that its CPU time moves.
        let start = Instant::now();
        let mut x: u64 = 1;
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    });

    let cpu = result.points_of("cpu_time");
    assert!(!cpu.is_empty(), "no cpu_time point");
    assert!(cpu.iter().all(|p| p.value.as_f64() >= 0.0));
    assert!(cpu
        .iter()
        .any(|p| p.attr("state") == Some(&AttributeValue::from("idle"))));
    assert!(!result.points_of("system_memory").is_empty());
    assert!(!result.points_of("context_switches").is_empty());

    let mine = |name: &str| -> Vec<f64> {
        result
            .points_of(name)
            .into_iter()
            .filter(|p| p.consumer == ResourceConsumer::Process { pid: me })
            .map(|p| p.value.as_f64())
            .collect()
    };
    assert!(mine("process_memory_resident").iter().all(|&v| v > 0.0));
    let my_cpu: f64 = mine("process_cpu_time").iter().sum();
    assert!(my_cpu > 0.0, "300 ms of spinning gave no CPU time");
    let max = 100.0 * online_cpus();
    for p in result.points_of("process_cpu_usage") {
        let v = p.value.as_f64();
        assert!(
            (0.0..=max).contains(&v),
            "usage {v} of {:?} out of [0, {max}]",
            p.consumer
        );
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let ppid: u32 = after.split_whitespace().nth(1).unwrap().parse().unwrap();
        if ppid == pid {
            out.push(child);
        }
    }
    out
}

#[test]
fn exec_tree_follows_real_children() {
    let shell = KillOnDrop(
        Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap(),
    );
    let sh = shell.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let sleeper = loop {
        if let Some(&c) = children_of(sh).first() {
            break c;
        }
        assert!(Instant::now() < deadline, "sh did not start its child");
        std::thread::sleep(Duration::from_millis(10));
    };
    let config = ProcfsConfig {
        system: false,
        watch_all: false,
        watch_exec_tree: true,
        ..ProcfsConfig::default()
    };
    let result = run(config, Some(sh), || {
        std::thread::sleep(Duration::from_millis(50))
    });
    let mut pids: Vec<u32> = result
        .points_of("process_memory_resident")
        .into_iter()
        .filter_map(|p| match p.consumer {
            ResourceConsumer::Process { pid } => Some(pid),
            _ => None,
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let mut want = vec![sh, sleeper];
    want.sort_unstable();
    assert_eq!(pids, want);
    drop(shell);
    assert_eq!(ProcfsPlugin::NAME, "procfs");
}

/// CPU ticks (user + system) of a live process, from /proc/PID/stat.
fn cpu_ticks_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Refreshes after the first list only the pids allocated since the
/// previous one: processes started between polls must still be found (all
/// of their CPU time reported, to the tick), and one that ended must not
/// come back.
#[test]
fn processes_started_between_refreshes_are_found_with_all_their_cpu_time() {
    let config = ProcfsConfig {
        process_refresh_interval: Duration::ZERO,
        system: false,
        ..ProcfsConfig::default()
    };
    let mut plugin = ProcfsPlugin::init(manual(config)).unwrap();
    let mut pipeline = TestPipeline::builder();
    pipeline.start_plugin("procfs", &mut plugin).unwrap();
    let running = pipeline.start();
    running.trigger_all();
    // A process started within the clock tick of the previous poll may
    // predate it (/proc/uptime and start times have 10 ms steps): then its
    // first interval is not reported. Start them clearly after.
    let after_a_tick = || std::thread::sleep(Duration::from_millis(30));
    after_a_tick();
    // Spins for a while (without forking: `[` and `$((...))` are builtins), then sleeps.
    let spinner = || {
        KillOnDrop(
            Command::new("sh")
                .args([
                    "-c",
                    "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 60",
                ])
                .spawn()
                .unwrap(),
        )
    };
    let first = spinner();
    let first_pid = first.0.id();
    // Its CPU time stops moving once it sleeps: the comm is "sleep" (exec'd)
    // and the ticks no longer move (exec and sleep's own start still count,
    // after the comm changed).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first_ticks = None;
    while first_ticks.is_none() {
        assert!(Instant::now() < deadline, "the spinner never slept");
        let comm = std::fs::read_to_string(format!("/proc/{first_pid}/comm")).unwrap_or_default();
        if comm == "sleep\n" {
            let before = cpu_ticks_of(first_pid);
            std::thread::sleep(Duration::from_millis(100));
            if cpu_ticks_of(first_pid) == before {
                first_ticks = Some(before);
            }
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let first_ticks = first_ticks.unwrap();
    running.trigger_all();
    drop(first);
    running.trigger_all();
    after_a_tick();
    let second = spinner();
    let second_pid = second.0.id();
    running.trigger_all();
    drop(second);
    let result = running.finish();

    let hz = plugin_procfs::host::HostParams::detect().clock_ticks_per_second as f64;
    let cpu_of = |pid: u32| -> Vec<f64> {
        result
            .points_of("process_cpu_time")
            .into_iter()
            .filter(|p| p.consumer == ResourceConsumer::Process { pid })
            .map(|p| p.value.as_f64())
            .collect()
    };
    let reported: f64 = cpu_of(first_pid).iter().sum();
    assert!(
        (reported - first_ticks as f64 / hz).abs() < 1e-9,
        "process {first_pid}: {reported} s reported, {first_ticks} ticks used"
    );
    assert!(
        !cpu_of(second_pid).is_empty(),
        "process {second_pid}, started after two refreshes, never measured"
    );
    // The first one ended before the third poll: its points stop at the
    // second (two CPU points, user and system, at its one measured interval).
    assert_eq!(cpu_of(first_pid).len(), 2, "{:?}", cpu_of(first_pid));
}
