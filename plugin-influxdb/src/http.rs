//! What InfluxDB's write APIs need from the shared HTTP transport
//! (`alumet_delivery::http`): the write URL of each API version, and the
//! `Authorization` header (token or basic auth), whose value is a secret.

pub use alumet::secret::Secret;
use alumet_delivery::HttpTarget;

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

    /// What the shared transport posts to: the write URL, line protocol,
    /// the `Authorization` header and InfluxDB's error header.
    pub fn http_target(&self) -> HttpTarget {
        HttpTarget {
            url: self.endpoint(),
            content_type: "text/plain; charset=utf-8",
            headers: self
                .authorization()
                .map(|value| ("Authorization".to_owned(), Secret::new(value)))
                .into_iter()
                .collect(),
            secrets: match &self.auth {
                Auth::None => Vec::new(),
                Auth::Token(token) => vec![token.clone()],
                Auth::Basic { password, .. } => vec![password.clone()],
            },
            error_header: Some("X-Influxdb-Error"),
            user_agent: concat!("alumet-influxdb/", env!("CARGO_PKG_VERSION")).to_owned(),
            inspect_success: None,
        }
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
    fn secrets_never_show_in_debug() {
        let mut t = target(ApiVersion::V2);
        t.auth = Auth::Token(Secret::new("s3cr3t-token"));
        let debug = format!("{t:?} {:?}", t.http_target());
        assert!(!debug.contains("s3cr3t-token"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn the_authorization_header_carries_the_token_or_basic_credentials() {
        let mut t = target(ApiVersion::V2);
        t.auth = Auth::Token(Secret::new("tok"));
        let headers = t.http_target().headers;
        assert_eq!(headers[0].0, "Authorization");
        assert_eq!(headers[0].1.expose(), "Token tok");
        t.auth = Auth::Basic {
            username: "Aladdin".into(),
            password: Secret::new("open sesame"),
        };
        assert_eq!(
            t.http_target().headers[0].1.expose(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        t.auth = Auth::None;
        assert!(t.http_target().headers.is_empty());
    }
}
