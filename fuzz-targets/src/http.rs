//! HTTP from the network: requests to the Prometheus endpoint, and the
//! responses of InfluxDB and OTLP receivers (status, headers, error
//! messages, OTLP's `partial_success`). Anyone who can connect to the
//! endpoint writes the first; the server an output posts to (or whoever
//! sits in between) writes the second.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use alumet::measurement::{MeasurementPoint, Resource, ResourceConsumer, Timestamp};
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use alumet::pipeline::LossReporter;
use alumet::secret::Secret;
use alumet_delivery::{HttpTarget, HttpTransport, SendOutcome};
use plugin_influxdb::http::{ApiVersion, Auth, WriteTarget};
use plugin_opentelemetry::transport::{http_target, partial_success};
use plugin_opentelemetry::BodyFormat;
use plugin_prometheus::server::{self, Authorization, ServerHandle, Shared};
use plugin_prometheus::stats::ExporterStats;
use plugin_prometheus::store::{Store, StoreSettings};

/// The token of the fuzzed endpoint and outputs; never in a message.
const TOKEN: &str = "fuzz-token-5ecret";
/// `user:pass` in base64, the endpoint's other credential.
const BASIC: &str = "dXNlcjpwYXNz";

/// A store with a counter and a gauge, so that scrapes render families.
fn store() -> Store {
    let mut registry = MetricRegistry::new();
    let energy = registry
        .register(Metric::new(
            "rapl_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "Energy.",
        ))
        .expect("a new metric");
    let rss = registry
        .register(Metric::new(
            "process_memory_resident",
            Unit::Byte,
            ValueType::U64,
            MetricKind::Gauge,
            "Resident set size.",
        ))
        .expect("a new metric");
    let mut store = Store::new(
        StoreSettings {
            prefix: "alumet_".into(),
            series_ttl: Duration::from_secs(3600),
            max_series: 100,
        },
        Arc::new(ExporterStats::default()),
        LossReporter::default(),
    );
    let ts = Timestamp::now();
    let points = vec![
        MeasurementPoint::new(
            ts,
            energy,
            Resource::CpuPackage { id: 0 },
            ResourceConsumer::LocalMachine,
            12.5,
        ),
        MeasurementPoint::new(
            ts,
            rss,
            Resource::LocalMachine,
            ResourceConsumer::Process { pid: 42 },
            1_000_000u64,
        )
        .with_attr("exe", "a \"quoted\" name"),
    ];
    store.update(&points, &registry);
    store
}

/// The two endpoints: bearer token, basic credentials.
fn endpoints() -> &'static [(ServerHandle, &'static str); 2] {
    static SERVERS: OnceLock<[(ServerHandle, &'static str); 2]> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let start = |authorization: Authorization, credential: &'static str| {
            let shared = Arc::new(Shared {
                store: Arc::new(Mutex::new(store())),
                stats: Arc::new(ExporterStats::default()),
                prefix: "alumet_".into(),
                authorization,
            });
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
            let server = server::start(listener, None, shared, 64).expect("the server");
            (server, credential)
        };
        [
            start(Authorization::Bearer(Secret::new(TOKEN)), TOKEN),
            start(Authorization::Basic(Secret::new(BASIC)), BASIC),
        ]
    })
}

/// Sends `request`, closes the sending side, and reads the whole answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("the endpoint still accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a timeout");
    // The server may answer and close before reading everything.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// Requests to the Prometheus endpoint (whole HTTP/1.1 requests, several
