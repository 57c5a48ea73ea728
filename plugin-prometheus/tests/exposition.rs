//! The exposition of a fixture stream, both formats, against
//! `tests/fixtures/<case>/expected.txt` and `expected.om.txt`: names with
//! units, deltas summed into counters (`_created` from the first point),
//! gauges replaced, counters passed through, labels sanitised and escaped,
//! invalid deltas refused and counted.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use alumet::measurement::{AttributeValue, Resource, ResourceConsumer};
use common::*;
use plugin_prometheus::PrometheusConfig;

fn basic_batches() -> (Vec<Spec>, Vec<Spec>) {
    let first = vec![
        spec("energy", 1.5)
            .on(Resource::CpuPackage { id: 0 })
            .attr("domain", "package"),
        spec("energy", 0.25)
            .on(Resource::Dram { pkg_id: 0 })
            .attr("domain", "dram"),
        spec("energy", 2.0)
            .on(Resource::CpuPackage { id: 0 })
            .by(ResourceConsumer::ControlGroup {
                path: "/slurm/job_77".into(),
            })
            .attr("domain", "package")
            .attr("job_id", AttributeValue::U64(77))
            .attr("note", ""),
        spec("power", 42.5),
        spec("cpu_usage", 150.0)
            .by(ResourceConsumer::Process { pid: 1234 })
            .attr("exe", "my \"app\"\n\\x")
            .attr("pod.uid", "abc")
            .attr("9lives", true)
            .attr("resource_kind", "clash"),
        spec("bytes_read", 4096u64).on(Resource::Custom {
            kind: "disk".into(),
            id: "sda".into(),
        }),
        spec("raw_energy", 123_456_789u64).on(Resource::CpuPackage { id: 1 }),
        spec("tasks", 3u64)
            .attr("state", "running")
            .attr("state", "ignored"),
        // Not summable: refused, counted.
        spec("energy", -1.0)
            .on(Resource::CpuPackage { id: 1 })
            .attr("domain", "package"),
        spec("energy", f64::NAN)
            .on(Resource::CpuPackage { id: 1 })
            .attr("domain", "package"),
    ];
    let second = vec![
        spec("energy", 0.5)
            .on(Resource::CpuPackage { id: 0 })
            .attr("domain", "package")
            .at_ms(1_700_000_001_000),
        spec("power", 40.0).at_ms(1_700_000_001_000),
        spec("bytes_read", 1024u64)
            .on(Resource::Custom {
                kind: "disk".into(),
                id: "sda".into(),
            })
            .at_ms(1_700_000_001_000),
        spec("raw_energy", 123_556_789u64)
            .on(Resource::CpuPackage { id: 1 })
            .at_ms(1_700_000_001_000),
    ];
    (first, second)
}

const PACKAGE0: &str =
    "alumet_energy_joules_total{resource_kind=\"cpu_package\",resource_id=\"0\",consumer_kind=\"local_machine\",domain=\"package\"}";

#[test]
fn a_fixture_stream_renders_as_expected_in_both_formats() {
    let endpoint = Endpoint::start(PrometheusConfig::default());
    let (first, second) = basic_batches();
    let body = endpoint.push_and_wait(first, |b| value_of(b, PACKAGE0).is_some());
    assert_eq!(value_of(&body, PACKAGE0), Some(1.5));
    assert_eq!(
        value_of(&body, "alumet_prometheus_dropped_points_total"),
        Some(2.0),
        "{body}"
    );
    let body = endpoint.push_and_wait(second, |b| value_of(b, PACKAGE0) == Some(2.0));

    let text = normalised(&body, "alumet_");
    let om = normalised(&endpoint.scrape_openmetrics(), "alumet_");
    if std::env::var_os("PROMETHEUS_FIXTURES_BLESS").is_some() {
        // Rewrites the expected files: review the diff before committing.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/basic");
        std::fs::write(dir.join("expected.txt"), &text).unwrap();
        std::fs::write(dir.join("expected.om.txt"), &om).unwrap();
    }
    assert_eq!(text, fixture("basic", "expected.txt"));
    assert_eq!(om, fixture("basic", "expected.om.txt"));
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
