//! Finding the cgroups of a hierarchy as they come and go: a full walk of
//! the tree, and inotify on every directory so that a cgroup created or
//! removed between two polls is known at the next one without walking again.
//!
//! `mkdir`/`rmdir` in cgroupfs go through the VFS, which reports them to
//! inotify (v1 and v2 alike). The walk is still repeated every
//! `rescan_interval` as a safety net: inotify can overflow, and the watch
//! limit (`fs.inotify.max_user_watches`) can be reached on a busy node.
//!
//! Watching starts only when the caller says so ([`Discovery::start_watching`]):
//! closing an inotify instance makes the kernel wait for an RCU grace
//! period (about 15 ms on the reference VM), which would double the cost of
//! `exec` of a short command; the source starts watching after its first
//! second.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// What changed since the last call to [`Discovery::events`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Cgroups created (with their descendants that already exist).
    pub created: Vec<String>,
    /// Cgroups removed.
    pub removed: Vec<String>,
    /// False when events may have been missed (overflow, watch limit): walk again.
    pub complete: bool,
}

/// Discovery of one hierarchy's cgroups.
pub struct Discovery {
    mount: PathBuf,
    /// Deepest level discovered (1 = children of the root); 0 for no limit.
    max_depth: usize,
    /// Whether inotify may be used, once watching starts.
    use_inotify: bool,
    inotify: Option<Inotify>,
    watches: HashMap<WatchDescriptor, String>,
    events_buf: Vec<u8>,
    /// Set when a watch could not be added: events are incomplete until the next walk.
    missed_watch: bool,
    watch_limit_logged: bool,
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

fn depth_of(rel: &str) -> usize {
    rel.split('/').filter(|s| !s.is_empty()).count()
}

impl Discovery {
    /// Discovery under `mount`; with inotify, once watching starts, if
    /// `use_inotify` and the kernel allows it.
    pub fn new(mount: &Path, max_depth: usize, use_inotify: bool) -> Self {
        Self {
            mount: mount.to_path_buf(),
            max_depth,
            use_inotify,
            inotify: None,
            watches: HashMap::new(),
            events_buf: vec![0; 16 * 1024],
            missed_watch: false,
            watch_limit_logged: false,
        }
    }

    /// Whether inotify is in use.
    pub fn watching(&self) -> bool {
        self.inotify.is_some()
    }

    /// Whether watching can still start (inotify wanted, not started yet).
    pub fn can_start_watching(&self) -> bool {
        self.use_inotify && self.inotify.is_none()
    }

    /// Starts inotify; the next [`Discovery::scan`] adds the watches.
    /// Returns whether it runs.
    pub fn start_watching(&mut self) -> bool {
        if !self.can_start_watching() {
            return self.watching();
        }
        self.use_inotify = false;
        match Inotify::init() {
            Ok(i) => {
                self.inotify = Some(i);
                true
            }
            Err(e) => {
                log::info!("cgroups: inotify unavailable ({e}); new cgroups are found by the periodic rescan");
                false
            }
        }
    }

    fn dir(&self, rel: &str) -> PathBuf {
        alumet_kernelfs::cgroup::dir_of(&self.mount, rel)
    }

    fn within_depth(&self, rel: &str) -> bool {
        self.max_depth == 0 || depth_of(rel) <= self.max_depth
    }

    fn watch(&mut self, rel: &str) {
        let dir = self.dir(rel);
        let Some(inotify) = &mut self.inotify else {
            return;
        };
        match inotify.watches().add(
            &dir,
            WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR,
        ) {
            Ok(wd) => {
                self.watches.insert(wd, rel.to_owned());
            }
            Err(e) => {
                self.missed_watch = true;
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    if !self.watch_limit_logged {
                        self.watch_limit_logged = true;
                        log::warn!("cgroups: inotify watch limit reached at {} (raise fs.inotify.max_user_watches); cgroups below it are found by the periodic rescan only", dir.display());
                    }
                } else {
                    log::debug!("cgroups: cannot watch {}: {e}", dir.display());
                }
            }
        }
    }

