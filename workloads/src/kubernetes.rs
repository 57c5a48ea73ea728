//! This node's pods, from the Kubernetes API server or the kubelet, kept in
//! a [`PodIndex`] so that the agent can name a cgroup's pod uid or
//! container id (namespace, pod, node, the labels a user listed, the
//! container's name).
//!
//! [`spawn_watcher`] starts one thread that fills the index until told to
//! stop; readers ([`PodIndex::pod`], [`PodIndex::container`]) take a short
//! read lock and never wait for the network.
//!
//! # Where pods come from
//!
//! - [`PodSource::ApiServer`]: `GET /api/v1/pods?fieldSelector=spec.nodeName=NODE`
//!   (a list), then the same with `watch=1` from the list's
//!   `resourceVersion`, with bookmarks, again and again from the last
//!   version seen; a watch that answers `410 Gone` (an `ERROR` event or the
//!   HTTP status) means the version is too old: list again. The service
//!   account needs the RBAC rule `pods: get, list, watch` (a ClusterRole
//!   bound to it), and `NODE_NAME` from the downward API (`spec.nodeName`).
//! - [`PodSource::Kubelet`]: `GET {url}/pods` (the kubelet's own pods, the
//!   same PodList), polled every [`KubeSettings::kubelet_poll_interval`].
//!   The service account needs `nodes/proxy: get` (the kubelet authorises
//!   `/pods` as the `proxy` subresource of its node).
//!
//! Both send the service account token (read again at each request, since
//! tokens rotate) and check the server against `ca_file`.
//!
//! # Memory
//!
//! Bounded by this node's pods: the field selector keeps other nodes' pods
//! out, and a pod whose `spec.nodeName` is another node is dropped while it
//! is parsed, even if a server sends it. A deleted pod (and a container id
//! that a restart replaced) stays answerable for
//! [`KubeSettings::deleted_grace`], because its last points may still be on
//! their way, then goes.
//!
//! # Failures
//!
//! Nothing from the network panics or blocks a caller. A refused token
//! (401, 403) is one warning naming the RBAC rule and the token file, then
//! a try every [`KubeSettings::auth_retry`]; server errors, refused
//! connections and timeouts are retried with a jittered backoff from
//! [`KubeSettings::retry_min`] doubling to [`KubeSettings::retry_max`]. Each
//! kind of failure is a warning the first time in an outage and a debug line
//! after; the first success after failures is one info line. A watch that
//! stops answering is cut at its `timeoutSeconds` plus
//! [`KubeSettings::request_timeout`] and made again. [`PodIndex::stats`]
//! counts all of it.
//!
//! Requests run on short-lived I/O threads so that the watcher thread sees
//! `stop` within [`TICK`]; an I/O thread still inside a read when the watcher
//! stops ends at its own deadline and touches nothing shared.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::names::{label_key, Names};

/// Where the service account's token and CA are mounted in a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How often the watcher thread looks at `stop` and at expired deletions.
pub const TICK: Duration = Duration::from_millis(50);

/// The RBAC rule the API server mode needs, as the warnings name it.
const API_RBAC: &str = "pods: get, list, watch";

/// The RBAC rule the kubelet mode needs, as the warnings name it.
const KUBELET_RBAC: &str = "nodes/proxy: get";

/// The most of an error response's body read for its message.
const MAX_ERROR_BODY: u64 = 4096;

/// The longest server message kept in logs and stats.
const MAX_MESSAGE_CHARS: usize = 300;

/// Where pods are read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PodSource {
    /// The API server at [`KubeSettings::api_url`]: a list, then a watch
    /// (RBAC `pods: get, list, watch`).
    #[default]
    ApiServer,
    /// The kubelet's `GET {url}/pods`, polled every
    /// [`KubeSettings::kubelet_poll_interval`] (RBAC `nodes/proxy: get`).
    Kubelet {
        /// The kubelet's base URL, e.g. `https://127.0.0.1:10250`.
        url: String,
    },
}

