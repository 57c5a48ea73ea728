//! Plugins stopped and started while the pipeline runs
//! (`RunningPipeline::stop_plugins`, `RunningPipeline::extend`): the other
//! plugins' elements run on untouched, nothing measured is lost, the
//! restarted plugin's elements keep their names and their transforms their
//! place; buffers that come while a plugin restarts wait for its new
//! elements; outputs reopen on request; queue depths are counted.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alumet::measurement::*;
use alumet::metrics::*;
use alumet::pipeline::*;
use alumet::testing::{CollectingOutput, FnSource};

fn gauge(ctx: &mut PluginStartContext, name: &str) -> MetricId {
    alumet::testing::test_gauge(ctx, name).unwrap()
}

/// Emits 0, 1, 2... one per poll, and counts what it emitted.
/// Outputs written at every batch, never on a timer.
fn unflushed() -> OutputOptions {
    OutputOptions {
        flush_interval: None,
        thinned: false,
    }
}

fn counting_source(metric: MetricId, emitted: Arc<AtomicU64>) -> Box<dyn Source> {
    let mut next = 0u64;
    Box::new(FnSource::new(move |buf: &mut MeasurementBuffer, ts| {
        buf.push(MeasurementPoint::new(
            ts,
            metric,
            Resource::LocalMachine,
            ResourceConsumer::LocalMachine,
            next,
        ));
        next += 1;
        emitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }))
}

/// Holds each buffer's points back until the next buffer: only `finish`
/// lets the last ones go.
#[derive(Default)]
struct DelayByOne {
    held: MeasurementBuffer,
}

impl Transform for DelayByOne {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        std::mem::swap(&mut self.held, buffer);
        Ok(())
    }
    fn finish(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        buffer.append(&mut self.held);
        Ok(())
    }
}

/// Records the name every point's metric has in the registry it is given.
#[derive(Clone, Default)]
struct NamingOutput {
    names: Arc<Mutex<Vec<Option<String>>>>,
    closed: Arc<AtomicBool>,
}

