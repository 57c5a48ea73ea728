//! The endpoint as a client sees it: only `GET` and `HEAD /metrics` are
//! served (404, 405, 501 otherwise, 400 without Host, as RFC 9110/9112
//! say), malformed and oversized requests get a 4xx and the endpoint goes
//! on, gzip when asked, stalled clients delay nobody, clients trickling
//! their heads give their slots up to scrapers, a connection finding every
//! slot serving waits for one, concurrent scrapes are all served, and authentication (bearer, basic) answers 401 without the
//! right credentials.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alumet::measurement::Resource;
use common::*;
use plugin_prometheus::PrometheusConfig;

fn with_data(config: PrometheusConfig) -> Endpoint {
    let endpoint = Endpoint::start(config);
    endpoint.push(vec![spec("energy", 1.5)
        .on(Resource::CpuPackage { id: 0 })
        .attr("domain", "package")]);
    endpoint
}

fn wait_for_data(endpoint: &Endpoint) {
    endpoint.scrape_until(|b| b.contains("alumet_energy_joules_total{"));
}

#[test]
fn only_get_metrics_is_served_and_bad_requests_get_a_4xx() {
    let endpoint = with_data(PrometheusConfig::default());
    wait_for_data(&endpoint);
    let base = format!("http://{}", endpoint.addr);
    assert_eq!(get(&format!("{base}/"), &[]).0, 404);
    assert_eq!(get(&format!("{base}/metrics/x"), &[]).0, 404);
    assert_eq!(get(&format!("{base}/metricsx?a=b"), &[]).0, 404);
    assert_eq!(get(&format!("{base}/metrics?x=1"), &[]).0, 200);
    let post = client().post(&endpoint.url()).send("x").unwrap();
    assert_eq!(post.status().as_u16(), 405);
    assert_eq!(post.headers().get("allow").unwrap(), "GET, HEAD");
    let (status, _) = raw(
        endpoint.addr,
        b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);

    // Malformed: hyper answers 400 and closes; the endpoint goes on.
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
    ] {
        let (status, response) = raw(endpoint.addr, garbage);
        assert_eq!(status, 400, "{:?}", String::from_utf8_lossy(&response));
    }
    // Oversized head (64 KiB header): refused with a 4xx (hyper: 431), never read whole.
    let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let (status, _) = raw(endpoint.addr, &big);
    assert!((400..500).contains(&status), "oversized head got {status}");
    // A body nobody asked for, announced as huge: answered, never read.
    let started = Instant::now();
    let (status, _) = raw(
        endpoint.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\nabc",
    );
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (status, _) = raw(
        endpoint.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    assert!(status == 200 || status == 400, "{status}");
    // A connection closed in the middle of a request.
    drop(
        TcpStream::connect(endpoint.addr)
            .unwrap()
            .write_all(b"GET /met"),
    );

    let body = endpoint.scrape_text();
    assert!(body.contains("alumet_energy_joules_total{"), "{body}");
    // 404 x3, 405 x2 so far.
    assert_eq!(
        value_of(&body, "alumet_prometheus_rejected_requests_total"),
        Some(5.0),
        "{body}"
    );
    endpoint.stop();
}

#[test]
fn gzip_when_accepted_and_the_same_body() {
    let endpoint = with_data(PrometheusConfig::default());
    wait_for_data(&endpoint);
    let request = |encoding: &str| {
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {encoding}\r\nConnection: close\r\n\r\n")
    };
    let split = |response: &[u8]| {
        let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&response[..at]).to_ascii_lowercase(),
            response[at + 4..].to_vec(),
        )
    };
    let (status, response) = raw(endpoint.addr, request("gzip").as_bytes());
    assert_eq!(status, 200);
    let (head, body) = split(&response);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut unzipped)
        .unwrap();

    let (_, response) = raw(endpoint.addr, request("identity").as_bytes());
    let (head, plain) = split(&response);
    assert!(!head.contains("content-encoding"), "{head}");
    let plain = String::from_utf8(plain).unwrap();
    // Same families; only the scrape counter moved.
    let strip = |b: &str| normalised(b, "alumet_");
    assert_eq!(strip(&unzipped), strip(&plain));
    assert!(
        unzipped.contains("alumet_energy_joules_total{"),
        "{unzipped}"
    );
    endpoint.stop();
}

