//! Fixture cases: each `tests/fixtures/<case>/` holds `script.toml`, what a
//! fake GPU answers at each poll and when the poll happens, and
//! `expected.csv`, every point the source must emit, in order.
//!
//! The source is polled directly with the scripted timestamps (not through a
//! pipeline), so energies integrated from power are exact.
//!
//! `script.toml`:
//! - `bus_id` (as NVML writes it), `per_process` (default true),
//!   `start_us` (the agent's start in the driver's µs clock, default 0: older
//!   process samples are never reported),
//!   `not_supported` (names of [`FakeGpuState`] fields that answer NotSupported);
//! - `[[poll]]` with `t_ms` and any of: `total_energy_mj`, `power_mw`,
//!   `temperature_c`, `gpu_percent`, `memory_percent`, `memory_used`,
//!   `memory_total`, `sm_clock_mhz`, `memory_clock_mhz`, `throttle_reasons`,
//!   `processes = [{ pid, memory_bytes }]` (replaces the list),
//!   `samples = [{ pid, t_us, sm }]` (added to the driver's buffer),
//!   `fail = ["power_mw", ...]` (fail this poll only). A value not given keeps
//!   its previous one. The first poll's values are also what the start-up
//!   probe sees.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use alumet::measurement::{MeasurementBuffer, Timestamp};
use alumet::metrics::MetricRegistry;
use alumet::pipeline::{PollError, Source};
use plugin_nvidia::metrics::GpuMetrics;
use plugin_nvidia::nvml::{GpuError, GpuProcess, MemoryUsage, ProcessSample, Utilization};
use plugin_nvidia::source::{GpuSource, MonitoredGpu};
use plugin_nvidia::testing::{FakeGpu, FakeGpuState};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    bus_id: String,
    #[serde(default = "yes")]
    per_process: bool,
    #[serde(default)]
    start_us: u64,
    #[serde(default)]
    not_supported: Vec<String>,
    poll: Vec<Poll>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Poll {
    t_ms: u64,
    total_energy_mj: Option<u64>,
    power_mw: Option<u32>,
    temperature_c: Option<u32>,
    gpu_percent: Option<u32>,
    memory_percent: Option<u32>,
    memory_used: Option<u64>,
    memory_total: Option<u64>,
    sm_clock_mhz: Option<u32>,
    memory_clock_mhz: Option<u32>,
    throttle_reasons: Option<u64>,
    processes: Option<Vec<ScriptProcess>>,
    samples: Vec<ScriptSample>,
    fail: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptProcess {
    pid: u32,
    memory_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptSample {
    pid: u32,
    t_us: u64,
    sm: u32,
}

/// Base of the scripted timestamps: any fixed instant would do.
const EPOCH_NS: u64 = 1_700_000_000_000_000_000;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
}

/// The dials of `state` as the script says for this poll: `values` holds
/// the values so far, `fail` the failures of this poll only.
fn apply(
    state: &mut FakeGpuState,
    values: &FakeGpuState,
    not_supported: &[String],
    fail: &[String],
) {
    *state = values.clone();
    let failure = |field: &str| {
        if not_supported.iter().any(|f| f == field) {
            Some(GpuError::NotSupported)
        } else if fail.iter().any(|f| f == field) {
            Some(GpuError::Failed(format!("scripted failure of {field}")))
        } else {
            None
        }
    };
    macro_rules! dial {
        ($($field:ident),*) => {$(
            if let Some(e) = failure(stringify!($field)) {
                state.$field = Err(e);
            }
        )*};
    }
    dial!(
        total_energy_mj,
        power_mw,
        temperature_c,
        utilization,
        memory,
        sm_clock_mhz,
        memory_clock_mhz,
        throttle_reasons,
        processes,
        process_samples
    );
}

fn update_values(values: &mut FakeGpuState, samples: &mut Vec<ProcessSample>, poll: &Poll) {
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(v) = poll.$field {
                values.$field = Ok(v);
            }
        )*};
    }
    set!(
        total_energy_mj,
        power_mw,
        temperature_c,
        sm_clock_mhz,
        memory_clock_mhz,
        throttle_reasons
    );
    let mut u = values.utilization.clone().unwrap();
    u = Utilization {
        gpu_percent: poll.gpu_percent.unwrap_or(u.gpu_percent),
        memory_percent: poll.memory_percent.unwrap_or(u.memory_percent),
    };
    values.utilization = Ok(u);
    let m = values.memory.clone().unwrap();
    values.memory = Ok(MemoryUsage {
        used_bytes: poll.memory_used.unwrap_or(m.used_bytes),
        total_bytes: poll.memory_total.unwrap_or(m.total_bytes),
    });
    if let Some(list) = &poll.processes {
        values.processes = Ok(list
            .iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                used_memory_bytes: p.memory_bytes,
            })
            .collect());
    }
    samples.extend(poll.samples.iter().map(|s| ProcessSample {
        pid: s.pid,
        timestamp_us: s.t_us,
        sm_percent: s.sm,
    }));
    values.process_samples = Ok(samples.clone());
}

