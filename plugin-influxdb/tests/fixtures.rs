//! Fixture cases for the line protocol encoder: each directory under
//! `tests/fixtures/` holds `points.json` (metrics and points), an optional
//! `config.toml` (the attribute and tag keys of the plugin's config) and
//! `expected.lp`, the exact lines the encoder must write. Points the line
//! protocol cannot carry (NaN, infinite) are absent from `expected.lp`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use alumet::testing::points::PointsFixture;
use plugin_influxdb::line_protocol::{AttributeRole, EncoderOptions, LineProtocolEncoder};

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FixtureConfig {
    attributes_as: Option<AttributeRole>,
    tag_attributes: Vec<String>,
    field_attributes: Vec<String>,
    tags: BTreeMap<String, String>,
}

fn run_case(dir: &Path) {
    let fixture = PointsFixture::load(&dir.join("points.json")).unwrap();
    let (registry, points) = fixture.registry().unwrap();
    let config: FixtureConfig = match std::fs::read_to_string(dir.join("config.toml")) {
        Ok(text) => toml::from_str(&text).unwrap(),
        Err(_) => FixtureConfig::default(),
    };
    let mut encoder = LineProtocolEncoder::new(EncoderOptions {
        attributes_as: config.attributes_as.unwrap_or(AttributeRole::Tag),
        tag_attributes: config.tag_attributes,
        field_attributes: config.field_attributes,
        constant_tags: config.tags.into_iter().collect(),
    });
    let mut out = Vec::new();
    let mut skipped = 0;
    for point in &points {
        let before = out.len();
        if encoder.encode(point, &registry, &mut out).is_err() {
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
    for case in alumet::testing::fixture::cases(&root, 4) {
        run_case(&case);
    }
}
