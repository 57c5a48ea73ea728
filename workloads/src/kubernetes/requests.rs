//! The HTTP side of the watcher, run on its short-lived I/O threads: the
//! requests (a GET with the token, a PodList read as it streams, a watch
//! whose event lines become [`WatchMsg`]s) and the [`Failure`]s they end
//! in, sorted by [`FailureKind`] and shortened for logs.

use std::io::{self, BufReader, Read};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use serde::de::DeserializeSeed;

use super::api::{ListSeed, Listed, Pod, PodFilter, Skip, Status, WatchEvent};
use super::index::{FailureKind, PodInfo};

/// The most of an error response's body read for its message.
const MAX_ERROR_BODY: u64 = 4096;

/// The longest server message kept in logs and stats.
const MAX_MESSAGE_CHARS: usize = 300;

// ---------------------------------------------------------------------------
// Failures.

/// One failed step.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) kind: FailureKind,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: shorten(&message.into()),
        }
    }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        short.push('…');
        short
    }
}

fn from_ureq(e: ureq::Error, what: &str) -> Failure {
    use FailureKind as K;
    match e {
        ureq::Error::Io(io) => from_io(io, what),
        ureq::Error::Timeout(t) => Failure::new(K::Timeout, format!("{what}: timed out ({t})")),
        ureq::Error::Rustls(e) => Failure::new(K::Tls, format!("{what}: TLS: {e}")),
        ureq::Error::Tls(e) => Failure::new(K::Tls, format!("{what}: TLS: {e}")),
        ureq::Error::Pem(e) => Failure::new(K::Tls, format!("{what}: TLS: {e}")),
        ureq::Error::HostNotFound => Failure::new(K::Connection, format!("{what}: host not found")),
        e => Failure::new(K::Connection, format!("{what}: {e}")),
    }
}

fn from_io(e: io::Error, what: &str) -> Failure {
    // A read error of ureq's body reader wraps ureq's own error.
    let e = match ureq::Error::from(e) {
        ureq::Error::Io(e) => e,
        other => return from_ureq(other, what),
    };
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return Failure::new(FailureKind::Tls, format!("{what}: TLS: {tls}"));
    }
    let kind = match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => FailureKind::Timeout,
        _ => FailureKind::Connection,
    };
    Failure::new(kind, format!("{what}: {e}"))
}

fn from_json(e: serde_json::Error, what: &str) -> Failure {
    if e.is_io() {
        return from_io(io::Error::from(e), what);
    }
    if e.is_eof() {
        return Failure::new(
            FailureKind::Connection,
            format!("{what}: the body ended early ({e})"),
        );
    }
    Failure::new(FailureKind::Decode, format!("{what}: unexpected JSON: {e}"))
}

/// The message of an error response: its `Status.message`, or its text.
fn error_message(body: ureq::Body) -> String {
    let mut bytes = Vec::new();
    // The message is only for the log: a body that cannot be read has none.
    let _ = body
        .into_reader()
        .take(MAX_ERROR_BODY)
        .read_to_end(&mut bytes);
    match serde_json::from_slice::<Status>(&bytes) {
        Ok(status) if !status.message.is_empty() => status.message,
        _ => shorten(&String::from_utf8_lossy(&bytes)),
    }
}

fn status_failure(status: u16, message: &str, what: &str) -> Failure {
    let kind = match status {
        401 => FailureKind::Unauthorized,
        403 => FailureKind::Forbidden,
        429 | 500..=599 => FailureKind::ServerError,
        _ => FailureKind::Rejected,
    };
    Failure::new(kind, format!("{what}: HTTP {status}: {message}"))
}

// ---------------------------------------------------------------------------
// Requests (on I/O threads).

/// Percent-encodes a query value.
pub(super) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The watch request from `rv` (none: from now), cut by the server after `seconds`.
pub(super) fn watch_url(pods_url: &str, rv: &str, seconds: u64) -> String {
    let mut url = format!("{pods_url}&watch=1");
    if !rv.is_empty() {
        url.push_str("&resourceVersion=");
        url.push_str(&encode(rv));
    }
    url.push_str(&format!(
        "&allowWatchBookmarks=true&timeoutSeconds={seconds}"
    ));
    url
}

/// One GET with the token; `body_limit` bounds the reading of the body.
fn get(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    body_limit: Duration,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let mut request = agent.get(url).header("Accept", "application/json");
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    request
        .config()
        .timeout_recv_body(Some(body_limit))
        .build()
        .call()
}