impl Output for NamingOutput {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        let mut names = self.names.lock().unwrap();
        for p in buffer {
            names.push(ctx.metrics.get(p.metric).map(|m| m.name.clone()));
        }
        Ok(())
    }
    fn close(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

fn values_of(points: &[MeasurementPoint], metric: MetricId) -> Vec<u64> {
    points
        .iter()
        .filter(|p| p.metric == metric)
        .map(|p| match p.value {
            MeasurementValue::U64(v) => v,
            MeasurementValue::F64(v) => v as u64,
        })
        .collect()
}

#[test]
fn a_plugin_stopped_and_started_again_leaves_the_others_running_and_loses_nothing() {
    let interval = Duration::from_millis(10);
    let mut builder = PipelineBuilder::new(PipelineConfig::default());
    let all = CollectingOutput::new();
    let kept_emitted = Arc::new(AtomicU64::new(0));
    let swapped_emitted = Arc::new(AtomicU64::new(0));
    let (mut kept_metric, mut swapped_metric) = (None, None);
    builder
        .with_plugin_context("keep", |ctx| {
            kept_metric = Some(gauge(ctx, "kept"));
            let source = counting_source(kept_metric.unwrap(), kept_emitted.clone());
            ctx.add_source("s", source, SourceTrigger::every(interval));
            let out = unflushed();
            ctx.add_output("all", Box::new(all.clone()), out);
            Ok(())
        })
        .unwrap();
    let first = NamingOutput::default();
    builder
        .with_plugin_context("swap", |ctx| {
            swapped_metric = Some(gauge(ctx, "swapped"));
            let source = counting_source(swapped_metric.unwrap(), swapped_emitted.clone());
            // On a thread of its own: that poller ends with the plugin.
            let trigger = SourceTrigger::every(interval).on_dedicated_thread();
            ctx.add_source("s", source, trigger);
            ctx.add_transform("delay", Box::<DelayByOne>::default());
            ctx.add_output("out", Box::new(first.clone()), OutputOptions::default());
            Ok(())
        })
        .unwrap();
    let (kept_metric, swapped_metric) = (kept_metric.unwrap(), swapped_metric.unwrap());
    let pipeline = builder.start().unwrap();
    let handle = pipeline.handle();
    std::thread::sleep(Duration::from_millis(200));

    let names = |h: &PipelineHandle| {
        let s = h.stats();
        let mut n: Vec<String> = s.sources.iter().map(|x| x.name.clone()).collect();
        n.extend(s.transforms.iter().map(|x| x.name.clone()));
        n.extend(s.outputs.iter().map(|x| x.name.clone()));
        n.sort();
        n
    };
    let before = names(&handle);
    pipeline.stop_plugins(&["swap".to_owned()]).unwrap();
    assert!(first.closed.load(Ordering::Acquire), "its output is closed");
    assert_eq!(
        names(&handle),
        ["keep/all", "keep/s"],
        "only the other plugin's elements are left"
    );
    let polls_at_stop = handle.stats().source("keep/s").unwrap().polls;
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        handle.stats().source("keep/s").unwrap().polls > polls_at_stop,
        "the other plugin's source goes on"
    );

    // Started again, with a metric the pipeline did not know.
    let second = NamingOutput::default();
    let mut extension = pipeline.extend();
    let mut new_metric = None;
    extension
        .with_plugin_context("swap", |ctx| {
            assert_eq!(
                gauge(ctx, "swapped"),
                swapped_metric,
                "same definition, same id"
            );
            new_metric = Some(gauge(ctx, "swapped_again"));
            let source = counting_source(new_metric.unwrap(), Arc::default());
            ctx.add_source("s", source, SourceTrigger::every(interval));
            ctx.add_transform("delay", Box::<DelayByOne>::default());
            ctx.add_output("out", Box::new(second.clone()), OutputOptions::default());
            Ok(())
        })
        .unwrap();
    extension.commit().unwrap();
    assert_eq!(names(&handle), before, "the same names as before");
    std::thread::sleep(Duration::from_millis(200));
    let stats = pipeline.shutdown_and_wait();

    let points = all.points();
    let kept = values_of(&points, kept_metric);
    assert_eq!(
        kept,
        (0..kept_emitted.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "the other plugin's source never restarted and lost nothing"
    );
    assert_eq!(stats.source("keep/s").unwrap().polls, kept.len() as u64);
    let swapped = values_of(&points, swapped_metric);
    assert_eq!(
        swapped,
        (0..swapped_emitted.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "the stopped source's last poll and what its transform held reached the outputs"
    );
    let resolved = second.names.lock().unwrap().clone();
    assert!(
        resolved.contains(&Some("swapped_again".to_owned())),
        "the new metric is known to the outputs: {resolved:?}"
    );
    assert!(resolved.iter().all(Option::is_some), "{resolved:?}");
    assert!(
        points.len() > kept.len() + swapped.len(),
        "the restarted source's points reach the other plugin's output too"
    );
}

/// Appends its name to every point's attributes.
struct Mark(&'static str);

impl Transform for Mark {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        for p in buffer.iter_mut() {
            p.attributes
                .push((self.0.into(), AttributeValue::Bool(true)));
        }
        Ok(())
    }
}

#[test]
fn a_restarted_plugin_s_transform_keeps_its_place_in_the_plugin_order() {
    let mut builder = PipelineBuilder::new(PipelineConfig::default());
    builder.plugin_order(["first", "second", "third"]);
    let all = CollectingOutput::new();
    builder
        .with_plugin_context("source", |ctx| {
            let m = gauge(ctx, "n");
            let source = counting_source(m, Arc::default());
            ctx.add_source("s", source, SourceTrigger::every(Duration::from_secs(3600)));
            let out = unflushed();
            ctx.add_output("all", Box::new(all.clone()), out);
            Ok(())
        })
        .unwrap();
    for name in ["second", "first"] {
        builder
            .with_plugin_context(name, |ctx| {
                ctx.add_transform("t", Box::new(Mark(name)));
                Ok(())
            })
            .unwrap();
    }
    let pipeline = builder.start().unwrap();
    let handle = pipeline.handle();
    let marks = |all: &CollectingOutput| -> Vec<String> {
        let points = all.points();
        let last = points.last().unwrap();
        last.attributes.iter().map(|(k, _)| k.to_string()).collect()
    };
    handle
        .trigger_now(SourceSelector::All, Duration::from_secs(5))
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !all.is_empty()));
    assert_eq!(
        marks(&all),
        ["first", "second"],
        "the declared order, not the start order"
    );

    pipeline.stop_plugins(&["first".to_owned()]).unwrap();
    let mut extension = pipeline.extend();
    for name in ["third", "first"] {
        extension
            .with_plugin_context(name, |ctx| {
                ctx.add_transform("t", Box::new(Mark(name)));
                Ok(())
            })
            .unwrap();
    }
    extension.commit().unwrap();
    handle
        .trigger_now(SourceSelector::All, Duration::from_secs(5))
        .unwrap();
    pipeline.shutdown_and_wait();
    assert_eq!(marks(&all), ["first", "second", "third"]);
}

/// Writes into a shared log, and blocks while `hold` is locked by the test.
#[derive(Clone, Default)]
struct LoggingOutput {
    log: Arc<Mutex<Vec<&'static str>>>,
    hold: Arc<Mutex<()>>,
    /// Writes begun (counted before waiting for `hold`).
    writes_begun: Arc<AtomicU64>,
}

