//! The pipeline's heartbeat (`PipelineHandle::heartbeat`): every poller
//! answers between polls, paused or not; one stuck in a poll does not.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alumet::measurement::*;
use alumet::metrics::*;
use alumet::pipeline::*;
use alumet::testing::{FnSource, TestPipeline};

#[test]
fn a_paused_pipeline_beats_a_stuck_one_does_not() {
    // While `stall` is set, a poll blocks until `release` is unlocked.
    let stall = Arc::new(AtomicBool::new(false));
    let release = Arc::new(Mutex::new(()));
    let mut t = TestPipeline::builder();
    {
        let (stall, release) = (stall.clone(), release.clone());
        t.plugin("hb", move |ctx| {
            let m = ctx.create_metric(Metric::new(
                "n",
                Unit::Unity,
                ValueType::U64,
                MetricKind::Gauge,
                "test",
            ))?;
            ctx.add_source(
                "s",
                Box::new(FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
                    if stall.load(Ordering::Acquire) {
                        let _unused = release.lock();
                    }
                    buf.push(MeasurementPoint::new(
                        ts,
                        m,
                        Resource::LocalMachine,
                        ResourceConsumer::LocalMachine,
                        1u64,
                    ));
                    Ok(())
                })),
                SourceTrigger::every(Duration::from_millis(10)),
            );
            Ok(())
        })
        .unwrap();
    }
    let running = t.start();
    let h = running.handle().clone();
    let timeout = Duration::from_millis(200);
    assert!(h.heartbeat(timeout), "running");

    h.pause(SourceSelector::All).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.heartbeat(timeout), "paused is not stuck");
    h.resume(SourceSelector::All).unwrap();

    let held = release.lock().unwrap();
    stall.store(true, Ordering::Release);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!h.heartbeat(timeout), "stuck in a poll");
    stall.store(false, Ordering::Release);
    drop(held);
    assert!(
        h.heartbeat(Duration::from_secs(2)),
        "beats again once the poll returns"
    );
    running.finish();
}
