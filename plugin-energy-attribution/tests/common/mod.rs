//! Shared test kit: a registry with the input metrics, the transform, and the
//! fixture format (input.csv / expected.csv / config.toml under tests/fixtures/<case>/).
//!
//! input.csv: `buffer,time_ms,metric,resource,consumer,value,attributes`.
//! Rows with the same `buffer` number form one buffer; buffers are fed in
//! increasing order of that number (so a fixture can deliver points late).
//! expected.csv: `time_ms,metric,resource,consumer,value,attributes`, the
//! points the transform adds (input points must pass through untouched).
//! resource: `local_machine`, `cpu_package:0`, `dram:0`, `gpu:<bus id>`;
//! consumer: `local_machine`, `process:<pid>`, `cgroup:<path>`; attributes: `k=v` joined by `;`.
//! Times are milliseconds after an arbitrary epoch (BASE_NS).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, clippy::panic)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alumet::measurement::{
    AttributeValue, MeasurementBuffer, MeasurementPoint, MeasurementValue, Resource,
    ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use alumet::pipeline::{ElementContext, Transform};
use alumet::testing::fixture::{
    consumer_from_text, consumer_text, resource_from_text, resource_text,
};
use plugin_energy_attribution::{
    register_output_metrics, AttributionStats, AttributionTransform, Config, OutputMetrics,
};

/// Epoch of the fixtures' `time_ms` column (2023-11-14T22:13:20Z).
pub const BASE_NS: u64 = 1_700_000_000_000_000_000;

/// The input metrics, as rapl, procfs, nvidia, hwmon and redfish register them.
pub fn input_metrics() -> Vec<Metric> {
    vec![
        Metric::new(
            "rapl_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "rapl",
        ),
        Metric::new(
            "process_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "cpu",
        ),
        Metric::new(
            "estimated_cpu_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "cpu-power-model",
        ),
        Metric::new(
            "gpu_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "gpu",
        ),
        Metric::new(
            "process_memory_resident",
            Unit::Byte,
            ValueType::U64,
            MetricKind::Gauge,
            "rss",
        ),
        Metric::new(
            "gpu_process_sm_utilization",
            Unit::Percent,
            ValueType::F64,
            MetricKind::Gauge,
            "sm",
        ),
        Metric::new(
            "hwmon_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "hwmon",
        ),
        Metric::new(
            "redfish_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "redfish",
        ),
        Metric::new(
            "energy_unmeasured_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "unmeasured",
        ),
    ]
}

/// The metrics of the cgroups plugin, registered only for the cases that use them.
pub fn cgroup_metrics() -> Vec<Metric> {
    vec![
        Metric::new(
            "cgroup_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "cgroup cpu",
        ),
        Metric::new(
            "cgroups_measured",
            Unit::Unity,
            ValueType::F64,
            MetricKind::Gauge,
            "cgroup polls",
        ),
    ]
}

/// A registry with the input metrics (all, or only those named) and the outputs.
pub fn registry(only: Option<&[&str]>) -> (MetricRegistry, OutputMetrics) {
    registry_with(only, Vec::new())
}

/// [`registry`], with `extra` input metrics.
pub fn registry_with(only: Option<&[&str]>, extra: Vec<Metric>) -> (MetricRegistry, OutputMetrics) {
    let mut r = MetricRegistry::new();
    for m in input_metrics().into_iter().chain(extra) {
        if only.is_none_or(|names| names.contains(&m.name.as_str())) {
            r.register(m).unwrap();
        }
    }
    let out = register_output_metrics(&mut r).unwrap();
    (r, out)
}

/// A point at `time_ms`.
pub fn point(
    registry: &MetricRegistry,
    time_ms: f64,
    metric: &str,
    resource: Resource,
    consumer: ResourceConsumer,
    value: f64,
) -> MeasurementPoint {
    MeasurementPoint::new(
        ts(time_ms),
        registry.by_name(metric).unwrap(),
        resource,
        consumer,
        value,
    )
}

