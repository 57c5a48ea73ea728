//! Container names from the Container Runtime Interface (CRI) of containerd
//! and CRI-O, on their Unix sockets: `runtime.v1.RuntimeService`'s
//! `ContainerStatus` (gRPC over HTTP/2), the call `crictl inspect` makes.
//!
//! A container created through the CRI (by a kubelet) carries its pod's
//! names in its labels (`io.kubernetes.pod.name`,
//! `io.kubernetes.pod.namespace`, `io.kubernetes.container.name`), so this
//! names Kubernetes containers without any API access; the Kubernetes
//! lookup, when on, is asked first.
//!
//! The messages are the few fields read from the CRI's `api.proto`
//! (k8s.io/cri-api, `runtime/v1`), decoded by prost; gRPC's framing is a
//! 5-byte prefix (compressed flag, big-endian length) and the status comes
//! in the `grpc-status` trailer (gRPC over HTTP/2, "PROTOCOL-HTTP2.md").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use prost::Message;

use crate::names::Names;
use crate::resolver::{Found, Lookup, Workload};
use crate::unix_http::{connect, SocketRuntime, MAX_BODY_BYTES};

/// `ContainerStatusRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ContainerStatusRequest {
    /// The container's id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Whether to add the runtime's own details (not needed).
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `ContainerStatusResponse` (the fields read).
#[derive(Clone, PartialEq, Message)]
pub struct ContainerStatusResponse {
    /// The container's status.
    #[prost(message, optional, tag = "1")]
    pub status: Option<ContainerStatus>,
}

/// `ContainerStatus` (the fields read).
#[derive(Clone, PartialEq, Message)]
pub struct ContainerStatus {
    /// The container's id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Its name and attempt.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<ContainerMetadata>,
    /// The image it runs.
    #[prost(message, optional, tag = "8")]
    pub image: Option<ImageSpec>,
    /// Its labels (the kubelet's `io.kubernetes.*` among them).
    #[prost(map = "string, string", tag = "12")]
    pub labels: HashMap<String, String>,
}