/// How to reach the pods of this node, and how patiently.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// The API server, e.g. `https://kubernetes.default.svc`
    /// ([`KubeSettings::in_cluster`] builds it from the service env vars).
    pub api_url: String,
    /// The bearer token, read at each request (tokens rotate); an empty
    /// path sends none (a kubelet's read-only port).
    pub token_file: PathBuf,
    /// The CA that signs the server's certificate; an empty path uses the
    /// system's trust store.
    pub ca_file: PathBuf,
    /// This node's name (`NODE_NAME` from the downward API). Required for
    /// the API server; for the kubelet, empty accepts every pod it lists.
    pub node_name: String,
    /// Labels copied as names, under the key [`crate::names::label_key`].
    pub pod_labels: Vec<String>,
    /// Where pods are read from.
    pub source: PodSource,
    /// Limit for connecting, for a response's headers and for a list's
    /// body (a watch's body is long-lived: see `watch_timeout`).
    pub request_timeout: Duration,
    /// How often the kubelet is asked (for [`PodSource::Kubelet`]).
    pub kubelet_poll_interval: Duration,
    /// A watch's `timeoutSeconds` (whole seconds, at least 1; up to a
    /// quarter more, at random, so that agents do not reconnect together).
    /// A watch still open `request_timeout` after it is cut as silent.
    pub watch_timeout: Duration,
    /// How long a deleted pod, or a container id a restart replaced, stays
    /// answerable (its last points may still be on their way).
    pub deleted_grace: Duration,
    /// The first wait after a failure; it doubles at each failure in a row.
    pub retry_min: Duration,
    /// The longest wait between tries.
    pub retry_max: Duration,
    /// The wait after a refused or unreadable token (a person must act).
    pub auth_retry: Duration,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            api_url: "https://kubernetes.default.svc".into(),
            token_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("token"),
            ca_file: PathBuf::from(SERVICE_ACCOUNT_DIR).join("ca.crt"),
            node_name: String::new(),
            pod_labels: Vec::new(),
            source: PodSource::ApiServer,
            request_timeout: Duration::from_secs(10),
            kubelet_poll_interval: Duration::from_secs(10),
            watch_timeout: Duration::from_secs(300),
            deleted_grace: Duration::from_secs(300),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            auth_retry: Duration::from_secs(60),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// An environment variable that a pod gets from Kubernetes is missing.
    #[error("{var} is not set (not running in a pod?): {fix}")]
    MissingEnv {
        /// The variable.
        var: &'static str,
        /// What sets it.
        fix: &'static str,
    },
    /// A setting's value is unusable.
    #[error("kubernetes setting {key}: {reason}")]
    Invalid {
        /// The field of [`KubeSettings`].
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl KubeSettings {
    /// The settings of an agent running in a pod: the API server from
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, the node from
    /// `NODE_NAME`, the service account's token and CA, defaults elsewhere.
    pub fn in_cluster() -> Result<Self, KubeError> {
        Self::in_cluster_with(|var| std::env::var(var).ok())
    }

    /// [`KubeSettings::in_cluster`] with the environment read through `env`
    /// (tests give their own).
    pub fn in_cluster_with(env: impl Fn(&str) -> Option<String>) -> Result<Self, KubeError> {
        let get = |var: &'static str, fix: &'static str| {
            env(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(KubeError::MissingEnv { var, fix })
        };
        let service = "Kubernetes sets it in every pod";
        let host = get("KUBERNETES_SERVICE_HOST", service)?;
        let port = get("KUBERNETES_SERVICE_PORT", service)?;
        let node_name = get(
            "NODE_NAME",
            "give the agent's container `env: [{name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]`",
        )?;
        // An IPv6 address needs brackets in a URL.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Self {
            api_url: format!("https://{host}:{port}"),
            node_name,
            ..Self::default()
        })
    }

    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), KubeError> {
        let invalid = |key, reason: &str| {
            Err(KubeError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        match &self.source {
            PodSource::ApiServer => {
                check_url("api_url", &self.api_url)?;
                if self.node_name.trim().is_empty() {
                    return invalid(
                        "node_name",
                        "empty: the watch must be limited to this node's pods (set NODE_NAME from the downward API's spec.nodeName)",
                    );
                }
            }
            PodSource::Kubelet { url } => {
                check_url("source.url", url)?;
                if self.kubelet_poll_interval.is_zero() {
                    return invalid("kubelet_poll_interval", "must be more than 0");
                }
            }
        }
        for (key, value) in [
            ("request_timeout", self.request_timeout),
            ("retry_min", self.retry_min),
            ("auth_retry", self.auth_retry),
        ] {
            if value.is_zero() {
                return invalid(key, "must be more than 0");
            }
        }
        if self.watch_timeout < Duration::from_secs(1) {
            return invalid("watch_timeout", "must be at least 1s");
        }
        if self.retry_max < self.retry_min {
            return invalid("retry_max", "must be at least retry_min");
        }
        Ok(())
    }

    fn base_url(&self) -> &str {
        match &self.source {
            PodSource::ApiServer => self.api_url.trim_end_matches('/'),
            PodSource::Kubelet { url } => url.trim_end_matches('/'),
        }
    }

    fn rbac(&self) -> &'static str {
        match self.source {
            PodSource::ApiServer => API_RBAC,
            PodSource::Kubelet { .. } => KUBELET_RBAC,
        }
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), KubeError> {
    let invalid = |reason: String| Err(KubeError::Invalid { key, reason });
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return invalid(format!("`{url}` is not a URL"));
    };
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
        return invalid(format!("`{url}` must start with https:// or http://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return invalid(format!("`{url}` has no host"));
    }
    Ok(())
}

/// One pod of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.uid`, as in the pod's cgroup path.
    pub uid: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.nodeName`.
    pub node: String,
    /// The labels listed in [`KubeSettings::pod_labels`] that the pod has:
    /// `(label, value)`, in the settings' order.
    pub labels: Vec<(String, String)>,
    /// Its containers (init and ephemeral ones too) that have an id:
    /// `(id without its runtime prefix, container name)`.
    pub containers: Vec<(String, String)>,
}

impl PodInfo {
    /// The pod's names as point attributes: `namespace`, `pod`, `node`,
    /// then `label_<x>` for each listed label the pod has.
    pub fn names(&self) -> Names {
        let mut names = Names::new();
        names.push("namespace", self.namespace.as_str());
        names.push("pod", self.name.as_str());
        names.push("node", self.node.as_str());
        for (label, value) in &self.labels {
            names.push(label_key(label), value.as_str());
        }
        names
    }
}

/// The kinds of failure the watcher tells apart; each is a warning once per
/// outage, then debug lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// HTTP 401: the token is missing, wrong or expired.
    Unauthorized,
    /// HTTP 403: the token's account lacks the RBAC rule.
    Forbidden,
    /// The token file cannot be read.
    Token,
    /// HTTP 5xx or 429.
    ServerError,
    /// Another HTTP status (a 4xx that is not about the token, a redirect).
    Rejected,
    /// Refused, reset or closed connections, unknown hosts.
    Connection,
    /// No answer in time (connecting, headers, a list's body, a silent watch).
    Timeout,
    /// The TLS handshake failed, or `ca_file` is unusable.
    Tls,
    /// A body that is not the JSON expected.
    Decode,
    /// A watch's `ERROR` event other than 410.
    WatchError,
    /// The watcher could not start an I/O thread.
    Internal,
}

impl FailureKind {
    /// A short name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Token => "token",
            Self::ServerError => "server error",
            Self::Rejected => "rejected",
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Decode => "decode",
            Self::WatchError => "watch error",
            Self::Internal => "internal",
        }
    }

    fn is_auth(self) -> bool {
        matches!(self, Self::Unauthorized | Self::Forbidden | Self::Token)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the watcher has done so far ([`PodIndex::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatcherStats {
    /// Lists read whole (API server).
    pub lists: u64,
    /// Watches the server accepted (HTTP 200).
    pub watches: u64,
    /// Lists made again because a watch answered 410 Gone.
    pub relists_after_gone: u64,
    /// Kubelet answers read whole.
    pub kubelet_polls: u64,
    /// `ADDED` events applied.
    pub added: u64,
    /// `MODIFIED` events applied.
    pub modified: u64,
    /// `DELETED` events applied.
    pub deleted: u64,
    /// `BOOKMARK` events.
    pub bookmarks: u64,
    /// Pods of other nodes dropped (a server that ignored the field selector).
    pub other_node_pods_ignored: u64,
    /// Failures by kind.
    pub errors: BTreeMap<FailureKind, u64>,
    /// The last failure's text.
    pub last_error: Option<String>,
    /// Successes right after failures (each logged once at info level).
    pub recoveries: u64,
    /// The `resourceVersion` the next watch starts from.
    pub resource_version: String,
}

impl WatcherStats {
    /// Failures of one kind.
    pub fn errors_of(&self, kind: FailureKind) -> u64 {
        self.errors.get(&kind).copied().unwrap_or(0)
    }

    /// Failures of every kind.
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// This node's pods by uid and by container id. Cheap to clone (clones
/// share the index); reads take a read lock for a hash lookup and an `Arc`
/// clone, never longer.
#[derive(Clone, Default)]
pub struct PodIndex {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: RwLock<State>,
    stats: Mutex<WatcherStats>,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, PodEntry>,
    containers: HashMap<String, ContainerEntry>,
}

struct PodEntry {
    info: Arc<PodInfo>,
    /// When a deletion was seen: answerable until `deleted_grace` after it.
    deleted_at: Option<Instant>,
}

struct ContainerEntry {
    pod_uid: String,
    name: String,
    /// When a restart replaced this id: answerable until `deleted_grace` after it.
    retired_at: Option<Instant>,
}

impl fmt::Debug for PodIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodIndex")
            .field("pods", &self.len())
            .finish()
    }
}

