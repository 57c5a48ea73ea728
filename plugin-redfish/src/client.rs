//! The HTTP boundary: one BMC, one session.
//!
//! [`Transport`] sends one request and returns the status, the two headers
//! a Redfish session needs and the body; [`UreqTransport`] is the real one
//! (ureq with rustls, the TLS settings of `alumet_delivery::tls`, one
//! timeout for the whole exchange), and tests put a fake in its place.
//! [`Client`] does the Redfish part on top: it logs in once through the
//! SessionService (`POST .../Sessions` → `X-Auth-Token`), reuses the token
//! at every request, logs in again once when a request answers 401 (the BMC
//! expired the session), falls back to basic authentication when the BMC
//! has no SessionService, and deletes the session at [`Client::logout`].
//! The password and the token never reach a message.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use alumet::secret::{http_basic_authorization, Redactor, Secret};
use serde_json::Value;

/// The HTTP method of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST (JSON body).
    Post,
    /// DELETE.
    Delete,
}

/// One request to the BMC.
#[derive(Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path (`/redfish/v1/...`), appended to the endpoint.
    pub path: &'a str,
    /// A header carrying the credentials (`X-Auth-Token` or `Authorization`).
    pub auth: Option<(&'static str, &'a Secret)>,
    /// A JSON body (POST only); it may hold the password.
    pub body: Option<&'a Secret>,
}

/// What the BMC answered.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The `X-Auth-Token` header (a session's token).
    pub auth_token: Option<String>,
    /// The `Location` header (a session's URI).
    pub location: Option<String>,
    /// The body, as text.
    pub body: String,
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// No complete answer within the timeout.
    #[error("no answer within {}", alumet::config::format_duration(*.0))]
    Timeout(Duration),
    /// The TLS handshake failed (an unknown CA, a wrong host name...).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// Anything else on the way (connection refused, reset...).
    #[error("{0}")]
    Io(String),
}

/// Sends one request to the BMC.
pub trait Transport: Send + Sync {
    /// Sends `request`, waiting at most the transport's timeout.
    fn send(&self, request: &Request<'_>) -> Result<Response, TransportError>;
}

/// The most of a body read: Redfish resources are a few KiB.
const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// The real transport: ureq with rustls.
pub struct UreqTransport {
    agent: ureq::Agent,
    endpoint: String,
    timeout: Duration,
}

impl UreqTransport {
    /// Requests to `endpoint` (`https://host[:port]`, no trailing slash)
    /// with `tls` (see `alumet_delivery::TlsFiles::load`), each bounded by `timeout`.
    pub fn new(endpoint: &str, tls: ureq::tls::TlsConfig, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .user_agent(concat!("alumet-redfish/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .new_agent();
        Self {
            agent,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            timeout,
        }
    }

    fn failure(&self, e: ureq::Error) -> TransportError {
        if let Some(tls) = alumet_delivery::http::tls_failure(&e) {
            return TransportError::Tls(tls);
        }
        match e {
            ureq::Error::Timeout(_) => TransportError::Timeout(self.timeout),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                TransportError::Timeout(self.timeout)
            }
            e => TransportError::Io(e.to_string()),
        }
    }
}

impl Transport for UreqTransport {
    fn send(&self, request: &Request<'_>) -> Result<Response, TransportError> {
        let url = format!("{}{}", self.endpoint, request.path);
        let with_auth = |b: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match request.auth {
            Some((name, value)) => b.header(name, value.expose()),
            None => b,
        };
        let result = match request.method {
            Method::Get => with_auth(self.agent.get(&url))
                .header("Accept", "application/json")
                .call(),
            Method::Delete => with_auth(self.agent.delete(&url)).call(),
            Method::Post => {
                let mut b = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some((name, value)) = request.auth {
                    b = b.header(name, value.expose());
                }
                let body = request.body.map(Secret::expose).unwrap_or("{}");
                b.send(body.as_bytes())
            }
        };
        let mut response = result.map_err(|e| self.failure(e))?;
        let auth_token = alumet_delivery::http::response_header(&response, "x-auth-token");
        let location = alumet_delivery::http::response_header(&response, "location");
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_string()
            .map_err(|e| self.failure(e))?;
        Ok(Response {
            status,
            auth_token,
            location,
            body,
        })
    }
}

/// Why a resource could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// No answer.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The BMC refused the credentials (after one new login).
    #[error("the BMC refused the credentials of user \"{user}\" (HTTP {status})")]
    Unauthorized {
        /// The configured user name.
        user: String,
        /// 401 or 403.
        status: u16,
    },
    /// Another status than 2xx.
    #[error("HTTP {status} for {path}")]
    Status {
        /// The status.
        status: u16,
        /// The path asked.
        path: String,
    },
    /// The answer is not the JSON expected.
    #[error("{path} is not JSON: {reason}")]
    Json {
        /// The path asked.
        path: String,
        /// serde_json's message.
        reason: String,
    },
}

/// How the requests are authenticated now.
#[derive(Debug, Clone)]
enum Auth {
    /// Not logged in yet.
    None,
    /// A session: its token and where to DELETE it.
    Session {
        token: Secret,
        location: Option<String>,
    },
    /// Basic authentication (the BMC has no SessionService).
    Basic(Secret),
}

/// The path of the session collection when the service root does not say.
pub const DEFAULT_SESSIONS_PATH: &str = "/redfish/v1/SessionService/Sessions";

/// The path of the service root.
pub const SERVICE_ROOT: &str = "/redfish/v1/";

/// A logged-in connection to one BMC, shared by the source and the plugin
/// (which deletes the session at stop).
pub struct Client {
    transport: Box<dyn Transport>,
    endpoint: String,
    username: String,
    password: Secret,
    auth: Mutex<Auth>,
    redactor: Redactor,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The path part of a `Location` header (absolute URL or path).
fn location_path(location: &str) -> String {
    match location.parse::<ureq::http::Uri>() {
        Ok(uri) if uri.scheme().is_some() => uri.path().to_owned(),
        _ => location.to_owned(),
    }
}

impl Client {
    /// A client of the BMC at `endpoint` (for messages) over `transport`,
    /// not logged in yet.
    pub fn new(
        transport: Box<dyn Transport>,
        endpoint: &str,
        username: &str,
        password: Secret,
    ) -> Self {
        Self {
            transport,
            endpoint: endpoint.to_owned(),
            username: username.to_owned(),
            redactor: Redactor::new(vec![password.expose().to_owned()]),
            password,
            auth: Mutex::new(Auth::None),
        }
    }