impl Output for LoggingOutput {
    fn write(&mut self, _b: &MeasurementBuffer, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.writes_begun.fetch_add(1, Ordering::SeqCst);
        let _held = self
            .hold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.log.lock().unwrap().push("write");
        Ok(())
    }
    fn flush(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.log.lock().unwrap().push("flush");
        Ok(())
    }
    fn reopen(&mut self, _ctx: &ElementContext) -> Result<(), WriteError> {
        self.log.lock().unwrap().push("reopen");
        Ok(())
    }
}

/// Plugin `p`: source `s` (one point per poll, polled by hand) and output
/// `log` (a [`LoggingOutput`], written at once).
fn logging_pipeline(config: PipelineConfig) -> (RunningPipeline, LoggingOutput) {
    let mut builder = PipelineBuilder::new(config);
    let output = LoggingOutput::default();
    builder
        .with_plugin_context("p", |ctx| {
            let m = gauge(ctx, "n");
            let source = counting_source(m, Arc::default());
            ctx.add_source("s", source, SourceTrigger::every(Duration::from_secs(3600)));
            let options = unflushed();
            ctx.add_output("log", Box::new(output.clone()), options);
            Ok(())
        })
        .unwrap();
    (builder.start().unwrap(), output)
}

#[test]
fn outputs_reopen_after_what_was_queued_and_queue_depths_are_counted() {
    let (pipeline, output) = logging_pipeline(PipelineConfig::default());
    let handle = pipeline.handle();
    let depth = |h: &PipelineHandle| h.stats().output("p/log").unwrap().queue_depth;
    let buffered = |h: &PipelineHandle| h.stats().source("p/s").unwrap().buffered_points;
    // The first poll's point waits in the source for its (hour-long) flush.
    assert!(wait_until(Duration::from_secs(5), || buffered(&handle) == 1));
    handle
        .trigger_now(SourceSelector::All, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        buffered(&handle),
        0,
        "a triggered poll is handed on at once"
    );
    assert!(wait_until(Duration::from_secs(5), || output
        .log
        .lock()
        .unwrap()
        .len()
        == 1));

    // Blocked in a write: the batches behind it wait in its queue.
    let held = output.hold.lock().unwrap();
    for _ in 0..4 {
        handle
            .trigger_now(SourceSelector::All, Duration::from_secs(5))
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(5), || depth(&handle) == 3),
        "one batch in the write, three queued: {:?}",
        handle.stats().outputs
    );
    drop(held);
    assert!(wait_until(Duration::from_secs(5), || depth(&handle) == 0));

    handle.reopen_outputs().unwrap();
    handle
        .trigger_now(SourceSelector::All, Duration::from_secs(5))
        .unwrap();
    pipeline.shutdown_and_wait();
    let log = output.log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "write", "write", "write", "write", "write", "flush", "reopen", "write", "write",
            "flush"
        ],
        "flushed, then reopened, between the batches before and after"
    );
}

#[test]
fn a_stopped_plugin_s_autonomous_source_is_told_to_stop_and_what_it_sent_arrives() {
    let sent = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let mut builder = PipelineBuilder::new(PipelineConfig::default());
    let all = CollectingOutput::new();
    builder
        .with_plugin_context("sink", |ctx| {
            let out = unflushed();
            ctx.add_output("all", Box::new(all.clone()), out);
            // A source, so that the pipeline has one after `auto` is gone.
            let m = gauge(ctx, "tick");
            let trigger = SourceTrigger::every(Duration::from_millis(20));
            ctx.add_source("tick", counting_source(m, Arc::default()), trigger);
            Ok(())
        })
        .unwrap();
    let (s, st) = (sent.clone(), stopped.clone());
    let mut metric = None;
    builder
        .with_plugin_context("auto", |ctx| {
            let m = gauge(ctx, "pushed");
            metric = Some(m);
            let factory: alumet::pipeline::builder::AutonomousSourceFactory =
                Box::new(move |mut actx| {
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
                        st.store(true, Ordering::SeqCst);
                        Ok(())
                    })
                });
            ctx.add_autonomous_source("push", factory);
            Ok(())
        })
        .unwrap();
    let pipeline = builder.start().unwrap();
    assert!(wait_until(Duration::from_secs(5), || sent
        .load(Ordering::SeqCst)
        > 20));
    pipeline.stop_plugins(&["auto".to_owned()]).unwrap();
    assert!(
        stopped.load(Ordering::SeqCst),
        "it returned before stop_plugins did"
    );
    let total = sent.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(sent.load(Ordering::SeqCst), total, "it sends no more");
    pipeline.shutdown_and_wait();
    let pushed = values_of(&all.points(), metric.unwrap());
    assert_eq!(pushed, (0..total).collect::<Vec<_>>());
}

