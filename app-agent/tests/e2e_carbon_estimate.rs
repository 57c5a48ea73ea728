//! Carbon and estimated energy, end to end with the real binary:
//! - a RAPL fixture at a known power and a fixed intensity: every
//!   `carbon_emission` row of the CSV is its energy row / 3.6e6 × intensity ×
//!   pue to 1e-9 relative, per point and in total, attributed energy included,
//!   and the model stays off (RAPL is present) unless forced;
//! - on this machine (no RAPL) `exec` reports an estimated energy line,
//!   marked estimated, naming the model, with its carbon by country;
//! - an unknown country code is a config error (exit 2) with the closest code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{read_csv, RaplFixture, Row};

const INTENSITY: f64 = 420.0;
const PUE: f64 = 1.25;

use common::agent_in as agent;

/// `exec` of a short python3 loop (`--json report.json`) with RAPL on a
/// 40 W fixture, `extra` arguments before `exec`: its stderr (the exit code
/// checked to be 0) and the CSV's rows.
fn exec_busy_loop_with_rapl(dir: &Path, extra: &[&str]) -> (String, Vec<Row>) {
    let rapl = RaplFixture::start(dir, 40.0);
    let mut c = agent(dir);
    with_rapl(&mut c, &rapl);
    let out = c
        .args(extra)
        .args(["exec", "--json", "report.json", "--"])
        .args(["python3", "-c", "sum(range(3000000))"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (stderr, read_csv(&dir.join("out.csv")))
}

fn with_rapl(c: &mut Command, rapl: &RaplFixture) {
    c.args([
        "--plugins",
        "rapl,procfs,cpu-power-model,energy-attribution,energy-to-carbon,csv",
    ])
    .args(&rapl.args)
    .args(["--set", "plugins.rapl.interface=\"powercap\""])
    .args(["--set", "plugins.rapl.poll_interval=\"100ms\""])
    .args(["--set", "plugins.rapl.flush_interval=\"100ms\""])
    .args(["--set", "plugins.procfs.system_poll_interval=\"100ms\""])
    .args(["--set", "plugins.procfs.process_poll_interval=\"100ms\""])
    .args(["--set", "plugins.procfs.flush_interval=\"100ms\""])
    .args([
        "--set",
        "plugins.energy-attribution.idle_power_w={ package = 1.0 }",
    ])
    .args([
        "--set",
        &format!("plugins.energy-to-carbon.intensity_g_per_kwh={INTENSITY:?}"),
    ])
    .args(["--set", &format!("plugins.energy-to-carbon.pue={PUE:?}")])
    .args(["--set", "plugins.csv.timestamp_format=\"unix_ns\""])
    .args(["--output-file", "out.csv"]);
}

/// Time, metric, resource, consumer and attributes of a point.
type PointKey = (
    u64,
    String,
    (String, String),
    (String, String),
    BTreeMap<String, String>,
);

/// Identifies the energy point a carbon row was computed from.
fn energy_key(r: &Row, metric: &str) -> PointKey {
    let mut attributes = r.attributes.clone();
    for k in ["energy_metric", "intensity_source", "pue"] {
        attributes.remove(k);
    }
    (
        r.timestamp_ns,
        metric.to_owned(),
        r.resource.clone(),
        r.consumer.clone(),
        attributes,
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

#[test]
fn carbon_of_rapl_and_attributed_energy_is_energy_times_intensity_times_pue() {
    let dir = tempfile::tempdir().unwrap();
    let (stderr, rows) = exec_busy_loop_with_rapl(dir.path(), &[]);
    let energy: BTreeMap<_, f64> = rows
        .iter()
        .filter(|r| r.metric != "carbon_emission")
        .map(|r| (energy_key(r, &r.metric), r.value))
        .collect();
    let carbon: Vec<&Row> = rows
        .iter()
        .filter(|r| r.metric == "carbon_emission")
        .collect();
    let mut by_metric: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in &carbon {
        let metric = r.attr("energy_metric").unwrap();
        assert_eq!(
            r.attr("intensity_source"),
            Some("configured intensity_g_per_kwh")
        );
        assert_eq!(r.attr("pue"), Some("1.25"));
        let j = energy
            .get(&energy_key(r, metric))
            .unwrap_or_else(|| panic!("no energy point for {r:?}"));
        let expected = j / 3.6e6 * INTENSITY * PUE;
        assert!(close(r.value, expected), "{r:?}: {} vs {expected}", r.value);
        let e = by_metric.entry(metric.to_owned()).or_default();
        e.0 += j;
        e.1 += r.value;
    }
    // Every energy point got its carbon: rapl's, and the attribution's (it runs before).
    let energy_points = rows
        .iter()
        .filter(|r| {
            [
                "rapl_consumed_energy",
                "attributed_energy",
                "unattributed_energy",
            ]
            .contains(&r.metric.as_str())
        })
        .count();
    assert_eq!(carbon.len(), energy_points);
    assert!(
        by_metric.contains_key("rapl_consumed_energy"),
        "{by_metric:?}"
    );
    assert!(by_metric.contains_key("attributed_energy"), "{by_metric:?}");
    for (metric, (j, g)) in &by_metric {
        assert!(close(*g, j / 3.6e6 * INTENSITY * PUE), "total of {metric}");
    }
    // RAPL is present: no estimate.
    assert!(!rows.iter().any(|r| r.metric == "estimated_cpu_energy"));
    // The report: a carbon line per energy line and a total, with the intensity and its source.
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    let line = &report["energy"][0];
    assert_eq!(line["metric"], "rapl_consumed_energy");
    assert_eq!(line["estimated"], false);
    let carbon_line = &line["carbon"];
    let j = line["energy_j"].as_f64().unwrap();
    assert!(close(
        carbon_line["carbon_g"].as_f64().unwrap(),
        j / 3.6e6 * INTENSITY * PUE
    ));
    assert!(close(
        carbon_line["intensity_g_per_kwh"].as_f64().unwrap(),
        INTENSITY
    ));
    assert_eq!(carbon_line["pue"].as_f64(), Some(PUE));
    assert!(carbon_line["command_carbon_g"].as_f64().unwrap() > 0.0);
    assert!(close(
        report["carbon_total_g"].as_f64().unwrap(),
        carbon_line["carbon_g"].as_f64().unwrap()
    ));
    assert_eq!(report["carbon_total_estimated"], false);
    assert!(stderr.contains("carbon total"), "{stderr}");
    assert!(
        stderr.contains("420.0 g/kWh (configured intensity_g_per_kwh), PUE 1.25"),
        "{stderr}"
    );
}

#[test]
fn with_rapl_the_model_runs_only_when_forced_and_is_reported_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rows) =
        exec_busy_loop_with_rapl(dir.path(), &["--set", "plugins.cpu-power-model.force=true"]);
    let estimated: Vec<&Row> = rows
        .iter()
        .filter(|r| r.metric == "estimated_cpu_energy")
        .collect();
    assert!(!estimated.is_empty());
    assert!(estimated
        .iter()
        .all(|r| r.attr("estimated") == Some("true")));
    // Attribution of the estimate is tagged too; the measured one is not.
    let attributed: Vec<&Row> = rows
        .iter()
        .filter(|r| r.metric == "attributed_energy")
        .collect();
    assert!(attributed
        .iter()
        .any(|r| r.attr("estimated") == Some("true")));
    assert!(attributed.iter().any(|r| r.attr("estimated").is_none()));
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    let lines = report["energy"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The total counts the measurement, not the estimate of the same package.
    let measured = lines.iter().find(|l| l["estimated"] == false).unwrap();
    assert!(close(
        report["carbon_total_g"].as_f64().unwrap(),
        measured["carbon"]["carbon_g"].as_f64().unwrap()
    ));
    assert_eq!(report["carbon_total_estimated"], false);
}

#[test]
fn without_rapl_exec_reports_an_estimate_marked_estimated_with_its_model() {
    // The command measured by its process tree, then (where a cgroup can be
    // created) by its own cgroup: both give it a share of the estimate. RAPL
    // is a fixture without any interface, whatever the host has (the dead
    // counters of a VM are in tests/e2e_trust.rs).
    for plugins in [
        "procfs,rapl,cpu-power-model,energy-attribution,energy-to-carbon",
        "procfs,cgroups,rapl,cpu-power-model,energy-attribution,energy-to-carbon",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = agent(dir.path())
            .args(["--plugins", plugins])
            .args(common::no_rapl_args(dir.path()))
            // the per-vCPU averages whatever the host's CPU
            .args(["--set", "plugins.cpu-power-model.model=\"linear\""])
            .args(["--set", "plugins.procfs.system_poll_interval=\"100ms\""])
            .args(["--set", "plugins.procfs.process_poll_interval=\"100ms\""])
            .args(["--set", "plugins.procfs.flush_interval=\"100ms\""])
            .args(["--set", "plugins.energy-to-carbon.country=\"de\""])
            .args([
                "exec",
                "--json",
                "report.json",
                "--",
                "python3",
                "-c",
                "sum(range(5000000))",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let report: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        let lines = report["energy"].as_array().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["metric"], "estimated_cpu_energy");
        assert_eq!(line["estimated"], true);
        assert!(line["label"].as_str().unwrap().ends_with("(estimated)"));
        let model = line["model"].as_str().unwrap();
        assert!(model.starts_with("linear 0.74-3.5 W per vCPU x"), "{model}");
        assert!(line["energy_j"].as_f64().unwrap() > 0.0);
        // The model's idle power is the attribution's: the command gets a share of the rest.
        assert!(
            line["command_dynamic_energy_j"].as_f64().unwrap() > 0.0,
            "{line}"
        );
        let carbon = &line["carbon"];
        assert!(close(
            carbon["intensity_g_per_kwh"].as_f64().unwrap(),
            380.95
        ));
        assert!(carbon["intensity_source"]
            .as_str()
            .unwrap()
            .starts_with("DEU Germany annual average 2023"));
        assert_eq!(report["carbon_total_estimated"], true, "{plugins}");
        assert!(
            stderr.contains("ESTIMATED, not measured: model linear 0.74-3.5 W per vCPU"),
            "{stderr}"
        );
        assert!(
            stderr.contains("ESTIMATED (estimated energy or the world-average intensity)"),
            "{stderr}"
        );
        assert!(
            line["estimated_because"]
                .as_str()
                .unwrap()
                .starts_with("rapl: no RAPL interface found"),
            "{line}"
        );
    }
}

#[test]
fn an_unknown_country_code_is_a_config_error_with_the_closest_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent(dir.path())
        .args(["--set", "plugins.energy-to-carbon.country=\"FRX\""])
        .args(["exec", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[plugins.energy-to-carbon]"), "{stderr}");
    assert!(stderr.contains("did you mean `FRA`"), "{stderr}");
}

#[test]
fn without_an_intensity_the_world_average_is_used_and_marked_estimated() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent(dir.path())
        .args(["--plugins", "procfs,cpu-power-model,energy-to-carbon"])
        .args(["--set", "plugins.cpu-power-model.model=\"linear\""])
        .args(["exec", "--json", "report.json", "--", "sleep", "0.3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("carbon not computed"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    let carbon = &report["energy"][0]["carbon"];
    assert!(
        close(carbon["intensity_g_per_kwh"].as_f64().unwrap(), 481.0),
        "{carbon}"
    );
    assert_eq!(carbon["intensity_estimated"], true);
    assert!(carbon["intensity_source"]
        .as_str()
        .unwrap()
        .starts_with("world average 2023 (Ember Global Electricity Review 2024)"));
    assert_eq!(report["carbon_total_estimated"], true);
    assert!(stderr.contains("world average 2023"), "{stderr}");
}

#[test]
fn the_readmes_show_the_blocks_config_regen_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent(dir.path())
        .args(["config", "regen"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let written = fs::read_to_string(dir.path().join("alumet-config.toml")).unwrap();
    for (plugin, dir_name) in [
        ("energy-to-carbon", "plugin-energy-to-carbon"),
        ("cpu-power-model", "plugin-cpu-power-model"),
    ] {
        let start = written.find(&format!("# {plugin}:")).unwrap();
        let section: String = written[start..]
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        let readme = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(dir_name)
                .join("README.md"),
        )
        .unwrap();
        assert!(
            readme.contains(&section),
            "{dir_name}/README.md must show the block exactly as regen writes it:\n{section}"
        );
    }
}
