//! Thinning happens per output: an output that stores rows gets a thinned
//! metric's zeros left out (sums the same, the count in its stats), one
//! that keeps current values (Prometheus) gets every point, from the same
//! pipeline and the same buffers.
#![allow(clippy::unwrap_used)]

use alumet::measurement::*;
use alumet::metrics::*;
use alumet::pipeline::*;
use alumet::testing::{CollectingOutput, FnSource, TestPipeline};

/// A delta metric whose zeros outputs that store rows leave out.
fn thinned_delta(ctx: &mut PluginStartContext) -> Result<MetricId, MetricError> {
    ctx.create_metric(
        Metric::new(
            "d",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "a delta",
        )
        .thinned(Thinning::SkipZero),
    )
}

#[test]
fn rows_are_thinned_for_stores_and_whole_for_an_output_that_opts_out() {
    let (rows, whole) = (CollectingOutput::new(), CollectingOutput::new());
    let mut t = TestPipeline::builder();
    let (r, w) = (rows.clone(), whole.clone());
    t.plugin("src", |ctx| {
        let metric = thinned_delta(ctx)?;
        let mut poll = 0u32;
        let source = FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
            poll += 1;
            for pid in 0..50u32 {
                let busy = pid % 10 == 0 && poll % 2 == 0;
                buf.push(MeasurementPoint::new(
                    ts,
                    metric,
                    Resource::LocalMachine,
                    ResourceConsumer::Process { pid },
                    if busy { 0.25 } else { 0.0 },
                ));
            }
            Ok(())
        });
        ctx.add_source("s", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    for (name, output, thinned) in [("rows", r, true), ("whole", w, false)] {
        t.plugin(name, |ctx| {
            let options = OutputOptions {
                flush_interval: None,
                thinned,
            };
            ctx.add_output("out", Box::new(output), options);
            Ok(())
        })
        .unwrap();
    }
    let running = t.start();
    for _ in 0..20 {
        running.trigger_all();
    }
    let result = running.finish();
    let sum = |points: &[MeasurementPoint]| points.iter().map(|p| p.value.as_f64()).sum::<f64>();
    let (rows, whole) = (rows.points(), whole.points());
    assert!(whole.len() >= 50 * 20, "every point: {}", whole.len());
    assert_eq!(sum(&rows), sum(&whole));
    // 50 first points, then 5 busy processes every other poll.
    assert!(rows.len() <= 50 + 5 * 11, "{} rows", rows.len());
    let stats = result.stats.outputs;
    let thinned = |name: &str| {
        stats
            .iter()
            .find(|o| o.name.starts_with(name))
            .map(|o| o.thinned_points)
    };
    assert_eq!(thinned("rows"), Some((whole.len() - rows.len()) as u64));
    assert_eq!(thinned("whole"), Some(0));
}

/// After a reopen (logrotate), an output's new file holds every series'
/// first point again.
#[test]
fn a_reopened_output_starts_every_series_again() {
    let rows = CollectingOutput::new();
    let mut t = TestPipeline::builder();
    let r = rows.clone();
    t.plugin("src", |ctx| {
        let metric = thinned_delta(ctx)?;
        let source = FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
            for pid in 0..10u32 {
                buf.push(MeasurementPoint::new(
                    ts,
                    metric,
                    Resource::LocalMachine,
                    ResourceConsumer::Process { pid },
                    0.0,
                ));
            }
            Ok(())
        });
        ctx.add_source("s", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    t.plugin("rows", |ctx| {
        let options = OutputOptions {
            flush_interval: None,
            thinned: true,
        };
        ctx.add_output("out", Box::new(r), options);
        Ok(())
    })
    .unwrap();
    let running = t.start();
    for _ in 0..5 {
        running.trigger_all();
    }
    let wait = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while rows.points().len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        rows.points().len()
    };
    assert_eq!(wait(10), 10, "only the first points");
    running.handle().reopen_outputs().unwrap();
    for _ in 0..3 {
        running.trigger_all();
    }
    running.finish();
    assert_eq!(
        rows.points().len(),
        20,
        "the first points again after the reopen"
    );
}
