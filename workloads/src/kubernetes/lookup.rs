//! [`KubeLookup`]: the [`Lookup`] that names a pod's cgroup and its
//! containers' cgroups from a [`PodIndex`] (a hash lookup, no network),
//! and that stops the watcher filling the index when it is dropped.
//!
//! A workload is Kubernetes' when its cgroup path gave a `pod_uid` (the
//! cgroups plugin's `k8s_pod` and `k8s_container` workloads, and the
//! `other` cgroups inside a pod); a container also has its `container_id`.
//!
//! - A container the index knows: the pod's names ([`PodInfo::names`](super::PodInfo::names):
//!   `namespace`, `pod`, `node`, `label_<x>`) and `container`, its name in
//!   the pod.
//! - A pod cgroup (no `container_id`) of a pod the index knows: the pod's
//!   names.
//! - A pod the index does not know yet: [`Found::NotYet`], asked again
//!   until the default [`Lookup::patience`] (60 s): the watch delivers a
//!   new pod within a second of its creation, before its cgroup exists,
//!   and the kubelet mode within its poll interval (10 s by default); a
//!   minute also covers a watcher that is re-listing after an outage.
//! - A container id that a live pod does not list: [`Found::NotYet`] too.
//!   A container's cgroup exists before the kubelet writes its id into the
//!   pod's status (its next relist, about a second later, then the API
//!   server and the watch), so a new container is asked again until its id
//!   arrives. One that never arrives (the pod's sandbox, `pause`, which no
//!   status lists) gives up at the end of the patience, as `Unknown` would,
//!   at the cost of a hash lookup every half second meanwhile.
//! - A container id that a deleted pod does not list: [`Found::Unknown`]
//!   (no status will name it any more).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::resolver::{Found, Lookup, Workload};

use super::{spawn_watcher, KubeSettings, PodIndex};

/// Pods and their containers, by `pod_uid` and `container_id`, from a
/// [`PodIndex`].
///
/// It owns a stop flag that its `Drop` sets: a watcher started with
/// [`KubeLookup::watching`] (or with [`KubeLookup::stop_flag`]) stops when
/// the lookup is dropped, i.e. when the [`crate::resolver::Resolver`] that
/// owns it is dropped and its lookup thread has ended.
#[derive(Debug)]
pub struct KubeLookup {
    index: PodIndex,
    stop: Arc<AtomicBool>,
}

impl KubeLookup {
    /// A lookup that reads `index`, filled by someone else; give
    /// [`KubeLookup::stop_flag`] to the watcher that fills it so that it
    /// stops with the lookup.
    pub fn new(index: PodIndex) -> Self {
        Self {
            index,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts a watcher ([`spawn_watcher`]) that fills a new index with
    /// `settings`, and returns the lookup that reads it; dropping the
    /// lookup stops the watcher (within [`super::TICK`]). Errors are
    /// [`spawn_watcher`]'s.
    pub fn watching(settings: KubeSettings) -> io::Result<Self> {
        let lookup = Self::new(PodIndex::new());
        // The thread is detached: the stop flag ends it.
        spawn_watcher(settings, lookup.index.clone(), lookup.stop_flag())?;
        Ok(lookup)
    }

    /// The index it reads (for its stats: [`PodIndex::stats`]).
    pub fn index(&self) -> &PodIndex {
        &self.index
    }

    /// The flag that this lookup's `Drop` sets.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

impl Drop for KubeLookup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The non-empty value of attribute `key`.
fn non_empty<'w>(workload: &'w Workload, key: &str) -> Option<&'w str> {
    workload.attribute(key).filter(|v| !v.is_empty())
}

impl Lookup for KubeLookup {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn key(&self, workload: &Workload) -> Option<String> {
        let pod = non_empty(workload, "pod_uid")?;
        let container = non_empty(workload, "container_id").unwrap_or("");
        Some(format!("pod:{pod}:{container}"))
    }

