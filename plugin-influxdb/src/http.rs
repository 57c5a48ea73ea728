//! The boundary to the server: one HTTP write request, its outcome sorted
//! into delivered / retry / rejected.
//!
//! [`Transport`] is the small trait the sender thread talks to, so that its
//! retry logic can be tested without a network; [`HttpTransport`] is the
//! real one, on `ureq` with rustls. Secrets (the token or password) live
//! only in the `Authorization` header value; every message that leaves this
//! module is passed through [`Redactor`] in case a server or a library
//! echoes them.

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

/// Which write API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    /// `POST /api/v2/write?org=&bucket=&precision=ns` with `Authorization:
    /// Token …`: InfluxDB 2.x and 3.x, VictoriaMetrics.
    V2,
    /// `POST /write?db=&rp=&precision=ns` with optional basic auth:
    /// InfluxDB 1.x (and VictoriaMetrics).
    V1,
}

pub use alumet::secret::Secret;

/// How requests authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Token <token>` (v2; InfluxDB 1.8+ also accepts it on v1).
    Token(Secret),
    /// HTTP basic auth (InfluxDB 1.x users).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    /// Base URL of the server, e.g. `http://localhost:8086`.
    pub url: String,
    /// API version.
    pub api: ApiVersion,
    /// v2 organisation (omitted when empty).
    pub org: String,
    /// v2 bucket.
    pub bucket: String,
    /// v1 database.
    pub database: String,
    /// v1 retention policy (omitted when empty).
    pub retention_policy: String,
    /// Authentication.
    pub auth: Auth,
}

impl WriteTarget {
    /// The full write URL, with its query string percent-encoded.
    pub fn endpoint(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let mut url = String::with_capacity(base.len() + 64);
        url.push_str(base);
        let mut params: Vec<(&str, &str)> = Vec::new();
        match self.api {
            ApiVersion::V2 => {
                url.push_str("/api/v2/write");
                if !self.org.is_empty() {
                    params.push(("org", &self.org));
                }
                params.push(("bucket", &self.bucket));
            }
            ApiVersion::V1 => {
                url.push_str("/write");
                params.push(("db", &self.database));
                if !self.retention_policy.is_empty() {
                    params.push(("rp", &self.retention_policy));
                }
            }
        }
        params.push(("precision", "ns"));
        for (i, (key, value)) in params.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(key);
            url.push('=');
            percent_encode(value, &mut url);
        }
        url
    }

    /// The `Authorization` header value, if any. It contains the secret.
    fn authorization(&self) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Token(token) => Some(format!("Token {}", token.expose())),
            Auth::Basic { username, password } => Some(
                alumet::secret::http_basic_authorization(username, password)
                    .expose()
                    .to_owned(),
            ),
        }
    }

    fn secrets(&self) -> Vec<String> {
        match &self.auth {
            Auth::None => Vec::new(),
            Auth::Token(t) => vec![t.expose().to_owned()],
            Auth::Basic { password, .. } => vec![password.expose().to_owned()],
        }
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved bytes).
fn percent_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// Removes secrets from text that may be logged.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Redacts these secrets (empty ones are ignored).
    pub fn new(secrets: Vec<String>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }
}

/// The result of one write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// 2xx: the server has the points.
    Delivered,
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
}

/// Sends one body of line protocol.
pub trait Transport: Send {
    /// Sends `body` (gzip-compressed when `gzipped`) and waits at most
    /// `timeout` for the whole exchange.
    fn send(&mut self, body: &[u8], gzipped: bool, timeout: Duration) -> SendOutcome;
}

/// The real transport, over HTTP(S).
pub struct HttpTransport {
    agent: ureq::Agent,
    endpoint: String,
    authorization: Option<String>,
    redactor: Redactor,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("endpoint", &self.endpoint)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The longest server message kept for the log.
const MAX_MESSAGE_CHARS: usize = 300;

impl HttpTransport {
    /// A transport writing to `target`.
    pub fn new(target: &WriteTarget) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("alumet-influxdb/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Self {
            agent,
            endpoint: target.endpoint(),
            authorization: target.authorization(),
            redactor: Redactor::new(target.secrets()),
        }
    }

    /// The write URL (holds no secret).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Parses a Retry-After header given in seconds (the HTTP-date form is
/// rare for write APIs and falls back to the backoff).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Sorts an HTTP status into an outcome.
pub fn classify_status(status: u16, message: String, retry_after: Option<Duration>) -> SendOutcome {
    match status {
        200..=299 => SendOutcome::Delivered,
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
            .post(&self.endpoint)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "text/plain; charset=utf-8");
        if gzipped {
            request = request.header("Content-Encoding", "gzip");
        }
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth.as_str());
        }
        let mut response = match request.send(body) {
            Ok(r) => r,
            Err(e) => {
                return SendOutcome::Retry {
                    reason: self.redactor.redact(&e.to_string()),
                    after: None,
                }
            }
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return SendOutcome::Delivered;
        }
        let retry_after = response
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // InfluxDB puts its message in a header and in a JSON body; others
        // only in the body. Read a bounded prefix of it.
        let header_message = response
            .headers()
            .get("X-Influxdb-Error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body_text = Vec::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(4096)
            .read_to_end(&mut body_text);
        let message =
            header_message.unwrap_or_else(|| String::from_utf8_lossy(&body_text).trim().to_owned());
        let message: String = self
            .redactor
            .redact(&message)
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect();
        classify_status(status, message, retry_after)
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

    fn target(api: ApiVersion) -> WriteTarget {
        WriteTarget {
            url: "http://127.0.0.1:8086/".into(),
            api,
            org: "my org".into(),
            bucket: "b&c".into(),
            database: "db".into(),
            retention_policy: String::new(),
            auth: Auth::None,
        }
    }

    #[test]
    fn endpoints_follow_each_api() {
        assert_eq!(
            target(ApiVersion::V2).endpoint(),
            "http://127.0.0.1:8086/api/v2/write?org=my%20org&bucket=b%26c&precision=ns"
        );
        let mut v1 = target(ApiVersion::V1);
        assert_eq!(
            v1.endpoint(),
            "http://127.0.0.1:8086/write?db=db&precision=ns"
        );
        v1.retention_policy = "autogen".into();
        assert_eq!(
            v1.endpoint(),
            "http://127.0.0.1:8086/write?db=db&rp=autogen&precision=ns"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_messages() {
        let mut t = target(ApiVersion::V2);
        t.auth = Auth::Token(Secret::new("s3cr3t-token"));
        let debug = format!("{t:?} {:?}", HttpTransport::new(&t));
        assert!(!debug.contains("s3cr3t-token"), "{debug}");
        assert!(debug.contains("<redacted>"));
        let r = Redactor::new(t.secrets());
        assert_eq!(r.redact("bad token s3cr3t-token!"), "bad token <redacted>!");
    }

    #[test]
    fn statuses_are_sorted_into_outcomes() {
        assert_eq!(
            classify_status(204, String::new(), None),
            SendOutcome::Delivered
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