/// The timestamp `time_ms` after BASE_NS.
pub fn ts(time_ms: f64) -> Timestamp {
    Timestamp::from_unix_nanos(BASE_NS + (time_ms * 1e6).round() as u64)
}

/// RAPL package energy point.
pub fn rapl(r: &MetricRegistry, time_ms: f64, pkg: u32, energy_j: f64) -> MeasurementPoint {
    point(
        r,
        time_ms,
        "rapl_consumed_energy",
        Resource::CpuPackage { id: pkg },
        ResourceConsumer::LocalMachine,
        energy_j,
    )
    .with_attr("domain", "package")
}

/// Process CPU time point (mode user).
pub fn cpu(
    r: &MetricRegistry,
    time_ms: f64,
    pid: u32,
    exe: &str,
    seconds: f64,
) -> MeasurementPoint {
    point(
        r,
        time_ms,
        "process_cpu_time",
        Resource::LocalMachine,
        ResourceConsumer::Process { pid },
        seconds,
    )
    .with_attr("mode", "user")
    .with_attr("exe", exe.to_owned())
}

/// What a run of the transform gave.
pub struct Run {
    /// Every buffer after the transform, concatenated (finish's last).
    pub points: Vec<MeasurementPoint>,
    /// The points the transform added.
    pub added: Vec<MeasurementPoint>,
    /// Its counters.
    pub stats: AttributionStats,
    /// The registry.
    pub registry: MetricRegistry,
}

impl Run {
    /// Points of metric `name` among those added.
    pub fn of(&self, name: &str) -> Vec<&MeasurementPoint> {
        let id = self.registry.by_name(name).unwrap();
        self.added.iter().filter(|p| p.metric == id).collect()
    }
}

/// Feeds `buffers` through a fresh transform, then finishes it. Checks that
/// every input point comes out untouched, first and in order, in its buffer.
pub fn run(
    config: Config,
    registry: MetricRegistry,
    outputs: OutputMetrics,
    buffers: Vec<MeasurementBuffer>,
) -> Run {
    let mut t = AttributionTransform::new(config, outputs);
    let ctx = ElementContext { metrics: &registry };
    let mut points = Vec::new();
    let mut added = Vec::new();
    for b in buffers {
        let original = b.clone();
        let mut b = b;
        t.apply(&mut b, &ctx).unwrap();
        assert!(b.len() >= original.len());
        // Compared as text: NaN inputs must pass through too, and NaN != NaN.
        assert_eq!(
            format!("{:?}", &b[..original.len()]),
            format!("{original:?}"),
            "input points must pass through untouched"
        );
        added.extend(b[original.len()..].iter().cloned());
        points.extend(b);
    }
    let mut tail = Vec::new();
    t.finish(&mut tail, &ctx).unwrap();
    added.extend(tail.iter().cloned());
    points.extend(tail);
    let stats = t.stats().clone();
    Run {
        points,
        added,
        stats,
        registry,
    }
}

/// The directory of a fixture case.
pub fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
}

fn format_attributes(p: &MeasurementPoint) -> String {
    let mut pairs: Vec<String> = p
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.sort();
    pairs.join(";")
}

/// One row of expected.csv (or an added point, in the same form).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub time_ms: f64,
    pub metric: String,
    pub resource: String,
    pub consumer: String,
    pub value: f64,
    pub attributes: String,
}

impl Row {
    fn key(&self) -> (i64, String, String, String, String) {
        (
            (self.time_ms * 1000.0).round() as i64,
            self.metric.clone(),
            self.resource.clone(),
            self.consumer.clone(),
            self.attributes.clone(),
        )
    }
}

