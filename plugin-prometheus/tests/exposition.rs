//! Fixture cases: each directory under `tests/fixtures/` holds
//! `points.json` (metrics and points, read by `alumet::testing::points`), an
//! optional `config.toml` (the plugin's config) and `expected.txt` /
//! `expected.om.txt`, the text and OpenMetrics bodies the endpoint must
//! serve (sample lines sorted per family, the exporter's own families
//! left out): names with units, deltas summed into counters (`_created`
//! from the first point), gauges replaced, counters passed through, labels
//! sanitised and escaped, invalid deltas refused and counted.
//! `PROMETHEUS_FIXTURES_BLESS=1` rewrites the expected files.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;

use alumet::measurement::Resource;
use alumet::testing::points::PointsFixture;
use common::*;
use plugin_prometheus::PrometheusConfig;

const PACKAGE0: &str =
    "alumet_energy_joules_total{resource_kind=\"cpu_package\",resource_id=\"0\",consumer_kind=\"local_machine\",domain=\"package\"}";

/// Runs `tests/fixtures/<case>/`: `points.json` in one batch, with the
/// plugin config of `config.toml` if present; compares both formats.
fn run_case(dir: &Path) {
    let fixture = PointsFixture::load(&dir.join("points.json")).unwrap();
    let config: PrometheusConfig = match std::fs::read_to_string(dir.join("config.toml")) {
        Ok(text) => toml::from_str(&text).unwrap(),
        Err(_) => PrometheusConfig::default(),
    };
    let prefix = config.prefix.clone();
    let endpoint = Endpoint::with_metrics(config, fixture.metrics.clone());
    let points = fixture.clone();
    endpoint.push_with(Box::new(move |ids| points.points_with(ids).unwrap()));
    let bless = std::env::var_os("PROMETHEUS_FIXTURES_BLESS").is_some();
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let (expected, expected_om) = (read("expected.txt"), read("expected.om.txt"));
    // Scraped until it holds, to know that the batch arrived; the
    // assertions below show the difference if it never does.
    let body = endpoint.scrape_until(|b| bless || normalised(b, &prefix) == expected);
    let text = normalised(&body, &prefix);
    let om = normalised(&endpoint.scrape_openmetrics(), &prefix);
    if bless {
        // Rewrites the expected files: review the diff before committing.
        std::fs::write(dir.join("expected.txt"), &text).unwrap();
        std::fs::write(dir.join("expected.om.txt"), &om).unwrap();
        return endpoint.stop();
    }
    assert_eq!(text, expected, "case {}", dir.display());
    assert_eq!(om, expected_om, "case {}", dir.display());
    endpoint.stop();
}

#[test]
fn every_fixture_case_renders_as_expected_in_both_formats() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for case in alumet::testing::fixture::cases(&root, 2) {
        run_case(&case);
    }
}

#[test]
fn invalid_deltas_are_refused_and_counted() {
    let endpoint = Endpoint::start(PrometheusConfig::default());
    let pkg = || {
        spec("energy", 1.0)
            .on(Resource::CpuPackage { id: 0 })
            .attr("domain", "package")
    };
    let batch = vec![
        pkg(),
        spec("energy", -1.0)
            .on(Resource::CpuPackage { id: 0 })
            .attr("domain", "package"),
        spec("energy", f64::NAN)
            .on(Resource::CpuPackage { id: 0 })
            .attr("domain", "package"),
        spec("energy", f64::INFINITY)
            .on(Resource::CpuPackage { id: 0 })
            .attr("domain", "package"),
    ];
    let body = endpoint.push_and_wait(batch, |b| value_of(b, PACKAGE0).is_some());
    assert_eq!(value_of(&body, PACKAGE0), Some(1.0));
    assert_eq!(
        value_of(&body, "alumet_prometheus_dropped_points_total"),
        Some(3.0),
        "{body}"
    );
    endpoint.stop();
}

#[test]
fn counters_never_decrease_and_equal_the_sum_of_the_deltas() {
    let endpoint = Endpoint::start(PrometheusConfig::default());
    let mut total = 0.0;
    let mut last_seen = 0.0;
    for i in 0..20u64 {
        let delta = (i % 7) as f64 * 0.125;
        total += delta;
        let mut batch = vec![spec("energy", delta)
            .on(Resource::CpuPackage { id: 0 })
            .attr("domain", "package")];
        if i % 5 == 0 {
            // A negative delta in the stream never makes the counter go down.
            batch.push(
                spec("energy", -10.0)
                    .on(Resource::CpuPackage { id: 0 })
                    .attr("domain", "package"),
            );
        }
        let body = endpoint.push_and_wait(batch, |b| value_of(b, PACKAGE0) == Some(total));
        let v = value_of(&body, PACKAGE0).unwrap();
        assert!(v >= last_seen, "went down from {last_seen} to {v}");
        last_seen = v;
    }
    assert_eq!(last_seen, total);
    let s = endpoint.plugin.stats();
    assert_eq!(s.dropped_points, 4);
    endpoint.stop();
}
