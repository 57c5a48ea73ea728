//! The agent with `procfs` on the real /proc, `rapl` on a fixture powercap
//! tree that a helper thread advances at 20 W, and `energy-attribution`
//! with an idle power of 5 W: `exec` of a CPU-busy shell. The child's
//! attributed dynamic energy (summed from the CSV over its pid) is positive
//! and at most the package's dynamic energy; the package's dynamic energy in
//! the CSV (attributed to every process + unattributed) is what the model
//! gives from the rapl and idle_power points; the report on stderr shows the
//! command's share, and the JSON report carries the same number.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{read_csv, write_in_place, Row};

use std::collections::BTreeMap;
use std::fs;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IDLE_POWER_W: f64 = 5.0;
/// The helper adds this much energy every 10 ms: 20 W.
const STEP_UJ: u64 = 200_000;

impl Row {
    fn is_package(&self) -> bool {
        self.resource == ("cpu_package".into(), "0".into())
            && self.attr("domain") == Some("package")
    }
}

#[test]
fn exec_child_gets_a_share_of_the_dynamic_energy_and_the_report_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("sys/class/powercap/intel-rapl:0");
    fs::create_dir_all(&zone).unwrap();
    fs::write(zone.join("name"), "package-0\n").unwrap();
    fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
    let energy_file = zone.join("energy_uj");
    fs::write(&energy_file, "1000000\n").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let helper = {
        let stop = stop.clone();
        let energy_file = energy_file.clone();
        std::thread::spawn(move || {
            let mut energy_uj = 1_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                energy_uj += STEP_UJ;
                write_in_place(&energy_file, energy_uj);
            }
        })
    };

    // A shell that spins for 1.5 s without forking in its loop (`[` is a builtin).
    let script =
        "echo $$ > pid; touch flag; (sleep 1.5; rm -f flag) & while [ -e flag ]; do :; done";
    let idle = format!("plugins.energy-attribution.idle_power_w={{ package = {IDLE_POWER_W:.1} }}");
    let mut agent = common::agent_command()
        .current_dir(dir.path())
        .args([
            "--config",
            dir.path().join("alumet-config.toml").to_str().unwrap(),
        ])
        .args(["--plugins", "rapl,procfs,energy-attribution,csv"])
        .args(common::rapl_root_args(&dir.path().join("sys"), true))
        .args(["--set", "plugins.rapl.interface=\"powercap\""])
        .args(["--set", "plugins.rapl.poll_interval=\"100ms\""])
        .args(["--set", "plugins.rapl.flush_interval=\"100ms\""])
        .args(["--set", &idle])
        .args(["--set", "plugins.csv.timestamp_format=\"unix_ns\""])
        .args(["--output-file", "out.csv"])
        .args(["exec", "--json", "report.json", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!("the agent did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = agent.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    helper.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let pid = fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .to_owned();
    let rows = read_csv(&dir.path().join("out.csv"));

    let mut child_dynamic_j = 0.0;
    let mut package_dynamic_j = 0.0;
    for r in rows.iter().filter(|r| r.is_package()) {
        match r.metric.as_str() {
            "attributed_energy" => {
                assert!(r.value.is_finite() && r.value >= 0.0, "{r:?}");
                assert_eq!(r.consumer.0, "process");
                if r.attr("part") == Some("dynamic") {
                    package_dynamic_j += r.value;
                    if r.consumer.1 == pid {
                        assert_eq!(r.attr("exe"), Some("sh"), "{r:?}");
                        child_dynamic_j += r.value;
                    }
                }
            }
            "unattributed_energy" if r.attr("part") == Some("dynamic") => {
                package_dynamic_j += r.value
            }
            _ => {}
        }
    }

    // The model, recomputed from the rapl and idle_power rows: every interval
    // after the first has an idle_power point at its end.
    let idle_at: BTreeMap<u64, f64> = rows
        .iter()
        .filter(|r| r.metric == "idle_power" && r.is_package())
        .map(|r| (r.timestamp_ns, r.value))
        .collect();
    assert!(idle_at.values().all(|&p| p == IDLE_POWER_W), "{idle_at:?}");
    let mut energy: Vec<(u64, f64)> = rows
        .iter()
        .filter(|r| r.metric == "rapl_consumed_energy" && r.is_package())
        .map(|r| (r.timestamp_ns, r.value))
        .collect();
    energy.sort_by_key(|(t, _)| *t);
    let mut model_dynamic_j = 0.0;
    for pair in energy.windows(2) {
        let ((t0, _), (t1, e)) = (pair[0], pair[1]);
        let Some(&p_idle) = idle_at.get(&t1) else {
            panic!("no idle_power for the interval ending at {t1}")
        };
        let dt_s = (t1 - t0) as f64 / 1e9;
        model_dynamic_j += e - e.min(p_idle * dt_s);
    }
    // About 15 intervals are expected (100 ms polls for ~1.6 s); a loaded
    // machine may delay polls, and the checks below hold for any number.
    assert!(
        energy.len() >= 3,
        "rapl polled every 100 ms for 1.5 s: {energy:?}"
    );
    assert!(
        model_dynamic_j > 1.0,
        "20 W over 5 W idle for 1.5 s: {model_dynamic_j} J"
    );
    assert!(
        (package_dynamic_j - model_dynamic_j).abs() <= 1e-6 * model_dynamic_j,
        "attributed + unattributed {package_dynamic_j} J != dynamic {model_dynamic_j} J"
    );
    assert!(
        child_dynamic_j > 0.0 && child_dynamic_j <= package_dynamic_j * (1.0 + 1e-9),
        "child {child_dynamic_j} J, package dynamic {package_dynamic_j} J\n{stderr}"
    );

    // The report: the package line with the command's dynamic energy.
    let line = stderr
        .lines()
        .find(|l| l.contains("CPU package 0") && l.contains("J dynamic"))
        .unwrap_or_else(|| panic!("no package line with the command's share in\n{stderr}"));
    let reported: f64 = line
        .split("command:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the command's energy in {line:?}"));
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    let package = json["energy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource_kind"] == "cpu_package" && e["domain"] == "package")
        .unwrap_or_else(|| panic!("no package in {json}"));
    let json_dynamic = package["command_dynamic_energy_j"].as_f64().unwrap();
    assert!(
        (reported - json_dynamic).abs() <= 0.005 + 1e-9,
        "{line:?} vs {json_dynamic}"
    );
    // The report covers the command's whole process tree, within its window:
    // the child plus its few short-lived helpers (touch, the subshell, sleep, rm).
    assert!(
        (json_dynamic - child_dynamic_j).abs() <= 0.05 + 0.1 * child_dynamic_j,
        "report {json_dynamic} J vs child in the CSV {child_dynamic_j} J"
    );
    assert!(json_dynamic <= package_dynamic_j * (1.0 + 1e-9));
    eprintln!(
        "child {child_dynamic_j:.3} J of {package_dynamic_j:.3} J dynamic (model {model_dynamic_j:.3} J); report {json_dynamic:.3} J"
    );
}
