//! The CRI client against a real containerd (its CRI plugin, on a socket of
//! the test's own) and, for containers that only a kubelet could create
//! through the CRI, against a local gRPC server that answers with the CRI's
//! messages: names of a Kubernetes container from its labels, NOT_FOUND,
//! and a runtime that never answers.
//!
//! The containerd test needs root and containerd (installed with docker.io
//! by scripts/install-managers.sh); without them it says so and passes,
//! except in CI (`CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alumet_workloads::cri::{
    ContainerMetadata, ContainerStatus, ContainerStatusRequest, ContainerStatusResponse, CriClient,
    CriError, CriLookup, CriSettings, ImageSpec, GRPC_NOT_FOUND,
};
use alumet_workloads::resolver::{NameState, Resolver, Workload};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame};
use prost::Message;

struct Containerd(Child);

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_real_containerd_says_who_it_is_and_that_an_unknown_container_is_not_found() {
    // SAFETY: getuid(2) has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    if !root || !Path::new("/usr/bin/containerd").exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root with containerd (scripts/install-managers.sh)"
        );
        eprintln!("skipped: needs root and containerd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("containerd.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{socket}\"\n",
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            socket = socket.display()
        ),
    )
    .unwrap();
    let _containerd = Containerd(
        Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(&socket), "containerd did not listen");
    let client = CriClient::new(Duration::from_secs(5)).unwrap();
    // The socket appears before the CRI plugin serves: retry a little.
    let deadline = Instant::now() + Duration::from_secs(20);
    let version = loop {
        match client.version(&socket) {
            Ok(v) => break v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the CRI: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    };
    eprintln!("{version:?}");
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    let unknown = "f".repeat(64);
    match client.container_status(&socket, &unknown) {
        Err(CriError::Status { code, .. }) => assert_eq!(code, GRPC_NOT_FOUND),
        other => panic!("{other:?}"),
    }
    // Through the resolver: a container the CRI does not know keeps its ids.
    let resolver = Resolver::new(vec![Arc::new(CriLookup::new(CriSettings {
        containerd_socket: socket.clone(),
        ..CriSettings::default()
    }))]);
    let key = resolver.request(&containerd_workload(&unknown)).unwrap();
    assert_eq!(wait_state(&resolver, &key), NameState::None);
}

fn containerd_workload(id: &str) -> Workload {
    Workload {
        kind: "k8s_container".to_owned(),
        attributes: vec![
            ("runtime".to_owned(), "containerd".to_owned()),
            ("container_id".to_owned(), id.to_owned()),
        ],
        cgroup_dir: PathBuf::new(),
    }
}

fn wait_state(resolver: &Resolver, key: &str) -> NameState {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = resolver.names(key);
        if state != NameState::Pending || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A gRPC (HTTP/2, prior knowledge) server on a Unix socket answering
/// `ContainerStatus` for the containers in `known`, NOT_FOUND for the
/// others, and never for `"silent"`.
fn serve(known: HashMap<String, ContainerStatus>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cri.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let known = Arc::new(known);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let known = known.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let known = known.clone();
                            async move { Ok::<_, Infallible>(answer(req, &known).await) }
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
    });
    (dir, path)
}

/// A body of given frames (data, then trailers).
mod frames {
    use super::*;

    pub struct Frames(pub std::collections::VecDeque<Frame<Bytes>>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    known: &HashMap<String, ContainerStatus>,
) -> hyper::Response<frames::Frames> {
    assert_eq!(
        req.uri().path(),
        "/runtime.v1.RuntimeService/ContainerStatus"
    );
    assert_eq!(req.headers()["content-type"], "application/grpc");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let request = ContainerStatusRequest::decode(&body[5..]).unwrap();
    let mut trailers = hyper::HeaderMap::new();
    let mut frames = std::collections::VecDeque::new();
    if request.container_id == "silent" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    match known.get(&request.container_id) {
        Some(status) => {
            let message = ContainerStatusResponse {
                status: Some(status.clone()),
            }
            .encode_to_vec();
            let mut framed = vec![0];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            frames.push_back(Frame::data(Bytes::from(framed)));
            trailers.insert("grpc-status", "0".parse().unwrap());
        }
        None => {
            trailers.insert("grpc-status", "5".parse().unwrap());
            trailers.insert("grpc-message", "container not found".parse().unwrap());
        }
    }
    frames.push_back(Frame::trailers(trailers));
    hyper::Response::builder()
        .header("content-type", "application/grpc")
        .body(frames::Frames(frames))
        .unwrap()
}

#[test]
fn a_kubernetes_container_is_named_from_its_cri_labels_without_the_api() {
    let id = "c".repeat(64);
    let status = ContainerStatus {
        id: id.clone(),
        metadata: Some(ContainerMetadata {
            name: "nginx".into(),
            attempt: 1,
        }),
        image: Some(ImageSpec {
            image: "docker.io/library/nginx:1.27".into(),
        }),
        labels: [
            ("io.kubernetes.pod.name", "web-7d4"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.container.name", "nginx"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let (_dir, socket) = serve([(id.clone(), status)].into_iter().collect());
    let resolver = Resolver::new(vec![Arc::new(CriLookup::new(CriSettings {
        containerd_socket: socket.clone(),
        timeout: Duration::from_millis(500),
        ..CriSettings::default()
    }))]);
    let key = resolver.request(&containerd_workload(&id)).unwrap();
    let NameState::Known(names) = wait_state(&resolver, &key) else {
        panic!("not named");
    };
    assert_eq!(names.get("namespace"), Some("shop"));
    assert_eq!(names.get("pod"), Some("web-7d4"));
    assert_eq!(names.get("container"), Some("nginx"));
    assert_eq!(names.get("image"), Some("docker.io/library/nginx:1.27"));

    let gone = resolver
        .request(&containerd_workload(&"d".repeat(64)))
        .unwrap();
    assert_eq!(wait_state(&resolver, &gone), NameState::None);

    // A runtime that never answers costs the lookup its timeout, no more.
    let client = CriClient::new(Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let e = client.container_status(&socket, "silent").unwrap_err();
    assert!(matches!(e, CriError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
