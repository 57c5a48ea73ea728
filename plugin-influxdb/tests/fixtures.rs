//! Fixture cases for the line protocol encoder: each directory under
//! `tests/fixtures/` holds `points.json` (metrics and points), an optional
//! `config.toml` (the attribute and tag keys of the plugin's config) and
//! `expected.lp`, the exact lines the encoder must write. Points the line
//! protocol cannot carry (NaN, infinite) are absent from `expected.lp`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use alumet::measurement::{
    AttributeValue, MeasurementPoint, MeasurementValue, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use plugin_influxdb::line_protocol::{AttributeRole, EncoderOptions, LineProtocolEncoder};
use serde_json::Value;

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FixtureConfig {
    attributes_as: Option<AttributeRole>,
    tag_attributes: Vec<String>,
    field_attributes: Vec<String>,
    tags: BTreeMap<String, String>,
}

fn float(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        other => other.as_f64().unwrap(),
    }
}

fn value(v: &Value) -> MeasurementValue {
    if let Some(u) = v.get("u64") {
        MeasurementValue::U64(u.as_u64().unwrap())
    } else {
        MeasurementValue::F64(float(&v["f64"]))
    }
}

fn attribute(v: &Value) -> AttributeValue {
    let (kind, inner) = v.as_object().unwrap().iter().next().unwrap();
    match kind.as_str() {
        "str" => AttributeValue::from(inner.as_str().unwrap().to_owned()),
        "u64" => AttributeValue::U64(inner.as_u64().unwrap()),
        "i64" => AttributeValue::I64(inner.as_i64().unwrap()),
        "f64" => AttributeValue::F64(float(inner)),
        "bool" => AttributeValue::Bool(inner.as_bool().unwrap()),
        other => panic!("unknown attribute type {other}"),
    }
}

fn owned(s: &Value) -> Cow<'static, str> {
    Cow::Owned(s.as_str().unwrap().to_owned())
}

fn resource(v: &Value) -> Resource {
    let (kind, id) = (v[0].as_str().unwrap(), &v[1]);
    let number = || id.as_str().unwrap().parse().unwrap();
    match kind {
        "local_machine" => Resource::LocalMachine,
        "cpu_package" => Resource::CpuPackage { id: number() },
        "cpu_core" => Resource::CpuCore { id: number() },
        "dram" => Resource::Dram { pkg_id: number() },
        "gpu" => Resource::Gpu { bus_id: owned(id) },
        _ => Resource::Custom {
            kind: owned(&v[0]),
            id: owned(id),
        },
    }
}

fn consumer(v: &Value) -> ResourceConsumer {
    let (kind, id) = (v[0].as_str().unwrap(), &v[1]);
    match kind {
        "local_machine" => ResourceConsumer::LocalMachine,
        "process" => ResourceConsumer::Process {
            pid: id.as_str().unwrap().parse().unwrap(),
        },
        "cgroup" => ResourceConsumer::ControlGroup { path: owned(id) },
        _ => ResourceConsumer::Custom {
            kind: owned(&v[0]),
            id: owned(id),
        },
    }
}

fn run_case(dir: &Path) {
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("points.json")).unwrap()).unwrap();
    let config: FixtureConfig = match std::fs::read_to_string(dir.join("config.toml")) {
        Ok(text) => toml::from_str(&text).unwrap(),
        Err(_) => FixtureConfig::default(),
    };
    let mut registry = MetricRegistry::new();
    let mut ids = HashMap::new();
    for m in input["metrics"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let value_type = match m["type"].as_str().unwrap() {
            "u64" => ValueType::U64,
            _ => ValueType::F64,
        };
        let id = registry
            .register(Metric::new(
                name,
                Unit::Unity,
                value_type,
                MetricKind::Gauge,
                "fixture",
            ))
            .unwrap();
        ids.insert(name.to_owned(), id);
    }
    let mut encoder = LineProtocolEncoder::new(EncoderOptions {
        attributes_as: config.attributes_as.unwrap_or(AttributeRole::Tag),
        tag_attributes: config.tag_attributes,
        field_attributes: config.field_attributes,
        constant_tags: config.tags.into_iter().collect(),
    });
    let mut out = Vec::new();
    let mut skipped = 0;
    let points = input["points"].as_array().unwrap();
    for p in points {
        let point = MeasurementPoint {
            timestamp: Timestamp::from_unix_nanos(p["t"].as_u64().unwrap()),
            metric: ids[p["metric"].as_str().unwrap()],
            resource: resource(&p["resource"]),
            consumer: consumer(&p["consumer"]),
            value: value(&p["value"]),
            attributes: p["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (owned(&a[0]), attribute(&a[1])))
                .collect(),
        };
        let before = out.len();
        if encoder.encode(&point, &registry, &mut out).is_err() {
            assert_eq!(out.len(), before, "a skipped point leaves nothing behind");
            skipped += 1;
        }
    }
    let actual = String::from_utf8(out).unwrap();
    let expected = std::fs::read_to_string(dir.join("expected.lp")).unwrap();
    assert_eq!(
        actual,
        expected,
        "case {}:\n--- actual\n{actual}--- expected\n{expected}",
        dir.display()
    );
    assert_eq!(skipped, points.len() - expected.lines().count());
}

#[test]
fn every_fixture_case_encodes_to_its_expected_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 4,
        "fixture cases missing in {}",
        root.display()
    );
    for case in cases {
        run_case(&case);
    }
}
