//! The plugin against a real VictoriaMetrics, v2 API
//! (`/api/v2/write?org=&bucket=&precision=ns`): every point arrives with its
//! tags and values. VictoriaMetrics names a series `<measurement>_<field>`
//! and keeps millisecond timestamps.
//!
//! Needs the test servers: `scripts/install-test-servers.sh`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use plugin_influxdb::http::ApiVersion;
use plugin_influxdb::InfluxDbConfig;

fn label(series: &serde_json::Value, key: &str) -> Option<String> {
    series["metric"][key].as_str().map(str::to_owned)
}

/// (timestamp ms, series id label) → value, for every sample of `name`.
fn samples(
    series: &[serde_json::Value],
    name: &str,
    id_label: &str,
    check: impl Fn(&serde_json::Value),
) -> BTreeMap<(u64, String), f64> {
    let mut out = BTreeMap::new();
    for s in series
        .iter()
        .filter(|s| label(s, "__name__").as_deref() == Some(name))
    {
        check(s);
        let id = label(s, id_label).unwrap();
        let values = s["values"].as_array().unwrap();
        let times = s["timestamps"].as_array().unwrap();
        for (v, t) in values.iter().zip(times) {
            let old = out.insert((t.as_u64().unwrap(), id.clone()), v.as_f64().unwrap());
            assert!(old.is_none(), "duplicate sample in {s}");
        }
    }
    out
}

#[test]
fn v2_every_point_arrives_with_its_tags_and_values() {
    let vm = VictoriaMetrics::start();
    let workload = Workload::new(60);
    let config = InfluxDbConfig {
        api: ApiVersion::V2,
        org: "my org".into(),
        bucket: "alumet".into(),
        // Large enough bodies to be gzipped.
        batch_size: 1000,
        ..test_config(&vm.url())
    };
    let h = start_harness(workload, config);
    h.poll(30);
    let (polls, plugin, _) = h.finish();
    let stats = plugin.stats().snapshot();
    assert_eq!(stats.delivered_points, polls * 60);
    assert_eq!(stats.dropped_points(), 0);

    let total = (polls * 60) as usize;
    let series = vm.export_when(r#"{__name__=~"test_.*"}"#, total);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();

    let energy = samples(&series, "test_energy_value", "resource_id", |s| {
        assert_eq!(label(s, "resource_kind").as_deref(), Some("cpu_package"));
        assert_eq!(label(s, "consumer_kind").as_deref(), Some("local_machine"));
        assert_eq!(label(s, "consumer_id"), None);
        assert_eq!(label(s, "domain").as_deref(), Some("package"));
        assert_eq!(label(s, "host"), Some(host.clone()));
    });
    let memory = samples(&series, "test_memory_value", "consumer_id", |s| {
        assert_eq!(label(s, "resource_kind").as_deref(), Some("local_machine"));
        assert_eq!(label(s, "consumer_kind").as_deref(), Some("process"));
        let pid: usize = label(s, "consumer_id").unwrap().parse().unwrap();
        let i = pid - 1000;
        let exe = NASTY_NAMES[(i / 2) % NASTY_NAMES.len()];
        assert_eq!(label(s, "exe").as_deref(), Some(exe), "{s}");
    });

    let mut expected_energy = BTreeMap::new();
    let mut expected_memory = BTreeMap::new();
    for poll in 0..polls {
        let ms = workload.start_ms + poll;
        for i in 0..60u64 {
            if i % 2 == 0 {
                expected_energy.insert((ms, i.to_string()), Workload::energy_value(poll, i));
            } else {
                expected_memory.insert((ms, (1000 + i).to_string()), (poll * 1_000_000 + i) as f64);
            }
        }
    }
    assert_eq!(energy.len(), expected_energy.len());
    assert_eq!(energy, expected_energy);
    assert_eq!(memory.len(), expected_memory.len());
    assert_eq!(memory, expected_memory);
}
