//! Fixture cases under tests/fixtures/<case>/: `config.toml` (the plugin's
//! section), `input.csv` (points fed to the transform, `time_s` after
//! 2023-11-14T22:13:20Z), `expected.csv` (the carbon points it must add, in
//! alumet's shared fixture format). Each value is also checked to 1e-9
//! relative, and every input point must pass through untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::path::Path;

use alumet::measurement::{AttributeValue, MeasurementPoint, Timestamp};
use alumet::metrics::{
    Metric, MetricKind, MetricRegistry, PrefixedUnit, Unit, UnitPrefix, ValueType,
};
use alumet::pipeline::{ElementContext, Transform};
use alumet::testing::fixture::{
    cases, compare, consumer_from_text, read_expected, resource_from_text, row_of,
};
use plugin_energy_to_carbon::{carbon_metric, CarbonTransform, Config};

const BASE_S: u64 = 1_700_000_000;

fn registry() -> MetricRegistry {
    let mut r = MetricRegistry::new();
    let j = |name: &str| Metric::new(name, Unit::Joule, ValueType::F64, MetricKind::Delta, "e");
    for name in [
        "rapl_consumed_energy",
        "attributed_energy",
        "unattributed_energy",
    ] {
        r.register(j(name)).unwrap();
    }
    r.register(Metric::new(
        "gpu_energy_mj",
        PrefixedUnit {
            prefix: UnitPrefix::Milli,
            base: Unit::Joule,
        },
        ValueType::F64,
        MetricKind::Delta,
        "mJ",
    ))
    .unwrap();
    r.register(Metric::new(
        "process_cpu_time",
        Unit::Second,
        ValueType::F64,
        MetricKind::Delta,
        "not energy",
    ))
    .unwrap();
    r.register(carbon_metric()).unwrap();
    r
}

fn read_input(path: &Path, metrics: &MetricRegistry) -> Vec<MeasurementPoint> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let mut p = MeasurementPoint::new(
                Timestamp::from_unix_nanos((BASE_S + r[0].parse::<u64>().unwrap()) * 1_000_000_000),
                metrics.by_name(&r[1]).unwrap(),
                resource_from_text(&r[2]),
                consumer_from_text(&r[3]),
                r[4].parse::<f64>().unwrap(),
            );
            for kv in r[5].split(';').filter(|kv| !kv.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap();
                p.attributes.push((
                    Cow::Owned(k.to_owned()),
                    AttributeValue::Str(Cow::Owned(v.to_owned())),
                ));
            }
            p
        })
        .collect()
}

#[test]
fn every_fixture_case() {
    let cases = cases(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        3,
    );
    for case in cases {
        let label = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(case.join("config.toml")).unwrap();
        let mut config: Config =
            alumet::config::deserialize_config(toml::from_str(&text).unwrap()).unwrap();
        if !config.intensity_file.as_os_str().is_empty() {
            config.intensity_file = case.join(&config.intensity_file);
        }
        config.validate().unwrap();
        let intensity = config.intensity().unwrap();
        let metrics = registry();
        let carbon = metrics.by_name("carbon_emission").unwrap();
        let mut transform = CarbonTransform::new(intensity, config.pue, carbon);
        let input = read_input(&case.join("input.csv"), &metrics);
        let mut buffer = input.clone();
        transform
            .apply(&mut buffer, &ElementContext { metrics: &metrics })
            .unwrap();
        assert_eq!(
            buffer[..input.len()],
            input[..],
            "{label}: inputs pass through"
        );
        let added: Vec<_> = buffer[input.len()..]
            .iter()
            .map(|p| row_of(p, &metrics))
            .collect();
        let expected = read_expected(&case.join("expected.csv"));
        // The shared comparison is absolute below 1 g; hold every value to 1e-9 relative too.
        for e in &expected {
            let a = added.iter().find(|a| a.key == e.key);
            if let Some(a) = a {
                assert!(
                    (a.value - e.value).abs() <= 1e-9 * e.value.abs(),
                    "{label}: {}: {} vs {}",
                    e.key.join(","),
                    a.value,
                    e.value
                );
            }
        }
        let total_expected: f64 = expected.iter().map(|r| r.value).sum();
        let total: f64 = added.iter().map(|r| r.value).sum();
        assert!(
            (total - total_expected).abs() <= 1e-9 * total_expected,
            "{label}: total"
        );
        compare(&label, expected, added);
    }
}
