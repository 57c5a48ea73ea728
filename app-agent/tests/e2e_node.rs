//! `exec` on a node whose BMC reports the whole server's power through an
//! ACPI power meter (hwmon), with RAPL measuring the CPU package: the report
//! shows the node, the CPU and the rest of the node, and the command's share
//! of each. Both sensors are fixtures: the ACPI power meter's sysfs layout
//! is plugin-hwmon's `acpi_power_meter` case (a steady 250 W), the package
//! a powercap zone advancing at 50 W.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::path::Path;

use common::{agent_in as agent, RaplFixture};

const NODE_W: f64 = 250.0;
const PACKAGE_W: f64 = 50.0;

fn power_meter(sys: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugin-hwmon/tests/fixtures/acpi_power_meter/sys0");
    alumet::testing::fixture::copy_tree(&fixture, sys);
    let meter = fs::read_dir(sys.join("class/hwmon"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // power1_average in the hwmon directory or in its `device` (older kernels).
    let file = [
        meter.join("power1_average"),
        meter.join("device/power1_average"),
    ]
    .into_iter()
    .find(|f| f.exists())
    .unwrap();
    fs::write(file, format!("{}\n", (NODE_W * 1e6) as u64)).unwrap();
}

#[test]
fn exec_reports_node_cpu_and_rest_of_node_with_the_commands_share_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rapl = RaplFixture::start(d, PACKAGE_W);
    power_meter(&d.join("sys"));
    let out = agent(d)
        .args([
            "--plugins",
            "rapl,hwmon,procfs,energy-attribution,energy-to-carbon,csv",
        ])
        .args(&rapl.args)
        .args([
            "--set",
            &format!("plugins.hwmon.sysfs_root=\"{}\"", d.join("sys").display()),
        ])
        .args([
            "--set",
            "plugins.energy-attribution.idle_power_w={ package = 10.0 }",
        ])
        .args(["--output-file", "out.csv"])
        .args(["exec", "--json", "report.json", "--"])
        .args([
            "python3",
            "-c",
            "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(d.join("report.json")).unwrap()).unwrap();
    let node = &json["node"];
    assert_eq!(node["metric"], "hwmon_consumed_energy", "{json}");
    let node_j = node["energy_j"].as_f64().unwrap();
    let wall = json["wall_s"].as_f64().unwrap();
    // Integrated from a steady 250 W over the intervals that ended in the
    // window: within a poll (100 ms) of the wall time.
    assert!(
        (node_j - NODE_W * wall).abs() <= NODE_W * 0.25,
        "node {node_j} J over {wall} s"
    );
    let part = |name: &str| {
        node["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["part"] == name)
            .unwrap_or_else(|| panic!("no {name} in {node}"))
            .clone()
    };
    let (cpu, rest) = (part("cpu"), part("rest_of_node"));
    let cpu_j = cpu["energy_j"].as_f64().unwrap();
    let rest_j = rest["energy_j"].as_f64().unwrap();
    assert!(
        (cpu_j - PACKAGE_W * wall).abs() <= PACKAGE_W * 0.25,
        "cpu {cpu_j} J"
    );
    assert!(
        (rest_j - (node_j - cpu_j)).abs() < 1e-9,
        "rest = node - cpu"
    );
    assert!(rest_j > 0.6 * node_j, "{rest_j} of {node_j}");

    // The command's share of each: attributed on the CPU, its CPU-time
    // share of the rest, and the node's as their sum.
    let cmd_cpu = cpu["command_energy_j"].as_f64().unwrap();
    let cmd_rest = rest["command_energy_j"].as_f64().unwrap();
    let share = node["command_cpu_share"].as_f64().unwrap();
    assert!(cmd_cpu > 0.0 && cmd_cpu <= cpu_j, "{cmd_cpu} of {cpu_j}");
    assert!(share > 0.0 && share <= 1.0, "{share}");
    assert!((cmd_rest - share * rest_j).abs() < 1e-9);
    let cmd_node = node["command_energy_j"].as_f64().unwrap();
    assert!((cmd_node - (cmd_cpu + cmd_rest)).abs() < 1e-9);

    // Carbon from the node meter, not the sum of node and package.
    let node_line = json["energy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["domain"] == "node")
        .unwrap()
        .clone();
    assert_eq!(
        json["carbon_total_g"].as_f64(),
        node_line["carbon"]["carbon_g"].as_f64()
    );
    assert_eq!(node_line["integrated"], true);

    for text in [
        "node:",
        "CPU",
        "rest of node",
        "command's share of the node",
    ] {
        assert!(err.contains(text), "no {text:?} in the report:\n{err}");
    }
    eprintln!("{err}");
}