impl PodIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A writer never panics while holding the lock; if one did, the
        // state is still a valid map: read on.
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn stats_mut<R>(&self, f: impl FnOnce(&mut WatcherStats) -> R) -> R {
        let mut stats = self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut stats)
    }

    /// The pod of uid `uid` (deleted ones during their grace period too).
    pub fn pod(&self, uid: &str) -> Option<PodInfo> {
        let info = self.read().pods.get(uid).map(|p| p.info.clone())?;
        Some(PodInfo::clone(&info))
    }

    /// The pod and container name of a container id (64-hex id, no runtime
    /// prefix; one given with its `containerd://` prefix is found too).
    pub fn container(&self, id: &str) -> Option<(PodInfo, String)> {
        let id = container_id(id)?;
        let (info, name) = {
            let state = self.read();
            let container = state.containers.get(id)?;
            let pod = state.pods.get(&container.pod_uid)?;
            (pod.info.clone(), container.name.clone())
        };
        Some((PodInfo::clone(&info), name))
    }

    /// The pods indexed, deleted ones in their grace period included.
    pub fn len(&self) -> usize {
        self.read().pods.len()
    }

    /// Whether no pod is indexed.
    pub fn is_empty(&self) -> bool {
        self.read().pods.is_empty()
    }

    /// The indexed pods that are not deleted.
    pub fn live_pods(&self) -> Vec<PodInfo> {
        let infos: Vec<Arc<PodInfo>> = self
            .read()
            .pods
            .values()
            .filter(|p| p.deleted_at.is_none())
            .map(|p| p.info.clone())
            .collect();
        infos.iter().map(|i| PodInfo::clone(i)).collect()
    }

    /// What the watcher has done so far.
    pub fn stats(&self) -> WatcherStats {
        self.stats_mut(|s| s.clone())
    }
}

