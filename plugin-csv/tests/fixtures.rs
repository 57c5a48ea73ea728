//! The exact bytes the csv output writes for the points fixtures of the
//! other outputs (`tests/fixtures/<case>/points.json` of plugin-influxdb and
//! plugin-prometheus, read by `alumet::testing::points`): one expected file
//! per case under `tests/fixtures/<plugin>/<case>.csv`, in both timestamp
//! formats. A change of the data model or of the formatter that alters one
//! byte of any row fails here. `ALUMET_BLESS=1` rewrites the expected files
//! (review the diff before committing it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use alumet::testing::points::PointsFixture;
use plugin_csv::output::CsvOutput;
use plugin_csv::row::RowFormatter;
use plugin_csv::TimestampFormat;

fn render(points_json: &Path, format: TimestampFormat) -> String {
    let fixture = PointsFixture::load(points_json).unwrap();
    let (registry, points) = fixture.registry().unwrap();
    let mut bytes = Vec::new();
    {
        let rows = RowFormatter::new(b',', format, Vec::new());
        let mut output = CsvOutput::from_writer(Path::new("fixture.csv"), &mut bytes, rows);
        output.write_header().unwrap();
        // Two batches, as a pipeline hands them over.
        let (a, b) = points.split_at(points.len() / 2);
        output.write_rows(&a.to_vec(), &registry).unwrap();
        output.write_rows(&b.to_vec(), &registry).unwrap();
        output.flush_rows().unwrap();
    }
    String::from_utf8(bytes).unwrap()
}

fn check(plugin: &str, at_least: usize) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = crate_dir.join("..").join(plugin).join("tests/fixtures");
    let expected_dir = crate_dir.join("tests/fixtures").join(plugin);
    let bless = std::env::var_os("ALUMET_BLESS").is_some();
    for case in alumet::testing::fixture::cases(&cases, at_least) {
        let name = case.file_name().unwrap().to_str().unwrap().to_owned();
        for (format, suffix) in [
            (TimestampFormat::Rfc3339, ""),
            (TimestampFormat::UnixNs, ".unix_ns"),
        ] {
            let actual = render(&case.join("points.json"), format);
            let path: PathBuf = expected_dir.join(format!("{name}{suffix}.csv"));
            if bless {
                std::fs::create_dir_all(&expected_dir).unwrap();
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (ALUMET_BLESS=1 writes it)", path.display()));
            assert_eq!(
                actual,
                expected,
                "{}:\n--- actual\n{actual}--- expected\n{expected}",
                path.display()
            );
        }
    }
}

#[test]
fn influxdb_fixtures_give_the_expected_bytes() {
    check("plugin-influxdb", 4);
}

#[test]
fn prometheus_fixtures_give_the_expected_bytes() {
    check("plugin-prometheus", 2);
}
