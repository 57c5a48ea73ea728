//! Behaviour of the pipeline as a whole: delivery, ordering, isolation of
//! slow and failing elements, retries, shutdown, control.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alumet::measurement::*;
use alumet::metrics::*;
use alumet::pipeline::*;
use alumet::testing::{CollectingOutput, FnSource, TestPipeline};

fn counter_metric(ctx: &mut PluginStartContext, name: &str) -> MetricId {
    alumet::testing::test_gauge(ctx, name).unwrap()
}

/// A source that emits `per_poll` points numbered 0, 1, 2... and counts them.
fn numbered_source(
    metric: MetricId,
    source_id: u32,
    per_poll: u64,
    produced: Arc<AtomicU64>,
) -> FnSource<impl FnMut(&mut MeasurementBuffer, Timestamp) -> Result<(), PollError> + Send> {
    let mut next = 0u64;
    FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
        for _ in 0..per_poll {
            buf.push(MeasurementPoint::new(
                ts,
                metric,
                Resource::CpuCore { id: source_id },
                ResourceConsumer::LocalMachine,
                next,
            ));
            next += 1;
        }
        produced.fetch_add(per_poll, Ordering::Relaxed);
        Ok(())
    })
}

struct AddAttribute;
impl Transform for AddAttribute {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        for p in buffer.iter_mut() {
            p.attributes
                .push(("edited".into(), AttributeValue::Bool(true)));
        }
        Ok(())
    }
}

#[test]
fn points_from_several_sources_reach_two_outputs_once_in_order_through_a_transform() {
    let second = CollectingOutput::new();
    let produced = Arc::new(AtomicU64::new(0));
    let mut t = TestPipeline::builder();
    let s2 = second.clone();
    let p = produced.clone();
    t.plugin("multi", move |ctx| {
        let m = counter_metric(ctx, "n");
        for id in 0..4 {
            ctx.add_source(
                &format!("s{id}"),
                Box::new(numbered_source(m, id, 50, p.clone())),
                SourceTrigger::every(Duration::from_millis(3))
                    .flush_every(Duration::from_millis(20)),
            );
        }
        ctx.add_transform("edit", Box::new(AddAttribute));
        ctx.add_output("second", Box::new(s2), OutputOptions::default());
        Ok(())
    })
    .unwrap();
    let running = t.start();
    assert!(running.wait_for_points(4 * 50 * 20, Duration::from_secs(20)));
    let result = running.finish();
    let total = produced.load(Ordering::Relaxed) as usize;
    let first: Vec<_> = result.points_of("n").into_iter().cloned().collect();
    let second: Vec<_> = second
        .points()
        .into_iter()
        .filter(|p| Some(p.metric) == result.metrics.by_name("n"))
        .collect();
    for points in [&first, &second] {
        assert_eq!(points.len(), total, "every point exactly once");
        assert!(points
            .iter()
            .all(|p| p.attr("edited") == Some(&AttributeValue::Bool(true))));
        for id in 0..4 {
            let values: Vec<u64> = points
                .iter()
                .filter(|p| p.resource == Resource::CpuCore { id })
                .map(|p| match p.value {
                    MeasurementValue::U64(v) => v,
                    _ => unreachable!(),
                })
                .collect();
            let expected: Vec<u64> = (0..values.len() as u64).collect();
            assert_eq!(
                values, expected,
                "source {id}: in order, no gap, no duplicate"
            );
        }
    }
    assert_eq!(result.stats.total_dropped_points, 0);
}