/// GETs and parses a PodList.
pub(super) fn fetch_list(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    timeout: Duration,
    filter: &PodFilter,
) -> Result<Listed, Failure> {
    let what = format!("listing pods at {url}");
    let response = get(agent, url, token, timeout).map_err(|e| from_ureq(e, &what))?;
    let status = response.status().as_u16();
    let body = response.into_body();
    if status != 200 {
        return Err(status_failure(status, &error_message(body), &what));
    }
    read_list(body.into_reader(), filter).map_err(|e| from_json(e, &what))
}

/// Parses a PodList body as it streams, keeping only the filter's pods.
pub(super) fn read_list(body: impl Read, filter: &PodFilter) -> serde_json::Result<Listed> {
    let mut de = serde_json::Deserializer::from_reader(BufReader::new(body));
    let listed = ListSeed { filter }.deserialize(&mut de)?;
    de.end()?;
    Ok(listed)
}

/// What an I/O thread tells the watcher during a watch.
pub(super) enum WatchMsg {
    /// The server accepted the watch.
    Accepted,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    Pod {
        change: Change,
        pod: Result<PodInfo, Skip>,
        resource_version: String,
    },
    /// `BOOKMARK`: the version to start from next.
    Bookmark(String),
    /// An event that could not be read (skipped).
    Undecodable(String),
    /// The end of the watch.
    End(WatchEnd),
}

#[derive(Clone, Copy)]
pub(super) enum Change {
    Added,
    Modified,
    Deleted,
}

pub(super) enum WatchEnd {
    /// The server closed it (its `timeoutSeconds`).
    Closed,
    /// 410 Gone: list again.
    Gone(String),
    Failed(Failure),
}

/// Runs a watch request and turns its events into messages.
pub(super) fn run_watch(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    body_limit: Duration,
    filter: &PodFilter,
    tx: &SyncSender<WatchMsg>,
) -> WatchEnd {
    let what = format!("watching pods at {url}");
    let response = match get(agent, url, token, body_limit) {
        Ok(r) => r,
        Err(e) => return WatchEnd::Failed(from_ureq(e, &what)),
    };
    let status = response.status().as_u16();
    let body = response.into_body();
    match status {
        200 => {}
        410 => return WatchEnd::Gone(error_message(body)),
        _ => return WatchEnd::Failed(status_failure(status, &error_message(body), &what)),
    }
    if tx.send(WatchMsg::Accepted).is_err() {
        return WatchEnd::Closed;
    }
    read_watch(body.into_reader(), filter, &what, |msg| {
        tx.send(msg).is_ok()
    })
}

/// Turns the events of a watch's body into messages for `send`, as they
/// come (one JSON object per line, never the whole body), until the body
/// ends, an event ends the watch, or `send` returns false (the watcher is gone).
pub(super) fn read_watch(
    body: impl Read,
    filter: &PodFilter,
    what: &str,
    mut send: impl FnMut(WatchMsg) -> bool,
) -> WatchEnd {
    let reader = BufReader::new(body);
    for event in serde_json::Deserializer::from_reader(reader).into_iter::<WatchEvent>() {
        let event = match event {
            Ok(e) => e,
            Err(e) => return WatchEnd::Failed(from_json(e, what)),
        };
        let change = match event.kind.as_str() {
            "ADDED" => Change::Added,
            "MODIFIED" => Change::Modified,
            "DELETED" => Change::Deleted,
            "BOOKMARK" => {
                let rv = serde_json::from_value::<Pod>(event.object)
                    .map(|p| p.metadata.resource_version)
                    .unwrap_or_default();
                if !send(WatchMsg::Bookmark(rv)) {
                    return WatchEnd::Closed;
                }
                continue;
            }
            "ERROR" => {
                let status = serde_json::from_value::<Status>(event.object).unwrap_or_default();
                if status.code == 410 {
                    return WatchEnd::Gone(status.message);
                }
                return WatchEnd::Failed(Failure::new(
                    FailureKind::WatchError,
                    format!(
                        "{what}: ERROR event {} {}: {}",
                        status.code, status.reason, status.message
                    ),
                ));
            }
            other => {
                log::debug!("kubernetes: {what}: event of unknown type {other:?} skipped");
                continue;
            }
        };
        let msg = match serde_json::from_value::<Pod>(event.object) {
            Ok(pod) => {
                let resource_version = pod.metadata.resource_version.clone();
                WatchMsg::Pod {
                    change,
                    pod: filter.info(pod),
                    resource_version,
                }
            }
            Err(e) => WatchMsg::Undecodable(format!("{what}: a {} event: {e}", event.kind)),
        };
        if !send(msg) {
            return WatchEnd::Closed;
        }
    }
    WatchEnd::Closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_percent_encoded() {
        assert_eq!(encode("spec.nodeName=node-1"), "spec.nodeName%3Dnode-1");
    }
}
