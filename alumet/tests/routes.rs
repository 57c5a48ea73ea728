//! Per-output routing: a transform scoped to some outputs changes what
//! those outputs receive and nothing else; a scoped transform's finish
//! reaches its outputs only; crossing scopes are refused at commit.
#![allow(clippy::unwrap_used)]

use alumet::measurement::*;
use alumet::metrics::*;
use alumet::pipeline::*;
use alumet::testing::{CollectingOutput, FnSource, TestPipeline};

/// Keeps one point in `keep_every`, and at finish emits one point marked `tail`.
struct Thin {
    keep_every: u64,
    seen: u64,
    metric: Option<MetricId>,
}

impl Transform for Thin {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _: &ElementContext,
    ) -> Result<(), TransformError> {
        buffer.retain(|p| {
            self.metric = Some(p.metric);
            self.seen += 1;
            self.seen % self.keep_every == 0
        });
        Ok(())
    }

    fn finish(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _: &ElementContext,
    ) -> Result<(), TransformError> {
        if let Some(m) = self.metric {
            buffer.push(
                MeasurementPoint::new(
                    Timestamp::now(),
                    m,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    0u64,
                )
                .with_attr("tail", true),
            );
        }
        Ok(())
    }
}

/// Waits up to 10 s for `done`.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    true
}

fn thin(keep_every: u64) -> Box<dyn Transform> {
    Box::new(Thin {
        keep_every,
        seen: 0,
        metric: None,
    })
}

fn scope(names: &[&str]) -> OutputScope {
    OutputScope::from_names(names.iter().map(|s| s.to_string()).collect())
}

