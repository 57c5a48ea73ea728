//! The agent with the `nvidia` plugin on the machine the tests run on.
//!
//! Without the NVIDIA driver (the development machine) the plugin must step
//! aside with exactly one line on stderr and the other plugins must measure;
//! with a GPU it must measure the GPU.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::csv_rows;

use std::process::Stdio;
use std::time::{Duration, Instant};

use plugin_nvidia::nvml::NvmlBackend;

#[test]
fn run_with_nvidia_procfs_csv_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alumet-config.toml");
    let csv = dir.path().join("out.csv");
    let child = common::agent_command()
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .args(["--plugins", "nvidia,procfs,csv"])
        .args(["--set", "plugins.nvidia.poll_interval=\"100ms\""])
        .args(["--set", "plugins.nvidia.flush_interval=\"100ms\""])
        .args(["--set", "plugins.procfs.flush_interval=\"100ms\""])
        .args(["--output-file", csv.to_str().unwrap()])
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait until the pipeline writes (the CSV header and some rows), then ~1 s more.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&csv)
        .map(|m| m.len() < 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the agent wrote no CSV in 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) with the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let rows = csv_rows(&csv);
    assert!(
        rows.iter().any(|r| &r[1] == "cpu_time"),
        "no procfs rows in the CSV"
    );
    assert!(rows.iter().any(|r| &r[1] == "process_cpu_time"));

    let nvidia_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("nvidia")).collect();
    match NvmlBackend::open() {
        Err(e) => {
            // No usable driver here: one line saying so and how to fix it.
            assert_eq!(nvidia_lines.len(), 1, "{stderr}");
            let line = nvidia_lines[0];
            assert!(line.contains("plugin nvidia"), "{line}");
            assert!(line.contains("driver"), "{line}");
            assert!(line.contains(&e.to_string()), "{line}");
            assert!(line.contains("[plugins.nvidia] enabled = false"), "{line}");
            assert!(!rows.iter().any(|r| r[1].starts_with("gpu_")));
        }
        Ok(_) => {
            // A machine with a GPU: it is measured.
            assert!(
                rows.iter().any(|r| &r[1] == "gpu_power" && &r[4] == "gpu"),
                "no gpu_power rows; stderr: {stderr}"
            );
        }
    }
}
