//! The csv plugin in a real pipeline: what it writes reads back, field for
//! field, through the `csv` crate and through Python's csv module; append
//! mode; errors that name the file; nothing lost at shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alumet::measurement::{MeasurementPoint, Resource, ResourceConsumer, Timestamp};
use alumet::metrics::{Metric, MetricKind, PrefixedUnit, Unit, UnitPrefix, ValueType};
use alumet::plugin::PluginDefinition;
use alumet::testing::{FnSource, TestPipeline, TestResult};
use plugin_csv::{CsvConfig, CsvPlugin};

const TS: u64 = 1_795_341_600_123_456_789;
const TS_TEXT: &str = "2026-11-22T10:00:00.123456789Z";

/// Points whose strings contain everything that needs quoting or escaping.
fn tricky_points(
    energy: alumet::metrics::MetricId,
    count: alumet::metrics::MetricId,
) -> Vec<MeasurementPoint> {
    let ts = Timestamp::from_unix_nanos(TS);
    vec![
        MeasurementPoint::new(
            ts,
            energy,
            Resource::CpuPackage { id: 1 },
            ResourceConsumer::LocalMachine,
            0.25,
        )
        .with_attr("domain", "package"),
        MeasurementPoint::new(
            ts,
            energy,
            Resource::Custom {
                kind: Cow::Borrowed("disk"),
                id: Cow::Borrowed("sda,1"),
            },
            ResourceConsumer::ControlGroup {
                path: "/system.slice/a;b.service".into(),
            },
            1e-7,
        ),
        MeasurementPoint::new(
            ts,
            count,
            Resource::Custom {
                kind: Cow::Borrowed("weird"),
                id: Cow::Borrowed("quote\"inside"),
            },
            ResourceConsumer::Custom {
                kind: Cow::Borrowed("job"),
                id: Cow::Borrowed("line1\nline2"),
            },
            18_446_744_073_709_551_615u64,
        )
        .with_attr("note", "x,y;z\"w\nv\r=")
        .with_attr("exe", "my (weird) proc")
        .with_attr("big", -42i64),
        MeasurementPoint::new(
            ts,
            count,
            Resource::Gpu {
                bus_id: Cow::Borrowed("0000:3b:00.0"),
            },
            ResourceConsumer::Process { pid: 4242 },
            7u64,
        )
        .with_attr("estimated", true),
    ]
}

/// The 9 fields of each tricky point, as they must read back.
fn expected_rows() -> Vec<[&'static str; 9]> {
    vec![
        [
            TS_TEXT,
            "test_energy",
            "mJ",
            "0.25",
            "cpu_package",
            "1",
            "local_machine",
            "",
            "domain=package",
        ],
        [
            TS_TEXT,
            "test_energy",
            "mJ",
            "0.0000001",
            "disk",
            "sda,1",
            "cgroup",
            "/system.slice/a;b.service",
            "",
        ],
        [
            TS_TEXT,
            "test_count",
            "{item}",
            "18446744073709551615",
            "weird",
            "quote\"inside",
            "job",
            "line1\nline2",
            "big=-42;exe=my (weird) proc;note=x,y\\;z\"w\nv\r\\=",
        ],
        [
            TS_TEXT,
            "test_count",
            "{item}",
            "7",
            "gpu",
            "0000:3b:00.0",
            "process",
            "4242",
            "estimated=true",
        ],
    ]
}

const HEADER: [&str; 9] = [
    "timestamp",
    "metric",
    "unit",
    "value",
    "resource_kind",
    "resource_id",
    "consumer_kind",
    "consumer_id",
    "attributes",
];