/// `ContainerMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct ContainerMetadata {
    /// The container's name (in its pod, for Kubernetes).
    #[prost(string, tag = "1")]
    pub name: String,
    /// How many times it was restarted.
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `ImageSpec` (the field read).
#[derive(Clone, PartialEq, Message)]
pub struct ImageSpec {
    /// The image, as the container was created with it.
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `VersionRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct VersionRequest {
    /// The kubelet's CRI version.
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `VersionResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct VersionResponse {
    /// The runtime's version of the kubelet API.
    #[prost(string, tag = "1")]
    pub version: String,
    /// `containerd`, `cri-o`.
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    /// Its version.
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    /// The CRI version it serves (`v1`).
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// gRPC status `NOT_FOUND`.
pub const GRPC_NOT_FOUND: u32 = 5;

/// Why a CRI call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// No socket there.
    #[error("no CRI socket at {0}")]
    Absent(PathBuf),
    /// The connection or HTTP/2 failed.
    #[error("CRI at {path}: {message}")]
    Transport {
        /// The socket.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// No answer within the deadline.
    #[error("CRI at {0} did not answer within the timeout")]
    Timeout(PathBuf),
    /// A gRPC status other than OK.
    #[error("CRI at {path} answered gRPC status {code}: {message}")]
    Status {
        /// The socket.
        path: PathBuf,
        /// The gRPC status code.
        code: u32,
        /// `grpc-message`.
        message: String,
    },
    /// A body that is not one gRPC message of the expected type.
    #[error("CRI at {path}: undecodable answer: {message}")]
    Decode {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// A CRI client (the calling thread blocks on its [`SocketRuntime`]).
pub struct CriClient {
    runtime: SocketRuntime,
}

impl CriClient {
    /// A client whose every call gives up after `timeout`.
    pub fn new(timeout: Duration) -> std::io::Result<Self> {
        Ok(Self {
            runtime: SocketRuntime::new(timeout)?,
        })
    }

    /// `RuntimeService/Version`: which runtime listens there.
    pub fn version(&self, socket: &Path) -> Result<VersionResponse, CriError> {
        self.call(
            socket,
            "/runtime.v1.RuntimeService/Version",
            &VersionRequest {
                version: "v1".to_owned(),
            },
        )
    }

    /// `RuntimeService/ContainerStatus` of container `id`.
    pub fn container_status(
        &self,
        socket: &Path,
        id: &str,
    ) -> Result<ContainerStatusResponse, CriError> {
        self.call(
            socket,
            "/runtime.v1.RuntimeService/ContainerStatus",
            &ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            },
        )
    }

    fn call<Q: Message, A: Message + Default>(
        &self,
        socket: &Path,
        method: &str,
        request: &Q,
    ) -> Result<A, CriError> {
        self.runtime.run(unary(socket, method, request), || {
            CriError::Timeout(socket.to_owned())
        })
    }
}

/// One unary gRPC call over a new HTTP/2 connection on `socket`.
async fn unary<Q: Message, A: Message + Default>(
    socket: &Path,
    method: &str,
    request: &Q,
) -> Result<A, CriError> {
    let transport = |e: &dyn std::fmt::Display| CriError::Transport {
        path: socket.to_owned(),
        message: e.to_string(),
    };
    let Some(stream) = connect(socket).await.map_err(|e| transport(&e))? else {
        return Err(CriError::Absent(socket.to_owned()));
    };
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| transport(&e))?;
    let driver = tokio::spawn(connection);
    let message = request.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0); // not compressed
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    let http_request = hyper::Request::post(format!("http://localhost{method}"))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers")
        .body(Full::new(Bytes::from(framed)))
        .map_err(|e| transport(&e))?;
    let exchange = async {
        let response = sender
            .send_request(http_request)
            .await
            .map_err(|e| transport(&e))?;
        let (parts, body) = response.into_parts();
        if parts.status != hyper::StatusCode::OK {
            return Err(transport(&format!("HTTP status {}", parts.status)));
        }
        let collected = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| transport(&*e))?;
        // A trailers-only answer (an error) has its status in the headers.
        let trailers = collected.trailers().cloned();
        let status_of = |name: &str| {
            trailers
                .as_ref()
                .and_then(|t| t.get(name))
                .or_else(|| parts.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let code = status_of("grpc-status").and_then(|s| s.parse::<u32>().ok());
        match code {
            Some(0) => {}
            Some(code) => {
                return Err(CriError::Status {
                    path: socket.to_owned(),
                    code,
                    message: status_of("grpc-message").unwrap_or_default(),
                })
            }
            None => return Err(transport(&"no grpc-status in the answer")),
        }
        let body = collected.to_bytes();
        decode_frame(&body).map_err(|message| CriError::Decode {
            path: socket.to_owned(),
            message,
        })
    };
    let result = exchange.await;
    driver.abort();
    result
}

/// The one message of a unary gRPC answer's body (a 5-byte frame header,
/// then the message).
pub fn decode_frame<A: Message + Default>(body: &[u8]) -> Result<A, String> {
    let [flag, a, b, c, d, rest @ ..] = body else {
        return Err(format!("{} bytes, not a gRPC message", body.len()));
    };
    if *flag != 0 {
        return Err("a compressed message (none was asked for)".to_owned());
    }
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    let message = rest
        .get(..len)
        .ok_or_else(|| format!("a message of {len} bytes cut at {}", rest.len()))?;
    A::decode(message).map_err(|e| e.to_string())
}

/// The names of a container from its CRI status.
pub fn names_of(status: &ContainerStatus) -> Names {
    let mut names = Names::new();
    let label = |k: &str| status.labels.get(k).map(String::as_str).unwrap_or("");
    let in_pod = !label("io.kubernetes.pod.name").is_empty();
    if in_pod {
        names.push("namespace", label("io.kubernetes.pod.namespace"));
        names.push("pod", label("io.kubernetes.pod.name"));
        let container = match label("io.kubernetes.container.name") {
            "" => status
                .metadata
                .as_ref()
                .map(|m| m.name.as_str())
                .unwrap_or(""),
            name => name,
        };
        names.push("container", container);
    } else if let Some(m) = &status.metadata {
        names.push("container_name", m.name.as_str());
    }
    if let Some(image) = &status.image {
        names.push("image", image.image.as_str());
    }
    names
}

/// Where each CRI runtime listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriSettings {
    /// containerd's socket.
    pub containerd_socket: PathBuf,
    /// CRI-O's socket.
    pub crio_socket: PathBuf,
    /// How long one call may take.
    pub timeout: Duration,
}

impl Default for CriSettings {
    fn default() -> Self {
        Self {
            containerd_socket: PathBuf::from("/run/containerd/containerd.sock"),
            crio_socket: PathBuf::from("/var/run/crio/crio.sock"),
            timeout: Duration::from_secs(2),
        }
    }
}

/// containerd and CRI-O containers, by id, through the CRI.
pub struct CriLookup {
    settings: CriSettings,
    client: Mutex<Option<CriClient>>,
}

impl CriLookup {
    /// A lookup with `settings`.
    pub fn new(settings: CriSettings) -> Self {
        Self {
            settings,
            client: Mutex::new(None),
        }
    }