#[test]
fn a_reopen_does_not_wait_for_ever_behind_a_stuck_output() {
    let (pipeline, output) = logging_pipeline(PipelineConfig {
        output_queue_capacity: 1,
        ..PipelineConfig::default()
    });
    let handle = pipeline.handle();
    let held = output.hold.lock().unwrap();
    // One batch inside the stuck write, then one filling the queue (the
    // second trigger only once the first batch is in the write: the stage
    // may hand on two buffers that reach it together as one batch).
    let trigger = || {
        handle
            .trigger_now(SourceSelector::All, Duration::from_secs(5))
            .unwrap()
    };
    trigger();
    assert!(wait_until(Duration::from_secs(5), || output
        .writes_begun
        .load(Ordering::SeqCst)
        == 1));
    trigger();
    assert!(
        wait_until(Duration::from_secs(5), || handle
            .stats()
            .output("p/log")
            .unwrap()
            .queue_depth
            == 1),
        "queue depth {}",
        handle.stats().output("p/log").unwrap().queue_depth
    );
    let asked = std::time::Instant::now();
    handle.reopen_outputs().unwrap();
    let waited = asked.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(20)).contains(&waited),
        "gave up after its bound: {waited:?}"
    );
    drop(held);
    pipeline.shutdown_and_wait();
    assert!(!output.log.lock().unwrap().contains(&"reopen"));
}

#[test]
fn an_output_restarted_gets_every_buffer_that_came_while_it_was_down() {
    let mut builder = PipelineBuilder::new(PipelineConfig::default());
    let emitted = Arc::new(AtomicU64::new(0));
    let mut metric = None;
    builder
        .with_plugin_context("src", |ctx| {
            metric = Some(gauge(ctx, "n"));
            let source = counting_source(metric.unwrap(), emitted.clone());
            ctx.add_source("s", source, SourceTrigger::every(Duration::from_secs(3600)));
            Ok(())
        })
        .unwrap();
    let first = CollectingOutput::new();
    let no_flush = unflushed;
    builder
        .with_plugin_context("out", |ctx| {
            ctx.add_output("o", Box::new(first.clone()), no_flush());
            Ok(())
        })
        .unwrap();
    let pipeline = builder.start().unwrap();
    let handle = pipeline.handle();
    let poll = || {
        handle
            .trigger_now(SourceSelector::All, Duration::from_secs(5))
            .unwrap()
    };
    poll();
    pipeline
        .stop_plugins_for_restart(&["out".to_owned()])
        .unwrap();
    // Polled while no output exists: held for the one that comes.
    poll();
    poll();
    let second = CollectingOutput::new();
    let mut extension = pipeline.extend();
    extension
        .with_plugin_context("out", |ctx| {
            ctx.add_output("o", Box::new(second.clone()), no_flush());
            Ok(())
        })
        .unwrap();
    extension.commit().unwrap();
    poll();
    pipeline.shutdown_and_wait();
    let metric = metric.unwrap();
    let mut values = values_of(&first.points(), metric);
    values.extend(values_of(&second.points(), metric));
    assert_eq!(
        values,
        (0..emitted.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "every point once, in order, across the restart"
    );
    assert!(
        values_of(&second.points(), metric).len() >= 3,
        "the two polls made while it was down reached the new output"
    );
}

#[test]
fn held_buffers_go_on_when_released_without_new_elements() {
    let mut builder = PipelineBuilder::new(PipelineConfig::default());
    let kept = CollectingOutput::new();
    let mut metric = None;
    builder
        .with_plugin_context("keep", |ctx| {
            metric = Some(gauge(ctx, "n"));
            let source = counting_source(metric.unwrap(), Arc::default());
            ctx.add_source("s", source, SourceTrigger::every(Duration::from_secs(3600)));
            let options = unflushed();
            ctx.add_output("o", Box::new(kept.clone()), options);
            Ok(())
        })
        .unwrap();
    builder
        .with_plugin_context("gone", |ctx| {
            ctx.add_transform("t", Box::<DelayByOne>::default());
            Ok(())
        })
        .unwrap();
    let pipeline = builder.start().unwrap();
    let handle = pipeline.handle();
    pipeline
        .stop_plugins_for_restart(&["gone".to_owned()])
        .unwrap();
    handle
        .trigger_now(SourceSelector::All, Duration::from_secs(5))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let metric = metric.unwrap();
    let before_release = values_of(&kept.points(), metric).len();
    // The start poll waits in its source's buffer until the trigger flushes
    // both in one buffer, which reaches the stage during the restart.
    assert_eq!(
        before_release, 0,
        "the poll made during the restart is held"
    );
    pipeline.release_held().unwrap();
    assert!(wait_until(Duration::from_secs(5), || values_of(
        &kept.points(),
        metric
    )
    .len()
        > before_release));
    pipeline.shutdown_and_wait();
    // The held buffer (start poll and trigger), then the shutdown's poll.
    assert_eq!(values_of(&kept.points(), metric), vec![0, 1, 2]);
}
