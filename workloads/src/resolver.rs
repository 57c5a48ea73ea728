//! Looking names up off the poll path, once per workload, and keeping them.
//!
//! A source that sees a new workload calls [`Resolver::request`] (a hash
//! lookup and, the first time, a message to a thread) and, at later polls,
//! [`Resolver::names`] (a hash lookup) until the names are there or the
//! lookup gave up. Each [`Lookup`] (a container engine, Slurm, Kubernetes)
//! has a thread of its own, so a slow one delays neither a poll nor the
//! others. Entries are counted per requester and dropped at the last
//! [`Resolver::release`], so memory follows the workloads that exist.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::names::Names;

/// What a source knows of a workload: what its cgroup path says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Workload {
    /// Its kind, the `workload` attribute (`container`, `k8s_container`,
    /// `slurm_job`...).
    pub kind: String,
    /// The attributes its path gave (`container_id`, `runtime`, `pod_uid`,
    /// `job_id`, `uid`...).
    pub attributes: Vec<(String, String)>,
    /// Its cgroup's directory in the hierarchy read (where its processes
    /// are listed).
    pub cgroup_dir: PathBuf,
}

impl Workload {
    /// The value of attribute `key`, if the path gave it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The names.
    Names(Names),
    /// Not known yet, maybe later (a pod that the watch has not delivered):
    /// asked again after a while, until [`Lookup::patience`].
    NotYet,
    /// The manager does not know it (gone already, or not one of its own).
    Unknown,
}

/// A way to name workloads (one per manager).
pub trait Lookup: Send + Sync {
    /// Its name in logs (`docker`, `slurm`).
    fn name(&self) -> &'static str;

    /// The cache key of the names of `workload` when this lookup can name
    /// it (`slurm:42` for a job and all its steps), else `None`.
    fn key(&self, workload: &Workload) -> Option<String>;

    /// The names of `workload`. Runs on the lookup's own thread; may block
    /// up to its own timeout. An `Err` is a failure of the source (socket
    /// gone, command failing), logged once per kind of failure.
    fn lookup(&self, workload: &Workload) -> Result<Found, String>;

    /// How long a workload is asked about again after [`Found::NotYet`].
    fn patience(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// The state of one workload's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameState {
    /// Asked; no answer yet.
    Pending,
    /// Found.
    Known(Names),
    /// The lookup gave up (unknown, failed or out of patience): the
    /// workload keeps the attributes of its path.
    None,
}

struct Entry {
    state: NameState,
    /// Requesters that have not released it.
    holders: usize,
}

#[derive(Default)]
struct Shared {
    entries: HashMap<String, Entry>,
    /// Lookups done, by outcome, for stats and tests.
    done: u64,
}

/// A lookup's queue: the key and the workload to name.
type Queue = Sender<(String, Workload)>;

/// The lookups, their threads and what they found.
pub struct Resolver {
    shared: Arc<Mutex<Shared>>,
    lookups: Vec<(Arc<dyn Lookup>, Queue)>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field(
                "lookups",
                &self
                    .lookups
                    .iter()
                    .map(|(l, _)| l.name())
                    .collect::<Vec<_>>(),
            )
            .field("kept", &self.len())
            .finish()
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A poisoned lock still holds consistent entries (every write is one
    // assignment): go on with them.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Resolver {
    /// A resolver with `lookups`, each on a thread of its own; with none, it
    /// names nothing and costs nothing.
    pub fn new(lookups: Vec<Arc<dyn Lookup>>) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut with_threads = Vec::new();
        for lookup in lookups {
            let (tx, rx) = mpsc::channel();
            let worker_lookup = lookup.clone();
            let worker_shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("names-{}", lookup.name()))
                .spawn(move || work(worker_lookup, rx, worker_shared));
            match spawned {
                Ok(_) => with_threads.push((lookup, tx)),
                Err(e) => log::warn!(
                    "names: cannot start the {} lookup's thread ({e}); its workloads keep their ids",
                    lookup.name()
                ),
            }
        }
        Self {
            shared,
            lookups: with_threads,
        }
    }

    /// Whether any lookup is configured.
    pub fn is_active(&self) -> bool {
        !self.lookups.is_empty()
    }

    /// Asks for the names of `workload`; returns the key to read them with
    /// ([`Resolver::names`]) and to release, or `None` when no lookup can
    /// name it. The first request of a key sends it to its lookup's thread.
    pub fn request(&self, workload: &Workload) -> Option<String> {
        let (lookup, tx) = self
            .lookups
            .iter()
            .find(|(l, _)| l.key(workload).is_some())?;
        let key = lookup.key(workload)?;
        let mut shared = lock(&self.shared);
        match shared.entries.get_mut(&key) {
            Some(entry) => entry.holders += 1,
            None => {
                shared.entries.insert(
                    key.clone(),
                    Entry {
                        state: NameState::Pending,
                        holders: 1,
                    },
                );
                if tx.send((key.clone(), workload.clone())).is_err() {
                    if let Some(e) = shared.entries.get_mut(&key) {
                        e.state = NameState::None;
                    }
                }
            }
        }
        Some(key)
    }

    /// The state of the names under `key`.
    pub fn names(&self, key: &str) -> NameState {
        lock(&self.shared)
            .entries
            .get(key)
            .map_or(NameState::None, |e| e.state.clone())
    }

