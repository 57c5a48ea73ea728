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
//!
//! # Parts
//!
//! - `settings`: [`PodSource`], [`KubeSettings`], [`KubeError`];
//! - `index`: [`PodIndex`], [`PodInfo`], [`WatcherStats`], [`FailureKind`];
//! - `api`: the API's JSON and the streaming decoding of a PodList;
//! - `bodies`: [`read_pod_list`] and [`read_watch_body`], the same decoding
//!   of bodies given as bytes (tests, fuzzing);
//! - `requests`: the requests of the I/O threads and their failures;
//! - `watcher`: the watcher thread ([`spawn_watcher`]);
//! - `lookup`: [`KubeLookup`], the [`crate::resolver::Lookup`] that names
//!   pods and their containers from a [`PodIndex`].

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

mod api;
mod bodies;
mod index;
mod lookup;
mod requests;
mod settings;
mod watcher;

pub use bodies::{read_pod_list, read_watch_body, PodList, WatchBody};
pub use index::{FailureKind, PodIndex, PodInfo, WatcherStats};
pub use lookup::KubeLookup;
pub use settings::{KubeError, KubeSettings, PodSource};

use watcher::Watcher;

/// Where the service account's token and CA are mounted in a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How often the watcher thread looks at `stop` and at expired deletions.
pub const TICK: Duration = Duration::from_millis(50);

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