    fn lookup(&self, workload: &Workload) -> Result<Found, String> {
        let Some(uid) = non_empty(workload, "pod_uid") else {
            return Ok(Found::Unknown);
        };
        let container = non_empty(workload, "container_id");
        if let Some((pod, name)) = container.and_then(|id| self.index.container(id)) {
            let mut names = pod.names();
            names.push("container", name);
            return Ok(Found::Names(names));
        }
        // The watcher's failures are its own to log: here they are pods
        // not known yet.
        Ok(match (self.index.pod_and_deleted(uid), container) {
            (None, _) => Found::NotYet,
            (Some((pod, _)), None) => Found::Names(pod.names()),
            (Some((_, false)), Some(_)) => Found::NotYet,
            (Some((_, true)), Some(_)) => Found::Unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;
    use crate::kubernetes::PodInfo;
    use crate::names::Names;

    const UID: &str = "0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e";

    fn id(n: u8) -> String {
        format!("{n:x}").repeat(64)
    }

    fn pod_info() -> PodInfo {
        PodInfo {
            uid: UID.into(),
            name: "web-0".into(),
            namespace: "shop".into(),
            node: "node-a".into(),
            labels: vec![("app.kubernetes.io/name".into(), "shop".into())],
            containers: vec![(id(1), "app".into()), (id(2), "sidecar".into())],
        }
    }

    fn workload(kind: &str, attributes: &[(&str, &str)]) -> Workload {
        Workload {
            kind: kind.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            cgroup_dir: PathBuf::new(),
        }
    }

    fn container(container_id: &str) -> Workload {
        workload(
            "k8s_container",
            &[
                ("pod_uid", UID),
                ("qos", "burstable"),
                ("container_id", container_id),
                ("runtime", "containerd"),
            ],
        )
    }

    fn pod_names() -> Names {
        let mut names = Names::new();
        names.push("namespace", "shop");
        names.push("pod", "web-0");
        names.push("node", "node-a");
        names.push("label_app_kubernetes_io_name", "shop");
        names
    }

    #[test]
    fn keys_name_the_pod_and_the_container() {
        let lookup = KubeLookup::new(PodIndex::new());
        assert_eq!(
            lookup.key(&container(&id(1))),
            Some(format!("pod:{UID}:{}", id(1)))
        );
        let pod = workload("k8s_pod", &[("pod_uid", UID), ("qos", "besteffort")]);
        assert_eq!(lookup.key(&pod), Some(format!("pod:{UID}:")));
        let engine = workload(
            "container",
            &[("container_id", &id(1)), ("runtime", "docker")],
        );
        assert_eq!(lookup.key(&engine), None);
        assert_eq!(lookup.key(&workload("k8s_pod", &[("pod_uid", "")])), None);
    }

    #[test]
    fn names_of_pods_and_containers_from_the_index() {
        let lookup = KubeLookup::new(PodIndex::new());
        let pod = workload("k8s_pod", &[("pod_uid", UID)]);
        // Not delivered yet.
        assert_eq!(lookup.lookup(&container(&id(1))), Ok(Found::NotYet));
        assert_eq!(lookup.lookup(&pod), Ok(Found::NotYet));

        let now = Instant::now();
        lookup.index.write().upsert(pod_info(), now);
        let mut app = pod_names();
        app.push("container", "app");
        assert_eq!(lookup.lookup(&container(&id(1))), Ok(Found::Names(app)));
        assert_eq!(lookup.lookup(&pod), Ok(Found::Names(pod_names())));
        // The sandbox, or a container whose id the status does not have yet.
        assert_eq!(lookup.lookup(&container(&id(3))), Ok(Found::NotYet));

        // Deleted: known containers still answer, others never will.
        lookup.index.write().mark_deleted(UID, now);
        assert!(matches!(
            lookup.lookup(&container(&id(2))),
            Ok(Found::Names(n)) if n.get("container") == Some("sidecar")
        ));
        assert_eq!(lookup.lookup(&container(&id(3))), Ok(Found::Unknown));
        assert_eq!(lookup.lookup(&pod), Ok(Found::Names(pod_names())));
    }

    #[test]
    fn dropping_the_lookup_sets_its_stop_flag() {
        let lookup = KubeLookup::new(PodIndex::new());
        let stop = lookup.stop_flag();
        let shared: Arc<dyn Lookup> = Arc::new(lookup);
        let clone = shared.clone();
        drop(shared);
        assert!(!stop.load(Ordering::Relaxed), "a clone still holds it");
        drop(clone);
        assert!(stop.load(Ordering::Relaxed));
    }
}