    /// The BMC's URL (holds no secret).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    fn auth(&self) -> MutexGuard<'_, Auth> {
        // A poisoned lock only means a panic elsewhere; the value is still usable.
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the requests go with a session token (else basic auth).
    pub fn has_session(&self) -> bool {
        matches!(*self.auth(), Auth::Session { .. })
    }

    fn send(&self, request: &Request<'_>) -> Result<Response, FetchError> {
        self.transport.send(request).map_err(|e| match e {
            // A message that echoes a secret loses it.
            TransportError::Io(m) => TransportError::Io(self.redactor.redact(&m)).into(),
            e => e.into(),
        })
    }

    fn unauthorized(&self, status: u16) -> FetchError {
        FetchError::Unauthorized {
            user: self.username.clone(),
            status,
        }
    }

    /// Logs in: a session when the BMC has a SessionService, else basic
    /// authentication, checked on the service root's `Chassis` collection.
    pub fn login(&self) -> Result<(), FetchError> {
        // The service root needs no authentication; it says where sessions are.
        let root = self.get_unauthenticated(SERVICE_ROOT)?;
        let sessions = root
            .pointer("/Links/Sessions/@odata.id")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_SESSIONS_PATH)
            .to_owned();
        let body = Secret::new(
            serde_json::json!({"UserName": self.username, "Password": self.password.expose()})
                .to_string(),
        );
        let response = self.send(&Request {
            method: Method::Post,
            path: &sessions,
            auth: None,
            body: Some(&body),
        })?;
        match (response.status, response.auth_token) {
            (200..=299, Some(token)) if !token.is_empty() => {
                *self.auth() = Auth::Session {
                    token: Secret::new(token),
                    location: response.location.as_deref().map(location_path),
                };
                return Ok(());
            }
            (401 | 403, _) => return Err(self.unauthorized(response.status)),
            // No SessionService (404, 405, 501), or one that gives no token.
            _ => {}
        }
        let basic = http_basic_authorization(&self.username, &self.password);
        let chassis = root
            .pointer("/Chassis/@odata.id")
            .and_then(Value::as_str)
            .unwrap_or("/redfish/v1/Chassis")
            .to_owned();
        let check = self.send(&Request {
            method: Method::Get,
            path: &chassis,
            auth: Some(("Authorization", &basic)),
            body: None,
        })?;
        match check.status {
            200..=299 => {
                *self.auth() = Auth::Basic(basic);
                Ok(())
            }
            401 | 403 => Err(self.unauthorized(check.status)),
            status => Err(FetchError::Status {
                status,
                path: chassis,
            }),
        }
    }

    fn get_unauthenticated(&self, path: &str) -> Result<Value, FetchError> {
        let response = self.send(&Request {
            method: Method::Get,
            path,
            auth: None,
            body: None,
        })?;
        parse(path, response)
    }