    /// One requester of `key` is done with it (its cgroup is gone); the
    /// last one drops the entry.
    pub fn release(&self, key: &str) {
        let mut shared = lock(&self.shared);
        if let Some(entry) = shared.entries.get_mut(key) {
            entry.holders = entry.holders.saturating_sub(1);
            if entry.holders == 0 {
                shared.entries.remove(key);
            }
        }
    }

    /// How many workloads' names are kept.
    pub fn len(&self) -> usize {
        lock(&self.shared).entries.len()
    }

    /// Whether no names are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many lookups have ended (found, unknown, failed or given up).
    pub fn lookups_done(&self) -> u64 {
        lock(&self.shared).done
    }
}

/// How often a workload whose names are not there yet is asked about again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

fn work(lookup: Arc<dyn Lookup>, rx: Receiver<(String, Workload)>, shared: Arc<Mutex<Shared>>) {
    let mut waiting: VecDeque<(Instant, Instant, String, Workload)> = VecDeque::new();
    let mut last_error: Option<String> = None;
    loop {
        let next = match waiting.front() {
            Some((at, ..)) => {
                let wait = at.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(job) => Some((Instant::now(), job)),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            None => match rx.recv() {
                Ok(job) => Some((Instant::now(), job)),
                Err(_) => return,
            },
        };
        let (first_asked, key, workload) = match next {
            Some((now, (key, workload))) => (now, key, workload),
            None => match waiting.pop_front() {
                Some((_, first, key, workload)) => (first, key, workload),
                None => continue,
            },
        };
        // Released while it waited: nobody needs it any more.
        if !lock(&shared).entries.contains_key(&key) {
            continue;
        }
        let state = match lookup.lookup(&workload) {
            Ok(Found::Names(names)) => {
                last_error = None;
                NameState::Known(names)
            }
            Ok(Found::Unknown) => NameState::None,
            Ok(Found::NotYet) if first_asked.elapsed() < lookup.patience() => {
                waiting.push_back((Instant::now() + RETRY_EVERY, first_asked, key, workload));
                continue;
            }
            Ok(Found::NotYet) => {
                log::debug!("names: {} never learnt about {key}", lookup.name());
                NameState::None
            }
            Err(e) => {
                // One line per kind of failure, not one per workload.
                if last_error.as_deref() != Some(e.as_str()) {
                    log::warn!(
                        "names: {} lookup failed: {e}; its workloads keep their ids until it answers",
                        lookup.name()
                    );
                    last_error = Some(e);
                }
                NameState::None
            }
        };
        let mut shared = lock(&shared);
        shared.done += 1;
        if let Some(entry) = shared.entries.get_mut(&key) {
            entry.state = state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fake {
        calls: AtomicUsize,
        not_yet_times: usize,
        delay: Duration,
    }

    impl Lookup for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn key(&self, w: &Workload) -> Option<String> {
            w.attribute("container_id").map(|id| format!("fake:{id}"))
        }
        fn lookup(&self, w: &Workload) -> Result<Found, String> {
            std::thread::sleep(self.delay);
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.not_yet_times {
                return Ok(Found::NotYet);
            }
            match w.attribute("container_id") {
                Some("broken") => Err("socket closed".to_owned()),
                Some("gone") => Ok(Found::Unknown),
                Some(id) => {
                    let mut names = Names::new();
                    names.push("container_name", format!("name-of-{id}"));
                    Ok(Found::Names(names))
                }
                None => Ok(Found::Unknown),
            }
        }
    }

    fn container(id: &str) -> Workload {
        Workload {
            kind: "container".to_owned(),
            attributes: vec![("container_id".to_owned(), id.to_owned())],
            cgroup_dir: PathBuf::new(),
        }
    }

    fn wait_for(r: &Resolver, key: &str) -> NameState {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = r.names(key);
            if s != NameState::Pending || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn one_lookup_per_workload_off_the_callers_thread_kept_until_the_last_release() {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            not_yet_times: 0,
            delay: Duration::from_millis(200),
        });
        let r = Resolver::new(vec![fake.clone()]);
        let started = Instant::now();
        let key = r.request(&container("abc")).unwrap();
        // The request does not wait for the slow lookup.
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(r.names(&key), NameState::Pending);
        // A second cgroup of the same workload shares the lookup.
        assert_eq!(r.request(&container("abc")), Some(key.clone()));
        let mut expected = Names::new();
        expected.push("container_name", "name-of-abc");
        assert_eq!(wait_for(&r, &key), NameState::Known(expected));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        assert_eq!(r.request(&Workload::default()), None, "nothing to look up");
        r.release(&key);
        assert_eq!(r.len(), 1);
        r.release(&key);
        assert!(r.is_empty());
    }

    #[test]
    fn not_yet_is_asked_again_unknown_and_failures_give_up() {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            not_yet_times: 2,
            delay: Duration::ZERO,
        });
        let r = Resolver::new(vec![fake.clone()]);
        let key = r.request(&container("late")).unwrap();
        assert!(matches!(wait_for(&r, &key), NameState::Known(_)));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
        let gone = r.request(&container("gone")).unwrap();
        assert_eq!(wait_for(&r, &gone), NameState::None);
        let broken = r.request(&container("broken")).unwrap();
        assert_eq!(wait_for(&r, &broken), NameState::None);
        assert_eq!(r.lookups_done(), 3);
    }

    #[test]
    fn without_lookups_nothing_is_asked() {
        let r = Resolver::new(Vec::new());
        assert!(!r.is_active());
        assert_eq!(r.request(&container("abc")), None);
    }
}
