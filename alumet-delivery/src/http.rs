//! The boundary to the server: one HTTP POST of an encoded batch, its
//! outcome sorted into delivered / retry / rejected / misconfigured.
//!
//! [`Transport`] is the small trait the sender thread talks to, so that its
//! retry logic can be tested without a network; [`HttpTransport`] is the
//! real one, on `ureq` with rustls and the TLS settings of [`crate::tls`].
//! Secrets (tokens, API keys) live only in header values; every message that
//! leaves this module is passed through [`Redactor`] in case a server or a
//! library echoes them.

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use crate::secret::{Redactor, Secret};

/// A partial success: the server took the request but refused some points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialRejection {
    /// Points the server says it rejected.
    pub points: usize,
    /// Its explanation (redacted, shortened).
    pub message: String,
}

/// The result of one write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// 2xx: the server has the points (all of them unless `partial` says otherwise).
    Delivered {
        /// Points refused inside an accepted request (OTLP `partial_success`).
        partial: Option<PartialRejection>,
    },
    /// Worth sending the same batch again: 5xx, 408, 429, a timeout or a
    /// connection error. `after` comes from a Retry-After header.
    Retry {
        /// What happened (redacted).
        reason: String,
        /// Wait at least this long.
        after: Option<Duration>,
    },
    /// The server refused the batch itself (4xx): sending it again would
    /// fail the same way.
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's message (redacted, shortened).
        message: String,
    },
    /// Nothing can get through until a person changes something (a TLS
    /// certificate that is expired, for another host or from an unknown
    /// CA; a client certificate the server refuses). The points stay
    /// buffered; the sender says so once, loudly, and retries slowly.
    Misconfigured {
        /// One line naming the host and the problem.
        reason: String,
    },
}

impl SendOutcome {
    /// 2xx with every point accepted.
    pub const DELIVERED: SendOutcome = SendOutcome::Delivered { partial: None };
}

/// Sends one encoded body.
pub trait Transport: Send {
    /// Sends `body` (gzip-compressed when `gzipped`) and waits at most
    /// `timeout` for the whole exchange.
    fn send(&mut self, body: &[u8], gzipped: bool, timeout: Duration) -> SendOutcome;
}

/// Reads a 2xx response body for refused points (OTLP's `partial_success`).
pub type SuccessInspector = fn(content_type: &str, body: &[u8]) -> Option<PartialRejection>;

/// Where and how one output posts its batches.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The full URL requests go to (no secret in it: it is logged).
    pub url: String,
    /// `Content-Type` of the bodies.
    pub content_type: &'static str,
    /// Extra headers; their values are secrets (never logged).
    pub headers: Vec<(String, Secret)>,
    /// Further text to redact from messages: the raw secrets inside header
    /// values (a server may echo the token without its `Token ` prefix).
    pub secrets: Vec<Secret>,
    /// A response header carrying the server's error message (InfluxDB's
    /// `X-Influxdb-Error`), preferred to the body when present.
    pub error_header: Option<&'static str>,
    /// `User-Agent`.
    pub user_agent: String,
    /// Reads 2xx bodies for partially refused requests.
    pub inspect_success: Option<SuccessInspector>,
}

