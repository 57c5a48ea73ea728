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
