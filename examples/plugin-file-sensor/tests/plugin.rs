//! The tutorial's plugin in a real pipeline: fixture snapshots of two
//! sensor files (`tests/fixtures/two_sensors/files0..2`), polled by hand.
//! The power points are the files' values; the energy points are the
//! trapezoid of those points over their own timestamps, the first 0 J; the
//! log file has one line per energy point.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use alumet::plugin::{PluginDefinition, PluginMetadata};
use alumet::testing::fixture::apply_snapshot;
use alumet::testing::TestPipeline;
use plugin_file_sensor::transform::trapezoid;
use plugin_file_sensor::{Config, FileSensorPlugin, ENERGY_METRIC, POWER_METRIC};

fn case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/two_sensors")
}

#[test]
fn power_is_read_integrated_into_energy_and_logged() {
    let root = tempfile::tempdir().unwrap();
    apply_snapshot(root.path(), &case().join("files0"));
    // Beside the root: a snapshot makes the root hold exactly its files.
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("energy.log");
    let config = Config {
        root: root.path().to_owned(),
        files: vec!["sensors/psu".into(), "sensors/fan".into()],
        poll_interval: Duration::from_secs(24 * 3600),
        flush_interval: Duration::from_secs(24 * 3600),
        log_file: log.clone(),
    };
    let mut plugin = FileSensorPlugin::init(config).unwrap();
    let mut pipeline = TestPipeline::builder();
    pipeline.start_plugin("file-sensor", &mut plugin).unwrap();
    let running = pipeline.start();
    // The pipeline polls at start (files0), then at each trigger, then at shutdown.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while running
        .handle()
        .stats()
        .source("file-sensor/power")
        .map_or(0, |s| s.polls)
        < 1
    {
        assert!(std::time::Instant::now() < deadline, "no first poll");
        std::thread::sleep(Duration::from_millis(1));
    }
    for snapshot in ["files1", "files2"] {
        std::thread::sleep(Duration::from_millis(20));
        apply_snapshot(root.path(), &case().join(snapshot));
        running.trigger_all();
    }
    let result = running.finish();

    let watts = |sensor: &str| -> Vec<(alumet::measurement::Timestamp, f64)> {
        result
            .points_of(POWER_METRIC)
            .into_iter()
            .filter(|p| p.attr("sensor").map(|s| s.to_string()).as_deref() == Some(sensor))
            .map(|p| (p.timestamp, p.value.as_f64()))
            .collect()
    };
    let psu = watts("sensors/psu");
    let fan = watts("sensors/fan");
    // files0, files1, files2, and the shutdown poll (files2 again).
    assert_eq!(
        psu.iter().map(|p| p.1).collect::<Vec<_>>(),
        [2.0, 4.0, 4.0, 4.0]
    );
    assert_eq!(
        fan.iter().map(|p| p.1).collect::<Vec<_>>(),
        [0.5, 0.5, 1.5, 1.5]
    );

    for (sensor, power) in [("sensors/psu", &psu), ("sensors/fan", &fan)] {
        let energy: Vec<f64> = result
            .points_of(ENERGY_METRIC)
            .into_iter()
            .filter(|p| p.attr("sensor").map(|s| s.to_string()).as_deref() == Some(sensor))
            .map(|p| p.value.as_f64())
            .collect();
        let mut expected = vec![0.0];
        expected.extend(power.windows(2).map(|w| trapezoid(w[0], w[1])));
        assert_eq!(energy, expected, "{sensor}");
    }

    // One line per energy point: time, sensor, joules.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    let first = lines[0].split(' ').collect::<Vec<_>>();
    assert_eq!(first.len(), 3, "{text}");
    assert_eq!(first[2], "0");
}

#[test]
fn trapezoid_is_the_mean_power_times_the_time() {
    use alumet::measurement::Timestamp;
    let at = |ms: u64| Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + ms * 1_000_000);
    // (2 W + 4 W) / 2 × 0.5 s
    assert_eq!(trapezoid((at(0), 2.0), (at(500), 4.0)), 1.5);
}

#[test]
fn a_missing_file_says_which_and_nothing_configured_is_absent() {
    let root = tempfile::tempdir().unwrap();
    let config = Config {
        root: root.path().to_owned(),
        files: vec!["no/such/file".into()],
        ..Config::default()
    };
    let e = FileSensorPlugin::check_availability(&config).unwrap_err();
    assert!(e.to_string().contains("no/such/file"), "{e}");
    assert!(!e.is_absent());
    let e = FileSensorPlugin::check_availability(&Config::default()).unwrap_err();
    assert!(e.is_absent(), "{e}");
}

#[test]
fn the_readme_shows_every_default_line() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = (PluginMetadata::of::<FileSensorPlugin>().default_config)().unwrap();
    for line in toml::to_string(&table).unwrap().lines() {
        assert!(
            readme.lines().any(|l| l == line),
            "README.md lacks {line:?}"
        );
    }
    let docs = FileSensorPlugin::config_docs();
    assert_eq!(docs.len(), table.len());
}

/// The tutorial and the custom agent's page quote the example crates: every
/// code block of theirs is in the crates word for word, so the docs
/// cannot drift from what CI builds and runs.
#[test]
fn the_docs_code_blocks_are_the_example_crates_code() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut sources = Vec::new();
    for dir in [
        "examples/plugin-file-sensor/src",
        "examples/custom-agent/src",
    ] {
        for entry in std::fs::read_dir(repo.join(dir)).unwrap() {
            sources.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
    }
    sources.push(
        std::fs::read_to_string(repo.join("examples/custom-agent/custom-agent.toml")).unwrap(),
    );
    let mut blocks = 0;
    for doc in ["docs/tutorial.md", "docs/custom-agent.md"] {
        let text = std::fs::read_to_string(repo.join(doc)).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = [rest.find("```rust\n"), rest.find("```toml\n")]
            .into_iter()
            .flatten()
            .min()
        {
            let body = &rest[start + 8..];
            let end = body.find("```").unwrap();
            let block = &body[..end];
            assert!(
                sources.iter().any(|s| s.contains(block)),
                "{doc}: this block is not in the example crates:\n{block}"
            );
            blocks += 1;
            rest = &body[end + 3..];
        }
    }
    assert!(blocks >= 12, "{blocks} blocks");
}
