//! The agent with `rapl` (a fixture powercap tree a helper advances),
//! `procfs`, `csv` and `opentelemetry` exporting to the Python receiver
//! (decoding with the reference `opentelemetry-proto` package), stopped by
//! SIGTERM: every row of the CSV arrives once as an OTLP data point, with
//! its attributes, unit and value type, and each cumulative `Sum` equals the
//! CSV's running total of its series (the energy included).
//!
//! Needs the Python package: run `scripts/install-test-servers.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "../../plugin-opentelemetry/tests/common/mod.rs"]
mod otel;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// Nanoseconds since the epoch of an RFC 3339 UTC timestamp with 9 decimals.
fn unix_nanos(rfc3339: &str) -> u64 {
    let (date, time) = rfc3339.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().unwrap();
    secs as u64 * 1_000_000_000 + nanos
}

/// (metric, time ns, resource kind, resource id, consumer kind, consumer id, sorted attributes).
type Key = (String, u64, String, String, String, String, String);

fn otlp_attributes(p: &Value) -> String {
    let mut pairs: Vec<String> = p["attributes"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| {
            ![
                "resource_kind",
                "resource_id",
                "consumer_kind",
                "consumer_id",
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    pairs.sort();
    pairs.join(";")
}

fn otlp_key(p: &Value) -> Key {
    let (metric, time, rk, ri, ck, ci) = otel::point_key(p);
    (metric, time, rk, ri, ck, ci, otlp_attributes(p))
}

#[test]
fn every_csv_row_arrives_once_over_otlp_and_sums_are_the_csv_running_totals() {
    let receiver = otel::Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    alumet::testing::fixture::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugin-rapl/tests/fixtures/intel_2socket/sys0"),
        &sys,
    );
    let package0 = sys.join("class/powercap/intel-rapl:0/energy_uj");
    let csv = dir.path().join("out.csv");
    let sets = [
        "plugins.rapl.interface=\"powercap\"".into(),
        "plugins.rapl.poll_interval=\"50ms\"".into(),
        "plugins.rapl.flush_interval=\"50ms\"".into(),
        "plugins.procfs.system_poll_interval=\"100ms\"".into(),
        "plugins.procfs.process_poll_interval=\"200ms\"".into(),
        "plugins.procfs.flush_interval=\"200ms\"".into(),
        format!("plugins.opentelemetry.endpoint={:?}", receiver.endpoint()),
        "plugins.opentelemetry.flush_interval=\"100ms\"".into(),
    ];
    let child = common::agent_command()
        .current_dir(dir.path())
        .args([
            "--config",
            dir.path().join("alumet-config.toml").to_str().unwrap(),
        ])
        .args(["--plugins", "rapl,procfs,csv,opentelemetry"])
        // the test moves the fixture's counters by hand
        .args(common::rapl_root_args(&sys, false))
        .args(["--output-file", csv.to_str().unwrap()])
        .args(sets.iter().flat_map(|kv| ["--set", kv.as_str()]))
        .arg("run")
        .env("RUST_LOG", "warn,plugin_opentelemetry=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Energy flows in while the agent runs.
    for step in 0..8u64 {
        let now: u64 = std::fs::read_to_string(&package0)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        common::write_in_place(&package0, now + 1_000_003 + step * 7_919);
        std::thread::sleep(Duration::from_millis(120));
    }
    assert!(
        common::wait_until(Duration::from_secs(15), || !receiver
            .accepted_points()
            .is_empty()),
        "nothing reached the receiver"
    );
    let (code, stderr) = common::sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("points delivered, 0 dropped"), "{stderr}");

    // Every CSV row, keyed like the OTLP points.
    let rows = common::csv_rows(&csv);
    let mut csv_points: BTreeMap<Key, Vec<(String, String)>> = BTreeMap::new();
    for r in &rows {
        let key = (
            r[1].to_owned(),
            unix_nanos(&r[0]),
            r[4].to_owned(),
            r[5].to_owned(),
            r[6].to_owned(),
            r[7].to_owned(),
            r[8].to_owned(),
        );
        csv_points
            .entry(key)
            .or_default()
            .push((r[3].to_owned(), r[2].to_owned()));
    }
    let points = receiver.accepted_points();
    assert_eq!(points.len(), rows.len(), "as many OTLP points as CSV rows");
    let mut otlp_points: BTreeMap<Key, Vec<&Value>> = BTreeMap::new();
    for p in &points {
        otlp_points.entry(otlp_key(p)).or_default().push(p);
    }
    let csv_keys: Vec<_> = csv_points.keys().collect();
    let otlp_keys: Vec<_> = otlp_points.keys().collect();
    assert_eq!(csv_keys, otlp_keys, "the same points, each once");

    // Values: gauges as in the CSV; sums are running totals per series.
    let mut running: BTreeMap<(String, String, String, String, String, String), f64> =
        BTreeMap::new();
    let mut energy_rows = 0;
    let mut int_rows = 0;
    for (key, csv_values) in &csv_points {
        let (metric, _, rk, ri, ck, ci, attrs) = key.clone();
        let [(csv_value, unit)] = csv_values.as_slice() else {
            panic!("{key:?} twice in the CSV");
        };
        let p = otlp_points[key][0];
        assert_eq!(p["unit"].as_str(), Some(unit.as_str()), "{p}");
        let value = p["value"].as_f64().unwrap();
        let csv_value: f64 = csv_value.parse().unwrap();
        if metric == "rapl_consumed_energy" {
            energy_rows += 1;
            assert_eq!(p["value_type"], "as_double");
        }
        // Integers stay integers: u64 gauges and deltas alike.
        let integer_metrics = [
            "system_memory",
            "process_memory_resident",
            "context_switches",
        ];
        if integer_metrics.contains(&metric.as_str()) {
            int_rows += 1;
            assert_eq!(p["value_type"], "as_int", "{p}");
        }
        if metric == "cpu_time" {
            assert_eq!(p["value_type"], "as_double", "{p}");
        }
        match p["type"].as_str() {
            // The CSV writes 15 significant digits; integers exactly.
            Some("gauge") if p["value_type"] == "as_int" => {
                assert_eq!(
                    p["value"].as_u64().map(|v| v.to_string()),
                    Some(csv_values[0].0.clone()),
                    "{p}"
                )
            }
            Some("gauge") => assert!(
                (value - csv_value).abs() <= 1e-12 * csv_value.abs().max(1.0),
                "{p}: {value} != {csv_value}"
            ),
            Some("sum") => {
                assert_eq!(p["temporality"], "cumulative");
                let total = running.entry((metric, rk, ri, ck, ci, attrs)).or_default();
                *total += csv_value;
                assert!(
                    (value - *total).abs() <= 1e-9 * total.abs().max(1.0),
                    "{p}: {value} != CSV running total {total}"
                );
            }
            other => panic!("unexpected type {other:?}"),
        }
    }
    assert!(energy_rows >= 9, "only {energy_rows} energy rows");
    assert!(int_rows >= 3, "only {int_rows} integer rows");
}