#[test]
fn stalled_clients_delay_no_one_and_concurrent_scrapes_are_all_served() {
    let endpoint = with_data(PrometheusConfig::default());
    wait_for_data(&endpoint);
    // Clients that never finish their request, or never read their response.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(endpoint.addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        stalled.push(s);
    }
    for _ in 0..8 {
        let mut s = TcpStream::connect(endpoint.addr).unwrap();
        for _ in 0..50 {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
        }
        stalled.push(s);
    }
    let url = endpoint.url();
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| get(&url, &[]))
                    .filter(|(status, body)| {
                        *status == 200 && body.contains("alumet_energy_joules_total{")
                    })
                    .count()
            })
        })
        .collect();
    let served: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(served, 200);
    // Far below the 10 s a stalled head may take: nobody waited for them.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
    endpoint.stop();
}

#[test]
fn bearer_token_required_when_configured() {
    let endpoint = with_data(PrometheusConfig {
        bearer_token: "tok-123".into(),
        ..Default::default()
    });
    let url = endpoint.url();
    let (status, _) = get(&url, &[]);
    assert_eq!(status, 401);
    let response = client().get(&url).call().unwrap();
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer realm=\"alumet\""
    );
    assert_eq!(get(&url, &[("Authorization", "Bearer tok-124")]).0, 401);
    assert_eq!(get(&url, &[("Authorization", "Bearer tok-12")]).0, 401);
    assert_eq!(get(&url, &[("Authorization", "Basic tok-123")]).0, 401);
    assert_eq!(get(&url, &[("Authorization", "tok-123")]).0, 401);
    let (status, body) = get(&url, &[("Authorization", "Bearer tok-123")]);
    assert_eq!(status, 200);
    assert!(
        body.contains("alumet_prometheus_rejected_requests_total 6"),
        "{body}"
    );
    assert_eq!(get(&url, &[("Authorization", "bearer tok-123")]).0, 200);
    endpoint.stop();
}

#[test]
fn basic_authentication_with_the_password_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "open sesame\n").unwrap();
    let endpoint = with_data(PrometheusConfig {
        basic_username: "Aladdin".into(),
        basic_password_file: file.display().to_string(),
        ..Default::default()
    });
    let url = endpoint.url();
    assert_eq!(get(&url, &[]).0, 401);
    assert_eq!(
        get(
            &url,
            &[("Authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZg==")]
        )
        .0,
        401
    );
    assert_eq!(
        get(
            &url,
            &[("Authorization", "Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==")]
        )
        .0,
        401
    );
    assert_eq!(
        get(
            &url,
            &[("Authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")]
        )
        .0,
        200
    );
    endpoint.stop();
}

