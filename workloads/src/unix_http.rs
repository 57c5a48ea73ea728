//! GET a JSON document from an HTTP API on a Unix socket (Docker's and
//! Podman's), with a deadline: the one client of the engines' sockets.
//!
//! HTTP/1.1 is hyper's; each call opens a connection, asks, and closes it
//! (one lookup per new container does not need a pool). The caller's thread
//! runs it on a small runtime of its own ([`SocketClient`]), never on a
//! pipeline thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use serde::de::DeserializeOwned;

/// The largest response body read: an inspect document is a few kB; a
/// larger one is refused rather than held.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// Why a GET did not give a document.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// No socket there (the engine is not installed or not running).
    #[error("no socket at {path}")]
    Absent {
        /// The socket's path.
        path: PathBuf,
    },
    /// The socket refused or broke the connection.
    #[error("cannot talk to {path}: {message}")]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// No complete answer within the deadline.
    #[error("{path} did not answer within {timeout:?}")]
    Timeout {
        /// The socket's path.
        path: PathBuf,
        /// The deadline.
        timeout: Duration,
    },
    /// An answer with a status other than 200 (404: no such object).
    #[error("{path} answered {status} to GET {uri}")]
    Status {
        /// The socket's path.
        path: PathBuf,
        /// The request's path.
        uri: String,
        /// The HTTP status.
        status: u16,
    },
    /// A body that is not the expected JSON.
    #[error("{path} answered GET {uri} with a document that does not parse: {message}")]
    Body {
        /// The socket's path.
        path: PathBuf,
        /// The request's path.
        uri: String,
        /// The parser's message.
        message: String,
    },
}

impl SocketError {
    /// Whether the object asked for does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SocketError::Status { status: 404, .. })
    }
}

/// A single-threaded runtime that runs each call to a local socket with a
/// deadline, on the thread that asks (a lookup's own thread): what every
/// client of an engine's or a runtime's socket runs on.
pub struct SocketRuntime {
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

impl SocketRuntime {
    /// A runtime whose every call gives up after `timeout`.
    pub fn new(timeout: Duration) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Self { runtime, timeout })
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `call` to its end or to the deadline (`timed_out()` then).
    pub fn run<T, E>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
        timed_out: impl FnOnce() -> E,
    ) -> Result<T, E> {
        self.runtime.block_on(async {
            match tokio::time::timeout(self.timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(timed_out()),
            }
        })
    }
}

/// Connects to `socket`; `Ok(None)` when there is no socket there (the
/// engine or runtime is not installed or not running).
pub async fn connect(socket: &Path) -> std::io::Result<Option<tokio::net::UnixStream>> {
    match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A client for HTTP APIs on Unix sockets (the thread that calls it blocks
/// on its [`SocketRuntime`]).
pub struct SocketClient {
    runtime: SocketRuntime,
}

impl SocketClient {
    /// A client whose every GET gives up after `timeout`.
    pub fn new(timeout: Duration) -> std::io::Result<Self> {
        Ok(Self {
            runtime: SocketRuntime::new(timeout)?,
        })
    }

    /// GET `uri` (a path and query, `/containers/ID/json`) from the API on
    /// `socket`, parsed as `T`.
    pub fn get_json<T: DeserializeOwned>(
        &self,
        socket: &Path,
        uri: &str,
    ) -> Result<T, SocketError> {
        let timeout = self.runtime.timeout();
        let body = self
            .runtime
            .run(get(socket, uri), || SocketError::Timeout {
                path: socket.to_owned(),
                timeout,
            })?;
        serde_json::from_slice(&body).map_err(|e| SocketError::Body {
            path: socket.to_owned(),
            uri: uri.to_owned(),
            message: e.to_string(),
        })
    }
}

async fn get(socket: &Path, uri: &str) -> Result<Bytes, SocketError> {
    let io_error = |e: &dyn std::fmt::Display| SocketError::Io {
        path: socket.to_owned(),
        message: e.to_string(),
    };
    let Some(stream) = connect(socket).await.map_err(|e| io_error(&e))? else {
        return Err(SocketError::Absent {
            path: socket.to_owned(),
        });
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| io_error(&e))?;
    // The connection is driven beside the request; it ends with the
    // answer, or with the runtime's block_on when the deadline passes.
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(uri)
        // Docker's API wants a Host header; its value does not matter.
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| io_error(&e))?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| io_error(&e))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| io_error(&*e))?
            .to_bytes();
        if status != 200 {
            return Err(SocketError::Status {
                path: socket.to_owned(),
                uri: uri.to_owned(),
                status,
            });
        }
        Ok(body)
    };
    let result = exchange.await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    /// A one-shot server on a socket that answers with `response` (raw bytes,
    /// as a misbehaving or slow engine would), after `delay`.
    fn serve(response: &'static [u8], delay: Duration) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                std::thread::sleep(delay);
                let _ = conn.write_all(response);
            }
        });
        (dir, path)
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Doc {
        #[serde(rename = "Name")]
        name: String,
    }

    #[test]
    fn a_document_an_absent_socket_a_404_a_slow_and_a_broken_server() {
        let client = SocketClient::new(Duration::from_millis(300)).unwrap();
        let (_d, ok) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"Name\":\"/web\"}\n",
            Duration::ZERO,
        );
        let doc: Doc = client.get_json(&ok, "/containers/x/json").unwrap();
        assert_eq!(doc.name, "/web");

        let absent = client.get_json::<Doc>(Path::new("/nonexistent/engine.sock"), "/x");
        assert!(
            matches!(absent, Err(SocketError::Absent { .. })),
            "{absent:?}"
        );

        let (_d, missing) = serve(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
            Duration::ZERO,
        );
        let e = client
            .get_json::<Doc>(&missing, "/containers/y/json")
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");

        let (_d, slow) = serve(b"HTTP/1.1 200 OK\r\n\r\n", Duration::from_secs(2));
        let e = client.get_json::<Doc>(&slow, "/x").unwrap_err();
        assert!(matches!(e, SocketError::Timeout { .. }), "{e}");

        let (_d, garbage) = serve(b"not http at all\r\n\r\n", Duration::ZERO);
        let e = client.get_json::<Doc>(&garbage, "/x").unwrap_err();
        assert!(matches!(e, SocketError::Io { .. }), "{e}");

        let (_d, bad_json) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{oops",
            Duration::ZERO,
        );
        let e = client.get_json::<Doc>(&bad_json, "/x").unwrap_err();
        assert!(matches!(e, SocketError::Body { .. }), "{e}");
    }
}