/// An output that sleeps on every batch.
struct SleepyOutput {
    delay: Duration,
    received: Arc<AtomicUsize>,
}
impl Output for SleepyOutput {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        std::thread::sleep(self.delay);
        self.received.fetch_add(buffer.len(), Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_slow_output_delays_neither_the_other_output_nor_the_sources() {
    let slow_received = Arc::new(AtomicUsize::new(0));
    let produced = Arc::new(AtomicU64::new(0));
    let mut t = TestPipeline::builder();
    let (sr, p) = (slow_received.clone(), produced.clone());
    t.plugin("slow", move |ctx| {
        let m = counter_metric(ctx, "n");
        ctx.add_source(
            "s",
            Box::new(numbered_source(m, 0, 1, p)),
            TestPipeline::manual_trigger(),
        );
        ctx.add_output(
            "sleepy",
            Box::new(SleepyOutput {
                delay: Duration::from_millis(200),
                received: sr,
            }),
            OutputOptions::default(),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    const TRIGGERS: usize = 30;
    for _ in 0..TRIGGERS {
        running.trigger_all(); // returns once the source has been polled
    }
    // The fast output gets every point while the slow one is still at work
    // (30 batches × 200 ms = 6 s for the slow one).
    assert!(running.wait_for_points(TRIGGERS + 1, Duration::from_secs(5)));
    let slow_now = slow_received.load(Ordering::SeqCst);
    assert!(
        slow_now < TRIGGERS,
        "the slow output cannot have caught up yet ({slow_now})"
    );
    let stats = running.handle().stats();
    assert_eq!(stats.source("slow/s").unwrap().polls, TRIGGERS as u64 + 1);
    let result = running.finish();
    // At shutdown the slow output still gets everything: nothing lost.
    let total = produced.load(Ordering::Relaxed) as usize;
    assert_eq!(slow_received.load(Ordering::SeqCst), total);
    assert_eq!(result.points_of("n").len(), total);
}

/// Fails with a retryable error a given number of times, then records.
struct FlakyOutput {
    failures_left: u32,
    attempts: Arc<Mutex<Vec<Vec<MeasurementPoint>>>>,
    fatal: bool,
}
impl Output for FlakyOutput {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        self.attempts.lock().unwrap().push(buffer.clone());
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(if self.fatal {
                WriteError::fatal("broken for good")
            } else {
                WriteError::retry("server busy")
            });
        }
        Ok(())
    }
}

#[test]
fn a_retryable_error_redelivers_the_same_batch() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let mut t = TestPipeline::builder();
    let a = attempts.clone();
    t.plugin("flaky", move |ctx| {
        let m = counter_metric(ctx, "n");
        ctx.add_source(
            "s",
            Box::new(numbered_source(m, 0, 3, Arc::default())),
            TestPipeline::manual_trigger(),
        );
        ctx.add_output(
            "flaky",
            Box::new(FlakyOutput {
                failures_left: 2,
                attempts: a,
                fatal: false,
            }),
            OutputOptions::default(),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    running.trigger_all();
    let result = running.finish();
    let attempts = attempts.lock().unwrap();
    // The first batch was tried three times, identical each time.
    assert!(attempts.len() >= 3);
    assert_eq!(attempts[0], attempts[1]);
    assert_eq!(attempts[1], attempts[2]);
    let out = result.stats.output("flaky/flaky").unwrap();
    assert_eq!(out.retries, 2);
    assert_eq!(out.dropped_points, 0);
    assert_eq!(out.written_points, result.points_of("n").len() as u64);
}

#[test]
fn a_retry_budget_that_runs_out_counts_the_loss() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let mut t = TestPipeline::with_config(PipelineConfig {
        max_write_attempts: 2,
        retry_initial_delay: Duration::from_millis(1),
        retry_max_delay: Duration::from_millis(1),
        ..PipelineConfig::default()
    });
    let a = attempts.clone();
    t.plugin("flaky", move |ctx| {
        let m = counter_metric(ctx, "n");
        ctx.add_source(
            "s",
            Box::new(numbered_source(m, 0, 3, Arc::default())),
            TestPipeline::manual_trigger(),
        );
        ctx.add_output(
            "flaky",
            Box::new(FlakyOutput {
                failures_left: 2,
                attempts: a,
                fatal: false,
            }),
            OutputOptions::default(),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    running.trigger_all();
    // Wait until the first batch is given up, then produce another batch:
    // the loss is reported with it.
    let h = running.handle().clone();
    for _ in 0..500 {
        if h.stats().total_dropped_points > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    running.trigger_all();
    let result = running.finish();
    let out = result.stats.output("flaky/flaky").unwrap();
    let first_batch = attempts.lock().unwrap()[0].len() as u64;
    assert_eq!(
        out.dropped_points, first_batch,
        "the first batch was given up and counted"
    );
    let all_points = result.points_of("n").len() + result.points_of("alumet_dropped_points").len();
    assert_eq!(out.written_points + out.dropped_points, all_points as u64);
    // The loss is reported as a self-metric to the healthy output.
    let reported: u64 = result
        .points_of("alumet_dropped_points")
        .iter()
        .map(|p| p.value.as_f64() as u64)
        .sum();
    assert_eq!(reported, first_batch);
}

#[test]
fn a_fatal_error_stops_only_that_element() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let healthy_produced = Arc::new(AtomicU64::new(0));
    let mut t = TestPipeline::builder();
    let (a, hp) = (attempts.clone(), healthy_produced.clone());
    t.plugin("mixed", move |ctx| {
        let m = counter_metric(ctx, "n");
        let broken = ctx.create_metric(Metric::new(
            "broken",
            Unit::Unity,
            ValueType::U64,
            MetricKind::Gauge,
            "b",
        ))?;
        let mut polls = 0;
        ctx.add_source(
            "dies",
            Box::new(FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
                polls += 1;
                if polls == 3 {
                    return Err(PollError::fatal("device gone"));
                }
                buf.push(MeasurementPoint::new(
                    ts,
                    broken,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    1u64,
                ));
                Ok(())
            })),
            TestPipeline::manual_trigger(),
        );
        ctx.add_source(
            "lives",
            Box::new(numbered_source(m, 0, 1, hp)),
            TestPipeline::manual_trigger(),
        );
        ctx.add_output(
            "dead",
            Box::new(FlakyOutput {
                failures_left: u32::MAX,
                attempts: a,
                fatal: true,
            }),
            OutputOptions::default(),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    for _ in 0..5 {
        running.trigger_all();
    }
    let result = running.finish();
    // The failing source produced 2 points then stopped; the other went on.
    assert_eq!(result.points_of("broken").len(), 2);
    assert_eq!(
        result.points_of("n").len() as u64,
        healthy_produced.load(Ordering::Relaxed)
    );
    assert_eq!(result.stats.source("mixed/lives").unwrap().polls, 7);
    assert_eq!(result.stats.source("mixed/dies").unwrap().polls, 3);
    // The failed output was written once, then only counted losses.
    assert_eq!(attempts.lock().unwrap().len(), 1);
    let dead = result.stats.output("mixed/dead").unwrap();
    let collector = result.stats.output("test/collector").unwrap();
    assert_eq!(dead.written_points, 0);
    assert!(dead.dropped_points > 0);
    assert!(collector.written_points >= dead.dropped_points);
}

#[test]
fn shutdown_mid_interval_loses_no_point() {
    let produced = Arc::new(AtomicU64::new(0));
    let mut t = TestPipeline::builder();
    let p = produced.clone();
    t.plugin("busy", move |ctx| {
        let m = counter_metric(ctx, "n");
        for id in 0..3 {
            // Flushing only every 10 s: every point is still in a source
            // buffer when shutdown comes.
            ctx.add_source(
                &format!("s{id}"),
                Box::new(numbered_source(m, id, 10, p.clone())),
                SourceTrigger::every(Duration::from_millis(7)).flush_every(Duration::from_secs(10)),
            );
        }
        Ok(())
    })
    .unwrap();
    let running = t.start();
    std::thread::sleep(Duration::from_millis(150));
    let result = running.finish();
    let produced = produced.load(Ordering::Relaxed) as usize;
    assert!(produced > 30);
    assert_eq!(
        result.points_of("n").len(),
        produced,
        "count in = count out"
    );
}

#[test]
fn pause_resume_and_interval_change_take_effect() {
    let mut t = TestPipeline::builder();
    t.plugin("ctl", move |ctx| {
        let m = counter_metric(ctx, "n");
        ctx.add_source(
            "s",
            Box::new(numbered_source(m, 0, 1, Arc::default())),
            SourceTrigger::every(Duration::from_millis(5)),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    let h = running.handle().clone();
    let polls = || h.stats().source("ctl/s").unwrap().polls;
    let settle = || std::thread::sleep(Duration::from_millis(60));

    h.pause(SourceSelector::Plugin("ctl".into())).unwrap();
    settle();
    let paused_at = polls();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(polls(), paused_at, "no poll while paused");

    h.resume(SourceSelector::Name("ctl/s".into())).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(polls() > paused_at + 3, "polling resumed");

    h.set_poll_interval(SourceSelector::All, Duration::from_secs(3600))
        .unwrap();
    settle();
    let slowed_at = polls();
    std::thread::sleep(Duration::from_millis(200));
    assert!(polls() <= slowed_at + 1, "the new, long interval applies");

    h.set_poll_interval(SourceSelector::All, Duration::from_millis(2))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(polls() > slowed_at + 10, "the new, short interval applies");

    assert!(h.pause(SourceSelector::Name("nope/s".into())).is_err());
    assert!(h
        .set_poll_interval(SourceSelector::All, Duration::ZERO)
        .is_err());
    running.finish();
}

#[test]
fn late_ticks_are_counted_as_missed() {
    let mut t = TestPipeline::builder();
    t.plugin("late", move |ctx| {
        ctx.add_source(
            "s",
            Box::new(FnSource::new(|_: &mut MeasurementBuffer, _| {
                std::thread::sleep(Duration::from_millis(25));
                Ok(())
            })),
            SourceTrigger::every(Duration::from_millis(5)),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    std::thread::sleep(Duration::from_millis(200));
    let result = running.finish();
    let s = result.stats.source("late/s").unwrap();
    assert!(s.missed_ticks >= s.polls, "{s:?}");
}

/// An output that blocks until released.
struct GatedOutput {
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    received: Arc<AtomicUsize>,
}
impl Output for GatedOutput {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        let (lock, cv) = &*self.gate;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        self.received.fetch_add(buffer.len(), Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_full_output_queue_drops_and_counts_exactly() {
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let received = Arc::new(AtomicUsize::new(0));
    let produced = Arc::new(AtomicU64::new(0));
    let mut t = TestPipeline::with_config(PipelineConfig {
        output_queue_capacity: 2,
        ..PipelineConfig::default()
    });
    let (g, r, p) = (gate.clone(), received.clone(), produced.clone());
    t.plugin("gated", move |ctx| {
        let m = counter_metric(ctx, "n");
        ctx.add_source(
            "s",
            Box::new(numbered_source(m, 0, 1, p)),
            TestPipeline::manual_trigger(),
        );
        ctx.add_output(
            "gated",
            Box::new(GatedOutput {
                gate: g,
                received: r,
            }),
            OutputOptions::default(),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    for _ in 0..20 {
        running.trigger_all();
    }
    // Wait until the collector has handled (written or dropped) the 21 points.
    let h = running.handle().clone();
    let handled = || {
        let c = h.stats().output("test/collector").cloned().unwrap();
        c.written_points + c.dropped_points
    };
    for _ in 0..2500 {
        if handled() >= 21 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(handled() >= 21);
    {
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    let result = running.finish();
    let gated = result.stats.output("gated/gated").unwrap();
    let collector = result.stats.output("test/collector").unwrap();
    let produced = produced.load(Ordering::Relaxed);
    assert!(
        gated.dropped_points > 0,
        "the queue of 2 must have overflowed"
    );
    // Every dispatched point reached each output or was counted as dropped
    // there (the capacity of 2 applies to the collector too, so it may drop).
    assert_eq!(
        gated.written_points + gated.dropped_points,
        collector.written_points + collector.dropped_points
    );
    let dispatched = gated.written_points + gated.dropped_points;
    assert!(
        dispatched > produced,
        "the self-metric points were dispatched too"
    );
    assert_eq!(received.load(Ordering::SeqCst) as u64, gated.written_points);
    // The pipeline's total is exactly the sum of the outputs' drops.
    assert_eq!(
        result.stats.total_dropped_points,
        gated.dropped_points + collector.dropped_points
    );
    let reported: u64 = result
        .points_of("alumet_dropped_points")
        .iter()
        .map(|p| p.value.as_f64() as u64)
        .sum();
    if collector.dropped_points == 0 {
        assert_eq!(
            reported, result.stats.total_dropped_points,
            "the self-metric reports the exact loss"
        );
    } else {
        assert!(reported <= result.stats.total_dropped_points);
    }
}

#[test]
fn an_autonomous_source_pushes_until_shutdown_and_loses_nothing() {
    let sent = Arc::new(AtomicU64::new(0));
    let mut t = TestPipeline::builder();
    let s = sent.clone();
    t.plugin("auto", move |ctx| {
        let m = counter_metric(ctx, "n");
        ctx.add_autonomous_source(
            "push",
            Box::new(
                move |mut actx: alumet::pipeline::builder::AutonomousContext| {
                    Box::pin(async move {
                        let mut i = 0u64;
                        loop {
                            let point = MeasurementPoint::new(
                                Timestamp::now(),
                                m,
                                Resource::LocalMachine,
                                ResourceConsumer::LocalMachine,
                                i,
                            );
                            actx.sender.send(vec![point]).await?;
                            s.fetch_add(1, Ordering::SeqCst);
                            i += 1;
                            tokio::select! {
                                _ = actx.shutdown.changed() => break,
                                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                            }
                        }
                        Ok(())
                    })
                },
            ),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    assert!(running.wait_for_points(10, Duration::from_secs(10)));
    let result = running.finish();
    assert_eq!(
        result.points_of("n").len() as u64,
        sent.load(Ordering::SeqCst)
    );
}

#[test]
fn without_a_first_poll_at_start_the_first_poll_is_the_one_asked_for() {
    let polls = Arc::new(AtomicU64::new(0));
    let mut t = TestPipeline::with_config(PipelineConfig {
        first_poll_at_start: false,
        ..PipelineConfig::default()
    });
    let p = polls.clone();
    t.plugin("p", move |ctx| {
        let m = counter_metric(ctx, "n");
        ctx.add_source(
            "s",
            Box::new(numbered_source(m, 0, 1, p)),
            TestPipeline::manual_trigger(),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(polls.load(Ordering::Relaxed), 0, "no poll before asked");
    running.trigger_all();
    assert_eq!(polls.load(Ordering::Relaxed), 1);
    let result = running.finish();
    // The trigger's poll and the shutdown's, nothing else.
    assert_eq!(result.points_of("n").len(), 2);
}
