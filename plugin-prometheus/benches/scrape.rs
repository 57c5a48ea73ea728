//! Scrape benchmarks (`cargo bench -p plugin-prometheus --bench scrape`),
//! printed for people (recorded in BENCHMARKS.md):
//!
//! 1. rendering 100 000 series (text and OpenMetrics; plus gzip), on one thread;
//! 2. the exporter's memory per series: heap bytes requested (counting
//!    allocator) and resident-set growth, for 100 000 process series;
//! 3. 1 000 scrapes/s (gzip, keep-alive, as Prometheus does) of a
//!    1 000-series endpoint whose state changes 10 times a second: the CPU
//!    time of the server's threads, in % of one core.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alumet::measurement::{MeasurementPoint, Resource, ResourceConsumer, Timestamp};
use alumet::metrics::{Metric, MetricId, MetricKind, MetricRegistry, Unit, ValueType};
use alumet::pipeline::LossReporter;
use plugin_prometheus::exposition::Format;
use plugin_prometheus::server::{self, Authorization, Shared};
use plugin_prometheus::stats::ExporterStats;
use plugin_prometheus::store::{Store, StoreSettings};

struct Counting;
static HEAP_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP_BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn registry() -> (MetricRegistry, MetricId, MetricId) {
    let mut r = MetricRegistry::new();
    let cpu = r
        .register(Metric::new(
            "process_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "CPU time of a process.",
        ))
        .unwrap();
    let rss = r
        .register(Metric::new(
            "process_memory_resident",
            Unit::Byte,
            ValueType::U64,
            MetricKind::Gauge,
            "Resident set size.",
        ))
        .unwrap();
    (r, cpu, rss)
}

/// `n` series as procfs makes them: per process, CPU time in two modes and RSS.
fn points(n: usize, cpu: MetricId, rss: MetricId, round: u64) -> Vec<MeasurementPoint> {
    let ts = Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + round * 1_000_000_000);
    (0..n)
        .map(|i| {
            let pid = 10_000 + (i / 3) as u32;
            let exe = format!("worker-{}", pid % 97);
            let consumer = ResourceConsumer::Process { pid };
            match i % 3 {
                0 => MeasurementPoint::new(
                    ts,
                    cpu,
                    Resource::LocalMachine,
                    consumer,
                    0.01 * round as f64,
                )
                .with_attr("mode", "user")
                .with_attr("exe", exe),
                1 => MeasurementPoint::new(ts, cpu, Resource::LocalMachine, consumer, 0.002)
                    .with_attr("mode", "system")
                    .with_attr("exe", exe),
                _ => MeasurementPoint::new(
                    ts,
                    rss,
                    Resource::LocalMachine,
                    consumer,
                    1_000_000 + round,
                )
                .with_attr("exe", exe),
            }
        })
        .collect()
}

fn store(max_series: usize) -> Store {
    Store::new(
        StoreSettings {
            prefix: "alumet_".into(),
            series_ttl: Duration::from_secs(300),
            max_series,
        },
        Arc::new(ExporterStats::default()),
        LossReporter::default(),
    )
}

fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: i64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "median {:.1} ms, max {:.1} ms ({} runs)",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    )
}

fn render_and_memory() {
    const N: usize = 100_000;
    let (registry, cpu, rss) = registry();
    let batch = points(N, cpu, rss, 1);
    let heap_before = HEAP_BYTES.load(Relaxed);
    let rss_before = rss_bytes();
    let mut store = store(N);
    store.update(&batch, &registry);
    let heap = HEAP_BYTES.load(Relaxed) - heap_before;
    let rss_growth = rss_bytes() - rss_before;
    assert_eq!(store.series_count(), N);
    println!(
        "memory, {N} series: heap {:.0} bytes/series requested, resident set +{:.0} bytes/series",
        heap as f64 / N as f64,
        rss_growth as f64 / N as f64
    );
    let one = points(1, cpu, rss, 2);
    for (format, name) in [(Format::Text, "text"), (Format::OpenMetrics, "OpenMetrics")] {
        let mut times = Vec::new();
        let mut gzip_times = Vec::new();
        let mut size = 0;
        for _ in 0..15 {
            store.update(&one, &registry); // a change: nothing to reuse
            let t = Instant::now();
            let body = store.render(format);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            size = body.text.len();
            let t = Instant::now();
            let zipped = plugin_prometheus::gzip::gzip(body.deflated(), b"");
            gzip_times.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(zipped);
        }
        println!(
            "render {N} series, {name}: {} ({:.1} MB); gzip of it: {}",
            summary(times),
            size as f64 / 1e6,
            summary(gzip_times)
        );
    }
}

/// CPU time (user + system) of this process's threads whose name starts with `prefix`.
fn threads_cpu(prefix: &str) -> Duration {
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((name, rest)) = stat
            .split_once(") ")
            .map(|(a, b)| (a.rsplit_once('(').map(|x| x.1).unwrap_or(""), b))
        else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_s)
}

fn scrapes_per_second() {
    const N: usize = 1_000;
    const RATE: u32 = 1_000;
    const SECONDS: u64 = 5;
    let (registry, cpu, rss) = registry();
    let store = Arc::new(Mutex::new(store(10 * N)));
    store
        .lock()
        .unwrap()
        .update(&points(N, cpu, rss, 1), &registry);
    let stats = Arc::new(ExporterStats::default());
    let shared = Arc::new(Shared {
        store: store.clone(),
        stats: stats.clone(),
        prefix: "alumet_".into(),
        authorization: Authorization::Open,
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut server = server::start(listener, None, shared, 64).unwrap();
    let url = format!("http://{}/metrics", server.local_addr());

    // The output: the state changes 10 times a second, as with 100 ms polls.
    let running = Arc::new(AtomicBool::new(true));
    let updater = {
        let (running, store) = (running.clone(), store.clone());
        std::thread::spawn(move || {
            let mut round = 2;
            let mut cost = Duration::ZERO;
            while running.load(Relaxed) {
                let batch = points(N, cpu, rss, round);
                let t = Instant::now();
                store.lock().unwrap().update(&batch, &registry);
                cost += t.elapsed();
                round += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            cost
        })
    };
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let mut bytes = 0;
    let body = agent
        .get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(body.contains("worker-"));
    let cpu_before = threads_cpu("prometheus");
    let start = Instant::now();
    let total = RATE as u64 * SECONDS;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / RATE as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut response = agent.get(&url).call().unwrap();
        bytes += response.body_mut().read_to_vec().unwrap().len();
    }
    let wall = start.elapsed();
    let server_cpu = threads_cpu("prometheus") - cpu_before;
    running.store(false, Relaxed);
    let update_cost = updater.join().unwrap();
    server.stop();
    println!(
        "{total} scrapes of {N} series in {:.2} s ({:.0}/s, gzip, {:.0} KB each decoded): server threads {:.1} % of one core; state updates {:.2} % of one core",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        bytes as f64 / total as f64 / 1e3,
        100.0 * server_cpu.as_secs_f64() / wall.as_secs_f64(),
        100.0 * update_cost.as_secs_f64() / wall.as_secs_f64(),
    );
}

fn main() {
    // `cargo test --benches` runs this with `--bench`-less args; keep it quick then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    render_and_memory();
    scrapes_per_second();
}
