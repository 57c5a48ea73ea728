//! The plugin in a real pipeline, fed by a fixture source at 10 ms: 1 s
//! windows whose energy sums equal the integer sums of the inputs in µJ,
//! gauges' mean/min/max computed apart, a late point counted and kept, and
//! the shutdown's partial window flushed once per series.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use alumet::measurement::*;
use alumet::metrics::*;
use alumet::plugin::PluginDefinition;
use alumet::testing::{FnSource, TestPipeline};
use plugin_aggregate::{AggregatePlugin, Config};

const S: u64 = 1_000_000_000;
const BASE: u64 = 1_700_000_000 * S;
const STEP: u64 = 10_000_000;

/// Energy of the i-th 10 ms interval of package `pkg`, in µJ: irregular
/// enough that decimal fractions of a joule never add up exactly in f64.
fn energy_uj(pkg: u32, i: u64) -> u64 {
    let x = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(u64::from(pkg) * 1442695040888963407);
    200_000 + (x >> 33) % 900_001
}

fn power_w(i: u64) -> f64 {
    ((i * 37) % 101) as f64 * 0.25
}

fn config(text: &str) -> Config {
    alumet::config::deserialize_config(toml::from_str::<toml::Table>(text).unwrap()).unwrap()
}

struct Run {
    points: Vec<MeasurementPoint>,
    metrics: std::sync::Arc<MetricRegistry>,
}

