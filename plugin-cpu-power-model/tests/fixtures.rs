//! Fixture cases under tests/fixtures/<case>/: `proc0/`, `proc1/` (snapshots
//! of /proc/stat one simulated second apart), an optional `sys/` tree (CPU
//! topology), `config.toml` (overrides of the plugin's section) and
//! `expected.csv` (the `estimated_cpu_energy` points, in alumet's shared
//! fixture format). The real procfs plugin reads the snapshots (USER_HZ 100)
//! and the model turns its `cpu_time` into energy: the expected values are
//! the model's integral over the interval, worked out in each file's comment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use std::time::Duration;

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricId, MetricKind, Unit, ValueType};
use alumet::pipeline::{PollError, Source, SourceTrigger};
use alumet::plugin::PluginDefinition;
use alumet::testing::fixture::{apply_snapshot, compare, read_expected, row_of, Row};
use alumet::testing::{TestPipeline, TestResult};
use plugin_cpu_power_model::{Config, CpuPowerModelPlugin};
use plugin_procfs::host::HostParams;
use plugin_procfs::{ProcfsConfig, ProcfsPlugin};

const CASES: [&str; 3] = [
    "linear_per_vcpu",
    "curve_per_socket_with_steal",
    "tdp_from_the_table",
];

/// What stands for the rapl plugin in a run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rapl {
    /// No rapl plugin.
    Absent,
    /// Registered, and its package counter measures every poll.
    Measuring,
    /// Registered; its counter froze after the first poll (unmeasured intervals).
    Frozen,
    /// Registered, but no point ever comes (a plugin stopped by a reload).
    Silent,
}

/// rapl's source as the plugin emits: 0 J at its first reading, then
/// 5 J per poll, or `energy_unmeasured_time` once frozen.
struct FakeRapl {
    energy: MetricId,
    unmeasured: MetricId,
    frozen: bool,
    polls: u32,
}

impl Source for FakeRapl {
    fn poll(
        &mut self,
        into: &mut MeasurementBuffer,
        timestamp: Timestamp,
    ) -> Result<(), PollError> {
        let first = self.polls == 0;
        self.polls += 1;
        let (metric, value, reason) = match (first, self.frozen) {
            (true, _) => (self.energy, 0.0, None),
            (false, false) => (self.energy, 5.0, None),
            (false, true) => (self.unmeasured, 1.0, Some("frozen")),
        };
        let mut p = MeasurementPoint::new(
            timestamp,
            metric,
            Resource::CpuPackage { id: 0 },
            ResourceConsumer::LocalMachine,
            value,
        )
        .with_attr("domain", "package");
        if let Some(r) = reason {
            p = p
                .with_attr("reason", r)
                .with_attr("energy_metric", "rapl_consumed_energy");
        }
        into.push(p);
        Ok(())
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs procfs on the case's snapshots with the model, beside `rapl`.
fn run(name: &str, rapl: Rapl, force: bool) -> TestResult {
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
    let (host, clock) = HostParams::simulated();
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
    if rapl != Rapl::Absent {
        pipeline
            .plugin("rapl", |ctx| {
                let energy = ctx.create_metric(Metric::new(
                    "rapl_consumed_energy",
                    Unit::Joule,
                    ValueType::F64,
                    MetricKind::Delta,
                    "rapl",
                ))?;
                let unmeasured = ctx.create_metric(Metric::new(
                    "energy_unmeasured_time",
                    Unit::Second,
                    ValueType::F64,
                    MetricKind::Delta,
                    "unmeasured",
                ))?;
                if rapl != Rapl::Silent {
                    ctx.add_source(
                        "energy",
                        Box::new(FakeRapl {
                            energy,
                            unmeasured,
                            frozen: rapl == Rapl::Frozen,
                            polls: 0,
                        }),
                        SourceTrigger::every(Duration::from_secs(24 * 3600)),
                    );
                }
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
        let result = run(name, Rapl::Absent, false);
        compare(
            name,
            read_expected(&fixtures_dir().join(name).join("expected.csv")),
            estimated_rows(&result),
        );
    }
}

#[test]
fn where_rapl_measures_the_model_stays_off_unless_forced() {
    let off = run("linear_per_vcpu", Rapl::Measuring, false);
    assert!(
        estimated_rows(&off).is_empty(),
        "{:?}",
        estimated_rows(&off)
    );
    assert!(!off.points_of("cpu_time").is_empty(), "procfs did run");
    assert!(
        off.points_of("rapl_consumed_energy").len() >= 2,
        "rapl did measure"
    );
    let forced = run("linear_per_vcpu", Rapl::Measuring, true);
    compare(
        "forced",
        read_expected(&fixtures_dir().join("linear_per_vcpu/expected.csv")),
        estimated_rows(&forced),
    );
}

#[test]
fn a_registered_rapl_that_does_not_measure_leaves_the_estimate_on() {
    // Decided from what rapl reports, not from its registration: a frozen
    // counter, or a rapl that says nothing at all.
    for rapl in [Rapl::Frozen, Rapl::Silent] {
        let result = run("linear_per_vcpu", rapl, false);
        compare(
            &format!("{rapl:?}"),
            read_expected(&fixtures_dir().join("linear_per_vcpu/expected.csv")),
            estimated_rows(&result),
        );
    }
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