#[test]
fn scoped_transforms_change_only_their_outputs_and_nested_scopes_chain() {
    let (csv, remote, nested) = (
        CollectingOutput::new(),
        CollectingOutput::new(),
        CollectingOutput::new(),
    );
    let mut t = TestPipeline::builder();
    let (c, r, n) = (csv.clone(), remote.clone(), nested.clone());
    t.plugin("src", |ctx| {
        let m = alumet::testing::test_gauge(ctx, "n")?;
        let mut i = 0u64;
        let source = FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
            for _ in 0..100 {
                buf.push(MeasurementPoint::new(
                    ts,
                    m,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    i,
                ));
                i += 1;
            }
            Ok(())
        });
        ctx.add_source("s", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    // Scoped first in plugin order, yet it runs after the trunk's transform.
    t.plugin("thin", |ctx| {
        ctx.add_scoped_transform("by10", thin(10), scope(&["remote", "nested/out"]));
        ctx.add_scoped_transform("by2", thin(2), scope(&["nested"]));
        Ok(())
    })
    .unwrap();
    t.plugin("trunk", |ctx| {
        ctx.add_transform("all", thin(1));
        Ok(())
    })
    .unwrap();
    let none = OutputOptions {
        flush_interval: None,
        thinned: false,
    };
    t.plugin("csv", |ctx| {
        ctx.add_output("out", Box::new(c), none);
        Ok(())
    })
    .unwrap();
    t.plugin("remote", |ctx| {
        ctx.add_output("out", Box::new(r), none);
        Ok(())
    })
    .unwrap();
    t.plugin("nested", |ctx| {
        ctx.add_output("out", Box::new(n), none);
        Ok(())
    })
    .unwrap();
    let running = t.start();
    for _ in 0..9 {
        running.trigger_all();
    }
    let result = running.finish();
    // 11 polls of 100 points: start, 9 triggers, shutdown.
    let raw =
        |points: &[MeasurementPoint]| points.iter().filter(|p| p.attr("tail").is_none()).count();
    let tails = |points: &[MeasurementPoint]| points.len() - raw(points);
    assert_eq!(
        raw(&result.points),
        1100,
        "the test collector takes the trunk"
    );
    assert_eq!(raw(&csv.points()), 1100);
    assert_eq!(raw(&remote.points()), 110);
    assert_eq!(raw(&nested.points()), 55);
    // The trunk's tail reaches everyone (thinned where scoped); each scoped
    // transform's tail only its own outputs.
    assert_eq!(tails(&csv.points()), 1);
    assert_eq!(tails(&result.points), 1);
    let remote_values: Vec<u64> = remote
        .points()
        .iter()
        .filter(|p| p.attr("tail").is_none())
        .map(|p| match p.value {
            MeasurementValue::U64(v) => v,
            MeasurementValue::F64(_) => unreachable!(),
        })
        .collect();
    assert_eq!(&remote_values[..3], &[9, 19, 29]);
    assert_eq!(
        tails(&remote.points()),
        1,
        "by10's own tail; the trunk's was thinned away"
    );
    assert_eq!(
        tails(&nested.points()),
        1,
        "by2's own; by10's was thinned away by by2"
    );
    let stats = result.stats;
    let by10 = stats
        .transforms
        .iter()
        .find(|t| t.name == "thin/by10")
        .unwrap();
    assert_eq!(
        by10.points_in, 1101,
        "once per point (and the trunk's tail), not once per output"
    );
}

#[test]
fn crossing_scopes_are_refused_before_anything_starts() {
    let mut t = TestPipeline::builder();
    t.plugin("a", |ctx| {
        ctx.add_scoped_transform("x", thin(2), scope(&["test"]));
        Ok(())
    })
    .unwrap();
    t.plugin("b", |ctx| {
        ctx.add_scoped_transform("y", thin(2), scope(&["test", "b/other"]));
        ctx.add_output(
            "other",
            Box::new(CollectingOutput::new()),
            OutputOptions::default(),
        );
        Ok(())
    })
    .unwrap();
    let e = match t.try_start() {
        Err(e) => e.to_string(),
        Ok(_) => panic!("crossing scopes started"),
    };
    assert!(
        e.contains("b/y") && e.contains("a/x") && e.contains("the trunk"),
        "{e}"
    );
}

#[test]
fn a_stopped_scoped_transform_finishes_to_its_outputs_and_a_crossing_one_started_later_is_refused()
{
    let (raw, remote) = (CollectingOutput::new(), CollectingOutput::new());
    let mut builder = PipelineBuilder::new(PipelineConfig::default());
    let none = OutputOptions {
        flush_interval: None,
        thinned: false,
    };
    let (r, m) = (raw.clone(), remote.clone());
    builder
        .with_plugin_context("src", |ctx| {
            let metric = alumet::testing::test_gauge(ctx, "n")?;
            let source = FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
                buf.push(MeasurementPoint::new(
                    ts,
                    metric,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    1u64,
                ));
                Ok(())
            });
            ctx.add_source("s", Box::new(source), TestPipeline::manual_trigger());
            ctx.add_output("raw", Box::new(r), none);
            Ok(())
        })
        .unwrap();
    builder
        .with_plugin_context("remote", |ctx| {
            ctx.add_output("out", Box::new(m), none);
            Ok(())
        })
        .unwrap();
    builder
        .with_plugin_context("thin", |ctx| {
            ctx.add_scoped_transform("t", thin(1000), scope(&["remote"]));
            Ok(())
        })
        .unwrap();
    let running = builder.start().unwrap();
    running
        .handle()
        .trigger_now(SourceSelector::All, std::time::Duration::from_secs(10))
        .unwrap();
    // The stage has handled both polls once `raw` has them (same flow as thin's).
    assert!(wait_until(|| raw.len() >= 2));
    running.stop_plugins(&["thin".to_owned()]).unwrap();
    assert!(wait_until(|| !remote.is_empty()), "thin's tail is written");
    let tails =
        |points: &[MeasurementPoint]| points.iter().filter(|p| p.attr("tail").is_some()).count();
    assert_eq!(tails(&remote.points()), 1, "its tail reaches its output");
    assert_eq!(remote.points().len(), 1, "it thinned every point away");

    // `remote` alone, then `remote` and `src`: the second crosses the first.
    let mut extension = running.extend();
    extension
        .with_plugin_context("thin", |ctx| {
            ctx.add_scoped_transform("t", thin(1000), scope(&["remote"]));
            ctx.add_scoped_transform("u", thin(2), scope(&["remote", "src"]));
            Ok(())
        })
        .unwrap();
    let e = extension
        .commit()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("thin/u"), "refused: {e}");
    // Nothing of it started: the outputs get every point, unthinned.
    running
        .handle()
        .trigger_now(SourceSelector::All, std::time::Duration::from_secs(10))
        .unwrap();
    let mut extension = running.extend();
    extension
        .with_plugin_context("thin", |ctx| {
            ctx.add_scoped_transform("t", thin(2), scope(&["remote", "src"]));
            Ok(())
        })
        .unwrap();
    extension.commit().unwrap();
    running
        .handle()
        .trigger_now(SourceSelector::All, std::time::Duration::from_secs(10))
        .unwrap();
    running
        .handle()
        .trigger_now(SourceSelector::All, std::time::Duration::from_secs(10))
        .unwrap();
    let _ = running.shutdown_and_wait();
    // Polls: at start and the 1st trigger (remote: thinned away), the 2nd
    // (no transform), the 3rd, the 4th and the last at shutdown (one in two
    // kept by the new transform, for both outputs: the 4th).
    let untailed =
        |points: Vec<MeasurementPoint>| points.iter().filter(|p| p.attr("tail").is_none()).count();
    assert_eq!(untailed(raw.points()), 3 + 1);
    assert_eq!(untailed(remote.points()), 1 + 1);
}
