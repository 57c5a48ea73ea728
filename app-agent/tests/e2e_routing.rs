//! Per-output routing in one run of the agent: procfs polls every 10 ms;
//! the CSV output gets every raw point; InfluxDB (a real server on
//! loopback) gets, through a filter and a 1 s aggregation both scoped to
//! it, only `cpu_time` and `system_memory`, one point per series and
//! window. Checked: the CSV has raw points only; InfluxDB has one point
//! per series and window the CSV's points fall in, sums equal to the CSV's,
//! gauge min/max equal to the CSV's per window, exactly one partial window
//! per series after a SIGTERM sent mid-window; and a misspelt metric in
//! the filter gets one line naming the likely metric.
//!
//! Needs `influxd`: run `scripts/install-test-servers.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::influxd::Influxd;

const DB: &str = "alumet_routing";
const S: u64 = 1_000_000_000;

fn spawn_agent(dir: &Path, csv: &Path, port: u16) -> Child {
    let url = format!("plugins.influxdb.url=\"http://127.0.0.1:{port}\"");
    let database = format!("plugins.influxdb.database=\"{DB}\"");
    let sets = [
        "plugins.influxdb.api=\"v1\"",
        url.as_str(),
        database.as_str(),
        "plugins.influxdb.flush_interval=\"100ms\"",
        "plugins.csv.timestamp_format=\"unix_ns\"",
        "plugins.procfs.processes=false",
        "plugins.procfs.system_poll_interval=\"10ms\"",
        "plugins.procfs.flush_interval=\"100ms\"",
        // Every raw point in the CSV, to recompute each aggregate from
        // (thinned rows would leave out zeros and unchanged gauges).
        "plugins.procfs.keep_zero=true",
        // `cpu_tme`: a typo, reported at start; it keeps nothing.
        "plugins.filter.filters=[{ outputs = [\"influxdb\"], keep = [{ metric = \"cpu_time\" }, { metric = \"system_memory\" }, { metric = \"cpu_tme\" }] }]",
        "plugins.aggregate.window=\"1s\"",
        "plugins.aggregate.max_delay=\"2s\"",
        "plugins.aggregate.outputs=[\"influxdb\"]",
        "plugins.aggregate.gauge=[\"min\", \"max\"]",
    ];
    common::agent_command()
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .args(["--plugins", "procfs,csv,influxdb,filter,aggregate"])
        .args(["--output-file", csv.to_str().unwrap()])
        .args(sets.iter().flat_map(|kv| ["--set", kv]))
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A series as both outputs name it: metric, resource kind and id, and the
/// attribute that tells its points apart (`state` or `field`).
type Series = (String, String, String, String);

struct CsvPoint {
    series: Series,
    ts: u64,
    value: f64,
}

fn window_end(ts: u64) -> u64 {
    ts.div_ceil(S) * S
}

fn read_csv(path: &Path) -> (Vec<CsvPoint>, BTreeMap<String, u64>, bool) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let (mut points, mut counts, mut any_window) = (Vec::new(), BTreeMap::new(), false);
    for r in reader.records() {
        let r = r.expect("every row parses");
        *counts.entry(r[1].to_owned()).or_insert(0) += 1;
        any_window |= r[8].contains("window=");
        if &r[1] != "cpu_time" && &r[1] != "system_memory" {
            continue;
        }
        let attr = r[8]
            .split(';')
            .find(|kv| kv.starts_with("state=") || kv.starts_with("field="));
        let attr = attr
            .and_then(|kv| kv.split_once('='))
            .map_or("", |(_, v)| v);
        points.push(CsvPoint {
            series: (
                r[1].to_owned(),
                r[4].to_owned(),
                r[5].to_owned(),
                attr.to_owned(),
            ),
            ts: r[0].parse().unwrap(),
            value: r[3].parse().unwrap(),
        });
    }
    (points, counts, any_window)
}

/// A series of an InfluxQL answer: its tags and its rows of values.
type Answered = (BTreeMap<String, String>, Vec<Vec<serde_json::Value>>);