/// Runs a case; returns the CSV it produced and the poll errors.
fn run_case(case: &str) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(fixture(case).join("script.toml")).unwrap();
    let script: Script = toml::from_str(&text).unwrap();
    let gpu = FakeGpu::new(&script.bus_id);
    let mut values = gpu.state();
    let mut samples = Vec::new();

    let mut registry = MetricRegistry::new();
    let metrics = GpuMetrics::register(|m| registry.register(m)).unwrap();
    let mut source = None;
    let mut csv = String::from(
        "t_ms,metric,value,resource_kind,resource_id,consumer_kind,consumer_id,attributes\n",
    );
    let mut errors = Vec::new();
    for poll in &script.poll {
        update_values(&mut values, &mut samples, poll);
        gpu.update(|s| apply(s, &values, &script.not_supported, &poll.fail));
        let source = source.get_or_insert_with(|| {
            let monitored =
                MonitoredGpu::open(Box::new(gpu.clone()), script.per_process, script.start_us)
                    .unwrap();
            GpuSource::new(monitored, metrics)
        });
        let mut buffer = MeasurementBuffer::new();
        let ts = Timestamp::from_unix_nanos(EPOCH_NS + poll.t_ms * 1_000_000);
        match source.poll(&mut buffer, ts) {
            Ok(()) => {}
            Err(PollError::Transient(e)) => errors.push(format!("{}: transient: {e}", poll.t_ms)),
            Err(PollError::Fatal(e)) => errors.push(format!("{}: fatal: {e}", poll.t_ms)),
        }
        for p in &buffer {
            let mut attributes: Vec<String> = p
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            attributes.sort();
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                (p.timestamp.unix_nanos() - EPOCH_NS) / 1_000_000,
                registry.get(p.metric).unwrap().name,
                p.value,
                p.resource.kind(),
                p.resource.id(),
                p.consumer.kind(),
                p.consumer.id(),
                attributes.join(";"),
            ));
        }
    }
    (csv, errors)
}

fn check_case(case: &str) -> Vec<String> {
    let (actual, errors) = run_case(case);
    let expected = std::fs::read_to_string(fixture(case).join("expected.csv")).unwrap();
    assert_eq!(
        actual, expected,
        "case {case}: emitted points (left) differ from expected.csv (right)"
    );
    errors
}

#[test]
fn energy_counter_gives_exact_joules_and_survives_a_driver_reload() {
    let errors = check_case("energy_counter");
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn power_is_integrated_with_the_trapezoid_rule_when_the_counter_is_not_supported() {
    let errors = check_case("power_fallback");
    // The power read that fails at 1500 ms is reported, and the next reading
    // integrates over the whole gap.
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("1500: transient: GPU 0000:3b:00.0: power"),
        "{errors:?}"
    );
}

#[test]
fn processes_appear_and_vanish() {
    let errors = check_case("process_churn");
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn process_samples_are_reported_when_new_for_running_pids_and_in_range() {
    let errors = check_case("process_sampling");
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn every_metric_of_an_idle_gpu() {
    let errors = check_case("all_metrics");
    assert!(errors.is_empty(), "{errors:?}");
}