/// Reads tests/fixtures/<case>/ and returns (config, registry, outputs, buffers, expected rows).
pub fn load_fixture(
    case: &str,
) -> (
    Config,
    MetricRegistry,
    OutputMetrics,
    Vec<MeasurementBuffer>,
    Vec<Row>,
) {
    let dir = fixture_dir(case);
    let mut config: Config = match std::fs::read_to_string(dir.join("config.toml")) {
        Ok(text) => toml::from_str(&text).unwrap(),
        Err(_) => Config::default(),
    };
    // A fixture's /proc (for the cgroups of GPU processes) lives in the case directory.
    if config.proc_root.is_relative() {
        config.proc_root = dir.join(&config.proc_root);
    }
    let input = std::fs::read_to_string(dir.join("input.csv")).unwrap();
    let extra = if input.contains("cgroup") {
        cgroup_metrics()
    } else {
        Vec::new()
    };
    let (registry, outputs) = registry_with(None, extra);
    let mut by_buffer: BTreeMap<u32, MeasurementBuffer> = BTreeMap::new();
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_path(dir.join("input.csv"))
        .unwrap();
    for record in reader.records() {
        let r = record.unwrap();
        let buffer: u32 = r[0].parse().unwrap();
        let time_ms: f64 = r[1].parse().unwrap();
        let metric = registry
            .by_name(&r[2])
            .unwrap_or_else(|| panic!("unknown metric {}", &r[2]));
        let value: f64 = r[5].parse().unwrap();
        let mut p = MeasurementPoint {
            timestamp: ts(time_ms),
            metric,
            resource: resource_from_text(&r[3]),
            consumer: consumer_from_text(&r[4]),
            value: MeasurementValue::F64(value),
            attributes: Default::default(),
        };
        for pair in r[6].split(';').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            p.attributes.push((
                Cow::Owned(k.to_owned()),
                AttributeValue::Str(Cow::Owned(v.to_owned())),
            ));
        }
        by_buffer.entry(buffer).or_default().push(p);
    }
    let mut expected = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_path(dir.join("expected.csv"))
        .unwrap();
    for record in reader.records() {
        let r = record.unwrap();
        expected.push(Row {
            time_ms: r[0].parse().unwrap(),
            metric: r[1].to_owned(),
            resource: r[2].to_owned(),
            consumer: r[3].to_owned(),
            value: r[4].parse().unwrap(),
            attributes: r[5].to_owned(),
        });
    }
    (
        config,
        registry,
        outputs,
        by_buffer.into_values().collect(),
        expected,
    )
}

/// The added points in the form of expected.csv rows.
pub fn rows(run: &Run) -> Vec<Row> {
    run.added
        .iter()
        .map(|p| Row {
            time_ms: (p.timestamp.unix_nanos() - BASE_NS) as f64 / 1e6,
            metric: run.registry.get(p.metric).unwrap().name.clone(),
            resource: resource_text(&p.resource),
            consumer: consumer_text(&p.consumer),
            value: p.value.as_f64(),
            attributes: format_attributes(p),
        })
        .collect()
}

/// Runs a fixture case and compares what the transform added with expected.csv
/// (order-insensitive; values to 1e-9 relative or absolute).
pub fn check_fixture(case: &str) -> Run {
    let (config, registry, outputs, buffers, expected) = load_fixture(case);
    let run = run(config, registry, outputs, buffers);
    let mut got = rows(&run);
    let mut want = expected;
    got.sort_by_key(|r| r.key());
    want.sort_by_key(|r| r.key());
    let show = |rows: &[Row]| {
        rows.iter()
            .map(|r| {
                format!(
                    "{},{},{},{},{},{}",
                    r.time_ms, r.metric, r.resource, r.consumer, r.value, r.attributes
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let same = got.len() == want.len()
        && got.iter().zip(&want).all(|(g, w)| {
            g.key() == w.key() && (g.value - w.value).abs() <= 1e-9 * w.value.abs().max(1.0)
        });
    assert!(
        same,
        "case {case}: the transform added\n{}\n\nexpected\n{}",
        show(&got),
        show(&want)
    );
    for p in &run.added {
        assert!(
            p.value.as_f64() >= 0.0 && p.value.as_f64().is_finite(),
            "case {case}: negative or non-finite output {p:?}"
        );
    }
    run
}
