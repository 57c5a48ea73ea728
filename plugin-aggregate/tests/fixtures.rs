//! Fixture cases under tests/fixtures/<case>/: `config.toml` (the plugin's
//! section), `input.csv` (points by buffer, `time_ms` after an aligned
//! base), `expected.csv` (every point the transform hands on, in any
//! order; values to 1e-12 relative). Metrics: `energy` (J, f64 delta),
//! `power` (W, f64 gauge), `ops` (u64 delta), `total` (u64 counter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use alumet::measurement::*;
use alumet::metrics::*;
use alumet::pipeline::{ElementContext, Transform};
use alumet::testing::fixture::{cases, resource_from_text, resource_text};
use plugin_aggregate::{late_metric, AggregateTransform, Config};

const BASE_MS: u64 = 1_700_000_000_000;

fn registry() -> MetricRegistry {
    let mut r = MetricRegistry::new();
    for (name, unit, vt, kind) in [
        ("energy", Unit::Joule, ValueType::F64, MetricKind::Delta),
        ("power", Unit::Watt, ValueType::F64, MetricKind::Gauge),
        ("ops", Unit::Unity, ValueType::U64, MetricKind::Delta),
        ("total", Unit::Unity, ValueType::U64, MetricKind::Counter),
    ] {
        r.register(Metric::new(name, unit, vt, kind, "")).unwrap();
    }
    r.register(late_metric()).unwrap();
    r
}

fn lines(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// `(time_ms, metric, resource, attributes)` and the value.
type Row = ((u64, String, String, String), f64);

fn row_of(p: &MeasurementPoint, r: &MetricRegistry) -> Row {
    let res = resource_text(&p.resource);
    let attrs: Vec<String> = p
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let ns = p.timestamp.unix_nanos() - BASE_MS * 1_000_000;
    assert_eq!(ns % 1_000_000, 0);
    (
        (
            ns / 1_000_000,
            r.get(p.metric).unwrap().name.clone(),
            res,
            attrs.join(";"),
        ),
        p.value.as_f64(),
    )
}

fn run_case(dir: &Path) {
    let config: Config = alumet::config::deserialize_config(
        toml::from_str::<toml::Table>(&std::fs::read_to_string(dir.join("config.toml")).unwrap())
            .unwrap(),
    )
    .unwrap();
    config.validate().unwrap();
    let r = registry();
    let ctx = ElementContext { metrics: &r };
    let mut t = AggregateTransform::new(
        config.settings(),
        r.by_name(plugin_aggregate::LATE_METRIC).unwrap(),
    );
    let mut buffers: Vec<MeasurementBuffer> = Vec::new();
    for f in lines(&dir.join("input.csv")) {
        let n: usize = f[0].parse().unwrap();
        buffers.resize_with(buffers.len().max(n), Vec::new);
        let id = r.by_name(&f[2]).unwrap();
        let value = match r.get(id).unwrap().value_type {
            ValueType::U64 => MeasurementValue::U64(f[4].parse().unwrap()),
            ValueType::F64 => MeasurementValue::F64(f[4].parse().unwrap()),
        };
        let ts = Timestamp::from_unix_nanos((BASE_MS + f[1].parse::<u64>().unwrap()) * 1_000_000);
        let mut p = MeasurementPoint::new(
            ts,
            id,
            resource_from_text(&f[3]),
            ResourceConsumer::LocalMachine,
            value,
        );
        for kv in f[5].split(';').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap();
            p = p.with_attr(k.to_owned(), v.to_owned());
        }
        buffers[n - 1].push(p);
    }
    let mut out = Vec::new();
    for mut b in buffers {
        t.apply(&mut b, &ctx).unwrap();
        out.extend(b);
    }
    let mut tail = Vec::new();
    t.finish(&mut tail, &ctx).unwrap();
    out.extend(tail);
    let mut got: Vec<Row> = out.iter().map(|p| row_of(p, &r)).collect();
    let mut expected: Vec<Row> = lines(&dir.join("expected.csv"))
        .into_iter()
        .map(|f| {
            (
                (
                    f[0].parse().unwrap(),
                    f[1].clone(),
                    f[2].clone(),
                    f[4].clone(),
                ),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let keys = |rows: &[Row]| rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&got), keys(&expected), "{}", dir.display());
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (g.1 - e.1).abs() <= 1e-12 * e.1.abs().max(1.0),
            "{}: {:?} is {}, expected {}",
            dir.display(),
            g.0,
            g.1,
            e.1
        );
    }
}

#[test]
fn every_fixture_case() {
    let cases = cases(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        1,
    );
    for case in cases {
        run_case(&case);
    }
}