fn expiry(at: Instant, grace: Duration) -> Option<Instant> {
    at.checked_add(grace)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl State {
    /// Adds or replaces a pod; container ids it no longer has are retired.
    /// Whether something now waits for its grace period to end.
    fn upsert(&mut self, info: PodInfo, now: Instant) -> bool {
        let uid = info.uid.clone();
        for (id, name) in &info.containers {
            self.containers.insert(
                id.clone(),
                ContainerEntry {
                    pod_uid: uid.clone(),
                    name: name.clone(),
                    retired_at: None,
                },
            );
        }
        let info = Arc::new(info);
        let old = self.pods.insert(
            uid.clone(),
            PodEntry {
                info: info.clone(),
                deleted_at: None,
            },
        );
        let mut retired = false;
        if let Some(old) = old {
            for (id, _) in &old.info.containers {
                if info.containers.iter().any(|(new, _)| new == id) {
                    continue;
                }
                if let Some(c) = self.containers.get_mut(id) {
                    if c.pod_uid == uid && c.retired_at.is_none() {
                        c.retired_at = Some(now);
                        retired = true;
                    }
                }
            }
        }
        retired
    }

    /// Marks a pod deleted (it stays for the grace period).
    fn mark_deleted(&mut self, uid: &str, now: Instant) -> bool {
        match self.pods.get_mut(uid) {
            Some(p) if p.deleted_at.is_none() => {
                p.deleted_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Makes the index the pods of a whole list; those missing from it are
    /// deleted (kept for the grace period).
    fn replace(&mut self, pods: Vec<PodInfo>, now: Instant) -> bool {
        let listed: std::collections::HashSet<String> =
            pods.iter().map(|p| p.uid.clone()).collect();
        let mut marked = false;
        for pod in pods {
            marked |= self.upsert(pod, now);
        }
        for (uid, entry) in &mut self.pods {
            if entry.deleted_at.is_none() && !listed.contains(uid) {
                entry.deleted_at = Some(now);
                marked = true;
            }
        }
        marked
    }

    /// Removes what has outlived its grace period; returns when the next
    /// entry will.
    fn prune(&mut self, now: Instant, grace: Duration) -> Option<Instant> {
        let mut next = None;
        let mut keep = |since: Option<Instant>| match since {
            None => true,
            Some(t) => match expiry(t, grace) {
                None => true,
                Some(end) if end <= now => false,
                Some(end) => {
                    next = earliest(next, Some(end));
                    true
                }
            },
        };
        self.pods.retain(|_, p| keep(p.deleted_at));
        let pods = &self.pods;
        self.containers
            .retain(|_, c| pods.contains_key(&c.pod_uid) && keep(c.retired_at));
        next
    }
}

/// The id of a container status's `containerID` (`containerd://<id>`,
/// `docker://<id>`, `cri-o://<id>`), none when empty.
fn container_id(raw: &str) -> Option<&str> {
    let id = raw.split_once("://").map_or(raw, |(_, id)| id).trim();
    (!id.is_empty()).then_some(id)
}

// ---------------------------------------------------------------------------
// The API's JSON: only the fields used; a null where an object or list is
// expected reads as empty (the API omits empty fields, some servers write null).

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
struct Pod {
    #[serde(default, deserialize_with = "nullable")]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    spec: PodSpec,
    #[serde(default, deserialize_with = "nullable")]
    status: PodStatus,
}

#[derive(Deserialize, Default)]
struct ObjectMeta {
    #[serde(default, deserialize_with = "nullable")]
    uid: String,
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    labels: HashMap<String, String>,
    #[serde(rename = "resourceVersion", default, deserialize_with = "nullable")]
    resource_version: String,
}

#[derive(Deserialize, Default)]
struct PodSpec {
    #[serde(rename = "nodeName", default, deserialize_with = "nullable")]
    node_name: String,
}

#[derive(Deserialize, Default)]
struct PodStatus {
    #[serde(rename = "containerStatuses", default, deserialize_with = "nullable")]
    containers: Vec<ContainerStatus>,
    #[serde(
        rename = "initContainerStatuses",
        default,
        deserialize_with = "nullable"
    )]
    init_containers: Vec<ContainerStatus>,
    #[serde(
        rename = "ephemeralContainerStatuses",
        default,
        deserialize_with = "nullable"
    )]
    ephemeral_containers: Vec<ContainerStatus>,
}

#[derive(Deserialize, Default)]
struct ContainerStatus {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(rename = "containerID", default, deserialize_with = "nullable")]
    container_id: String,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(rename = "resourceVersion", default, deserialize_with = "nullable")]
    resource_version: String,
}

/// A `Status` object (an error's body, an `ERROR` event's object).
#[derive(Deserialize, Default)]
struct Status {
    #[serde(default, deserialize_with = "nullable")]
    code: i64,
    #[serde(default, deserialize_with = "nullable")]
    reason: String,
    #[serde(default, deserialize_with = "nullable")]
    message: String,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: serde_json::Value,
}

/// Which pods are kept and what is copied of them.
struct PodFilter {
    /// Empty: every pod (the kubelet's own list).
    node: String,
    labels: Vec<String>,
}

enum Skip {
    /// No uid: not a pod the index can key.
    NoUid,
    /// Another node's pod (its uid).
    OtherNode(String),
}

impl PodFilter {
    fn info(&self, pod: Pod) -> Result<PodInfo, Skip> {
        let Pod {
            metadata,
            spec,
            status,
        } = pod;
        if metadata.uid.is_empty() {
            return Err(Skip::NoUid);
        }
        if !self.node.is_empty() && spec.node_name != self.node {
            return Err(Skip::OtherNode(metadata.uid));
        }
        let labels = self
            .labels
            .iter()
            .filter_map(|l| metadata.labels.get(l).map(|v| (l.clone(), v.clone())))
            .collect();
        let containers = status
            .containers
            .into_iter()
            .chain(status.init_containers)
            .chain(status.ephemeral_containers)
            .filter_map(|c| container_id(&c.container_id).map(|id| (id.to_owned(), c.name)))
            .collect();
        Ok(PodInfo {
            uid: metadata.uid,
            name: metadata.name,
            namespace: metadata.namespace,
            node: spec.node_name,
            labels,
            containers,
        })
    }
}