    /// Walks the subtree of `start` (included), watching every directory;
    /// pushes the paths found to `out`.
    fn walk(&mut self, start: &str, out: &mut Vec<String>) {
        let mut stack = vec![start.to_owned()];
        while let Some(rel) = stack.pop() {
            if !self.within_depth(&rel) {
                continue;
            }
            let entries = match std::fs::read_dir(self.dir(&rel)) {
                Ok(e) => e,
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        log::debug!("cgroups: cannot list {}: {e}", self.dir(&rel).display());
                    }
                    continue;
                }
            };
            self.watch(&rel);
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if let Some(name) = entry.file_name().to_str() {
                        stack.push(child_path(&rel, name));
                    }
                }
            }
            out.push(rel);
        }
    }

    /// Every cgroup of the hierarchy (the root `/` included), sorted. Events
    /// pending before the walk are discarded: the walk supersedes them.
    pub fn scan(&mut self) -> Vec<String> {
        let _ = self.events();
        if let Some(inotify) = &mut self.inotify {
            // Fresh watches: old ones may point at removed directories.
            for wd in std::mem::take(&mut self.watches).into_keys() {
                let _ = inotify.watches().remove(wd);
            }
        }
        self.missed_watch = false;
        let mut out = Vec::new();
        self.walk("/", &mut out);
        out.sort();
        out
    }

    /// The changes reported by inotify since the last call; `None` without inotify.
    pub fn events(&mut self) -> Option<Changes> {
        let mut changes = Changes {
            complete: !self.missed_watch,
            ..Changes::default()
        };
        let mut created_dirs: Vec<String> = Vec::new();
        loop {
            let inotify = self.inotify.as_mut()?;
            let events = match inotify.read_events(&mut self.events_buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("cgroups: inotify read failed: {e}");
                    changes.complete = false;
                    break;
                }
            };
            let mut any = false;
            for event in events {
                any = true;
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    changes.complete = false;
                    continue;
                }
                if event.mask.contains(EventMask::IGNORED) {
                    self.watches.remove(&event.wd);
                    continue;
                }
                let (Some(parent), Some(name)) = (
                    self.watches.get(&event.wd),
                    event.name.and_then(|n| n.to_str()),
                ) else {
                    continue;
                };
                if !event.mask.contains(EventMask::ISDIR) {
                    continue;
                }
                let path = child_path(parent, name);
                if event.mask.contains(EventMask::CREATE) {
                    created_dirs.push(path);
                } else if event.mask.contains(EventMask::DELETE) {
                    created_dirs.retain(|p| *p != path);
                    changes.removed.push(path);
                }
            }
            if !any {
                break;
            }
        }
        for dir in created_dirs {
            self.walk(&dir, &mut changes.created);
        }
        if self.missed_watch {
            changes.complete = false;
        }
        changes.created.sort();
        changes.created.dedup();
        Some(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_and_events_follow_a_tree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::create_dir_all(d.path().join("c/d/e")).unwrap();
        let mut disc = Discovery::new(d.path(), 2, true);
        assert!(
            disc.events().is_none(),
            "not watching before start_watching"
        );
        assert!(disc.start_watching());
        assert_eq!(disc.scan(), vec!["/", "/a", "/a/b", "/c", "/c/d"]);
        std::fs::create_dir_all(d.path().join("x/y")).unwrap();
        std::fs::remove_dir(d.path().join("a/b")).unwrap();
        let changes = disc.events().unwrap();
        assert_eq!(changes.created, vec!["/x", "/x/y"]);
        assert_eq!(changes.removed, vec!["/a/b"]);
        assert!(changes.complete);
        assert_eq!(
            disc.events().unwrap(),
            Changes {
                complete: true,
                ..Changes::default()
            }
        );
    }
}
