//! Figures a user can trust on any machine, with the real binary:
//! - a short command gets its share of every interval, the first one
//!   included, and per interval the attributed and unattributed dynamic
//!   energy add up to the measured dynamic energy (both levels);
//! - counters that do not count (a powercap zone that never moves, a perf
//!   `energy-psys` that opens and reads 0, as on this project's CI VMs) are
//!   never a measurement: the report gives the estimate, its model, and one
//!   line naming the dead counter and the virtual machine;
//! - a counter that freezes mid-run is reported as not measured, and the
//!   estimate covers exactly that time;
//! - `doctor` exits 0 on a VM whose counters do not count (and says the
//!   energy will be estimated), 1 for the same counters on bare metal.
//!
//! Every sensor is a fixture (powercap trees, a perf PMU description over the
//! kernel's software PMU, a cpuinfo with or without the `hypervisor` flag):
//! nothing depends on the host's RAPL or hypervisor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{read_csv, RaplFixture, Row};

/// The tests that measure shares of busy CPU run one at a time: another
/// test's busy loop would take a share.
static CPU: Mutex<()> = Mutex::new(());

use common::agent_in as agent;

fn busy_loop(seconds: f64) -> Vec<String> {
    vec![
        "python3".into(),
        "-c".into(),
        format!("import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass"),
    ]
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `level` of an attribution row: `cgroup`, or the process level.
fn level(r: &Row) -> &str {
    r.attr("level").unwrap_or("process")
}

#[test]
fn short_commands_get_their_share_of_every_interval_and_energy_is_conserved() {
    let _cpu = CPU.lock().unwrap_or_else(|e| e.into_inner());
    for seconds in [0.5, 2.0] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A steady 50 W package, 10 W of it idle: 40 W of dynamic power.
        let rapl = RaplFixture::start(d, 50.0);
        let out = agent(d)
            .args(["--plugins", "rapl,procfs,cgroups,energy-attribution,csv"])
            .args(&rapl.args)
            .args([
                "--set",
                "plugins.energy-attribution.idle_power_w={ package = 10.0 }",
            ])
            .args(["--set", "plugins.csv.timestamp_format=\"unix_ns\""])
            .args(["--output-file", "out.csv"])
            // The defaults otherwise: exec polls every source every 100 ms.
            .args(["exec", "--json", "report.json", "--"])
            .args(busy_loop(seconds))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        let rows = read_csv(&d.join("out.csv"));
        let energy: Vec<&Row> = rows
            .iter()
            .filter(|r| r.metric == "rapl_consumed_energy")
            .collect();
        // The first reading (0 J) starts the first interval; ten a second after it.
        assert_eq!(energy[0].value, 0.0, "{energy:?}");
        assert!(
            energy.len() as f64 >= 1.0 + seconds * 10.0 * 0.8,
            "{seconds} s: only {} energy points",
            energy.len()
        );
        let mut dynamic_total = 0.0;
        for pair in energy.windows(2) {
            let (t0, t1) = (pair[0].timestamp_ns, pair[1].timestamp_ns);
            let dt = (t1 - t0) as f64 / 1e9;
            let joules = pair[1].value;
            let dynamic = joules - joules.min(10.0 * dt);
            dynamic_total += dynamic;
            // Per interval and level: attributed + unattributed = dynamic.
            let levels: &[&str] = if rows.iter().any(|r| level(r) == "cgroup") {
                &["process", "cgroup"]
            } else {
                &["process"]
            };
            for lvl in levels {
                let shared: f64 = rows
                    .iter()
                    .filter(|r| {
                        r.timestamp_ns == t1
                            && (r.metric == "attributed_energy"
                                || r.metric == "unattributed_energy")
                            && r.attr("part") == Some("dynamic")
                            && level(r) == *lvl
                    })
                    .map(|r| r.value)
                    .sum();
                assert!(
                    (shared - dynamic).abs() <= 1e-9 * dynamic.max(1.0),
                    "{seconds} s, level {lvl}, interval ending {t1}: {shared} J shared of {dynamic} J"
                );
            }
        }
        // The command gets its share of the dynamic energy: its part of
        // the machine's busy CPU time over the run (nearly all of it on a
        // quiet machine, where it is the only busy thing; less where other
        // work runs beside the test, which takes its share too).
        let json = report(d);
        let line = &json["energy"][0];
        assert_eq!(line["metric"], "rapl_consumed_energy", "{json}");
        let command = line["command_dynamic_energy_j"].as_f64().unwrap();
        let machine_busy_s: f64 = rows
            .iter()
            .filter(|r| {
                r.metric == "cpu_time"
                    && r.consumer.0 == "local_machine"
                    && matches!(
                        r.attr("state"),
                        Some("user" | "nice" | "system" | "irq" | "softirq")
                    )
            })
            .map(|r| r.value)
            .sum();
        let usage = &json["command_usage"];
        let command_s = ["user_cpu_s", "system_cpu_s", "children_cpu_s"]
            .iter()
            .map(|k| {
                usage[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no {k} in {json}"))
            })
            .sum::<f64>();
        let share = (command_s / machine_busy_s).min(1.0);
        eprintln!(
            "{seconds} s: the command got {command:.3} J of {dynamic_total:.3} J dynamic ({:.1} %); its CPU time {command_s:.3} s of {machine_busy_s:.3} s busy ({:.1} %)",
            100.0 * command / dynamic_total,
            100.0 * share
        );
        assert!(
            command >= 0.85 * share * dynamic_total,
            "{seconds} s: the command got {command:.3} J of {dynamic_total:.3} J dynamic, for {:.1} % of the busy CPU time\n{err}",
            100.0 * share
        );
        // The first interval's energy reached the command.
        let first_end = energy[1].timestamp_ns;
        assert!(
            rows.iter().any(|r| r.metric == "attributed_energy"
                && r.timestamp_ns == first_end
                && r.value > 0.0),
            "nothing attributed over the first interval"
        );
    }
}

/// `exec` of a short busy loop on a machine whose RAPL does not measure,
/// described by `sys` and `proc`: its stderr and the report.
fn exec_without_counting_rapl(d: &Path, sys: &Path, proc: &Path) -> (String, serde_json::Value) {
    let out = agent(d)
        .args([
            "--plugins",
            "procfs,cgroups,rapl,cpu-power-model,energy-attribution,energy-to-carbon,csv",
        ])
        .args(common::rapl_machine_args(sys, proc))
        // the per-vCPU model whatever the host's CPU (the table is tested in the plugin)
        .args(["--set", "plugins.cpu-power-model.model=\"linear\""])
        .args(["--set", "plugins.csv.timestamp_format=\"unix_ns\""])
        .args(["--output-file", "out.csv"])
        .args(["exec", "--json", "report.json", "--"])
        .args(busy_loop(0.6))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    (err, report(d))
}

/// The report has one energy line: the estimate, with its model and why.
fn assert_only_an_estimate(err: &str, json: &serde_json::Value, because: &str) {
    let lines = json["energy"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}\n{err}");
    let line = &lines[0];
    assert_eq!(line["metric"], "estimated_cpu_energy");
    assert_eq!(line["estimated"], true);
    assert!(line["energy_j"].as_f64().unwrap() > 0.0);
    assert!(line["command_dynamic_energy_j"].as_f64().unwrap() > 0.0);
    let model = line["model"].as_str().unwrap();
    assert!(model.starts_with("linear 0.74-3.5 W per vCPU x"), "{model}");
    let why = line["estimated_because"].as_str().unwrap();
    assert!(why.contains(because), "{why}");
    assert!(
        err.contains(&format!("ESTIMATED, not measured: model {model}")),
        "{err}"
    );
    assert!(err.contains(&format!("because {why}")), "{err}");
    // Never a 0 J "measurement" of a counter that does not count.
    assert!(!err.contains("Platform (psys"), "{err}");
    assert!(!err.contains("0.00 J      0.00 W"), "{err}");
}

#[test]
fn counters_that_do_not_count_give_an_estimate_with_the_reason_never_0_j_measured() {
    // A VM whose powercap zone never moves.
    let dir = tempfile::tempdir().unwrap();
    let (sys, proc) = (dir.path().join("sys"), dir.path().join("proc"));
    common::dead_powercap_zone(&sys);
    common::kvm_guest(&proc, &sys);
    let (err, json) = exec_without_counting_rapl(dir.path(), &sys, &proc);
    assert_only_an_estimate(
        &err,
        &json,
        "rapl: RAPL counters do not count on this virtual machine (KVM): ",
    );
    assert!(
        json["energy"][0]["estimated_because"]
            .as_str()
            .unwrap()
            .contains("intel-rapl:0/energy_uj (stayed at 123456789) did not advance in 100ms"),
        "{json}"
    );
    assert!(err.contains("exit 0, virtual machine (KVM))"), "{err}");
    assert_eq!(json["machine"], "virtual machine (KVM)");
    let rows = read_csv(&dir.path().join("out.csv"));
    assert!(rows.iter().all(|r| r.metric != "rapl_consumed_energy"));

    // No RAPL at all, bare metal.
    let dir = tempfile::tempdir().unwrap();
    let (sys, proc) = (dir.path().join("sys"), dir.path().join("proc"));
    fs::create_dir_all(&sys).unwrap();
    fs::create_dir_all(&proc).unwrap();
    let (err, json) = exec_without_counting_rapl(dir.path(), &sys, &proc);
    assert_only_an_estimate(
        &err,
        &json,
        "rapl: no RAPL interface found (no power PMU at",
    );
    let rows = read_csv(&dir.path().join("out.csv"));
    assert!(rows.iter().all(|r| r.metric != "rapl_consumed_energy"));
    assert_eq!(json["machine"], "bare metal");

    // This project's CI machines: a perf energy-psys that opens and reads
    // 0, on a KVM guest, through the real perf_event_open.
    let dir = tempfile::tempdir().unwrap();
    let (sys, proc) = (dir.path().join("sys"), dir.path().join("proc"));
    common::dead_perf_psys(&sys);
    common::kvm_guest(&proc, &sys);
    let (err, json) = exec_without_counting_rapl(dir.path(), &sys, &proc);
    let may_open_perf = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if may_open_perf {
        assert_only_an_estimate(
            &err,
            &json,
            "rapl: RAPL counters do not count on this virtual machine (KVM): perf event power/energy-psys/ on CPU 0 (stayed at 0) did not advance in 100ms",
        );
    } else {
        assert_only_an_estimate(&err, &json, "rapl: ");
    }
}

#[test]
fn a_counter_that_freezes_mid_run_is_not_measured_and_the_estimate_covers_that_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let frozen = Arc::new(AtomicBool::new(false));
    let rapl = {
        let frozen = frozen.clone();
        // 30 W, except while frozen (the counter stays where it is).
        RaplFixture::start_with(d, move |_| {
            if frozen.load(Ordering::Relaxed) {
                0.0
            } else {
                0.3
            }
        })
    };
    let child = agent(d)
        .args([
            "--plugins",
            "rapl,procfs,cpu-power-model,energy-attribution,csv",
        ])
        .args(&rapl.args)
        .args(["--set", "plugins.cpu-power-model.model=\"linear\""])
        .args(["--set", "plugins.csv.timestamp_format=\"unix_ns\""])
        .args(["--output-file", "out.csv"])
        .args(["exec", "--json", "report.json", "--", "sleep", "2.4"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(900));
    frozen.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1000));
    frozen.store(false, Ordering::Relaxed);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rows = read_csv(&d.join("out.csv"));
    let by_time = |metric: &str| -> BTreeMap<u64, f64> {
        rows.iter()
            .filter(|r| r.metric == metric)
            .map(|r| (r.timestamp_ns, r.value))
            .collect()
    };
    let unmeasured = by_time("energy_unmeasured_time");
    let measured = by_time("rapl_consumed_energy");
    let estimated = by_time("estimated_cpu_energy");
    let unmeasured_s: f64 = unmeasured.values().sum();
    assert!(
        (0.5..1.2).contains(&unmeasured_s),
        "{unmeasured_s} s unmeasured: {unmeasured:?}\n{err}"
    );
    for t in unmeasured.keys() {
        assert!(!measured.contains_key(t), "a 0 J measurement at {t}");
        assert!(
            estimated.get(t).is_some_and(|j| *j > 0.0),
            "no estimate for the unmeasured interval ending {t}: {estimated:?}"
        );
    }
    // The estimate covers the frozen time only: its energy points (0 J
    // marks the start of a run) all end unmeasured intervals.
    for (t, j) in &estimated {
        assert!(
            *j == 0.0 || unmeasured.contains_key(t),
            "estimate at {t} ({j} J)"
        );
    }
    let json = report(d);
    let lines = json["energy"].as_array().unwrap();
    let measured_line = lines.iter().find(|l| l["estimated"] == false).unwrap();
    let line_unmeasured = measured_line["unmeasured_s"].as_f64().unwrap();
    assert!((line_unmeasured - unmeasured_s).abs() < 1e-6, "{json}");
    let estimate = lines.iter().find(|l| l["estimated"] == true).unwrap();
    assert!(
        estimate["estimated_because"]
            .as_str()
            .unwrap()
            .starts_with("the RAPL counter did not measure"),
        "{estimate}"
    );
    assert!(err.contains("NOT measured for"), "{err}");
    assert!(
        err.contains("has not counted for"),
        "the freeze is said once: {err}"
    );
    assert_eq!(err.matches("has not counted for").count(), 1, "{err}");
}

