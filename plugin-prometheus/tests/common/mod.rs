//! Shared helpers of the plugin's tests: the real plugin in a test
//! pipeline, fed batches of points by hand, and HTTP clients for its
//! endpoint (ureq for ordinary scrapes, raw TCP for what a client library
//! would refuse to send).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alumet::measurement::{
    MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer, Timestamp,
};
use alumet::metrics::{Metric, MetricId, MetricKind, PrefixedUnit, Unit, UnitPrefix, ValueType};
use alumet::plugin::{Plugin, PluginDefinition};
use alumet::testing::{FnSource, RunningTest, TestPipeline};
use plugin_prometheus::{PrometheusConfig, PrometheusPlugin};

/// The metrics the test source registers: (name, unit, value type, kind).
pub fn fixture_metrics() -> Vec<Metric> {
    use MetricKind::*;
    use ValueType::*;
    let uj = PrefixedUnit {
        prefix: UnitPrefix::Micro,
        base: Unit::Joule,
    };
    vec![
        Metric::new("energy", Unit::Joule, F64, Delta, "Energy consumed."),
        Metric::new("power", Unit::Watt, F64, Gauge, "Power now."),
        Metric::new(
            "cpu_usage",
            Unit::Percent,
            F64,
            Gauge,
            "CPU usage in % of one CPU.",
        ),
        Metric::new("bytes_read", Unit::Byte, U64, Delta, "Bytes read."),
        Metric::new(
            "raw_energy",
            uj,
            U64,
            Counter,
            "A raw hardware \"counter\"\\total.",
        ),
        Metric::new("tasks", Unit::Unity, U64, Gauge, "Tasks."),
    ]
}

/// A point of a fixture metric, by name, at a fixed time.
#[derive(Clone, Debug)]
pub struct Spec {
    pub metric: &'static str,
    pub resource: Resource,
    pub consumer: ResourceConsumer,
    pub value: alumet::measurement::MeasurementValue,
    pub attributes: Vec<(&'static str, alumet::measurement::AttributeValue)>,
    pub timestamp_ms: u64,
}

pub fn spec(metric: &'static str, value: impl Into<alumet::measurement::MeasurementValue>) -> Spec {
    Spec {
        metric,
        resource: Resource::LocalMachine,
        consumer: ResourceConsumer::LocalMachine,
        value: value.into(),
        attributes: Vec::new(),
        timestamp_ms: 1_700_000_000_000,
    }
}

impl Spec {
    pub fn on(mut self, resource: Resource) -> Self {
        self.resource = resource;
        self
    }
    pub fn by(mut self, consumer: ResourceConsumer) -> Self {
        self.consumer = consumer;
        self
    }
    pub fn attr(
        mut self,
        key: &'static str,
        value: impl Into<alumet::measurement::AttributeValue>,
    ) -> Self {
        self.attributes.push((key, value.into()));
        self
    }
    pub fn at_ms(mut self, ms: u64) -> Self {
        self.timestamp_ms = ms;
        self
    }
}

/// What the next poll emits, given the ids of the registered metrics.
type Batch = Box<dyn FnOnce(&HashMap<String, MetricId>) -> Vec<MeasurementPoint> + Send>;
type Feed = Arc<Mutex<VecDeque<Batch>>>;

impl Spec {
    fn point(self, ids: &HashMap<String, MetricId>) -> MeasurementPoint {
        let mut p = MeasurementPoint::new(
            Timestamp::from_unix_nanos(self.timestamp_ms * 1_000_000),
            ids[self.metric],
            self.resource,
            self.consumer,
            self.value,
        );
        for (k, v) in self.attributes {
            p = p.with_attr(k, v);
        }
        p
    }
}

/// The plugin running in a test pipeline, with a source that emits the
/// batches given to [`Endpoint::push`], one per poll.
pub struct Endpoint {
    pub running: Option<RunningTest>,
    pub plugin: PrometheusPlugin,
    pub addr: SocketAddr,
    feed: Feed,
}

impl Endpoint {
    /// Starts with `config` (its listen_address is replaced by a free
    /// loopback port) and the metrics of [`fixture_metrics`].
    pub fn start(config: PrometheusConfig) -> Self {
        Self::with_metrics(config, fixture_metrics())
    }