/// Polls: the one at start, 4 triggered, the one at shutdown; each covers
/// one second of 10 ms readings but the last, which stops half-way.
fn run(config_text: &str) -> Run {
    let mut t = TestPipeline::builder();
    t.plugin("fixture", |ctx| {
        let energy = ctx.create_metric(Metric::new(
            "rapl_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "e",
        ))?;
        let ops = ctx.create_metric(Metric::new(
            "ops",
            Unit::Unity,
            ValueType::U64,
            MetricKind::Delta,
            "n",
        ))?;
        let power = ctx.create_metric(Metric::new(
            "power",
            Unit::Watt,
            ValueType::F64,
            MetricKind::Gauge,
            "p",
        ))?;
        let total = ctx.create_metric(Metric::new(
            "total",
            Unit::Unity,
            ValueType::U64,
            MetricKind::Counter,
            "c",
        ))?;
        let mut poll = 0u64;
        let source = FnSource::new(move |buf: &mut MeasurementBuffer, _| {
            let n = if poll == 5 { 50 } else { 100 };
            for j in 0..n {
                let i = poll * 100 + j;
                let ts = Timestamp::from_unix_nanos(BASE + (i + 1) * STEP);
                for pkg in 0..2u32 {
                    let p = MeasurementPoint::new(
                        ts,
                        energy,
                        Resource::CpuPackage { id: pkg },
                        ResourceConsumer::LocalMachine,
                        energy_uj(pkg, i) as f64 / 1e6,
                    );
                    buf.push(p.with_attr("domain", "package"));
                }
                buf.push(MeasurementPoint::new(
                    ts,
                    ops,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    i % 7,
                ));
                buf.push(MeasurementPoint::new(
                    ts,
                    power,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    power_w(i),
                ));
                buf.push(MeasurementPoint::new(
                    ts,
                    total,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    1000 + i,
                ));
            }
            // A reading from 0.5 s, handed on in the 4th poll: its window closed long ago.
            if poll == 3 {
                let ts = Timestamp::from_unix_nanos(BASE + S / 2);
                buf.push(MeasurementPoint::new(
                    ts,
                    ops,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    1_000u64,
                ));
            }
            poll += 1;
            Ok(())
        });
        ctx.add_source("readings", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    let mut plugin = AggregatePlugin::init(config(config_text)).unwrap();
    t.start_plugin("aggregate", &mut plugin).unwrap();
    let running = t.start();
    for _ in 0..4 {
        running.trigger_all();
    }
    let result = running.finish();
    Run {
        metrics: result.metrics.clone(),
        points: result.points,
    }
}

fn attr(p: &MeasurementPoint, key: &str) -> Option<String> {
    p.attr(key).map(|v| v.to_string())
}

impl Run {
    fn of(&self, metric: &str) -> Vec<&MeasurementPoint> {
        let id = self.metrics.by_name(metric).unwrap();
        self.points.iter().filter(|p| p.metric == id).collect()
    }
}

#[test]
fn one_second_windows_sum_energy_to_the_microjoule_and_reduce_gauges() {
    let run = run("window = \"1s\"\nmax_delay = \"0s\"\ngauge = [\"mean\", \"min\", \"max\"]");
    // Energy: one point per package and window, 5 whole windows and the partial one.
    for pkg in 0..2u32 {
        let points: Vec<_> = run
            .of("rapl_consumed_energy")
            .into_iter()
            .filter(|p| p.resource == Resource::CpuPackage { id: pkg })
            .collect();
        assert_eq!(points.len(), 6, "{points:?}");
        for (w, p) in points.iter().enumerate() {
            let w = w as u64;
            let readings = if w == 5 { 50 } else { 100 };
            let expected_uj: u64 = (0..readings).map(|j| energy_uj(pkg, w * 100 + j)).sum();
            let MeasurementValue::F64(joules) = p.value else {
                panic!("{p:?}")
            };
            assert_eq!((joules * 1e6).round() as u64, expected_uj, "window {w}");
            assert!(
                (joules * 1e6 - expected_uj as f64).abs() < 1e-3,
                "window {w}: {joules}"
            );
            assert_eq!(attr(p, "window").as_deref(), Some("1s"));
            assert_eq!(
                attr(p, "domain").as_deref(),
                Some("package"),
                "the series' attributes stay"
            );
            if w < 5 {
                assert_eq!(
                    p.timestamp.unix_nanos(),
                    BASE + (w + 1) * S,
                    "a window's end"
                );
                assert_eq!(attr(p, "partial"), None);
            } else {
                assert_eq!(
                    p.timestamp.unix_nanos(),
                    BASE + 5 * S + 50 * STEP,
                    "the partial one: its latest reading"
                );
                assert_eq!(attr(p, "partial").as_deref(), Some("true"));
            }
        }
    }
    // u64 deltas: integer sums; the late reading kept apart, in its own window.
    let ops = run.of("ops");
    let (late, on_time): (Vec<&MeasurementPoint>, Vec<&MeasurementPoint>) =
        ops.iter().partition(|p| attr(p, "late").is_some());
    assert_eq!(on_time.len(), 6);
    for (w, p) in on_time.iter().enumerate() {
        let w = w as u64;
        let readings = if w == 5 { 50 } else { 100 };
        let sum: u64 = (0..readings).map(|j| (w * 100 + j) % 7).sum();
        assert_eq!(p.value, MeasurementValue::U64(sum), "window {w}");
    }
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].value, MeasurementValue::U64(1_000));
    assert_eq!(
        late[0].timestamp.unix_nanos(),
        BASE + S,
        "in the window it belongs to"
    );
    let late_count: u64 = run
        .of("aggregate_late_points")
        .iter()
        .map(|p| match p.value {
            MeasurementValue::U64(v) => v,
            MeasurementValue::F64(_) => panic!(),
        })
        .sum();
    assert_eq!(late_count, 1, "the late point is counted");
    // Gauges: mean, min and max per window, computed here from the readings.
    let mut by_fn: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for p in run.of("power") {
        by_fn
            .entry(attr(p, "aggregation").unwrap())
            .or_default()
            .push(p.value.as_f64());
    }
    assert_eq!(by_fn.keys().collect::<Vec<_>>(), ["max", "mean", "min"]);
    for w in 0..6u64 {
        let readings: Vec<f64> = (0..if w == 5 { 50 } else { 100 })
            .map(|j| power_w(w * 100 + j))
            .collect();
        let mean = readings.iter().sum::<f64>() / readings.len() as f64;
        let min = readings.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = readings.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w = w as usize;
        assert!((by_fn["mean"][w] - mean).abs() < 1e-12, "window {w}");
        assert_eq!((by_fn["min"][w], by_fn["max"][w]), (min, max), "window {w}");
    }
    // Counters: the last value of each window.
    let totals: Vec<MeasurementValue> = run.of("total").iter().map(|p| p.value).collect();
    assert_eq!(totals[0], MeasurementValue::U64(1000 + 99));
    assert_eq!(totals[5], MeasurementValue::U64(1000 + 549));
}

#[test]
fn unselected_metrics_pass_and_a_per_metric_gauge_setting_wins() {
    let run = run("window = \"1s\"\nmetrics = [\"rapl_*\", \"pow?r\"]\n[gauge_per_metric]\n\"po*\" = [\"last\"]");
    assert_eq!(
        run.of("ops").len(),
        550 + 1,
        "raw, and the late reading too"
    );
    assert_eq!(run.of("rapl_consumed_energy").len(), 12);
    let power = run.of("power");
    assert_eq!(power.len(), 6);
    assert!(power
        .iter()
        .all(|p| attr(p, "aggregation").as_deref() == Some("last")));
    assert_eq!(power[0].value, MeasurementValue::F64(power_w(99)));
    assert!(
        run.of("aggregate_late_points").is_empty(),
        "ops is not aggregated: nothing is late"
    );
}
