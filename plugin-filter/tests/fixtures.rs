//! Fixture cases under tests/fixtures/<case>/: `config.toml` (the plugin's
//! section), `input.csv` (the points a source emits once), `expected.csv`
//! (what the output `remote` must receive, in input order). The pipeline's
//! own collecting output (`test`) must receive every input point unless the
//! filter is for every output. Rows: metric, resource `kind:id`, consumer
//! `kind:id`, value, attributes `k=v;k=v`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use alumet::measurement::*;
use alumet::metrics::*;
use alumet::pipeline::OutputOptions;
use alumet::plugin::PluginDefinition;
use alumet::testing::fixture::{
    cases, consumer_from_text, consumer_text, resource_from_text, resource_text,
};
use alumet::testing::{CollectingOutput, FnSource, TestPipeline};
use plugin_filter::{Config, FilterPlugin};

/// `(metric name, point without metric id)` rows of a CSV.
fn rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn row_of(p: &MeasurementPoint, metrics: &MetricRegistry) -> String {
    let attrs: Vec<String> = p
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let res = resource_text(&p.resource);
    let con = consumer_text(&p.consumer);
    let MeasurementValue::F64(v) = p.value else {
        panic!()
    };
    format!(
        "{},{res},{con},{v:?},{}",
        metrics.get(p.metric).unwrap().name,
        attrs.join(";")
    )
}

fn run_case(dir: &Path) {
    let config: Config = alumet::config::deserialize_config(
        toml::from_str::<toml::Table>(&std::fs::read_to_string(dir.join("config.toml")).unwrap())
            .unwrap(),
    )
    .unwrap();
    let input = rows(&dir.join("input.csv"));
    let mut t = TestPipeline::builder();
    let lines = input.clone();
    t.plugin("fixture", move |ctx| {
        let mut ids = std::collections::HashMap::new();
        for line in &lines {
            let name = line.split(',').next().unwrap().to_owned();
            if let std::collections::hash_map::Entry::Vacant(e) = ids.entry(name.clone()) {
                let m = Metric::new(name, Unit::Unity, ValueType::F64, MetricKind::Delta, "");
                e.insert(ctx.create_metric(m)?);
            }
        }
        let mut sent = false;
        let source = FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
            for line in lines.iter().filter(|_| !sent) {
                let f: Vec<&str> = line.splitn(5, ',').collect();
                let mut p = MeasurementPoint::new(
                    ts,
                    ids[f[0]],
                    resource_from_text(f[1]),
                    consumer_from_text(f[2]),
                    f[3].parse::<f64>().unwrap(),
                );
                for kv in f[4].split(';').filter(|kv| !kv.is_empty()) {
                    let (k, v) = kv.split_once('=').unwrap();
                    p = p.with_attr(k.to_owned(), v.to_owned());
                }
                buf.push(p);
            }
            sent = true;
            Ok(())
        });
        ctx.add_source("rows", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    let mut plugin = FilterPlugin::init(config.clone()).unwrap();
    t.start_plugin("filter", &mut plugin).unwrap();
    let remote = CollectingOutput::new();
    let r = remote.clone();
    t.plugin("remote", |ctx| {
        ctx.add_output(
            "out",
            Box::new(r),
            OutputOptions {
                flush_interval: None,
                thinned: false,
            },
        );
        Ok(())
    })
    .unwrap();
    let result = t.start().finish();
    let got: Vec<String> = remote
        .points()
        .iter()
        .map(|p| row_of(p, &result.metrics))
        .collect();
    assert_eq!(got, rows(&dir.join("expected.csv")), "{}", dir.display());
    let everyone = config.filters.iter().all(|f| f.outputs.is_empty());
    let to_test: Vec<String> = result
        .points
        .iter()
        .map(|p| row_of(p, &result.metrics))
        .collect();
    if everyone {
        assert_eq!(
            to_test,
            got,
            "{}: the filter is for every output",
            dir.display()
        );
    } else {
        assert_eq!(
            to_test,
            input,
            "{}: other outputs get every point",
            dir.display()
        );
    }
}

#[test]
fn every_fixture_case() {
    let cases = cases(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        2,
    );
    for case in cases {
        run_case(&case);
    }
}