    fn get_once(&self, path: &str) -> Result<Response, FetchError> {
        let auth = self.auth().clone();
        let header = match &auth {
            Auth::Session { token, .. } => Some(("X-Auth-Token", token)),
            Auth::Basic(basic) => Some(("Authorization", basic)),
            Auth::None => None,
        };
        self.send(&Request {
            method: Method::Get,
            path,
            auth: header,
            body: None,
        })
    }

    /// Reads the resource at `path` as JSON. A 401 logs in again, once,
    /// and asks again (the BMC expired the session, or rebooted).
    pub fn get(&self, path: &str) -> Result<Value, FetchError> {
        let response = self.get_once(path)?;
        if response.status != 401 {
            return parse(path, response);
        }
        log::info!(
            "redfish: {} answered 401 for {path}: logging in again as \"{}\"",
            self.endpoint,
            self.username
        );
        self.login()?;
        let again = self.get_once(path)?;
        match again.status {
            401 => Err(self.unauthorized(401)),
            _ => parse(path, again),
        }
    }

    /// Deletes the session, if there is one (errors only logged: the BMC
    /// expires it anyway).
    pub fn logout(&self) {
        let previous = std::mem::replace(&mut *self.auth(), Auth::None);
        let Auth::Session {
            token,
            location: Some(location),
        } = previous
        else {
            return;
        };
        match self.send(&Request {
            method: Method::Delete,
            path: &location,
            auth: Some(("X-Auth-Token", &token)),
            body: None,
        }) {
            Ok(r) if (200..=299).contains(&r.status) => {
                log::debug!("redfish: session {location} deleted")
            }
            Ok(r) => log::debug!(
                "redfish: deleting session {location} answered HTTP {}",
                r.status
            ),
            Err(e) => log::debug!("redfish: cannot delete session {location}: {e}"),
        }
    }
}

fn parse(path: &str, response: Response) -> Result<Value, FetchError> {
    if !(200..=299).contains(&response.status) {
        return Err(FetchError::Status {
            status: response.status,
            path: path.to_owned(),
        });
    }
    serde_json::from_str(&response.body).map_err(|e| FetchError::Json {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeBmc;

    #[test]
    fn one_login_then_the_token_is_reused() {
        let bmc = FakeBmc::new("root", "s3cret");
        bmc.put("/redfish/v1/Chassis/1", serde_json::json!({"Id": "1"}));
        let client = bmc.client("root", "s3cret");
        client.login().unwrap();
        assert!(client.has_session());
        for _ in 0..3 {
            assert_eq!(client.get("/redfish/v1/Chassis/1").unwrap()["Id"], "1");
        }
        assert_eq!(bmc.logins(), 1);
        client.logout();
        assert_eq!(bmc.deleted_sessions(), 1);
    }

    #[test]
    fn an_expired_session_logs_in_again_once() {
        let bmc = FakeBmc::new("root", "s3cret");
        bmc.put("/redfish/v1/Chassis/1", serde_json::json!({"Id": "1"}));
        let client = bmc.client("root", "s3cret");
        client.login().unwrap();
        bmc.expire_sessions();
        assert!(client.get("/redfish/v1/Chassis/1").is_ok());
        assert_eq!(bmc.logins(), 2);
        // The password changed on the BMC: one new login, then the error.
        bmc.set_password("other");
        bmc.expire_sessions();
        let err = client.get("/redfish/v1/Chassis/1").unwrap_err();
        assert!(matches!(err, FetchError::Unauthorized { .. }), "{err}");
        assert_eq!(bmc.logins(), 2, "the new login was refused");
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn bad_credentials_are_refused_at_login_without_the_password() {
        let bmc = FakeBmc::new("root", "s3cret");
        let err = bmc.client("root", "wrong").login().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the BMC refused the credentials of user \"root\" (HTTP 401)"
        );
    }

    #[test]
    fn without_a_session_service_basic_auth_is_used() {
        let bmc = FakeBmc::new("root", "s3cret").without_sessions();
        bmc.put("/redfish/v1/Chassis/1", serde_json::json!({"Id": "1"}));
        let client = bmc.client("root", "s3cret");
        client.login().unwrap();
        assert!(!client.has_session());
        assert_eq!(client.get("/redfish/v1/Chassis/1").unwrap()["Id"], "1");
        let err = bmc.client("root", "nope").login().unwrap_err();
        assert!(matches!(err, FetchError::Unauthorized { .. }), "{err}");
    }

    #[test]
    fn absolute_locations_keep_their_path() {
        assert_eq!(
            location_path("https://10.0.0.2/redfish/v1/SessionService/Sessions/7"),
            "/redfish/v1/SessionService/Sessions/7"
        );
        assert_eq!(location_path("/a/b"), "/a/b");
    }
}