/// Runs the csv plugin with a source that emits the tricky points once.
fn write_tricky(config: CsvConfig) -> TestResult {
    let mut plugin = CsvPlugin::init(config).unwrap();
    let mut t = TestPipeline::builder();
    t.plugin("test", |ctx| {
        let energy = ctx.create_metric(Metric::new(
            "test_energy",
            PrefixedUnit {
                prefix: UnitPrefix::Milli,
                base: Unit::Joule,
            },
            ValueType::F64,
            MetricKind::Delta,
            "energy",
        ))?;
        let count = ctx.create_metric(Metric::new(
            "test_count",
            Unit::Custom {
                ucum: "{item}".into(),
                symbol: "items".into(),
            },
            ValueType::U64,
            MetricKind::Gauge,
            "count",
        ))?;
        let mut first = true;
        let source = FnSource::new(move |buf: &mut Vec<MeasurementPoint>, _ts| {
            if std::mem::take(&mut first) {
                buf.extend(tricky_points(energy, count));
            }
            Ok(())
        });
        ctx.add_source("tricky", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    t.start_plugin("csv", &mut plugin).unwrap();
    t.start().finish()
}

fn read_with_csv_crate(path: &Path, delimiter: u8) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .from_path(path)
        .unwrap();
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

fn read_with_python(path: &Path, delimiter: char) -> Vec<Vec<String>> {
    let script = "import csv, json, sys\n\
                  with open(sys.argv[1], newline='') as f:\n\
                  \x20   print(json.dumps(list(csv.reader(f, delimiter=sys.argv[2]))))";
    let out = Command::new("python3")
        .args(["-c", script, path.to_str().unwrap(), &delimiter.to_string()])
        .output()
        .expect("python3 is needed to check that Python reads the CSV");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_rows(rows: &[Vec<String>]) {
    assert_eq!(rows[0], HEADER.to_vec(), "header");
    let expected = expected_rows();
    assert_eq!(rows.len(), expected.len() + 1, "rows: {rows:#?}");
    for (row, want) in rows[1..].iter().zip(&expected) {
        assert_eq!(row, &want.to_vec());
    }
}

fn out_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn rows_read_back_through_the_csv_crate_and_python() {
    for delimiter in [',', ';', '\t'] {
        let dir = tempfile::tempdir().unwrap();
        let path = out_path(&dir, "out.csv");
        write_tricky(CsvConfig {
            output_path: path.clone(),
            delimiter: delimiter.to_string(),
            ..CsvConfig::default()
        });
        check_rows(&read_with_csv_crate(&path, delimiter as u8));
        check_rows(&read_with_python(&path, delimiter));
    }
}

#[test]
fn unix_ns_timestamps_and_attribute_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, "out.csv");
    write_tricky(CsvConfig {
        output_path: path.clone(),
        timestamp_format: plugin_csv::TimestampFormat::UnixNs,
        attribute_columns: vec!["exe".into(), "domain".into()],
        ..CsvConfig::default()
    });
    let rows = read_with_python(&path, ',');
    assert_eq!(&rows[0][8..], ["attributes", "exe", "domain"]);
    assert!(rows.iter().all(|r| r.len() == 11));
    assert_eq!(rows[1][0], TS.to_string());
    assert_eq!(&rows[1][8..], ["", "", "package"]);
    assert_eq!(
        &rows[3][8..],
        ["big=-42;note=x,y\\;z\"w\nv\r\\=", "my (weird) proc", ""]
    );
}

#[test]
fn append_keeps_old_rows_and_writes_the_header_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, "out.csv");
    let config = CsvConfig {
        output_path: path.clone(),
        append: true,
        ..CsvConfig::default()
    };
    write_tricky(config.clone());
    write_tricky(config);
    let rows = read_with_csv_crate(&path, b',');
    assert_eq!(rows.len(), 1 + 2 * expected_rows().len());
    assert_eq!(rows.iter().filter(|r| r[0] == "timestamp").count(), 1);

    // Without append, the file is replaced.
    write_tricky(CsvConfig {
        output_path: path.clone(),
        ..CsvConfig::default()
    });
    check_rows(&read_with_csv_crate(&path, b','));
}

fn start_error(path: &str) -> String {
    let mut plugin = CsvPlugin::init(CsvConfig {
        output_path: PathBuf::from(path),
        ..CsvConfig::default()
    })
    .unwrap();
    let mut t = TestPipeline::builder();
    match t.start_plugin("csv", &mut plugin) {
        Ok(()) => panic!("starting with {path} should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unwritable_paths_are_errors_that_name_the_path() {
    let missing = start_error("/nonexistent-alumet-dir/out.csv");
    assert!(
        missing.contains("/nonexistent-alumet-dir/out.csv"),
        "{missing}"
    );
    assert!(missing.contains("No such file or directory"), "{missing}");

    let dir = tempfile::tempdir().unwrap();
    let is_dir = start_error(dir.path().to_str().unwrap());
    assert!(is_dir.contains(dir.path().to_str().unwrap()), "{is_dir}");

    // /dev/full: every write fails as on a full disk; the header write at start shows it.
    let full = start_error("/dev/full");
    assert!(full.contains("/dev/full"), "{full}");
    assert!(full.contains("No space left on device"), "{full}");
}

#[test]
fn every_point_is_in_the_file_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, "out.csv");
    let mut plugin = CsvPlugin::init(CsvConfig {
        output_path: path.clone(),
        // Never flushed on the interval during this test: only shutdown can.
        flush_interval: Duration::from_secs(3600),
        ..CsvConfig::default()
    })
    .unwrap();
    let polls = Arc::new(AtomicUsize::new(0));
    let counter = polls.clone();
    let mut t = TestPipeline::builder();
    t.plugin("test", move |ctx| {
        let m = ctx.create_metric(Metric::new(
            "test_seq",
            Unit::Unity,
            ValueType::U64,
            MetricKind::Gauge,
            "seq",
        ))?;
        let source = FnSource::new(move |buf: &mut Vec<MeasurementPoint>, ts| {
            let poll = counter.fetch_add(1, Ordering::SeqCst) as u64;
            for i in 0..1000u64 {
                buf.push(MeasurementPoint::new(
                    ts,
                    m,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    poll * 1000 + i,
                ));
            }
            Ok(())
        });
        ctx.add_source("seq", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    t.start_plugin("csv", &mut plugin).unwrap();
    let running = t.start();
    for _ in 0..20 {
        running.trigger_all();
    }
    let result = running.finish();
    let polls = polls.load(Ordering::SeqCst) as u64;
    let rows = read_with_csv_crate(&path, b',');
    let mut seq: Vec<u64> = rows[1..]
        .iter()
        .filter(|r| r[1] == "test_seq")
        .map(|r| r[3].parse().unwrap())
        .collect();
    seq.sort_unstable();
    assert_eq!(seq, (0..polls * 1000).collect::<Vec<u64>>());
    // Every point the pipeline delivered (its own metrics too) is a row.
    assert_eq!(rows.len() - 1, result.points.len());
    assert_eq!(CsvPlugin::NAME, "csv");
}