    /// Starts with `config` and a source of `metrics`.
    pub fn with_metrics(mut config: PrometheusConfig, metrics: Vec<Metric>) -> Self {
        config.listen_address = "127.0.0.1:0".into();
        let mut plugin = PrometheusPlugin::init(config).unwrap();
        let feed: Feed = Arc::default();
        let mut t = TestPipeline::builder();
        let source_feed = feed.clone();
        t.plugin("fixture", move |ctx| {
            let mut ids: HashMap<String, MetricId> = HashMap::new();
            for m in metrics {
                let name = m.name.clone();
                ids.insert(name, ctx.create_metric(m)?);
            }
            let source = FnSource::new(move |buf: &mut MeasurementBuffer, _ts| {
                if let Some(batch) = source_feed.lock().unwrap().pop_front() {
                    buf.extend(batch(&ids));
                }
                Ok(())
            });
            ctx.add_source("feed", Box::new(source), TestPipeline::manual_trigger());
            Ok(())
        })
        .unwrap();
        t.start_plugin("prometheus", &mut plugin).unwrap();
        let addr = plugin.local_addr().unwrap();
        let running = t.start();
        Self {
            running: Some(running),
            plugin,
            addr,
            feed,
        }
    }

    /// Emits `batch` at the next poll, polls now, and waits until the
    /// endpoint has it (`scrapes` grows: the test scrapes until `ready`).
    pub fn push(&self, batch: Vec<Spec>) {
        self.push_with(Box::new(move |ids| {
            batch.into_iter().map(|s| s.point(ids)).collect()
        }));
    }

    /// Emits what `batch` makes at the next poll, and polls now.
    pub fn push_with(&self, batch: Batch) {
        self.feed.lock().unwrap().push_back(batch);
        self.running.as_ref().unwrap().trigger_all();
    }

    /// Pushes `batch` and scrapes (text) until `ready(body)` holds (5 s at most).
    pub fn push_and_wait(&self, batch: Vec<Spec>, ready: impl Fn(&str) -> bool) -> String {
        self.push(batch);
        self.scrape_until(ready)
    }

    pub fn scrape_until(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let body = self.scrape_text();
            if ready(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "the endpoint never got there:\n{body}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    pub fn scrape_text(&self) -> String {
        let (status, body) = get(&self.url(), &[]);
        assert_eq!(status, 200, "{body}");
        body
    }

    pub fn scrape_openmetrics(&self) -> String {
        let (status, body) = get(
            &self.url(),
            &[(
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )],
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Stops the pipeline, then the plugin (as the agent does).
    pub fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.finish();
        }
        self.plugin.stop().unwrap();
    }
}

/// An HTTP agent that returns 4xx/5xx as responses, not errors.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET with headers: status and body (ureq asks for gzip and decodes it).
pub fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = client().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    (status, body)
}

/// Sends `request` as raw bytes and reads until the server closes: the
/// status code and the raw response (head and body).
pub fn raw(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let status = std::str::from_utf8(&response[..response.len().min(12)])
        .ok()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// The sample lines of `body` (no comments), e.g. to look a series up.
pub fn samples(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
}

/// The value of the sample whose name and labels are exactly `series`.
pub fn value_of(body: &str, series: &str) -> Option<f64> {
    samples(body).into_iter().find_map(|l| {
        l.rsplit_once(' ')
            .filter(|(s, _)| *s == series)
            .map(|(_, v)| v.parse().unwrap())
    })
}

/// The body without the exporter's own families and the pipeline's
/// `alumet_dropped_points` (their `_created` is the time of the run), with
/// the sample lines of each family sorted (series order is not part of the
/// format).
pub fn normalised(body: &str, prefix: &str) -> String {
    let own = [
        format!("{prefix}prometheus_"),
        format!("{prefix}dropped_points"),
    ];
    let mut out = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let mut skipping = false;
    for line in body.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .or_else(|| line.strip_prefix("# UNIT "))
            .unwrap_or(line);
        if line.starts_with('#') {
            run.sort_unstable();
            out.append(&mut run);
            skipping = own.iter().any(|o| name.starts_with(o.as_str()));
            if !skipping || line == "# EOF" {
                out.push(line);
            }
        } else if !skipping {
            run.push(line);
        }
    }
    run.sort_unstable();
    out.append(&mut run);
    out.join("\n") + "\n"
}

/// Tries `f` every 10 ms for 5 s; whether it held once.
pub fn wait_until_true(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
