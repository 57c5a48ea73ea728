//! The pipeline's heartbeat (`PipelineHandle::heartbeat`): every poller
//! answers between polls, paused or not; one stuck in a poll does not.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alumet::measurement::*;
use alumet::pipeline::*;
use alumet::testing::{test_gauge, FnSource, TestPipeline};

#[test]
fn a_paused_pipeline_beats_a_stuck_one_does_not() {
    // While `stall` is set, a poll blocks until `release` is unlocked.
    let stall = Arc::new(AtomicBool::new(false));
    let release = Arc::new(Mutex::new(()));
    let mut t = TestPipeline::builder();
    {
        let (stall, release) = (stall.clone(), release.clone());
        t.plugin("hb", move |ctx| {
            let m = test_gauge(ctx, "n")?;
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

/// Blocks in `write` (an output) or `apply` (a transform) while the test
/// holds `hold`.
#[derive(Clone, Default)]
struct Stall {
    armed: Arc<AtomicBool>,
    hold: Arc<Mutex<()>>,
}

impl Stall {
    fn wait_if_armed(&self) {
        if self.armed.load(Ordering::Acquire) {
            let _unused = self.hold.lock();
        }
    }
}

impl Output for Stall {
    fn write(&mut self, _b: &MeasurementBuffer, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.wait_if_armed();
        Ok(())
    }
}

impl Transform for Stall {
    fn apply(
        &mut self,
        _b: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        self.wait_if_armed();
        Ok(())
    }
}

/// A pipeline polling every 10 ms into `stall` as an output or a transform.
fn stalling_pipeline(stall: &Stall, as_output: bool) -> alumet::testing::RunningTest {
    let mut t = TestPipeline::builder();
    let stall = stall.clone();
    t.plugin("st", move |ctx| {
        let m = test_gauge(ctx, "n")?;
        let source = FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
            buf.push(MeasurementPoint::new(
                ts,
                m,
                Resource::LocalMachine,
                ResourceConsumer::LocalMachine,
                1u64,
            ));
            Ok(())
        });
        ctx.add_source(
            "s",
            Box::new(source),
            SourceTrigger::every(Duration::from_millis(10)),
        );
        if as_output {
            ctx.add_output("slow", Box::new(stall), OutputOptions::default());
        } else {
            ctx.add_transform("slow", Box::new(stall));
        }
        Ok(())
    })
    .unwrap();
    t.start()
}

#[test]
fn an_output_or_a_transform_stuck_in_a_call_stops_the_heartbeat() {
    for (as_output, culprit) in [(true, "st/slow"), (false, "the transform stage")] {
        let stall = Stall::default();
        let running = stalling_pipeline(&stall, as_output);
        let h = running.handle().clone();
        let timeout = Duration::from_millis(200);
        assert!(h.heartbeat(timeout), "{culprit}: running");

        let held = stall.hold.lock().unwrap();
        stall.armed.store(true, Ordering::Release);
        // The next buffer (10 ms) enters the call, which then lasts past the timeout.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(h.stalled(timeout), [culprit]);
        assert!(!h.heartbeat(timeout), "{culprit}: stuck");
        // The sources are not stuck: their queue takes the points meanwhile.
        let stats = h.stats();
        assert!(stats.sources[0].polls > 20);
        let waiting = if as_output {
            stats.outputs.iter().map(|o| o.queue_depth).sum::<u64>()
        } else {
            stats.transform_queue_depth
        };
        assert!(
            waiting >= 10,
            "{culprit}: buffers wait in front of it: {stats:?}"
        );

        stall.armed.store(false, Ordering::Release);
        drop(held);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            h.heartbeat(timeout),
            "{culprit}: beats again once the call returns"
        );
        running.finish();
    }
}
