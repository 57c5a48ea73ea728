//! A tiny HTTP/1.1 server on 127.0.0.1 for failure cases: it records every
//! request (gunzipping bodies) and answers from a script indexed by request
//! number.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request received by the [`FakeServer`].
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    /// The body, gunzipped if it was sent with gzip.
    pub body: String,
    pub at: Instant,
}

impl Received {
    /// Number of lines (points) in the body.
    pub fn points(&self) -> usize {
        self.body.lines().filter(|l| !l.is_empty()).count()
    }
}

/// What the fake server answers: status, extra headers, body. Status 0
/// closes the connection without an answer.
pub type Answer = (u16, Vec<(String, String)>, String);

/// A tiny HTTP/1.1 server on 127.0.0.1 that records every request and
/// answers from a script indexed by request number (0-based).
pub struct FakeServer {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    /// Starts the server; `answer(n)` is called for the n-th request.
    pub fn start(answer: impl Fn(usize) -> Answer + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let count = AtomicU64::new(0);
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        serve(stream, &r, &count, &answer);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the requests of one connection (keep-alive) until it closes.
fn serve(
    stream: TcpStream,
    received: &Mutex<Vec<Received>>,
    count: &AtomicU64,
    answer: &impl Fn(usize) -> Answer,
) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut raw = vec![0; length];
        if reader.read_exact(&mut raw).is_err() {
            return;
        }
        let body = if headers.get("content-encoding").map(String::as_str) == Some("gzip") {
            let mut text = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut text)
                .unwrap();
            text
        } else {
            String::from_utf8(raw).unwrap()
        };
        let n = count.fetch_add(1, Ordering::Relaxed) as usize;
        received.lock().unwrap().push(Received {
            path,
            headers,
            body,
            at: Instant::now(),
        });
        let (status, extra, text) = answer(n);
        if status == 0 {
            // Script code for "drop the connection without answering".
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        let mut response = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n",
            text.len()
        );
        for (k, v) in extra {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&text);
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// The answer of a healthy server.
pub fn ok() -> Answer {
    (204, Vec::new(), String::new())
}
