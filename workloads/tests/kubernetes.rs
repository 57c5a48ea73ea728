//! The pod watcher against a real local HTTPS server that speaks the
//! Kubernetes API's JSON (PodList, Pod, watch event lines, Status), honours
//! `fieldSelector=spec.nodeName=...`, checks the bearer token, keeps a
//! history of changes that can be compacted (410 Gone), and can fail,
//! stall or go silent on request. Also the kubelet's `/pods`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alumet_workloads::config::{KubernetesMode, NamesConfig};
use alumet_workloads::kubernetes::{
    spawn_watcher, FailureKind, KubeError, KubeLookup, KubeSettings, PodIndex, PodInfo, PodSource,
};
use alumet_workloads::resolver::{NameState, Resolver, Workload};
use alumet_workloads::Names;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

const NODE: &str = "node-a";
const TOKEN: &str = "secret-token";

// ---------------------------------------------------------------------------
// Logs, captured to check what is said and how often.

struct Capture;

static LOGS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("alumet_workloads") {
            LOGS.lock()
                .unwrap()
                .push((record.level(), record.args().to_string()));
        }
    }

    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// Whether `message` names `base` (`https://127.0.0.1:PORT`) and not a
/// longer port that starts the same.
fn names_server(message: &str, base: &str) -> bool {
    message
        .match_indices(base)
        .any(|(at, _)| !message[at + base.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// The captured lines of `level` about the server at `base` (each test has its own).
fn logged(level: log::Level, base: &str) -> Vec<String> {
    LOGS.lock()
        .unwrap()
        .iter()
        .filter(|(l, m)| *l == level && names_server(m, base))
        .map(|(_, m)| m.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// Pods as the API writes them.

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A container id: 64 hex digits, unique per (node, pod, container).
fn cid(node: &str, pod: usize, container: usize) -> String {
    format!(
        "{:016x}{:016x}{:032x}",
        fnv(node),
        fnv(&format!("{node}/{pod}")),
        ((pod as u128) << 16) | container as u128
    )
}

fn uid(node: &str, i: usize) -> String {
    format!("{:08x}-{node}-4000-8000-{i:012}", fnv(node) as u32)
}

fn namespace(i: usize) -> String {
    format!("team-{}", i % 3)
}

/// Pod `i` of `node`: containers `app` and `sidecar` (containerd), init
/// container `setup` (cri-o, terminated), container `late` still waiting
/// (no id yet).
fn pod(node: &str, i: usize) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": format!("web-{i}"),
            "generateName": "web-",
            "namespace": namespace(i),
            "uid": uid(node, i),
            "resourceVersion": "0",
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "labels": {
                "app": format!("web-{i}"),
                "app.kubernetes.io/name": "shop",
                "pod-template-hash": "7d9f8b6c5d"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "uid": "rs-1", "controller": true}]
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": "default",
            "initContainers": [{"name": "setup", "image": "busybox:1.36"}],
            "containers": [
                {"name": "app", "image": "nginx:1.27", "resources": {}},
                {"name": "sidecar", "image": "envoyproxy/envoy:v1.30"},
                {"name": "late", "image": "busybox:1.36"}
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": "10.244.1.7",
            "startTime": "2024-05-01T10:00:01Z",
            "initContainerStatuses": [{
                "name": "setup", "image": "busybox:1.36", "imageID": "docker.io/library/busybox@sha256:1",
                "containerID": format!("cri-o://{}", cid(node, i, 2)),
                "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }],
            "containerStatuses": [
                {
                    "name": "app", "image": "nginx:1.27", "imageID": "docker.io/library/nginx@sha256:2",
                    "containerID": format!("containerd://{}", cid(node, i, 0)),
                    "ready": true, "restartCount": 0, "started": true,
                    "state": {"running": {"startedAt": "2024-05-01T10:00:03Z"}}
                },
                {
                    "name": "sidecar", "image": "envoyproxy/envoy:v1.30", "imageID": "docker.io/envoyproxy/envoy@sha256:3",
                    "containerID": format!("containerd://{}", cid(node, i, 1)),
                    "ready": true, "restartCount": 0, "started": true,
                    "state": {"running": {"startedAt": "2024-05-01T10:00:03Z"}}
                },
                {
                    "name": "late", "image": "busybox:1.36", "imageID": "",
                    "ready": false, "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": "ContainerCreating"}}
                }
            ]
        }
    })
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

// ---------------------------------------------------------------------------
// The fake API server.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    ApiServer,
    Kubelet,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GoneAs {
    /// HTTP 200, then an `ERROR` event with code 410 (the watch cache).
    Event,
    /// HTTP 410 with a Status body.
    Http,
}

#[derive(Clone)]
struct Change {
    rv: u64,
    kind: &'static str,
    object: Value,
}

impl Change {
    fn line(&self) -> Bytes {
        let mut line = json!({"type": self.kind, "object": self.object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    fn on(&self, node: Option<&str>) -> bool {
        self.kind == "BOOKMARK"
            || node.is_none_or(|n| self.object["spec"]["nodeName"].as_str() == Some(n))
    }
}

#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    raw_query: String,
    query: HashMap<String, String>,
    authorization: Option<String>,
    status: u16,
    at: Instant,
}

impl Recorded {
    fn is_watch(&self) -> bool {
        self.query
            .get("watch")
            .is_some_and(|w| w == "1" || w == "true")
    }
}

struct ApiState {
    /// The kubelet's node (Kubelet mode).
    node: String,
    token: String,
    forbidden_token: String,
    rv: u64,
    pods: BTreeMap<String, Value>,
    history: Vec<Change>,
    /// Watches from a version older than this get 410 Gone.
    compacted: u64,
    gone_as: GoneAs,
    fail_next: u32,
    fail_status: u16,
    /// Accept connections and never answer them.
    stall: bool,
    /// Watches answer 200 and one bookmark, then nothing, forever.
    silent_watches: bool,
    ignore_field_selector: bool,
    requests: Vec<Recorded>,
}

struct Inner {
    mode: Mode,
    state: Mutex<ApiState>,
    events: tokio::sync::broadcast::Sender<Change>,
    kick: tokio::sync::watch::Sender<u64>,
}

impl ApiState {
    fn record_change(&mut self, kind: &'static str, mut object: Value) -> Change {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let uid = object["metadata"]["uid"].as_str().unwrap().to_owned();
        if kind == "DELETED" {
            self.pods.remove(&uid);
        } else {
            self.pods.insert(uid, object.clone());
        }
        let change = Change {
            rv: self.rv,
            kind,
            object,
        };
        self.history.push(change.clone());
        change
    }

    fn add(&mut self, object: Value) -> Change {
        self.record_change("ADDED", object)
    }

    fn modify(&mut self, uid: &str, edit: impl FnOnce(&mut Value)) -> Change {
        let mut object = self.pods[uid].clone();
        edit(&mut object);
        self.record_change("MODIFIED", object)
    }

    fn delete(&mut self, uid: &str) -> Change {
        let object = self.pods[uid].clone();
        self.record_change("DELETED", object)
    }
}

struct FakeApi {
    inner: Arc<Inner>,
    base: String,
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    token_file: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .unwrap()
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&value[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn parse_query(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let raw_query = req.uri().query().unwrap_or("").to_owned();
    let query = parse_query(&raw_query);
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = route(&inner, &path, &query, authorization.as_deref());
    inner.state.lock().unwrap().requests.push(Recorded {
        path,
        raw_query,
        query,
        authorization,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

fn route(
    inner: &Arc<Inner>,
    path: &str,
    query: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Response<Body> {
    let mut st = inner.state.lock().unwrap();
    if st.fail_next > 0 {
        st.fail_next -= 1;
        let status = st.fail_status;
        return json_response(
            status,
            &status_json(status, "InternalError", "etcdserver: request timed out"),
        );
    }
    if authorization == Some(&format!("Bearer {}", st.forbidden_token)) {
        return json_response(
            403,
            &status_json(
                403,
                "Forbidden",
                "pods is forbidden: User \"system:serviceaccount:alumet:alumet\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
            ),
        );
    }
    if authorization != Some(&format!("Bearer {}", st.token)) {
        return json_response(401, &status_json(401, "Unauthorized", "Unauthorized"));
    }
    match (inner.mode, path) {
        (Mode::Kubelet, "/pods") => {
            let items: Vec<Value> = st
                .pods
                .values()
                .filter(|p| p["spec"]["nodeName"].as_str() == Some(st.node.as_str()))
                .cloned()
                .collect();
            json_response(
                200,
                &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}),
            )
        }
        (Mode::ApiServer, "/api/v1/pods") => {
            let node = if st.ignore_field_selector {
                None
            } else {
                match query.get("fieldSelector") {
                    None => None,
                    Some(sel) => match sel.strip_prefix("spec.nodeName=") {
                        Some(node) => Some(node.to_owned()),
                        None => {
                            return json_response(
                                400,
                                &status_json(400, "BadRequest", "unsupported field selector"),
                            )
                        }
                    },
                }
            };
            if query.get("watch").is_some_and(|w| w == "1" || w == "true") {
                drop(st);
                return watch(inner.clone(), node, query);
            }
            let items: Vec<Value> = st
                .pods
                .values()
                .filter(|p| {
                    node.as_deref()
                        .is_none_or(|n| p["spec"]["nodeName"].as_str() == Some(n))
                })
                .cloned()
                .collect();
            json_response(
                200,
                &json!({
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": items
                }),
            )
        }
        _ => json_response(
            404,
            &status_json(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    }
}

fn watch(
    inner: Arc<Inner>,
    node: Option<String>,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let st = inner.state.lock().unwrap();
    let since = query
        .get("resourceVersion")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(st.rv);
    // Subscribed under the lock: nothing falls between the replay and the live events.
    let mut live = inner.events.subscribe();
    let mut kick = inner.kick.subscribe();
    kick.borrow_and_update();
    let gone = since < st.compacted;
    let message = format!("too old resource version: {since} ({})", st.compacted);
    if gone && st.gone_as == GoneAs::Http {
        return json_response(410, &status_json(410, "Expired", &message));
    }
    let replay: Vec<Change> = st
        .history
        .iter()
        .filter(|c| c.rv > since && c.on(node.as_deref()))
        .cloned()
        .collect();
    let silent = st.silent_watches;
    let current = st.rv;
    drop(st);
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        if gone {
            let error = Change {
                rv: 0,
                kind: "ERROR",
                object: status_json(410, "Expired", &message),
            };
            let _ = tx.send(error.line()).await;
            return;
        }
        for change in replay {
            if tx.send(change.line()).await.is_err() {
                return;
            }
        }
        if silent {
            let _ = tx.send(bookmark(current).line()).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            tokio::select! {
                change = live.recv() => match change {
                    Ok(change) => {
                        if change.on(node.as_deref()) && tx.send(change.line()).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                _ = kick.changed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(BodyExt::boxed(ChannelBody(rx)))
        .unwrap()
}

fn bookmark(rv: u64) -> Change {
    Change {
        rv,
        kind: "BOOKMARK",
        object: json!({"kind": "Pod", "apiVersion": "v1",
                       "metadata": {"resourceVersion": rv.to_string(),
                                    "annotations": {"k8s.io/initial-events-end": "true"}}}),
    }
}

impl FakeApi {
    fn start(mode: Mode) -> FakeApi {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.crt");
        let token_file = dir.path().join("token");
        std::fs::write(&ca_file, certified.cert.pem()).unwrap();
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let inner = Arc::new(Inner {
            mode,
            state: Mutex::new(ApiState {
                node: NODE.into(),
                token: TOKEN.into(),
                forbidden_token: "forbidden-token".into(),
                rv: 100,
                pods: BTreeMap::new(),
                history: Vec::new(),
                compacted: 0,
                gone_as: GoneAs::Event,
                fail_next: 0,
                fail_status: 500,
                stall: false,
                silent_watches: false,
                ignore_field_selector: false,
                requests: Vec::new(),
            }),
            events: tokio::sync::broadcast::channel(4096).0,
            kick: tokio::sync::watch::channel(0).0,
        });
        let serving = inner.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                if serving.state.lock().unwrap().stall {
                    // Accepted, never answered.
                    tokio::spawn(async move {
                        let _held = tcp;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    });
                    continue;
                }
                let acceptor = acceptor.clone();
                let inner = serving.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(handle(inner, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeApi {
            inner,
            base,
            _dir: dir,
            ca_file,
            token_file,
            runtime: Some(runtime),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut ApiState) -> R) -> R {
        f(&mut self.inner.state.lock().unwrap())
    }

    /// Changes the pods and tells the live watches, in order.
    fn change(&self, f: impl FnOnce(&mut ApiState) -> Change) -> u64 {
        let mut st = self.inner.state.lock().unwrap();
        let change = f(&mut st);
        let rv = change.rv;
        let _ = self.inner.events.send(change);
        rv
    }

    fn add(&self, node: &str, i: usize) -> u64 {
        self.change(|st| st.add(pod(node, i)))
    }

    /// Changes the pods behind the watches' back and compacts the history
    /// past them: a watch from before gets 410 Gone.
    fn change_and_compact(&self, f: impl FnOnce(&mut ApiState)) {
        let mut st = self.inner.state.lock().unwrap();
        f(&mut st);
        st.compacted = st.rv;
        st.history.clear();
    }

    /// A bookmark to the live watches at the current version.
    fn bookmark(&self) -> u64 {
        let st = self.inner.state.lock().unwrap();
        let _ = self.inner.events.send(bookmark(st.rv));
        st.rv
    }

    /// Ends every live watch now.
    fn kick(&self) {
        self.inner.kick.send_modify(|k| *k += 1);
    }

    fn requests(&self) -> Vec<Recorded> {
        self.with(|st| st.requests.clone())
    }

    fn watches(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_watch)
            .collect()
    }

    fn lists(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| !r.is_watch())
            .collect()
    }

    fn settings(&self) -> KubeSettings {
        KubeSettings {
            api_url: self.base.clone(),
            token_file: self.token_file.clone(),
            ca_file: self.ca_file.clone(),
            node_name: NODE.into(),
            pod_labels: vec![
                "app".into(),
                "app.kubernetes.io/name".into(),
                "absent".into(),
            ],
            source: PodSource::ApiServer,
            request_timeout: Duration::from_secs(1),
            kubelet_poll_interval: Duration::from_millis(100),
            watch_timeout: Duration::from_secs(1),
            deleted_grace: Duration::from_millis(500),
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            auth_retry: Duration::from_millis(150),
        }
    }
}

// ---------------------------------------------------------------------------
// The watcher under test.

struct Running {
    index: PodIndex,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn start(settings: KubeSettings) -> Running {
    let index = PodIndex::new();
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let thread = spawn_watcher(settings, index.clone(), stop.clone()).unwrap();
    assert!(
        began.elapsed() < Duration::from_millis(200),
        "spawn_watcher blocked"
    );
    Running {
        index,
        stop,
        thread: Some(thread),
    }
}

impl Running {
    /// Stops the watcher: its thread ends within a few ticks, whatever the server does.
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let began = Instant::now();
        self.thread.take().unwrap().join().unwrap();
        assert!(began.elapsed() < Duration::from_millis(500), "slow to stop");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn label(info: &PodInfo, key: &str) -> Option<String> {
    info.labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// Checks pod `i` of NODE in the index, by uid and by each container id.
fn check_pod(index: &PodIndex, i: usize) {
    let u = uid(NODE, i);
    let info = index.pod(&u).unwrap_or_else(|| panic!("pod {i} missing"));
    assert_eq!(info.name, format!("web-{i}"));
    assert_eq!(info.namespace, namespace(i));
    assert_eq!(info.node, NODE);
    assert_eq!(
        info.labels,
        [
            ("app".to_owned(), format!("web-{i}")),
            ("app.kubernetes.io/name".to_owned(), "shop".to_owned())
        ]
    );
    let names = info.names();
    assert_eq!(
        names.0,
        [
            ("namespace".to_owned(), namespace(i)),
            ("pod".to_owned(), format!("web-{i}")),
            ("node".to_owned(), NODE.to_owned()),
            ("label_app".to_owned(), format!("web-{i}")),
            ("label_app_kubernetes_io_name".to_owned(), "shop".to_owned()),
        ]
    );
    for (c, name) in [(0, "app"), (1, "sidecar"), (2, "setup")] {
        let (pod, container) = index
            .container(&cid(NODE, i, c))
            .unwrap_or_else(|| panic!("container {name} of pod {i} missing"));
        assert_eq!((pod.uid.as_str(), container.as_str()), (u.as_str(), name));
    }
    assert_eq!(
        info.containers.len(),
        3,
        "the waiting container has no id yet"
    );
}

// ---------------------------------------------------------------------------
// 1. The list.

#[test]
fn the_list_keeps_exactly_this_nodes_pods_with_their_names() {
    let api = FakeApi::start(Mode::ApiServer);
    for i in 0..110 {
        api.add(NODE, i);
    }
    for i in 0..1000 {
        api.add(&format!("node-{}", i % 9), i);
    }
    let w = start(api.settings());
    wait_for("the list", || w.index.stats().lists == 1);
    assert_eq!(w.index.len(), 110);
    for i in 0..110 {
        check_pod(&w.index, i);
    }
    assert!(w.index.pod(&uid("node-3", 3)).is_none());
    assert!(w.index.container(&cid("node-3", 3, 0)).is_none());
    // With its runtime prefix, an id is found too.
    let prefixed = format!("containerd://{}", cid(NODE, 7, 0));
    assert_eq!(w.index.container(&prefixed).unwrap().1, "app");

    let list = &api.lists()[0];
    assert_eq!(list.path, "/api/v1/pods");
    assert_eq!(list.query["fieldSelector"], "spec.nodeName=node-a");
    assert!(
        list.raw_query
            .contains("fieldSelector=spec.nodeName%3Dnode-a"),
        "{}",
        list.raw_query
    );
    assert_eq!(list.authorization.as_deref(), Some("Bearer secret-token"));
    assert_eq!(w.index.stats().other_node_pods_ignored, 0);
    assert_eq!(w.index.stats().total_errors(), 0);
    w.stop();
}

#[test]
fn pods_of_other_nodes_are_never_kept_even_if_the_server_sends_them() {
    let api = FakeApi::start(Mode::ApiServer);
    api.with(|st| st.ignore_field_selector = true);
    for i in 0..5 {
        api.add(NODE, i);
        api.add("node-b", i);
    }
    let w = start(api.settings());
    wait_for("the list", || w.index.stats().lists == 1);
    assert_eq!(w.index.len(), 5);
    assert_eq!(w.index.stats().other_node_pods_ignored, 5);
    wait_for("a watch", || w.index.stats().watches >= 1);
    api.add("node-b", 50);
    api.add(NODE, 50);
    wait_for("the new pod", || w.index.pod(&uid(NODE, 50)).is_some());
    assert!(w.index.pod(&uid("node-b", 50)).is_none());
    assert_eq!(w.index.len(), 6);
    assert_eq!(w.index.stats().other_node_pods_ignored, 6);
    w.stop();
}

// ---------------------------------------------------------------------------
// 2. The watch.

#[test]
fn watch_events_add_modify_delete_and_bookmarks_move_the_version() {
    let api = FakeApi::start(Mode::ApiServer);
    for i in 0..3 {
        api.add(NODE, i);
    }
    let w = start(api.settings());
    wait_for("a watch", || w.index.stats().watches >= 1);
    let first_watch = &api.watches()[0];
    assert_eq!(first_watch.query["resourceVersion"], "103");
    assert_eq!(first_watch.query["allowWatchBookmarks"], "true");
    assert_eq!(first_watch.query["timeoutSeconds"], "1");
    assert_eq!(first_watch.query["fieldSelector"], "spec.nodeName=node-a");

    // ADDED
    api.add(NODE, 3);
    wait_for("ADDED", || w.index.pod(&uid(NODE, 3)).is_some());
    check_pod(&w.index, 3);

    // MODIFIED: a label changes, and the app container restarts (a new id).
    let u0 = uid(NODE, 0);
    let old_app = cid(NODE, 0, 0);
    let new_app = cid(NODE, 0, 9);
    let restarted = Instant::now();
    api.change(|st| {
        st.modify(&u0, |p| {
            p["metadata"]["labels"]["app"] = json!("web-0-v2");
            p["status"]["containerStatuses"][0]["containerID"] =
                json!(format!("containerd://{new_app}"));
        })
    });
    wait_for("MODIFIED", || {
        w.index
            .pod(&u0)
            .is_some_and(|p| label(&p, "app").as_deref() == Some("web-0-v2"))
    });
    let names = w.index.pod(&u0).unwrap().names();
    assert_eq!(names.get("label_app"), Some("web-0-v2"));
    assert_eq!(w.index.container(&new_app).unwrap().1, "app");
    // The replaced id still answers for its grace period, then goes.
    assert_eq!(w.index.container(&old_app).unwrap().1, "app");
    wait_for("the old id to go", || w.index.container(&old_app).is_none());
    assert!(restarted.elapsed() >= Duration::from_millis(500));

    // DELETED: still answerable during the grace period.
    let u1 = uid(NODE, 1);
    let deleted = Instant::now();
    api.change(|st| st.delete(&u1));
    wait_for("DELETED", || w.index.stats().deleted == 1);
    assert!(w.index.pod(&u1).is_some(), "gone before its grace period");
    assert!(w.index.container(&cid(NODE, 1, 1)).is_some());
    assert!(!w.index.live_pods().iter().any(|p| p.uid == u1));
    wait_for("the grace period to end", || w.index.pod(&u1).is_none());
    assert!(deleted.elapsed() >= Duration::from_millis(500));
    assert!(w.index.container(&cid(NODE, 1, 1)).is_none());
    assert_eq!(w.index.len(), 3);

    // BOOKMARK: other nodes' changes move the version without events here;
    // the bookmark gives it, and the next watch starts from it.
    for i in 0..4 {
        api.add("node-b", i);
    }
    let mut mark = 0;
    wait_for("a bookmark", || {
        let seen = w.index.stats().bookmarks;
        mark = api.bookmark();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            if w.index.stats().bookmarks > seen {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    });
    assert_eq!(w.index.stats().resource_version, mark.to_string());
    wait_for("a watch from the bookmark", || {
        api.watches()
            .iter()
            .any(|r| r.query["resourceVersion"] == mark.to_string())
    });
    let stats = w.index.stats();
    assert_eq!((stats.added, stats.modified, stats.deleted), (1, 1, 1));
    assert_eq!(stats.lists, 1, "a normal end of watch does not list again");
    assert_eq!(stats.total_errors(), 0, "{stats:?}");
    w.stop();
}

// ---------------------------------------------------------------------------
// 3. 410 Gone.

fn gone_relists_and_recovers(gone_as: GoneAs) {
    let api = FakeApi::start(Mode::ApiServer);
    api.with(|st| st.gone_as = gone_as);
    for i in 0..3 {
        api.add(NODE, i);
    }
    let w = start(api.settings());
    wait_for("a watch", || w.index.stats().watches >= 1);
    let (u0, u1) = (uid(NODE, 0), uid(NODE, 1));
    api.change_and_compact(|st| {
        st.add(pod(NODE, 3));
        st.delete(&u1);
        st.modify(&u0, |p| p["metadata"]["labels"]["app"] = json!("relisted"));
    });
    api.kick();
    wait_for("the relist", || w.index.stats().relists_after_gone == 1);
    wait_for("the index after the relist", || {
        w.index.pod(&uid(NODE, 3)).is_some()
            && w.index
                .pod(&u0)
                .is_some_and(|p| label(&p, "app").as_deref() == Some("relisted"))
    });
    check_pod(&w.index, 3);
    // Missing from the new list: deleted, kept for the grace period.
    assert!(!w.index.live_pods().iter().any(|p| p.uid == u1));
    wait_for("the deleted pod to go", || w.index.pod(&u1).is_none());
    assert_eq!(w.index.len(), 3);
    // It watches again from the new list's version.
    wait_for("a watch after the relist", || {
        api.watches()
            .iter()
            .any(|r| r.query["resourceVersion"] == "106" && r.status == 200)
    });
    let requests = api.requests();
    // The last watch from the old version is the one that got 410.
    let gone_at = requests
        .iter()
        .rposition(|r| r.is_watch() && r.query["resourceVersion"] == "103")
        .unwrap();
    if gone_as == GoneAs::Http {
        assert_eq!(requests[gone_at].status, 410);
    }
    assert!(
        requests[gone_at + 1..].iter().any(|r| !r.is_watch()),
        "no list after the 410"
    );
    let stats = w.index.stats();
    assert_eq!(stats.lists, 2);
    assert_eq!(stats.relists_after_gone, 1);
    assert_eq!(stats.total_errors(), 0, "{stats:?}");
    w.stop();
}

#[test]
fn a_410_error_event_relists_and_recovers() {
    gone_relists_and_recovers(GoneAs::Event);
}

#[test]
fn an_http_410_relists_and_recovers() {
    gone_relists_and_recovers(GoneAs::Http);
}

// ---------------------------------------------------------------------------
// 4. Failures.

#[test]
fn a_refused_token_is_one_warning_then_recovers_once() {
    capture_logs();
    let api = FakeApi::start(Mode::ApiServer);
    for i in 0..4 {
        api.add(NODE, i);
    }
    std::fs::write(&api.token_file, "forbidden-token").unwrap();
    let w = start(api.settings());
    wait_for("403s", || {
        w.index.stats().errors_of(FailureKind::Forbidden) >= 2
    });
    std::fs::write(&api.token_file, "wrong-token").unwrap();
    wait_for("401s", || {
        w.index.stats().errors_of(FailureKind::Unauthorized) >= 3
    });
    assert!(w.index.is_empty());
    // The token file is read again: a rotated or fixed token is picked up.
    std::fs::write(&api.token_file, TOKEN).unwrap();
    wait_for("the list", || w.index.len() == 4);
    wait_for("watches", || w.index.stats().watches >= 2);
    let stats = w.index.stats();
    assert_eq!(stats.recoveries, 1, "{stats:?}");
    assert!(stats.last_error.as_deref().unwrap().contains("401"));

    let warnings = logged(log::Level::Warn, &api.base);
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    for (warning, status) in warnings.iter().zip(["403", "401"]) {
        assert!(warning.contains(status), "{warning}");
        assert!(warning.contains("pods: get, list, watch"), "{warning}");
        assert!(
            warning.contains(&api.token_file.display().to_string()),
            "{warning}"
        );
    }
    let again = logged(log::Level::Info, &api.base)
        .into_iter()
        .filter(|m| m.contains("again"))
        .count();
    assert_eq!(again, 1);
    // The retries were slow (auth_retry), not the fast backoff.
    let refused: Vec<Instant> = api
        .requests()
        .iter()
        .filter(|r| r.status == 401 || r.status == 403)
        .map(|r| r.at)
        .collect();
    for pair in refused.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(120));
    }
    w.stop();
}

#[test]
fn server_errors_back_off_with_jitter_and_recover() {
    capture_logs();
    let api = FakeApi::start(Mode::ApiServer);
    for i in 0..4 {
        api.add(NODE, i);
    }
    api.with(|st| st.fail_next = 6);
    let w = start(api.settings());
    wait_for("the list", || w.index.stats().lists == 1);
    assert_eq!(w.index.len(), 4);
    let stats = w.index.stats();
    assert_eq!(stats.errors_of(FailureKind::ServerError), 6);
    assert_eq!(stats.recoveries, 1);
    // Waits of 10..20 ms, 20..40, 40..80, 80..160, 100..200, 100..200.
    let at: Vec<Instant> = api.lists().iter().map(|r| r.at).collect();
    let gaps: Vec<Duration> = at.windows(2).map(|p| p[1] - p[0]).collect();
    assert_eq!(gaps.len(), 6);
    assert!(gaps[5] > gaps[0], "{gaps:?}");
    assert!(gaps[3] >= Duration::from_millis(80), "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(600)),
        "{gaps:?}"
    );
    assert_eq!(
        logged(log::Level::Warn, &api.base).len(),
        1,
        "one warning per kind"
    );

    // 503s on the watch: retried with backoff from the same version, no relist.
    wait_for("a watch", || w.index.stats().watches >= 1);
    api.with(|st| {
        st.fail_next = 3;
        st.fail_status = 503;
    });
    api.kick();
    wait_for("recovery", || w.index.stats().recoveries == 2);
    api.add(NODE, 9);
    wait_for("an event after recovery", || {
        w.index.pod(&uid(NODE, 9)).is_some()
    });
    let stats = w.index.stats();
    assert_eq!(stats.errors_of(FailureKind::ServerError), 9);
    assert_eq!(stats.lists, 1);
    assert!(api
        .watches()
        .iter()
        .filter(|r| r.status == 503)
        .all(|r| r.query["resourceVersion"] == "104"));
    w.stop();
}

#[test]
fn a_server_that_never_answers_is_cut_by_timeouts_and_reconnected() {
    let api = FakeApi::start(Mode::ApiServer);
    for i in 0..4 {
        api.add(NODE, i);
    }
    let mut settings = api.settings();
    settings.request_timeout = Duration::from_millis(300);
    // Connections accepted and never answered: the caller is not blocked.
    api.with(|st| st.stall = true);
    let w = start(settings);
    wait_for("timeouts", || {
        w.index.stats().errors_of(FailureKind::Timeout) >= 2
    });
    assert!(w.index.is_empty());
    api.with(|st| st.stall = false);
    wait_for("the list", || w.index.len() == 4);
    assert_eq!(w.index.stats().recoveries, 1);

    // A watch that answers, then goes silent: cut after timeoutSeconds (1 s)
    // and request_timeout, then made again.
    let timeouts = w.index.stats().errors_of(FailureKind::Timeout);
    api.with(|st| st.silent_watches = true);
    api.kick();
    let silent_since = Instant::now();
    wait_for("the silent watch to be cut", || {
        w.index.stats().errors_of(FailureKind::Timeout) > timeouts
    });
    let cut_after = silent_since.elapsed();
    assert!(cut_after >= Duration::from_millis(1200), "{cut_after:?}");
    assert!(cut_after < Duration::from_millis(3000), "{cut_after:?}");
    api.with(|st| st.silent_watches = false);
    api.add(NODE, 7);
    wait_for("an event on the new watch", || {
        w.index.pod(&uid(NODE, 7)).is_some()
    });
    // Stopping does not wait for the server, even in the middle of a watch.
    api.with(|st| st.silent_watches = true);
    api.kick();
    std::thread::sleep(Duration::from_millis(100));
    w.stop();
}

// ---------------------------------------------------------------------------
// 5. The kubelet.

#[test]
fn kubelet_mode_polls_pods_and_keeps_deleted_ones_for_the_grace_period() {
    let api = FakeApi::start(Mode::Kubelet);
    for i in 0..3 {
        api.add(NODE, i);
        api.add("node-b", i);
    }
    let mut settings = api.settings();
    settings.source = PodSource::Kubelet {
        url: format!("{}/", api.base),
    };
    settings.api_url = "https://unused.invalid".into();
    let w = start(settings);
    wait_for("the first poll", || w.index.len() == 3);
    for i in 0..3 {
        check_pod(&w.index, i);
    }
    let u0 = uid(NODE, 0);
    let deleted = Instant::now();
    api.change(|st| st.delete(&u0));
    api.add(NODE, 3);
    wait_for("the next poll", || w.index.pod(&uid(NODE, 3)).is_some());
    check_pod(&w.index, 3);
    assert!(!w.index.live_pods().iter().any(|p| p.uid == u0));
    assert!(w.index.pod(&u0).is_some(), "gone before its grace period");
    wait_for("the grace period to end", || w.index.pod(&u0).is_none());
    assert!(deleted.elapsed() >= Duration::from_millis(500));
    assert_eq!(w.index.len(), 3);

    let requests = api.requests();
    assert!(requests
        .iter()
        .all(|r| r.path == "/pods" && r.status == 200));
    assert!(requests
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer secret-token")));
    let polls = w.index.stats().kubelet_polls;
    assert!(polls >= 3, "{polls}");
    assert_eq!(w.index.stats().lists, 0);
    w.stop();
}

// ---------------------------------------------------------------------------
// Settings.

#[test]
fn in_cluster_settings_come_from_the_pods_environment() {
    let env: HashMap<&str, &str> = [
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("NODE_NAME", "worker-3"),
    ]
    .into();
    let s = KubeSettings::in_cluster_with(|v| env.get(v).map(|s| s.to_string())).unwrap();
    assert_eq!(s.api_url, "https://10.96.0.1:443");
    assert_eq!(s.node_name, "worker-3");
    assert_eq!(
        s.token_file,
        PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );
    assert_eq!(
        s.ca_file,
        PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    );
    assert!(s.validate().is_ok());

    let v6 = KubeSettings::in_cluster_with(|v| match v {
        "KUBERNETES_SERVICE_HOST" => Some("fd00::1".into()),
        "KUBERNETES_SERVICE_PORT" => Some("6443".into()),
        _ => Some("n".into()),
    })
    .unwrap();
    assert_eq!(v6.api_url, "https://[fd00::1]:6443");

    let err =
        KubeSettings::in_cluster_with(|v| (v != "NODE_NAME").then(|| "x".to_string())).unwrap_err();
    assert!(matches!(
        err,
        KubeError::MissingEnv {
            var: "NODE_NAME",
            ..
        }
    ));
    assert!(err.to_string().contains("spec.nodeName"), "{err}");
}

#[test]
fn a_watcher_without_a_node_name_is_refused() {
    let settings = KubeSettings {
        node_name: String::new(),
        ..KubeSettings::default()
    };
    let err =
        spawn_watcher(settings, PodIndex::new(), Arc::new(AtomicBool::new(false))).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("node_name"), "{err}");
    let bad_url = KubeSettings {
        api_url: "kubernetes:443".into(),
        node_name: "n".into(),
        ..KubeSettings::default()
    };
    assert!(matches!(
        bad_url.validate(),
        Err(KubeError::Invalid { key: "api_url", .. })
    ));
}

// ---------------------------------------------------------------------------
// 6. Names, through the resolver.

/// A container's cgroup as the cgroups plugin classifies it.
fn k8s_container(pod_uid: &str, container_id: &str) -> Workload {
    Workload {
        kind: "k8s_container".into(),
        attributes: vec![
            ("pod_uid".into(), pod_uid.into()),
            ("qos".into(), "burstable".into()),
            ("container_id".into(), container_id.into()),
            ("runtime".into(), "containerd".into()),
        ],
        cgroup_dir: PathBuf::new(),
    }
}

fn wait_names(resolver: &Resolver, key: &str) -> Names {
    let mut state = NameState::Pending;
    wait_for(key, || {
        state = resolver.names(key);
        state != NameState::Pending
    });
    match state {
        NameState::Known(names) => names,
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn names_config_lookups_name_containers_and_pods_including_one_watched_later() {
    capture_logs();
    let api = FakeApi::start(Mode::ApiServer);
    for i in 0..2 {
        api.add(NODE, i);
    }
    api.add("node-b", 0);
    let config = NamesConfig {
        kubernetes: KubernetesMode::ApiServer,
        node_name: NODE.into(),
        pod_labels: vec!["app".into(), "app.kubernetes.io/name".into()],
        api_url: api.base.clone(),
        token_file: api.token_file.clone(),
        ca_file: api.ca_file.clone(),
        slurm: false,
        ..NamesConfig::default()
    };
    let resolver = config.resolver(PathBuf::from("/nonexistent/proc"));

    let key = resolver
        .request(&k8s_container(&uid(NODE, 1), &cid(NODE, 1, 0)))
        .unwrap();
    assert_eq!(key, format!("pod:{}:{}", uid(NODE, 1), cid(NODE, 1, 0)));
    let names = wait_names(&resolver, &key);
    assert_eq!(
        names.0,
        [
            ("namespace".to_owned(), namespace(1)),
            ("pod".to_owned(), "web-1".to_owned()),
            ("node".to_owned(), NODE.to_owned()),
            ("label_app".to_owned(), "web-1".to_owned()),
            ("label_app_kubernetes_io_name".to_owned(), "shop".to_owned()),
            ("container".to_owned(), "app".to_owned()),
        ]
    );
    // The pod's own cgroup: the pod's names.
    let pod_cgroup = Workload {
        kind: "k8s_pod".into(),
        attributes: vec![("pod_uid".into(), uid(NODE, 0))],
        cgroup_dir: PathBuf::new(),
    };
    let pod_key = resolver.request(&pod_cgroup).unwrap();
    let names = wait_names(&resolver, &pod_key);
    assert_eq!(names.get("pod"), Some("web-0"));
    assert_eq!(names.get("container"), None);

    // A pod whose cgroup is seen before the watch delivers it: not yet,
    // then its names.
    let late = resolver
        .request(&k8s_container(&uid(NODE, 5), &cid(NODE, 5, 1)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(resolver.names(&late), NameState::Pending);
    api.add(NODE, 5);
    let names = wait_names(&resolver, &late);
    assert_eq!(names.get("pod"), Some("web-5"));
    assert_eq!(names.get("container"), Some("sidecar"));
    assert_eq!(names.get("namespace"), Some(namespace(5).as_str()));

    drop(resolver);
    assert!(
        !LOGS.lock().unwrap().iter().any(|(_, m)| m.contains(TOKEN)),
        "the token reached a log"
    );
}

#[test]
fn the_watcher_stops_when_the_resolver_owning_its_lookup_is_dropped() {
    let api = FakeApi::start(Mode::ApiServer);
    api.add(NODE, 0);
    let lookup = KubeLookup::new(PodIndex::new());
    let index = lookup.index().clone();
    let thread = spawn_watcher(api.settings(), index.clone(), lookup.stop_flag()).unwrap();
    let resolver = Resolver::new(vec![Arc::new(lookup)]);
    let key = resolver
        .request(&k8s_container(&uid(NODE, 0), &cid(NODE, 0, 2)))
        .unwrap();
    assert_eq!(wait_names(&resolver, &key).get("container"), Some("setup"));
    wait_for("a watch", || index.stats().watches >= 1);
    let began = Instant::now();
    drop(resolver);
    thread.join().unwrap();
    assert!(began.elapsed() < Duration::from_millis(500), "slow to stop");
}
