//! The endpoint as a client sees it: only `GET /metrics` is served (404,
//! 405 otherwise), malformed and oversized requests get a 4xx and the
//! endpoint goes on, gzip when asked, stalled clients delay nobody,
//! concurrent scrapes are all served, and authentication (bearer, basic)
//! answers 401 without the right credentials.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
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
    assert_eq!(post.headers().get("allow").unwrap(), "GET");
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

#[test]
fn beyond_max_connections_new_connections_are_closed_and_counted() {
    let endpoint = with_data(PrometheusConfig {
        max_connections: 2,
        ..Default::default()
    });
    wait_for_data(&endpoint);
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(endpoint.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // Both slots taken: the next connection is closed without an answer.
    let refused = common::wait_until_true(|| {
        let (_, response) = raw(
            endpoint.addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        response.is_empty()
    });
    assert!(refused, "a third connection was served");
    drop(stalled);
    // Slots come back once the stalled clients leave.
    let body = endpoint.scrape_until(|b| {
        value_of(b, "alumet_prometheus_rejected_requests_total").is_some_and(|v| v >= 1.0)
    });
    assert!(body.contains("alumet_energy_joules_total{"), "{body}");
    endpoint.stop();
}