/// A list read: this node's pods only (others are dropped as they are parsed).
#[derive(Default)]
struct Listed {
    resource_version: String,
    pods: Vec<PodInfo>,
    ignored: u64,
}

/// Parses a PodList, keeping only the filter's pods.
#[derive(Clone, Copy)]
struct ListSeed<'a> {
    filter: &'a PodFilter,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Listed;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Listed, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Listed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a PodList object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Listed, A::Error> {
        let mut listed = Listed::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "metadata" => {
                    let meta: Option<ListMeta> = map.next_value()?;
                    listed.resource_version = meta.unwrap_or_default().resource_version;
                }
                "items" => {
                    let (pods, ignored) = map.next_value_seed(ItemsSeed {
                        filter: self.filter,
                    })?;
                    listed.pods = pods;
                    listed.ignored = ignored;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(listed)
    }
}

/// Parses `items`, one pod at a time, dropping other nodes' pods at once.
#[derive(Clone, Copy)]
struct ItemsSeed<'a> {
    filter: &'a PodFilter,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = (Vec<PodInfo>, u64);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = (Vec<PodInfo>, u64);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of pods")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), 0))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), 0))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut pods = Vec::new();
        let mut ignored = 0;
        while let Some(pod) = seq.next_element::<Pod>()? {
            match self.filter.info(pod) {
                Ok(info) => pods.push(info),
                Err(_) => ignored += 1,
            }
        }
        Ok((pods, ignored))
    }
}

// ---------------------------------------------------------------------------
// Failures.