/// pipelined): the server answers HTTP, keeps accepting connections, and
/// answers 200 only to a request that carries its credential.
pub fn prometheus_request(data: &[u8]) {
    for (server, credential) in endpoints() {
        let answer = exchange(server.local_addr(), data);
        if !answer.is_empty() {
            assert!(
                answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
                "{:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            );
        }
        let scraped = answer.windows(12).any(|w| w == b"HTTP/1.1 200");
        let carried = data
            .windows(credential.len())
            .any(|w| w == credential.as_bytes());
        assert!(!scraped || carried, "scraped without the credential");
    }
}

/// A response written as HTTP/1.1 (`HTTP/1.1 503 x`, `Name: value` lines,
/// an empty line, the body), as ureq would hand it over; `None` for what
/// ureq would refuse.
fn response(data: &[u8]) -> Option<ureq::http::Response<ureq::Body>> {
    let split = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (head, body) = (&data[..split], &data[split + 4..]);
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let mut builder = ureq::http::Response::builder().status(status);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim());
    }
    builder.body(ureq::Body::builder().data(body)).ok()
}

/// Checks an outcome against the status it came from, and that no message
/// holds a secret or is longer than the log line allows.
fn check_outcome(outcome: &SendOutcome, status: u16, secrets: &[&str]) {
    let messages: Vec<&str> = match outcome {
        SendOutcome::Delivered { partial } => {
            assert!((200..300).contains(&status), "{status}: {outcome:?}");
            partial.iter().map(|p| p.message.as_str()).collect()
        }
        SendOutcome::Retry { reason, .. } => {
            assert!(
                matches!(status, 408 | 429 | 500..=599),
                "{status}: {outcome:?}"
            );
            vec![reason.as_str()]
        }
        SendOutcome::Rejected { status: s, message } => {
            assert_eq!(*s, status);
            assert!(!(200..300).contains(s) && !matches!(s, 408 | 429 | 500..=599));
            vec![message.as_str()]
        }
        SendOutcome::Misconfigured { .. } => panic!("a response is not a TLS failure"),
    };
    for message in messages {
        // "HTTP 503: " and at most 300 characters of the server's.
        assert!(message.chars().count() <= 310, "{message}");
        for secret in secrets {
            assert!(!message.contains(secret), "{message}");
        }
    }
}

fn transport(target: HttpTarget) -> HttpTransport {
    HttpTransport::new(target, ureq::tls::TlsConfig::default())
}

/// An InfluxDB write's response (`X-Influxdb-Error`, JSON error bodies,
/// Retry-After), as the influxdb output's transport sorts it.
pub fn influxdb_response(data: &[u8]) {
    static TRANSPORT: OnceLock<HttpTransport> = OnceLock::new();
    let transport = TRANSPORT.get_or_init(|| {
        transport(
            WriteTarget {
                url: "http://127.0.0.1:8086".into(),
                api: ApiVersion::V2,
                org: "org".into(),
                bucket: "bucket".into(),
                database: String::new(),
                retention_policy: String::new(),
                auth: Auth::Token(Secret::new(TOKEN)),
            }
            .http_target(),
        )
    });
    let Some(response) = response(data) else {
        return;
    };
    let status = response.status().as_u16();
    let outcome = transport.outcome(response);
    check_outcome(&outcome, status, &[TOKEN]);
}

/// An OTLP/HTTP export's response: status and error bodies as for
/// InfluxDB, and a 2xx's `partial_success` in protobuf or JSON. The same
/// body is also read directly as both, with the points refused counted
/// only when positive.
pub fn otlp_response(data: &[u8]) {
    static TRANSPORT: OnceLock<HttpTransport> = OnceLock::new();
    let transport = TRANSPORT.get_or_init(|| {
        transport(http_target(
            "http://127.0.0.1:4318/v1/metrics",
            BodyFormat::Protobuf,
            vec![("api-key".to_owned(), Secret::new(TOKEN))],
        ))
    });
    for content_type in ["application/x-protobuf", "application/json"] {
        if let Some(p) = partial_success(content_type, data) {
            assert!(p.points > 0);
        }
    }
    let Some(response) = response(data) else {
        return;
    };
    let status = response.status().as_u16();
    let outcome = transport.outcome(response);
    check_outcome(&outcome, status, &[TOKEN]);
    if let SendOutcome::Delivered {
        partial: Some(partial),
    } = &outcome
    {
        assert!(partial.points > 0);
    }
}
