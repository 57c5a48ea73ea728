//! The custom agent, built and run as a process for a second: a sensor file
//! in a fixture root, procfs and CSV. Its CSV holds the power of the sensor,
//! the energy integrated from it, and the machine's CPU time.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn the_custom_agent_measures_with_its_three_plugins_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("psu"), "12500000\n").unwrap();
    let csv = dir.path().join("out.csv");
    let config = dir.path().join("custom-agent.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.procfs]\nprocesses = false\nsystem_poll_interval = \"200ms\"\nflush_interval = \"200ms\"\n\n[plugins.file-sensor]\nroot = {:?}\nfiles = [\"psu\"]\npoll_interval = \"200ms\"\nflush_interval = \"200ms\"\n\n[plugins.csv]\noutput_path = {:?}\n",
            dir.path().to_str().unwrap(),
            csv.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_custom-agent"))
        .arg(&config)
        .arg("1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let of = |metric: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| &r[1] == metric)
            .map(|r| r[3].parse().unwrap())
            .collect()
    };
    let power = of("file_sensor_power");
    assert!(power.len() >= 4, "{rows:?}");
    assert!(power.iter().all(|w| *w == 12.5));
    let energy = of("file_sensor_energy");
    assert_eq!(energy.len(), power.len());
    // 12.5 W over about a second, the first interval's start included.
    let total: f64 = energy.iter().sum();
    assert!(total > 10.0 && total < 20.0, "{total} J");
    assert!(!of("cpu_time").is_empty(), "procfs measured");
    assert!(stderr.contains("points measured"), "{stderr}");
}
