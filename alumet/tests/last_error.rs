//! The last error of each source and output is in the stats (what
//! `alumet-agent ctl status` shows next to the counters).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use alumet::measurement::*;
use alumet::pipeline::*;
use alumet::testing::{test_gauge, FnSource, TestPipeline};

struct FailsOnce(bool);
impl Output for FailsOnce {
    fn write(&mut self, _b: &MeasurementBuffer, _ctx: &ElementContext) -> Result<(), WriteError> {
        if std::mem::replace(&mut self.0, false) {
            return Err(WriteError::retry("server busy"));
        }
        Ok(())
    }
}

#[test]
fn the_last_error_of_a_source_and_of_an_output_is_kept() {
    let mut t = TestPipeline::builder();
    t.plugin("e", move |ctx| {
        let m = test_gauge(ctx, "n")?;
        let mut polls = 0u64;
        ctx.add_source(
            "flaky",
            Box::new(FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
                polls += 1;
                if polls == 2 {
                    return Err(PollError::transient(format!(
                        "file briefly missing at poll {polls}"
                    )));
                }
                buf.push(MeasurementPoint::new(
                    ts,
                    m,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    polls,
                ));
                Ok(())
            })),
            SourceTrigger::every(Duration::from_millis(10)),
        );
        ctx.add_source(
            "fine",
            Box::new(FnSource::new(|_buf: &mut MeasurementBuffer, _ts| Ok(()))),
            SourceTrigger::every(Duration::from_millis(10)),
        );
        ctx.add_output("out", Box::new(FailsOnce(true)), OutputOptions::default());
        Ok(())
    })
    .unwrap();
    let running = t.start();
    let h = running.handle().clone();
    assert!(wait_for(|| {
        let s = h.stats();
        s.source("e/flaky").unwrap().last_error.is_some()
            && s.output("e/out").is_some_and(|o| o.last_error.is_some())
    }));
    let stats = h.stats();
    let flaky = stats.source("e/flaky").unwrap();
    assert_eq!(
        flaky.last_error.as_deref(),
        Some("file briefly missing at poll 2")
    );
    assert_eq!(flaky.errors, 1);
    assert_eq!(stats.source("e/fine").unwrap().last_error, None);
    assert_eq!(
        stats.output("e/out").unwrap().last_error.as_deref(),
        Some("server busy")
    );
    running.finish();
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
