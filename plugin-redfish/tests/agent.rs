//! The agent binary (`target/debug/alumet-agent`, built by `cargo build -p
//! app-agent`) with `redfish` and `csv`, against the emulator behind
//! bmc_front.py: the CSV holds the chassis's power and its integrated
//! energy, and the session is deleted when the agent stops on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use alumet::testing::peer::ChildProcess;
use common::{Emulator, Front};

/// The agent next to this test's target directory (target/debug/).
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/agent-<hash> -> target/debug/alumet-agent
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("alumet-agent");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p app-agent)",
        path.display()
    );
    path
}

#[test]
fn the_agent_writes_the_bmcs_power_and_energy_to_csv() {
    let emulator = Emulator::get();
    emulator.set_power_control("2U", 180.0);
    let front = Front::start("admin", "agent-pw");
    let config = front.config("agent-pw", &["2U"]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("out.csv");
    std::fs::write(
        dir.path().join("alumet-config.toml"),
        format!(
            "[plugins.redfish]\nenabled = true\nendpoint = \"{}\"\nusername = \"admin\"\npassword_file = \"{}\"\nca_file = \"{}\"\nchassis = [\"2U\"]\npoll_interval = \"200ms\"\ntimeout = \"2s\"\n\n[plugins.csv]\nenabled = true\nflush_interval = \"100ms\"\ntimestamp_format = \"unix_ns\"\n",
            config.endpoint, config.password_file, config.ca_file
        ),
    )
    .unwrap();
    let child = Command::new(agent_binary())
        .current_dir(dir.path())
        .env_remove("ALUMET_CONFIG")
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(dir.path().join("alumet-config.toml"))
        .args(["--plugins", "redfish,csv", "--output-file"])
        .arg(&csv)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut agent = ChildProcess::new(child);
    std::thread::sleep(Duration::from_millis(1500));
    emulator.set_power_control("2U", 220.0);
    std::thread::sleep(Duration::from_millis(1000));
    let pid = agent.child_mut().unwrap().id();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let output = agent.child_mut().unwrap();
    let status = output.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(output.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "agent exited with {status}: {stderr}");

    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let mut power = Vec::new();
    let mut energy = Vec::new();
    for record in reader.records() {
        let r = record.unwrap();
        let value: f64 = r[3].parse().unwrap();
        let at: f64 = r[0].parse::<u64>().unwrap() as f64 / 1e9;
        let attributes = &r[8];
        if !attributes.contains("chassis=2U") {
            continue;
        }
        assert!(attributes.contains("domain=node"), "{attributes}");
        assert_eq!(&r[4], "local_machine");
        match &r[1] {
            "redfish_power" => power.push((at, value)),
            "redfish_consumed_energy" => {
                assert!(attributes.contains("integrated=true"), "{attributes}");
                assert!(
                    attributes.contains("sensor=Power.PowerConsumedWatts"),
                    "{attributes}"
                );
                energy.push((at, value));
            }
            other => panic!("unexpected metric {other}"),
        }
    }
    assert!(power.len() >= 5, "{power:?}\n{stderr}");
    let watts: Vec<f64> = power.iter().map(|p| p.1).collect();
    assert!(
        watts.contains(&180.0) && watts.contains(&220.0),
        "{watts:?}"
    );
    // Each energy row is the trapezoid of the two power rows around it.
    assert_eq!(energy.len(), power.len(), "{energy:?}");
    assert_eq!(energy[0].1, 0.0);
    for i in 1..power.len() {
        assert_eq!(energy[i].0, power[i].0);
        let expected = (power[i - 1].1 + power[i].1) / 2.0 * (power[i].0 - power[i - 1].0);
        assert!(
            (energy[i].1 - expected).abs() <= expected * 1e-3,
            "row {i}: {} J, expected {expected} J",
            energy[i].1
        );
    }
    assert_eq!(front.stats()["logins"], 1);
    assert_eq!(
        front.stats()["deleted"],
        1,
        "the session is deleted at stop"
    );
}
