//! A fake BMC for unit tests: resources held in memory, a SessionService
//! that checks one user's password, and faults on demand. The tests that
//! need a real HTTP server use the sushy-tools emulator instead (`tests/`).

#![allow(clippy::unwrap_used, reason = "a test double")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alumet::secret::{http_basic_authorization, Secret};
use serde_json::Value;

use crate::client::{Client, Method, Request, Response, Transport, TransportError};

#[derive(Default)]
struct State {
    resources: HashMap<String, Value>,
    user: String,
    password: String,
    sessions: bool,
    tokens: Vec<String>,
    logins: u64,
    deleted: u64,
    gets: u64,
    fault: Option<Result<u16, TransportError>>,
}

/// An in-memory BMC; clones share it.
#[derive(Clone)]
pub struct FakeBmc(Arc<Mutex<State>>);

impl FakeBmc {
    /// A BMC with a SessionService accepting `user` / `password`, and a
    /// service root.
    pub fn new(user: &str, password: &str) -> Self {
        let bmc = Self(Arc::new(Mutex::new(State {
            user: user.into(),
            password: password.into(),
            sessions: true,
            ..State::default()
        })));
        bmc.put(
            "/redfish/v1/",
            serde_json::json!({
                "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
                "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
            }),
        );
        bmc.put("/redfish/v1/Chassis", serde_json::json!({"Members": []}));
        bmc
    }

    /// The same BMC without a SessionService (basic auth only).
    pub fn without_sessions(self) -> Self {
        self.0.lock().unwrap().sessions = false;
        self
    }

    /// A client logging in as `user` / `password`.
    pub fn client(&self, user: &str, password: &str) -> Client {
        Client::new(
            Box::new(self.clone()),
            "https://bmc.test",
            user,
            Secret::new(password),
        )
    }

    /// Sets the resource at `path`.
    pub fn put(&self, path: &str, value: Value) {
        self.0.lock().unwrap().resources.insert(path.into(), value);
    }

    /// Changes the password the BMC accepts.
    pub fn set_password(&self, password: &str) {
        self.0.lock().unwrap().password = password.into();
    }

    /// Forgets every session token (as a BMC that expired them).
    pub fn expire_sessions(&self) {
        self.0.lock().unwrap().tokens.clear();
    }

    /// Every request from now on answers this status (`Ok`) or fails
    /// (`Err`); `None`: normal again.
    pub fn fault(&self, fault: Option<Result<u16, TransportError>>) {
        self.0.lock().unwrap().fault = fault;
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.0.lock().unwrap().logins
    }

    /// Sessions deleted so far.
    pub fn deleted_sessions(&self) -> u64 {
        self.0.lock().unwrap().deleted
    }

    /// Authenticated GETs answered so far.
    pub fn gets(&self) -> u64 {
        self.0.lock().unwrap().gets
    }
}

fn status(status: u16) -> Response {
    Response {
        status,
        ..Response::default()
    }
}

impl Transport for FakeBmc {
    fn send(&self, request: &Request<'_>) -> Result<Response, TransportError> {
        let mut s = self.0.lock().unwrap();
        match &s.fault {
            Some(Ok(code)) => return Ok(status(*code)),
            Some(Err(e)) => return Err(e.clone()),
            None => {}
        }
        let sessions_path = "/redfish/v1/SessionService/Sessions";
        if request.method == Method::Post && request.path == sessions_path {
            if !s.sessions {
                return Ok(status(405));
            }
            let body: Value = serde_json::from_str(request.body.unwrap().expose()).unwrap();
            if body["UserName"] != s.user.as_str() || body["Password"] != s.password.as_str() {
                return Ok(status(401));
            }
            s.logins += 1;
            let token = format!("token-{}", s.logins);
            s.tokens.push(token.clone());
            return Ok(Response {
                status: 201,
                auth_token: Some(token),
                location: Some(format!("{sessions_path}/{}", s.logins)),
                body: "{}".into(),
            });
        }
        let authorized = match request.auth {
            Some(("X-Auth-Token", token)) => s.tokens.iter().any(|t| t == token.expose()),
            Some(("Authorization", value)) => {
                let expected = http_basic_authorization(&s.user, &Secret::new(s.password.as_str()));
                value == &expected
            }
            _ => request.path == "/redfish/v1/",
        };
        if !authorized {
            return Ok(status(401));
        }
        match request.method {
            Method::Delete => {
                s.deleted += 1;
                Ok(status(204))
            }
            Method::Post => Ok(status(405)),
            Method::Get => {
                s.gets += 1;
                match s.resources.get(request.path) {
                    Some(v) => Ok(Response {
                        status: 200,
                        body: v.to_string(),
                        ..Response::default()
                    }),
                    None => Ok(status(404)),
                }
            }
        }
    }
}
