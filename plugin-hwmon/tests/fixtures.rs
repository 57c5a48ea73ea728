//! Fixture-driven tests of the hwmon plugin.
//!
//! Each directory `tests/fixtures/<case>/` holds sysfs snapshots `sys0/`,
//! `sys1/`... (real symbolic links: `class/hwmon/hwmonN` into `devices/`,
//! `hwmonN/device` back to the device), `SOURCE.md` (where the layout comes
//! from), `inventory.txt` (what `doctor` must list), an optional
//! `config.toml` with overrides, an optional `clock_ms` (the time of each
//! snapshot's poll, default one second apart) and `expected.csv`
//! (`expected2.csv`...): the points of the poll after `sys1` (`sys2`...).
//!
//! The runner copies `sys0` into a temporary sysfs root, starts the real
//! plugin in a `TestPipeline` with a hand-driven interval clock, polls,
//! then for each later snapshot overwrites the files in place (kept
//! descriptors see the new content), sets the clock and polls again.
//! `HWMON_BLESS=1` rewrites `inventory.txt` from what the plugin lists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alumet::measurement::Timestamp;
use alumet::plugin::PluginDefinition;
use alumet::testing::fixture::{
    apply_snapshot, assert_cases_are, check_windows, with_case_overrides,
};
use alumet::testing::TestPipeline;
use alumet_kernelfs::host::ManualClock;
use plugin_hwmon::{HwmonConfig, HwmonPlugin};

/// Every case directory; `all_fixture_directories_have_a_test` keeps this honest.
const CASES: [&str; 10] = [
    "acpi_power_meter",
    "amdgpu_power1_average",
    "amdgpu_power1_input_energy",
    "i915",
    "xe",
    "grace_hopper",
    "jetson_orin_ina3221",
    "energy_wrap",
    "uneven_intervals",
    "impossible_value",
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The time of each snapshot's poll, ns.
fn poll_times(case: &Path, snapshots: usize) -> Vec<u64> {
    match std::fs::read_to_string(case.join("clock_ms")) {
        Ok(text) => {
            let times: Vec<u64> = text
                .split_whitespace()
                .map(|t| t.parse::<u64>().unwrap() * 1_000_000)
                .collect();
            assert_eq!(times.len(), snapshots, "{}: clock_ms", case.display());
            times
        }
        Err(_) => (0..snapshots as u64).map(|n| n * 1_000_000_000).collect(),
    }
}

fn config_for(case: &Path, root: &Path) -> HwmonConfig {
    let table = alumet::config::serialize_config(&HwmonConfig::default()).unwrap();
    let mut table = with_case_overrides(table, case);
    let mut set = |k: &str, v: &str| {
        table.insert(k.to_owned(), toml::Value::String(v.to_owned()));
    };
    set("sysfs_root", root.to_str().unwrap());
    // Polls happen only when the test says so.
    set("poll_interval", "24h");
    set("flush_interval", "24h");
    alumet::config::deserialize_config(table).unwrap()
}

fn check_inventory(case: &Path, config: &HwmonConfig) {
    let lines = HwmonPlugin::inventory(config);
    let path = case.join("inventory.txt");
    let actual = lines.join("\n") + "\n";
    if std::env::var_os("HWMON_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "{}", path.display());
}

/// Runs a case; returns the total `hwmon_consumed_energy` after `sys1`.
fn run_case(name: &str) -> f64 {
    let case = fixtures_dir().join(name);
    let snapshots = (0..)
        .take_while(|n| case.join(format!("sys{n}")).exists())
        .count();
    let times = poll_times(&case, snapshots);
    let root = tempfile::tempdir().unwrap();
    apply_snapshot(root.path(), &case.join("sys0"));
    let config = config_for(&case, root.path());
    check_inventory(&case, &config);

    let clock = ManualClock::new();
    clock.advance_ns(times[0]);
    let mut plugin = HwmonPlugin::init(config)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let mut pipeline = TestPipeline::builder();
    pipeline.start_plugin("hwmon", &mut plugin).unwrap();
    let running = pipeline.start();
    // Two triggers: after the second, the poll every source gets at start
    // is done too (the clock has not moved: they add nothing).
    running.trigger_all();
    running.trigger_all();

    let mut windows = Vec::new();
    for n in 1..snapshots {
        clock.advance_ns(times[n] - times[n - 1]);
        apply_snapshot(root.path(), &case.join(format!("sys{n}")));
        let before = Timestamp::now();
        running.trigger_all();
        let after = Timestamp::now();
        windows.push((n, before, after));
    }
    let result = running.finish();
    check_windows(&case, "sys", &result.points, &result.metrics, &windows);
    result
        .points_of(plugin_hwmon::ENERGY_METRIC_NAME)
        .iter()
        .map(|p| p.value.as_f64())
        .sum()
}

#[test]
fn acpi_power_meter_is_the_whole_node_integrated_from_its_average() {
    run_case("acpi_power_meter");
}

#[test]
fn amdgpu_older_kernels_power1_average() {
    run_case("amdgpu_power1_average");
}

#[test]
fn amdgpu_newer_kernels_energy_counter_wins_over_ppt_and_apu_fast_ppt_is_power_only() {
    run_case("amdgpu_power1_input_energy");
}

#[test]
fn i915_energy_counter_on_its_pci_address() {
    run_case("i915");
}

#[test]
fn xe_reports_the_card_and_not_the_package_inside_it() {
    run_case("xe");
}

#[test]
fn grace_hopper_two_sockets_nested_domains() {
    run_case("grace_hopper");
}

#[test]
fn jetson_orin_ina3221_rails_are_voltage_times_current() {
    run_case("jetson_orin_ina3221");
}

#[test]
fn energy_counter_wrapping_at_64_bits_is_exact_and_a_reset_is_unmeasured() {
    run_case("energy_wrap");
}

#[test]
fn power_integrated_over_uneven_intervals_is_exact() {
    let total = run_case("uneven_intervals");
    // Worked by hand in SOURCE.md: 75 + 262.5 + 25 J.
    let expected = 362.5;
    assert!(
        (total - expected).abs() <= expected * 1e-3,
        "{total} J, expected {expected} J within 0.1 %"
    );
}

#[test]
fn impossible_values_are_skipped_and_their_intervals_unmeasured() {
    run_case("impossible_value");
}

#[test]
fn all_fixture_directories_have_a_test() {
    assert_cases_are(&fixtures_dir(), &CASES);
}

#[test]
fn plugin_name_is_the_shared_one() {
    assert_eq!(HwmonPlugin::NAME, "hwmon");
}