/// `doctor` with rapl on `sys` and `proc`: exit code and stdout.
fn doctor(d: &Path, sys: &Path, proc: &Path) -> (Option<i32>, String) {
    let out = agent(d)
        .args(["--plugins", "procfs,rapl,cpu-power-model"])
        .args(common::rapl_machine_args(sys, proc))
        .args(["--set", "plugins.cpu-power-model.model=\"linear\""])
        .arg("doctor")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn doctor_exits_0_on_a_vm_whose_counters_do_not_count_and_1_on_bare_metal() {
    let dir = tempfile::tempdir().unwrap();
    let (sys, proc) = (dir.path().join("sys"), dir.path().join("proc"));
    common::dead_powercap_zone(&sys);
    common::kvm_guest(&proc, &sys);
    let (code, out) = doctor(dir.path(), &sys, &proc);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("machine: virtual machine (KVM)\n"), "{out}");
    assert!(
        out.contains("rapl                 yes      absent\n"),
        "{out}"
    );
    assert!(
        out.contains("rapl (nothing to measure here, not a fault): RAPL counters do not count on this virtual machine (KVM): "),
        "{out}"
    );
    assert!(
        out.contains(
            "CPU energy: will be ESTIMATED by cpu-power-model (model linear 0.74-3.5 W per vCPU x"
        ),
        "{out}"
    );

    // The same dead counter on bare metal is a fault to fix.
    let proc = dir.path().join("metal-proc");
    fs::create_dir_all(&proc).unwrap();
    fs::write(
        proc.join("cpuinfo"),
        "processor\t: 0\nflags\t\t: fpu sse2\n",
    )
    .unwrap();
    let (code, out) = doctor(dir.path(), &sys, &proc);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("machine: bare metal\n"), "{out}");
    assert!(out.contains("rapl                 yes      no\n"), "{out}");
    assert!(out.contains("on bare metal this is a fault"), "{out}");
}