/// The head of a raw response, lower-cased, and what came after it.
fn head_and_rest(response: &[u8]) -> (String, Vec<u8>) {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(response)));
    (
        String::from_utf8_lossy(&response[..at]).to_ascii_lowercase(),
        response[at + 4..].to_vec(),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[test]
fn head_options_connect_and_a_missing_host_are_answered_as_the_rfcs_say() {
    let endpoint = with_data(PrometheusConfig::default());
    wait_for_data(&endpoint);
    let addr = endpoint.addr;
    let ask = |request: &str| raw(addr, request.as_bytes());

    // HEAD: GET's status and headers, no body.
    let (status, get) = ask("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    let (get_head, get_body) = head_and_rest(&get);
    let (status, response) = ask("HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    let (head_head, head_body) = head_and_rest(&response);
    assert!(
        head_body.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&head_body)
    );
    for name in ["content-type", "vary"] {
        assert_eq!(header(&head_head, name), header(&get_head, name), "{name}");
        assert!(header(&head_head, name).is_some(), "{head_head}");
    }
    // The length of the body GET would send (only the scrape counter's digits may differ).
    let length: usize = header(&head_head, "content-length")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        length.abs_diff(get_body.len()) <= 4,
        "{length} vs {}",
        get_body.len()
    );
    // On one connection: HEAD's answer has no body, so GET's answer follows it at once.
    let (_, both) = ask(
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (_, after_head) = head_and_rest(&both);
    assert!(
        after_head.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&after_head)
    );
    assert_eq!(
        ask("HEAD /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0,
        404
    );

    // Methods that exist but are not served here: 405, and what is allowed.
    for request in [
        "OPTIONS /metrics HTTP/1.1\r\nHost: x\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n",
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n",
        "PUT /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n",
        "TRACE /metrics HTTP/1.1\r\nHost: x\r\n",
        "PATCH /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n",
    ] {
        let (status, response) = ask(&format!("{request}Connection: close\r\n\r\n"));
        assert_eq!(status, 405, "{request:?}");
        let (head, _) = head_and_rest(&response);
        assert_eq!(header(&head, "allow"), Some("get, head"), "{request:?}");
    }
    // A method nobody knows: 501; a known method on an unknown path: 404.
    assert_eq!(
        ask("BREW /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0,
        501
    );
    assert_eq!(
        ask("POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .0,
        404
    );
    // `*` is for OPTIONS only.
    assert_eq!(
        ask("GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0,
        400
    );

    // Host: required once in HTTP/1.1; optional in HTTP/1.0.
    assert_eq!(
        ask("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").0,
        400
    );
    assert_eq!(
        ask("HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").0,
        400
    );
    assert_eq!(
        ask("GET /metrics HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n").0,
        400
    );
    assert_eq!(ask("GET /metrics HTTP/1.0\r\n\r\n").0, 200);

    // Still serving, and every refusal above counted.
    let body = endpoint.scrape_text();
    assert!(body.contains("alumet_energy_joules_total{"), "{body}");
    assert_eq!(
        value_of(&body, "alumet_prometheus_rejected_requests_total"),
        Some(14.0),
        "{body}"
    );
    // A HEAD is not a scrape.
    let scrapes = |b: &str| value_of(b, "alumet_prometheus_scrapes_total").unwrap();
    let before = scrapes(&body);
    for _ in 0..3 {
        assert_eq!(
            ask("HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0,
            200
        );
    }
    assert_eq!(scrapes(&endpoint.scrape_text()), before + 1.0);
    endpoint.stop();
}

#[test]
fn when_every_slot_is_taken_the_connection_waiting_longest_for_its_head_gives_way() {
    let endpoint = with_data(PrometheusConfig {
        max_connections: 2,
        ..Default::default()
    });
    wait_for_data(&endpoint);
    let stalled = |ms| {
        let mut s = TcpStream::connect(endpoint.addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        s
    };
    // Time for the server to read each and find its head incomplete.
    let (mut oldest, mut younger) = (stalled(200), stalled(200));
    // Both slots wait for a head: a scrape still gets through, in the oldest one's slot.
    let body = endpoint.scrape_text();
    assert!(body.contains("alumet_energy_joules_total{"), "{body}");
    oldest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(oldest.read(&mut buf), Ok(0) | Err(_)),
        "the oldest stalled connection was closed"
    );
    younger
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let still_open = younger.read(&mut buf).unwrap_err().kind();
    assert!(
        matches!(still_open, ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{still_open:?}"
    );
    // The scrape itself took a slot (the younger's is the other): its own
    // evictions, and this one's, are counted.
    let body = endpoint.scrape_text();
    assert!(
        value_of(&body, "alumet_prometheus_evicted_connections_total").is_some_and(|v| v >= 1.0),
        "{body}"
    );
    endpoint.stop();
}

#[test]
fn connections_that_send_nothing_give_way_after_a_second() {
    let endpoint = with_data(PrometheusConfig {
        max_connections: 2,
        ..Default::default()
    });
    wait_for_data(&endpoint);
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(endpoint.addr).unwrap())
        .collect();
    // A scrape waits for the older silent one's grace (1 s), then takes its slot.
    let started = Instant::now();
    let body = endpoint.scrape_text();
    let took = started.elapsed();
    assert!(body.contains("alumet_energy_joules_total{"), "{body}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let mut buf = [0u8; 16];
    let mut oldest = &silent[0];
    oldest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        matches!(oldest.read(&mut buf), Ok(0) | Err(_)),
        "the oldest silent connection was closed"
    );
    endpoint.stop();
}

#[test]
fn when_every_slot_is_serving_a_request_a_new_connection_waits_for_one() {
    let endpoint = with_data(PrometheusConfig {
        max_connections: 2,
        ..Default::default()
    });
    // A body of about a megabyte, so that responses nobody reads fill the socket buffers.
    let padding = "p".repeat(300);
    let series: Vec<_> = (0..3000)
        .map(|i| {
            spec("power", 1.0)
                .on(Resource::CpuCore { id: i })
                .attr("padding", padding.clone())
        })
        .collect();
    endpoint.push_and_wait(series, |b| b.len() > 1_000_000);
    // Requests sent, responses never read: once the buffers are full the
    // slots stay serving (until the 30 s response deadline).
    let pipelined = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(40);
    let stuck: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(endpoint.addr).unwrap();
            s.write_all(pipelined.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // A third connection is neither served nor closed: it waits its turn.
    let mut third = TcpStream::connect(endpoint.addr).unwrap();
    third
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut first_bytes = [0u8; 12];
    let waiting = third.read(&mut first_bytes).unwrap_err().kind();
    assert!(
        matches!(waiting, ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{waiting:?}: {:?}",
        String::from_utf8_lossy(&first_bytes)
    );
    // A slot comes back once a stuck client leaves: the third is served.
    drop(stuck);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = Vec::new();
    let _ = third.read_to_end(&mut response);
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&response[..response.len().min(200)])
    );
    // Serving slots were never taken.
    let body = endpoint.scrape_text();
    assert_eq!(
        value_of(&body, "alumet_prometheus_evicted_connections_total"),
        Some(0.0),
        "{}",
        &body[body.len().saturating_sub(3000)..]
    );
    endpoint.stop();
}

/// A client that sends the head of a GET one byte every `interval`, never
/// finishing, and connects again as soon as the endpoint closes it.
fn trickler(
    addr: SocketAddr,
    interval: Duration,
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicUsize>,
) {
    let head = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
        "s".repeat(1000)
    );
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        connects.fetch_add(1, Ordering::Relaxed);
        s.set_read_timeout(Some(interval)).unwrap();
        let mut buf = [0u8; 256];
        for byte in head.as_bytes() {
            if stop.load(Ordering::Relaxed) || s.write_all(&[*byte]).is_err() {
                break;
            }
            // Wait for the next byte's time, or for the endpoint to close us.
            match s.read(&mut buf) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                _ => break,
            }
        }
    }
}

/// Issue #30: as many slow clients as `max_connections` and more, each
/// trickling a head a byte at a time and reconnecting when closed, used to
/// hold every slot (0 of 24 scrapes answered). Now every scrape is
/// answered, each within 5 s (half the head deadline: no scrape waited
/// for a trickler to time out; in practice milliseconds).
#[test]
fn clients_trickling_their_heads_and_reconnecting_never_lock_scrapes_out() {
    const SLOW: usize = 128; // twice max_connections
    let endpoint = with_data(PrometheusConfig::default());
    wait_for_data(&endpoint);
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicUsize::new(0));
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            let (addr, stop, connects) = (endpoint.addr, stop.clone(), connects.clone());
            std::thread::spawn(move || trickler(addr, Duration::from_millis(200), stop, connects))
        })
        .collect();
    // Every slot taken, and as many clients again knocking.
    assert!(common::wait_until_true(
        || connects.load(Ordering::Relaxed) > SLOW
    ));
    std::thread::sleep(Duration::from_millis(500));

    let scrapers: Vec<_> = (0..4)
        .map(|_| {
            let addr = endpoint.addr;
            std::thread::spawn(move || {
                (0..6)
                    .map(|_| {
                        let started = Instant::now();
                        let (status, response) = raw(
                            addr,
                            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        );
                        let took = started.elapsed();
                        let served = status == 200
                            && String::from_utf8_lossy(&response)
                                .contains("alumet_energy_joules_total{");
                        std::thread::sleep(Duration::from_millis(100));
                        (served, took)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let scrapes: Vec<(bool, Duration)> = scrapers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let body = endpoint.scrape_text();
    stop.store(true, Ordering::Relaxed);
    for t in slow {
        t.join().unwrap();
    }
    let served = scrapes.iter().filter(|(ok, _)| *ok).count();
    let slowest = scrapes.iter().map(|(_, d)| *d).max().unwrap();
    assert_eq!(served, 24, "{scrapes:?}");
    assert!(slowest < Duration::from_secs(5), "{scrapes:?}");
    assert!(
        value_of(&body, "alumet_prometheus_evicted_connections_total").is_some_and(|v| v >= 24.0),
        "{}",
        &body[body.len().saturating_sub(2000)..]
    );
    eprintln!(
        "{SLOW} slow clients ({} connections): 24/24 scrapes served, the slowest in {slowest:?}",
        connects.load(Ordering::Relaxed)
    );
    endpoint.stop();
}