/// The real transport, over HTTP(S).
pub struct HttpTransport {
    agent: ureq::Agent,
    target: HttpTarget,
    host: String,
    redactor: Redactor,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("url", &self.target.url)
            .field(
                "headers",
                &self
                    .target
                    .headers
                    .iter()
                    .map(|(k, _)| (k.as_str(), "<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The longest server message kept for the log.
const MAX_MESSAGE_CHARS: usize = 300;

/// The most of a response body read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

impl HttpTransport {
    /// A transport posting to `target` with `tls` (see [`crate::tls::TlsFiles::load`]).
    pub fn new(target: HttpTarget, tls: ureq::tls::TlsConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(target.user_agent.as_str())
            .tls_config(tls)
            .build()
            .new_agent();
        let host = target
            .url
            .parse::<ureq::http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| target.url.clone());
        let redactor = Redactor::new(
            target
                .headers
                .iter()
                .map(|(_, v)| v.expose().to_owned())
                .chain(target.secrets.iter().map(|s| s.expose().to_owned()))
                .collect(),
        );
        Self {
            agent,
            target,
            host,
            redactor,
        }
    }

    /// The URL (holds no secret).
    pub fn endpoint(&self) -> &str {
        &self.target.url
    }

    fn shorten(&self, message: &str) -> String {
        self.redactor
            .redact(message)
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect()
    }

    fn failure(&self, e: ureq::Error) -> SendOutcome {
        if let Some(tls) = tls_failure(&e) {
            return SendOutcome::Misconfigured {
                reason: format!(
                    "TLS with {} failed: {} (check ca_file, client_cert_file and client_key_file)",
                    self.host,
                    self.shorten(&tls)
                ),
            };
        }
        SendOutcome::Retry {
            reason: self.shorten(&e.to_string()),
            after: None,
        }
    }
}

/// The TLS failure inside a ureq error, as text, if it is one (an unknown
/// CA, a wrong host name...); `None` for other errors. The handshake runs
/// inside ureq's I/O, so its rustls error may come wrapped in an I/O error.
/// Shared with the plugins that read from HTTPS servers (Redfish).
pub fn tls_failure(e: &ureq::Error) -> Option<String> {
    let wrapped = match e {
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    if let Some(tls) = wrapped {
        return Some(tls.to_string());
    }
    match e {
        ureq::Error::Rustls(e) => Some(e.to_string()),
        ureq::Error::Tls(e) => Some(e.to_string()),
        _ => None,
    }
}

/// Checks an output's URL: http or https, a host, no credentials (URLs are
/// logged). `example` is shown in the error. Returns the parsed URL.
pub fn validate_url(
    key: &str,
    url: &str,
    example: &str,
) -> Result<ureq::http::Uri, alumet::plugin::PluginError> {
    let invalid = |reason: String| {
        alumet::plugin::PluginError::Config(alumet::config::ConfigError::Invalid {
            key: key.into(),
            reason,
        })
    };
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| invalid(format!("`{url}` is not a URL ({e}); e.g. \"{example}\"")))?;
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
        return Err(invalid(format!(
            "`{url}` must start with http:// or https://"
        )));
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid(format!("`{url}` has no host")));
    };
    if authority.as_str().contains('@') {
        return Err(invalid(
            "credentials do not belong in the URL (it is logged); use the secret keys of the plugin (token, headers: inline, _env or _file)".into(),
        ));
    }
    Ok(uri)
}

/// Parses a Retry-After header given in seconds (the HTTP-date form is
/// rare for write APIs and falls back to the backoff).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Sorts an HTTP status into an outcome.
pub fn classify_status(status: u16, message: String, retry_after: Option<Duration>) -> SendOutcome {
    match status {
        200..=299 => SendOutcome::DELIVERED,
        429 | 503 => SendOutcome::Retry {
            reason: format!("HTTP {status}: {message}"),
            after: retry_after,
        },
        408 | 500..=599 => SendOutcome::Retry {
            reason: format!("HTTP {status}: {message}"),
            after: None,
        },
        _ => SendOutcome::Rejected { status, message },
    }
}

impl Transport for HttpTransport {
    fn send(&mut self, body: &[u8], gzipped: bool, timeout: Duration) -> SendOutcome {
        let mut request = self
            .agent
            .post(&self.target.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", self.target.content_type);
        if gzipped {
            request = request.header("Content-Encoding", "gzip");
        }
        for (name, value) in &self.target.headers {
            request = request.header(name.as_str(), value.expose());
        }
        match request.send(body) {
            Ok(response) => self.outcome(response),
            Err(e) => self.failure(e),
        }
    }
}

/// A response header's value as text (`None` when absent or not visible
/// ASCII), for every client of a ureq response (the outputs, Redfish).
pub fn response_header<B>(response: &ureq::http::Response<B>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl HttpTransport {
    /// Sorts the server's response into an outcome: its status, its error
    /// message (redacted, shortened) from the error header or the body, its
    /// Retry-After, and for a 2xx the points it says it refused. Public so
    /// that responses can be tested and fuzzed without a server.
    pub fn outcome(&self, mut response: ureq::http::Response<ureq::Body>) -> SendOutcome {
        let status = response.status().as_u16();
        let header = |name: &str| response_header(&response, name);
        let content_type = header("Content-Type").unwrap_or_default();
        let retry_after = header("Retry-After").and_then(|v| parse_retry_after(&v));
        let header_message = self.target.error_header.and_then(header);
        let success = (200..300).contains(&status);
        if success && self.target.inspect_success.is_none() {
            return SendOutcome::DELIVERED;
        }
        let mut body_bytes = Vec::new();
        let read = response
            .body_mut()
            .as_reader()
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut body_bytes);
        if success {
            let partial = match (read, self.target.inspect_success) {
                (Ok(_), Some(inspect)) => inspect(&content_type, &body_bytes).map(|mut p| {
                    p.message = self.shorten(&p.message);
                    p
                }),
                _ => None,
            };
            return SendOutcome::Delivered { partial };
        }
        let message = header_message
            .unwrap_or_else(|| String::from_utf8_lossy(&body_bytes).trim().to_owned());
        classify_status(status, self.shorten(&message), retry_after)
    }
}

/// Compresses `body` with gzip (fast level) into `out` (cleared first).
pub fn gzip(body: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    let mut encoder =
        flate2::write::GzEncoder::new(std::mem::take(out), flate2::Compression::fast());
    encoder.write_all(body)?;
    *out = encoder.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let target = HttpTarget {
            url: "http://127.0.0.1:1/x".into(),
            content_type: "text/plain",
            headers: vec![("Authorization".into(), Secret::new("Token s3cr3t-token"))],
            secrets: vec![Secret::new("s3cr3t-token")],
            error_header: None,
            user_agent: "test".into(),
            inspect_success: None,
        };
        let t = HttpTransport::new(target.clone(), ureq::tls::TlsConfig::default());
        let debug = format!("{target:?} {t:?}");
        assert!(!debug.contains("s3cr3t-token"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(t.shorten("bad Token s3cr3t-token!"), "bad <redacted>!");
        assert_eq!(t.shorten("bad s3cr3t-token!"), "bad <redacted>!");
    }

    #[test]
    fn statuses_are_sorted_into_outcomes() {
        assert_eq!(
            classify_status(204, String::new(), None),
            SendOutcome::DELIVERED
        );
        assert!(matches!(
            classify_status(503, "x".into(), Some(Duration::from_secs(3))),
            SendOutcome::Retry { after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify_status(429, "x".into(), None),
            SendOutcome::Retry { .. }
        ));
        assert!(matches!(
            classify_status(500, "x".into(), Some(Duration::from_secs(3))),
            SendOutcome::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify_status(400, "bad".into(), None),
            SendOutcome::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            classify_status(401, "auth".into(), None),
            SendOutcome::Rejected { status: 401, .. }
        ));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn urls_need_a_scheme_a_host_and_no_credentials() {
        assert!(validate_url("url", "https://db:8086", "x").is_ok());
        for bad in [
            "localhost:8086",
            "ftp://x",
            "http://u:p@host:8086",
            "http://",
        ] {
            let err = validate_url("url", bad, "x").unwrap_err().to_string();
            assert!(err.contains("url"), "{bad}: {err}");
        }
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"m value=1i 1\n".repeat(100);
        let mut out = Vec::new();
        gzip(&body, &mut out).unwrap();
        assert!(out.len() < body.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }
}