/// Every series of an InfluxQL answer.
fn series_of(answer: &serde_json::Value) -> Vec<Answered> {
    let Some(list) = answer["results"][0]["series"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|s| {
            let tags = s["tags"]
                .as_object()
                .map(|t| {
                    t.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let values = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_array().unwrap().clone())
                .collect();
            (tags, values)
        })
        .collect()
}

fn key(metric: &str, tags: &BTreeMap<String, String>, attr: &str) -> Series {
    let get = |k: &str| tags.get(k).cloned().unwrap_or_default();
    (
        metric.to_owned(),
        get("resource_kind"),
        get("resource_id"),
        get(attr),
    )
}

#[test]
fn raw_points_to_csv_and_filtered_one_second_aggregates_to_influxdb_in_one_run() {
    let server = Influxd::start(DB);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("raw.csv");
    let agent = spawn_agent(dir.path(), &csv, server.port);

    // At least three whole windows, then SIGTERM in the middle of a second.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no aggregate reached influxd");
        let windows = server.counts().get("cpu_time").copied().unwrap_or(0);
        let sub_second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_millis();
        if windows >= 3
            && started.elapsed() > Duration::from_millis(3300)
            && (300..600).contains(&sub_second)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // The typo: one line, naming the metric meant.
    let typo: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("matches no metric"))
        .collect();
    assert_eq!(typo.len(), 1, "{stderr}");
    assert!(
        typo[0].contains("\"cpu_tme\"") && typo[0].contains("did you mean `cpu_time`?"),
        "{}",
        typo[0]
    );

    // CSV: every metric, raw (10 ms apart), never an aggregate.
    let (points, csv_counts, any_window) = read_csv(&csv);
    assert!(!any_window, "the CSV output must not get aggregates");
    assert!(
        csv_counts.len() > 2,
        "the CSV gets the metrics the filter drops: {csv_counts:?}"
    );
    let influx_counts = server.counts();
    let measurements: BTreeSet<&str> = influx_counts.keys().map(String::as_str).collect();
    let late = measurements.contains("aggregate_late_points");
    assert!(
        measurements.is_subset(&BTreeSet::from([
            "cpu_time",
            "system_memory",
            "aggregate_late_points"
        ])),
        "the filter keeps only these for influxdb: {measurements:?}"
    );
    assert!(
        csv_counts["cpu_time"] > 10 * influx_counts["cpu_time"],
        "raw is much denser: {csv_counts:?} {influx_counts:?}"
    );

    // Per series: influx has one point per window of the CSV's points
    // (and one more per window with late points), and the same sum.
    let mut by_series: BTreeMap<Series, (BTreeSet<u64>, f64)> = BTreeMap::new();
    for p in points.iter().filter(|p| p.series.0 == "cpu_time") {
        let e = by_series.entry(p.series.clone()).or_default();
        e.0.insert(window_end(p.ts));
        e.1 += p.value;
    }
    let answer = server.query(
        "SELECT count(value), sum(value) FROM cpu_time GROUP BY resource_kind, resource_id, state",
    );
    let influx: BTreeMap<Series, (u64, f64)> = series_of(&answer)
        .into_iter()
        .map(|(tags, values)| {
            (
                key("cpu_time", &tags, "state"),
                (
                    values[0][1].as_u64().unwrap(),
                    values[0][2].as_f64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        influx.keys().collect::<Vec<_>>(),
        by_series.keys().collect::<Vec<_>>()
    );
    for (series, (windows, sum)) in &by_series {
        let (count, influx_sum) = influx[series];
        if !late {
            assert_eq!(count, windows.len() as u64, "{series:?}");
        }
        assert!(
            (influx_sum - sum).abs() < 1e-6,
            "{series:?}: {influx_sum} vs {sum}"
        );
    }

    // One partial window per series: the last, cut by the SIGTERM.
    let partial = server.query("SELECT count(value) FROM cpu_time WHERE partial = 'true' GROUP BY resource_kind, resource_id, state");
    let partial = series_of(&partial);
    assert_eq!(partial.len(), by_series.len(), "{partial:?}");
    assert!(
        partial.iter().all(|(_, v)| v[0][1].as_u64() == Some(1)),
        "{partial:?}"
    );

    // Gauges: min and max of each window, as the raw points give them.
    let mut extremes: BTreeMap<(Series, u64), (f64, f64)> = BTreeMap::new();
    for p in points.iter().filter(|p| p.series.0 == "system_memory") {
        let e = extremes
            .entry((p.series.clone(), window_end(p.ts)))
            .or_insert((f64::INFINITY, f64::NEG_INFINITY));
        *e = (e.0.min(p.value), e.1.max(p.value));
    }
    assert!(!extremes.is_empty());
    let mut checked = 0;
    for (f, pick) in [("min", 0), ("max", 1)] {
        let answer = server.query(&format!(
            "SELECT value FROM system_memory WHERE aggregation = '{f}' AND late != 'true' GROUP BY resource_kind, resource_id, \"field\""
        ));
        for (tags, values) in series_of(&answer) {
            for v in values {
                let at = window_end(v[0].as_u64().unwrap());
                let expected = extremes[&(key("system_memory", &tags, "field"), at)];
                let expected = if pick == 0 { expected.0 } else { expected.1 };
                assert_eq!(v[1].as_f64().unwrap(), expected, "{f} of {tags:?} at {at}");
                checked += 1;
            }
        }
    }
    if !late {
        assert_eq!(
            checked,
            2 * extremes.len(),
            "a min and a max for every window"
        );
    }
    eprintln!("csv {csv_counts:?}\ninfluxdb {influx_counts:?}");
}
