//! The index of this node's pods ([`PodIndex`]): by pod uid and by
//! container id, with deleted pods and replaced container ids kept for a
//! grace period; [`PodInfo`], a pod's names; and what the watcher did
//! ([`WatcherStats`], by [`FailureKind`]).
//!
//! Readers take a read lock for a hash lookup and an `Arc` clone; the
//! watcher writes through `State`'s methods.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::names::{label_key, Names};

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
    /// The labels listed in [`KubeSettings::pod_labels`](super::KubeSettings::pod_labels) that the pod has:
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

    pub(super) fn is_auth(self) -> bool {
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
pub(super) struct State {
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

    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn stats_mut<R>(&self, f: impl FnOnce(&mut WatcherStats) -> R) -> R {
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

    /// The pod of uid `uid` and whether its deletion was seen (it is then
    /// in its grace period).
    pub(super) fn pod_and_deleted(&self, uid: &str) -> Option<(PodInfo, bool)> {
        let (info, deleted) = self
            .read()
            .pods
            .get(uid)
            .map(|p| (p.info.clone(), p.deleted_at.is_some()))?;
        Some((PodInfo::clone(&info), deleted))
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

pub(super) fn expiry(at: Instant, grace: Duration) -> Option<Instant> {
    at.checked_add(grace)
}

pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl State {
    /// Adds or replaces a pod; container ids it no longer has are retired.
    /// Whether something now waits for its grace period to end.
    pub(super) fn upsert(&mut self, info: PodInfo, now: Instant) -> bool {
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
    pub(super) fn mark_deleted(&mut self, uid: &str, now: Instant) -> bool {
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
    pub(super) fn replace(&mut self, pods: Vec<PodInfo>, now: Instant) -> bool {
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
    pub(super) fn prune(&mut self, now: Instant, grace: Duration) -> Option<Instant> {
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
pub(super) fn container_id(raw: &str) -> Option<&str> {
    let id = raw.split_once("://").map_or(raw, |(_, id)| id).trim();
    (!id.is_empty()).then_some(id)
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
}