    fn socket_for(&self, runtime: &str) -> Option<&Path> {
        match runtime {
            "containerd" => Some(&self.settings.containerd_socket),
            "crio" => Some(&self.settings.crio_socket),
            _ => None,
        }
    }
}

impl Lookup for CriLookup {
    fn name(&self) -> &'static str {
        "CRI"
    }

    fn key(&self, workload: &Workload) -> Option<String> {
        let runtime = workload.attribute("runtime")?;
        self.socket_for(runtime)?;
        let id = workload.attribute("container_id")?;
        Some(format!("cri:{id}"))
    }

    fn lookup(&self, workload: &Workload) -> Result<Found, String> {
        let (Some(runtime), Some(id)) = (
            workload.attribute("runtime"),
            workload.attribute("container_id"),
        ) else {
            return Ok(Found::Unknown);
        };
        let Some(socket) = self.socket_for(runtime) else {
            return Ok(Found::Unknown);
        };
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if client.is_none() {
            *client = Some(CriClient::new(self.settings.timeout).map_err(|e| e.to_string())?);
        }
        let Some(client) = client.as_ref() else {
            return Ok(Found::Unknown);
        };
        match client.container_status(socket, id) {
            Ok(ContainerStatusResponse {
                status: Some(status),
            }) => Ok(Found::Names(names_of(&status))),
            Ok(ContainerStatusResponse { status: None }) => Ok(Found::Unknown),
            // Created outside the CRI (nerdctl, ctr), or gone.
            Err(CriError::Status {
                code: GRPC_NOT_FOUND,
                ..
            }) => Ok(Found::Unknown),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_kubernetes_container_and_of_another() {
        let mut status = ContainerStatus {
            id: "c1".into(),
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "registry/shop:2".into(),
            }),
            labels: HashMap::new(),
        };
        let names = names_of(&status);
        assert_eq!(names.get("container_name"), Some("app"));
        assert_eq!(names.get("image"), Some("registry/shop:2"));
        for (k, v) in [
            ("io.kubernetes.pod.name", "web-7d4"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.container.name", "nginx"),
        ] {
            status.labels.insert(k.into(), v.into());
        }
        let names = names_of(&status);
        assert_eq!(names.get("pod"), Some("web-7d4"));
        assert_eq!(names.get("namespace"), Some("shop"));
        assert_eq!(names.get("container"), Some("nginx"));
        assert_eq!(names.get("container_name"), None);
    }

    #[test]
    fn frames() {
        let message = ContainerStatusRequest {
            container_id: "abc".into(),
            verbose: false,
        }
        .encode_to_vec();
        let mut body = vec![0, 0, 0, 0, message.len() as u8];
        body.extend_from_slice(&message);
        let back: ContainerStatusRequest = decode_frame(&body).unwrap();
        assert_eq!(back.container_id, "abc");
        assert!(decode_frame::<ContainerStatusRequest>(&body[..3]).is_err());
        assert!(decode_frame::<ContainerStatusRequest>(&body[..body.len() - 1]).is_err());
        body[0] = 1;
        assert!(decode_frame::<ContainerStatusRequest>(&body).is_err());
    }
}