/// One failed step.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    message: String,
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
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
fn encode(value: &str) -> String {
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
fn watch_url(pods_url: &str, rv: &str, seconds: u64) -> String {
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
fn fetch_list(
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
    let reader = BufReader::new(body.into_reader());
    let mut de = serde_json::Deserializer::from_reader(reader);
    let listed = ListSeed { filter }
        .deserialize(&mut de)
        .and_then(|l| de.end().map(|()| l))
        .map_err(|e| from_json(e, &what))?;
    Ok(listed)
}

/// What an I/O thread tells the watcher during a watch.
enum WatchMsg {
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
enum Change {
    Added,
    Modified,
    Deleted,
}

enum WatchEnd {
    /// The server closed it (its `timeoutSeconds`).
    Closed,
    /// 410 Gone: list again.
    Gone(String),
    Failed(Failure),
}

/// Runs a watch request and turns its events into messages.
fn run_watch(
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
    // One JSON object per line, read as they come, never the whole body.
    let reader = BufReader::new(body.into_reader());
    for event in serde_json::Deserializer::from_reader(reader).into_iter::<WatchEvent>() {
        let event = match event {
            Ok(e) => e,
            Err(e) => return WatchEnd::Failed(from_json(e, &what)),
        };
        let change = match event.kind.as_str() {
            "ADDED" => Change::Added,
            "MODIFIED" => Change::Modified,
            "DELETED" => Change::Deleted,
            "BOOKMARK" => {
                let rv = serde_json::from_value::<Pod>(event.object)
                    .map(|p| p.metadata.resource_version)
                    .unwrap_or_default();
                if tx.send(WatchMsg::Bookmark(rv)).is_err() {
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
        if tx.send(msg).is_err() {
            return WatchEnd::Closed;
        }
    }
    WatchEnd::Closed
}

// ---------------------------------------------------------------------------
// The watcher thread.

/// Starts the thread that fills `index` until `stop` is set; returns at once.
///
/// Settings that cannot work ([`KubeSettings::validate`]) are an
/// `InvalidInput` error naming the setting; a thread that cannot be started
/// is the system's error.
pub fn spawn_watcher(
    settings: KubeSettings,
    index: PodIndex,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    settings
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    std::thread::Builder::new()
        .name("alumet-kube-pods".into())
        .spawn(move || Watcher::new(settings, index, stop).run())
}

/// A tiny xorshift generator for jitter (no need for a good one).
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        Self(h.finish() | 1)
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether the last step failed, and what was said about it.
#[derive(Default)]
struct Health {
    failing: bool,
    failures: u64,
    warned: Vec<FailureKind>,
    ever_worked: bool,
}

struct Watcher {
    settings: KubeSettings,
    base: String,
    filter: Arc<PodFilter>,
    index: PodIndex,
    stop: Arc<AtomicBool>,
    agent: Option<ureq::Agent>,
    backoff: Duration,
    health: Health,
    jitter: Jitter,
    next_expiry: Option<Instant>,
}

/// The result of a step the watcher waits for.
enum Step<T> {
    Done(T),
    Failed(Failure),
    Stopped,
}

impl Watcher {
    fn new(settings: KubeSettings, index: PodIndex, stop: Arc<AtomicBool>) -> Self {
        let filter = Arc::new(PodFilter {
            node: settings.node_name.trim().to_owned(),
            labels: settings.pod_labels.clone(),
        });
        Self {
            base: settings.base_url().to_owned(),
            backoff: settings.retry_min,
            settings,
            filter,
            index,
            stop,
            agent: None,
            health: Health::default(),
            jitter: Jitter::new(),
            next_expiry: None,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn run(mut self) {
        match self.settings.source.clone() {
            PodSource::ApiServer => self.run_api_server(),
            PodSource::Kubelet { .. } => self.run_kubelet(),
        }
        log::debug!("kubernetes: the pod watcher of {} stopped", self.base);
    }

    fn run_api_server(&mut self) {
        let selector = encode(&format!("spec.nodeName={}", self.filter.node));
        let pods_url = format!("{}/api/v1/pods?fieldSelector={selector}", self.base);
        // None: list first. The first list may come from the server's cache
        // (resourceVersion=0, cheap for the server); later ones, after a
        // 410, must be the latest.
        let mut resource_version: Option<String> = None;
        let mut from_cache = true;
        loop {
            if self.stopped() {
                return;
            }
            let Some(mut rv) = resource_version.take() else {
                // A list starts afresh: the CA may have changed too.
                self.agent = None;
                let url = if from_cache {
                    format!("{pods_url}&resourceVersion=0")
                } else {
                    pods_url.clone()
                };
                match self.list(&url) {
                    Step::Stopped => return,
                    Step::Done(listed) => {
                        from_cache = false;
                        let count = listed.pods.len();
                        self.apply_list(listed.pods, listed.ignored);
                        self.index.stats_mut(|s| {
                            s.lists += 1;
                            s.resource_version = listed.resource_version.clone();
                        });
                        self.succeeded(count);
                        resource_version = Some(listed.resource_version);
                    }
                    Step::Failed(f) => {
                        if !self.pause_after(f) {
                            return;
                        }
                    }
                }
                continue;
            };
            let began = Instant::now();
            let seconds = self.watch_seconds();
            let url = watch_url(&pods_url, &rv, seconds);
            match self.watch(&url, seconds, &mut rv) {
                Step::Stopped => return,
                Step::Done(WatchEnd::Closed) => {
                    resource_version = Some(rv);
                    // A server that closes watches at once must not make us spin.
                    let floor = self.settings.retry_min;
                    if began.elapsed() < floor && !self.pause(floor) {
                        return;
                    }
                }
                Step::Done(WatchEnd::Gone(message)) => {
                    log::debug!(
                        "kubernetes: watch of {} expired ({message}): listing again",
                        self.base
                    );
                    self.index.stats_mut(|s| s.relists_after_gone += 1);
                    resource_version = None;
                }
                Step::Done(WatchEnd::Failed(f)) | Step::Failed(f) => {
                    resource_version = Some(rv);
                    if !self.pause_after(f) {
                        return;
                    }
                }
            }
        }
    }

    /// `timeoutSeconds`: the setting and up to a quarter more.
    fn watch_seconds(&mut self) -> u64 {
        let base = self.settings.watch_timeout.as_secs_f64().max(1.0);
        let spread = base * (1.0 + 0.25 * self.jitter.unit());
        // A float in [1, 1.25 * u64::MAX]: `as` saturates.
        (spread.round() as u64).max(1)
    }

    fn run_kubelet(&mut self) {
        let url = format!("{}/pods", self.base);
        loop {
            if self.stopped() {
                return;
            }
            match self.list(&url) {
                Step::Stopped => return,
                Step::Done(listed) => {
                    let count = listed.pods.len();
                    self.apply_list(listed.pods, listed.ignored);
                    self.index.stats_mut(|s| s.kubelet_polls += 1);
                    self.succeeded(count);
                    if !self.pause(self.settings.kubelet_poll_interval) {
                        return;
                    }
                }
                Step::Failed(f) => {
                    if !self.pause_after(f) {
                        return;
                    }
                }
            }
        }
    }

    /// The token to send, read now (tokens rotate).
    fn token(&self) -> Result<Option<String>, Failure> {
        let path = &self.settings.token_file;
        if path.as_os_str().is_empty() {
            return Ok(None);
        }
        match std::fs::read_to_string(path) {
            Ok(token) => Ok(Some(token.trim().to_owned())),
            Err(e) => Err(Failure::new(
                FailureKind::Token,
                format!(
                    "cannot read the service account token {}: {e}",
                    path.display()
                ),
            )),
        }
    }

    /// The HTTP client, built again after a failure (the CA may have changed).
    fn agent(&mut self) -> Result<ureq::Agent, Failure> {
        if let Some(agent) = &self.agent {
            return Ok(agent.clone());
        }
        let ca = &self.settings.ca_file;
        let tls = alumet_delivery::tls::TlsFiles {
            ca_file: ca.display().to_string(),
            ..Default::default()
        }
        .load()
        .map_err(|e| Failure::new(FailureKind::Tls, format!("ca_file: {e}")))?;
        let timeout = Some(self.settings.request_timeout);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect would carry the token elsewhere.
            .max_redirects(0)
            .user_agent(concat!("alumet-agent/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .timeout_connect(timeout)
            .timeout_recv_response(timeout)
            .build()
            .into();
        self.agent = Some(agent.clone());
        Ok(agent)
    }

    /// Runs `work` on an I/O thread and waits for it, looking at `stop`.
    fn off_thread<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
    ) -> Step<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("alumet-kube-io".into())
            .spawn(move || {
                // The watcher may have stopped: nobody to tell.
                let _ = tx.send(work());
            });
        if let Err(e) = spawned {
            return Step::Failed(Failure::new(
                FailureKind::Internal,
                format!("cannot start an I/O thread: {e}"),
            ));
        }
        loop {
            if self.stopped() {
                return Step::Stopped;
            }
            match rx.recv_timeout(TICK) {
                Ok(Ok(value)) => return Step::Done(value),
                Ok(Err(f)) => return Step::Failed(f),
                Err(RecvTimeoutError::Timeout) => self.prune(),
                Err(RecvTimeoutError::Disconnected) => {
                    return Step::Failed(Failure::new(
                        FailureKind::Internal,
                        "an I/O thread ended without an answer",
                    ))
                }
            }
        }
    }

    fn list(&mut self, url: &str) -> Step<Listed> {
        let token = match self.token() {
            Ok(t) => t,
            Err(f) => return Step::Failed(f),
        };
        let agent = match self.agent() {
            Ok(a) => a,
            Err(f) => return Step::Failed(f),
        };
        let url = url.to_owned();
        let timeout = self.settings.request_timeout;
        let filter = self.filter.clone();
        self.off_thread(move || fetch_list(&agent, &url, token.as_deref(), timeout, &filter))
    }

    /// One watch of `seconds`, applied as it comes; `rv` follows the events.
    fn watch(&mut self, url: &str, seconds: u64, rv: &mut String) -> Step<WatchEnd> {
        let token = match self.token() {
            Ok(t) => t,
            Err(f) => return Step::Failed(f),
        };
        let agent = match self.agent() {
            Ok(a) => a,
            Err(f) => return Step::Failed(f),
        };
        // The server ends the watch after timeoutSeconds; one still open
        // request_timeout later has stopped answering.
        let body_limit = Duration::from_secs(seconds).saturating_add(self.settings.request_timeout);
        let filter = self.filter.clone();
        let url = url.to_owned();
        let (tx, rx) = mpsc::sync_channel(256);
        let spawned = std::thread::Builder::new()
            .name("alumet-kube-watch".into())
            .spawn(move || {
                let end = run_watch(&agent, &url, token.as_deref(), body_limit, &filter, &tx);
                let _ = tx.send(WatchMsg::End(end));
            });
        if let Err(e) = spawned {
            return Step::Failed(Failure::new(
                FailureKind::Internal,
                format!("cannot start a watch thread: {e}"),
            ));
        }
        loop {
            if self.stopped() {
                return Step::Stopped;
            }
            let msg = match rx.recv_timeout(TICK) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    self.prune();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Step::Failed(Failure::new(
                        FailureKind::Internal,
                        "a watch thread ended without an answer",
                    ))
                }
            };
            match msg {
                WatchMsg::Accepted => {
                    self.index.stats_mut(|s| s.watches += 1);
                    self.succeeded(self.index.len());
                }
                WatchMsg::Pod {
                    change,
                    pod,
                    resource_version,
                } => {
                    self.apply_event(change, pod);
                    if !resource_version.is_empty() {
                        *rv = resource_version;
                        self.index.stats_mut(|s| s.resource_version.clone_from(rv));
                    }
                }
                WatchMsg::Bookmark(version) => {
                    if !version.is_empty() {
                        *rv = version;
                    }
                    self.index.stats_mut(|s| {
                        s.bookmarks += 1;
                        s.resource_version.clone_from(rv);
                    });
                }
                WatchMsg::Undecodable(message) => {
                    self.failed(&Failure::new(FailureKind::Decode, message));
                }
                WatchMsg::End(end) => return Step::Done(end),
            }
        }
    }

    fn mark_expiry(&mut self, now: Instant) {
        self.next_expiry = earliest(self.next_expiry, expiry(now, self.settings.deleted_grace));
    }

    fn apply_list(&mut self, pods: Vec<PodInfo>, ignored: u64) {
        let now = Instant::now();
        let marked = self.index.write().replace(pods, now);
        if marked {
            self.mark_expiry(now);
        }
        if ignored > 0 {
            self.index
                .stats_mut(|s| s.other_node_pods_ignored += ignored);
        }
    }

    fn apply_event(&mut self, change: Change, pod: Result<PodInfo, Skip>) {
        let now = Instant::now();
        let marked = match pod {
            Ok(info) => {
                let uid = info.uid.clone();
                let mut state = self.index.write();
                let mut marked = state.upsert(info, now);
                if let Change::Deleted = change {
                    marked |= state.mark_deleted(&uid, now);
                }
                marked
            }
            Err(Skip::OtherNode(uid)) => {
                self.index.stats_mut(|s| s.other_node_pods_ignored += 1);
                // Not ours (any more): never keep it.
                self.index.write().mark_deleted(&uid, now)
            }
            Err(Skip::NoUid) => false,
        };
        if marked {
            self.mark_expiry(now);
        }
        self.index.stats_mut(|s| match change {
            Change::Added => s.added += 1,
            Change::Modified => s.modified += 1,
            Change::Deleted => s.deleted += 1,
        });
        self.prune();
    }

    /// Drops what has outlived its grace period, when something has.
    fn prune(&mut self) {
        let now = Instant::now();
        if self.next_expiry.is_some_and(|t| t <= now) {
            self.next_expiry = self.index.write().prune(now, self.settings.deleted_grace);
        }
    }

    /// Sleeps `duration`, looking at `stop`; false when stopped.
    fn pause(&mut self, duration: Duration) -> bool {
        let end = Instant::now() + duration;
        loop {
            if self.stopped() {
                return false;
            }
            self.prune();
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(TICK));
        }
    }

    /// Records a failure and waits before the next try; false when stopped.
    fn pause_after(&mut self, failure: Failure) -> bool {
        self.failed(&failure);
        // The client is built again: the failure may have been its TLS.
        self.agent = None;
        let wait = if failure.kind.is_auth() {
            self.settings
                .auth_retry
                .mul_f64(0.9 + 0.1 * self.jitter.unit())
        } else {
            let base = self.backoff;
            self.backoff = self.backoff.saturating_mul(2).min(self.settings.retry_max);
            base.mul_f64(0.5 + 0.5 * self.jitter.unit())
        };
        self.pause(wait)
    }

    fn failed(&mut self, failure: &Failure) {
        self.health.failing = true;
        self.health.failures += 1;
        self.index.stats_mut(|s| {
            *s.errors.entry(failure.kind).or_insert(0) += 1;
            s.last_error = Some(failure.message.clone());
        });
        if self.health.warned.contains(&failure.kind) {
            log::debug!(
                "kubernetes: {} ({} failures in a row)",
                failure.message,
                self.health.failures
            );
            return;
        }
        self.health.warned.push(failure.kind);
        let token = self.settings.token_file.display();
        let rbac = self.settings.rbac();
        let retry = self.settings.auth_retry;
        match failure.kind {
            FailureKind::Unauthorized => log::warn!(
                "kubernetes: {} refused the token of {token} (HTTP 401): the agent needs a valid service account token with the RBAC rule `{rbac}`; trying again every {retry:?} ({})",
                self.base, failure.message
            ),
            FailureKind::Forbidden => log::warn!(
                "kubernetes: {} forbids the token of {token} (HTTP 403): bind the agent's service account to a role with the RBAC rule `{rbac}`; trying again every {retry:?} ({})",
                self.base, failure.message
            ),
            FailureKind::Token => log::warn!(
                "kubernetes: {} (mount the service account token, or set token_file); trying again every {retry:?}",
                failure.message
            ),
            kind => log::warn!(
                "kubernetes: {} ({kind}); trying again with a backoff up to {:?}",
                failure.message,
                self.settings.retry_max
            ),
        }
    }

    fn succeeded(&mut self, pods: usize) {
        self.backoff = self.settings.retry_min;
        if self.health.failing {
            log::info!(
                "kubernetes: pods readable again from {} after {} failed attempts ({pods} pods of node {})",
                self.base,
                self.health.failures,
                self.filter.node
            );
            self.index.stats_mut(|s| s.recoveries += 1);
        } else if !self.health.ever_worked {
            log::info!(
                "kubernetes: reading the pods of node {} from {} ({pods} pods)",
                self.filter.node,
                self.base
            );
        }
        self.health = Health {
            ever_worked: true,
            ..Health::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, node: &str, containers: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            namespace: "ns".into(),
            node: node.into(),
            labels: vec![],
            containers: containers
                .iter()
                .map(|(i, n)| ((*i).to_owned(), (*n).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn container_ids_lose_their_runtime_prefix() {
        assert_eq!(container_id("containerd://abc"), Some("abc"));
        assert_eq!(container_id("cri-o://abc"), Some("abc"));
        assert_eq!(container_id("docker://abc"), Some("abc"));
        assert_eq!(container_id("abc"), Some("abc"));
        assert_eq!(container_id(""), None);
        assert_eq!(container_id("containerd://"), None);
    }

    #[test]
    fn selectors_are_percent_encoded() {
        assert_eq!(encode("spec.nodeName=node-1"), "spec.nodeName%3Dnode-1");
    }

    #[test]
    fn replaced_container_ids_and_deleted_pods_last_their_grace_period() {
        let mut state = State::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        assert!(!state.upsert(pod("u1", "n", &[("c1", "app")]), t0));
        // A restart: a new id for the same container.
        assert!(state.upsert(pod("u1", "n", &[("c2", "app")]), t0));
        assert_eq!(state.containers.len(), 2);
        assert!(state.mark_deleted("u1", t0));
        assert_eq!(
            state.prune(t0 + Duration::from_secs(5), grace),
            Some(t0 + grace)
        );
        assert_eq!(state.pods.len(), 1);
        assert_eq!(state.prune(t0 + grace, grace), None);
        assert!(state.pods.is_empty() && state.containers.is_empty());
    }

    #[test]
    fn a_list_keeps_only_this_nodes_pods_and_reads_nulls_as_empty() {
        let filter = PodFilter {
            node: "n1".into(),
            labels: vec!["app".into()],
        };
        let json = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"42"},"items":[
            {"metadata":{"uid":"a","name":"a","namespace":"x","labels":{"app":"web","other":"1"}},"spec":{"nodeName":"n1"},
             "status":{"containerStatuses":[{"name":"c","containerID":"containerd://1111"},{"name":"w"}],"initContainerStatuses":null}},
            {"metadata":{"uid":"b","labels":null},"spec":{"nodeName":"n2"},"status":{}}
        ]}"#;
        let mut de = serde_json::Deserializer::from_str(json);
        let listed = ListSeed { filter: &filter }.deserialize(&mut de).unwrap();
        assert_eq!(listed.resource_version, "42");
        assert_eq!(listed.ignored, 1);
        assert_eq!(listed.pods.len(), 1);
        assert_eq!(
            listed.pods[0].labels,
            [("app".to_owned(), "web".to_owned())]
        );
        assert_eq!(
            listed.pods[0].containers,
            [("1111".to_owned(), "c".to_owned())]
        );
        let empty = r#"{"metadata":{},"items":null}"#;
        let mut de = serde_json::Deserializer::from_str(empty);
        let listed = ListSeed { filter: &filter }.deserialize(&mut de).unwrap();
        assert!(listed.pods.is_empty());
    }
}
