//! Fixture cases under tests/fixtures/<case>/: `proc0/`, `proc1/` (snapshots
//! of /proc/stat one simulated second apart), an optional `sys/` tree (CPU
//! topology), `config.toml` (overrides of the plugin's section) and
//! `expected.csv` (the `estimated_cpu_energy` points, in alumet's shared
//! fixture format). The real procfs plugin reads the snapshots (USER_HZ 100)
//! and the model turns its `cpu_time` into energy: the expected values are
//! the model's integral over the interval, worked out in each file's comment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::plugin::PluginDefinition;
use alumet::testing::fixture::{apply_snapshot, compare, read_expected, row_of, Row};
use alumet::testing::{TestPipeline, TestResult};
use plugin_cpu_power_model::{Config, CpuPowerModelPlugin};
use plugin_procfs::host::{HostParams, ManualClock};
use plugin_procfs::{ProcfsConfig, ProcfsPlugin};

const CASES: [&str; 2] = ["linear_per_vcpu", "curve_per_socket_with_steal"];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs procfs on the case's snapshots with the model; `rapl` also registers
/// `rapl_consumed_energy` as the rapl plugin does when it starts.
fn run(name: &str, rapl: bool, force: bool) -> TestResult {
    let case = fixtures_dir().join(name);
    let root = tempfile::tempdir().unwrap();
    apply_snapshot(root.path(), &case.join("proc0"));

    let mut table = alumet::config::serialize_config(&ProcfsConfig::default()).unwrap();
    let extra: toml::Table = toml::from_str(
        "processes = false\nnetwork = false\nmeminfo_fields = []\nsystem_poll_interval = \"24h\"\nflush_interval = \"24h\"",
    )
    .unwrap();
    table.extend(extra);
    table.insert(
        "proc_root".into(),
        toml::Value::String(root.path().to_str().unwrap().into()),
    );
    let procfs_config: ProcfsConfig = alumet::config::deserialize_config(table).unwrap();
    let clock = ManualClock::new();
    let host = HostParams {
        clock_ticks_per_second: 100,
        page_size_bytes: 4096,
        clock: Arc::new(clock.clone()),
    };
    let mut procfs = ProcfsPlugin::init(procfs_config).unwrap().with_host(host);

    let text = std::fs::read_to_string(case.join("config.toml")).unwrap();
    let mut config: Config =
        alumet::config::deserialize_config(toml::from_str(&text).unwrap()).unwrap();
    config.proc_root = root.path().to_owned();
    config.sys_root = case.join("sys");
    config.force = force;
    let mut model = CpuPowerModelPlugin::init(config).unwrap();

    let mut pipeline = TestPipeline::builder();
    pipeline.start_plugin("procfs", &mut procfs).unwrap();
    if rapl {
        pipeline
            .plugin("rapl", |ctx| {
                ctx.create_metric(Metric::new(
                    "rapl_consumed_energy",
                    Unit::Joule,
                    ValueType::F64,
                    MetricKind::Delta,
                    "rapl",
                ))?;
                Ok(())
            })
            .unwrap();
    }
    pipeline
        .start_plugin("cpu-power-model", &mut model)
        .unwrap();
    let running = pipeline.start();
    running.trigger_all();
    clock.advance_ns(1_000_000_000);
    apply_snapshot(root.path(), &case.join("proc1"));
    running.trigger_all();
    running.finish()
}

fn estimated_rows(result: &TestResult) -> Vec<Row> {
    result
        .points_of("estimated_cpu_energy")
        .into_iter()
        .map(|p| row_of(p, &result.metrics))
        .collect()
}

#[test]
fn estimated_energy_is_the_model_integral() {
    for name in CASES {
        let result = run(name, false, false);
        compare(
            name,
            read_expected(&fixtures_dir().join(name).join("expected.csv")),
            estimated_rows(&result),
        );
    }
}

#[test]
fn with_rapl_the_model_stays_off_unless_forced() {
    let off = run("linear_per_vcpu", true, false);
    assert!(estimated_rows(&off).is_empty());
    assert!(!off.points_of("cpu_time").is_empty(), "procfs did run");
    let forced = run("linear_per_vcpu", true, true);
    compare(
        "forced",
        read_expected(&fixtures_dir().join("linear_per_vcpu/expected.csv")),
        estimated_rows(&forced),
    );
}

#[test]
fn all_fixture_directories_have_a_case() {
    let mut found: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut known: Vec<String> = CASES.iter().map(|s| (*s).to_owned()).collect();
    known.sort();
    assert_eq!(found, known);
}
