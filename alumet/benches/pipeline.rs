//! Pipeline benchmarks, printed for people:
//!
//! 1. throughput: 10 managed sources → 1 transform → null output, batches of
//!    1000 points, as fast as the poller can go; prints points per second.
//! 2. overhead: 10 sources at 1 kHz for 10 s → null output; prints the CPU
//!    time the process used, as a percentage of one core.
//!
//! Run with `cargo bench -p alumet` (`-- --quick` shortens both runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alumet::measurement::*;
use alumet::metrics::*;
use alumet::pipeline::*;

struct NullOutput(Arc<AtomicU64>);
impl Output for NullOutput {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        self.0.fetch_add(buffer.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct Scale;
impl Transform for Scale {
    fn apply(
        &mut self,
        buffer: &mut MeasurementBuffer,
        _ctx: &ElementContext,
    ) -> Result<(), TransformError> {
        for p in buffer.iter_mut() {
            if let MeasurementValue::F64(v) = &mut p.value {
                *v *= 1.5;
            }
        }
        Ok(())
    }
}

struct BatchSource {
    metric: MetricId,
    id: u32,
    per_poll: usize,
}
impl Source for BatchSource {
    fn poll(&mut self, into: &mut MeasurementBuffer, t: Timestamp) -> Result<(), PollError> {
        into.reserve(self.per_poll);
        for i in 0..self.per_poll {
            into.push(MeasurementPoint::new(
                t,
                self.metric,
                Resource::CpuCore { id: self.id },
                ResourceConsumer::LocalMachine,
                i as f64,
            ));
        }
        Ok(())
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data, getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

fn run(
    sources: u32,
    per_poll: usize,
    trigger: SourceTrigger,
    duration: Duration,
) -> (u64, f64, f64, PipelineStatsSnapshot) {
    let delivered = Arc::new(AtomicU64::new(0));
    let mut builder = PipelineBuilder::new(PipelineConfig::default());
    let d = delivered.clone();
    builder
        .with_plugin_context("bench", |ctx| {
            let metric = ctx.create_metric(Metric::new(
                "x",
                Unit::Watt,
                ValueType::F64,
                MetricKind::Gauge,
                "x",
            ))?;
            for id in 0..sources {
                ctx.add_source(
                    &format!("s{id}"),
                    Box::new(BatchSource {
                        metric,
                        id,
                        per_poll,
                    }),
                    trigger,
                );
            }
            ctx.add_transform("scale", Box::new(Scale));
            ctx.add_output("null", Box::new(NullOutput(d)), OutputOptions::default());
            Ok(())
        })
        .expect("bench plugin");
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let running = builder.start().expect("pipeline starts");
    std::thread::sleep(duration);
    let stats = running.shutdown_and_wait();
    let wall = t0.elapsed().as_secs_f64();
    (
        delivered.load(Ordering::Relaxed),
        wall,
        cpu_seconds() - cpu0,
        stats,
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 0.3 } else { 1.0 };

    println!("== throughput: 10 sources x 1000 points per poll -> 1 transform -> null output");
    let trigger = SourceTrigger::every(Duration::from_micros(50));
    let (points, wall, cpu, stats) = run(10, 1000, trigger, Duration::from_secs_f64(3.0 * scale));
    let dropped = stats.total_dropped_points;
    println!(
        "   {points} points in {wall:.2} s = {:.1} million points/s end to end (CPU {:.0} % of one core, {dropped} dropped)",
        points as f64 / wall / 1e6,
        100.0 * cpu / wall
    );

    println!(
        "== overhead: 10 sources at 1 kHz (1 point per poll, flushed every 1 s) -> null output"
    );
    let secs = 10.0 * scale;
    let trigger =
        SourceTrigger::every(Duration::from_millis(1)).flush_every(Duration::from_secs(1));
    let (points, wall, cpu, stats) = run(10, 1, trigger, Duration::from_secs_f64(secs));
    let polls: u64 = stats.sources.iter().map(|s| s.polls).sum();
    let missed: u64 = stats.sources.iter().map(|s| s.missed_ticks).sum();
    println!(
        "   {polls} polls ({:.0} per second per source, {missed} ticks missed), {points} points; CPU {cpu:.3} s over {wall:.2} s = {:.2} % of one core",
        polls as f64 / 10.0 / wall,
        100.0 * cpu / wall
    );
}
