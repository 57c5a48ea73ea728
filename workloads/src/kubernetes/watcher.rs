//! The watcher thread: the API server's list-then-watch loop (from the
//! last `resourceVersion`, a list again after 410 Gone) or the kubelet's
//! polls, applied to the [`PodIndex`]; requests on I/O threads so that
//! `stop` is seen within a [`TICK`]; jittered backoff; and the health that
//! decides what is logged (a warning per kind of failure and outage, one
//! info line at recovery).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::{Listed, PodFilter, Skip};
use super::index::{earliest, expiry, FailureKind, PodIndex, PodInfo};
use super::requests::{
    encode, fetch_list, run_watch, watch_url, Change, Failure, WatchEnd, WatchMsg,
};
use super::settings::{KubeSettings, PodSource};
use super::TICK;

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

pub(super) struct Watcher {
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
    pub(super) fn new(settings: KubeSettings, index: PodIndex, stop: Arc<AtomicBool>) -> Self {
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

    pub(super) fn run(mut self) {
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
