//! Not reading the CPU time of cgroups in idle subtrees.
//!
//! The kernel's CPU time of a cgroup includes its descendants' (v2
//! `cpu.stat`, v1 `cpuacct`: both are charged to every ancestor), and each
//! figure only grows. So when a cgroup's CPU time did not move between two
//! polls, no descendant's did either: their readings at the previous poll
//! still hold and need not be made again. On a node where most of 1 000
//! services or pods sleep under a few slices, a poll reads the slices and the
//! few busy cgroups instead of every `cpu.stat`; the figures are the same.
//!
//! Why it is exact, for a cgroup C under an ancestor A: at each poll A is
//! read before C (depth-first order). If A's time is the same at polls k-1
//! and k, C's time is constant between those two readings of A, and C's
//! known value at poll k-1 (read after A then, or itself carried over) lies
//! in that span. A cgroup is carried over only when both its own value and
//! its ancestor's unchanged value are from the previous poll.
//!
//! What it needs, and where it is turned off:
//! - the kernel's files: a tree of ordinary files (a fixture, a copy) need
//!   not keep the invariant, so the plugin prunes only on a cgroup
//!   filesystem ([`alumet_kernelfs::cgroup::is_cgroup_filesystem`]);
//! - a complete view of the tree at this poll (inotify or a walk): a cgroup
//!   removed since is then known and forgotten, not carried over;
//! - the root is never an ancestor that prunes (v2 computes it from the
//!   CPUs' figures, and on a live machine it always moves).
//!
//! Guards: where measured cgroups branch off under a directory that is not
//! measured itself (`/kubepods.slice/kubepods-burstable.slice` above its
//! pods, a slice above its services), that directory's CPU time is read as
//! well, only to prune: one read that can stand for all of the branches.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};

use alumet_kernelfs::cgroup::{is_strict_ancestor, parent_of};
use alumet_kernelfs::file::ReadBuf;

use crate::reader::{CgroupFiles, CpuTime, ReadError};

/// A cgroup path ordered component by component, so that a cgroup comes
/// right before its descendants (`/a`, `/a/b`, `/a-x`: depth-first order,
/// which byte order is not: `-` sorts before `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupKey(String);

impl CgroupKey {
    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for CgroupKey {
    fn from(path: &str) -> Self {
        Self(path.to_owned())
    }
}

impl Ord for CgroupKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // The root `/` splits into ["", ""], before every ["", "a", ...];
        // splitting loses nothing, so this agrees with `Eq`.
        self.0.split('/').cmp(other.0.split('/'))
    }
}

impl PartialOrd for CgroupKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The directories worth reading only to prune: the strict ancestors of
/// measured cgroups (the root excluded) that are not measured and under
/// which two or more branches lead to measured cgroups. A chain of
/// directories above a single branch gets none (the cgroup at its end
/// prunes its own subtree).
pub fn guard_paths<'a>(measured: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let measured: HashSet<&str> = measured.into_iter().collect();
    // For each ancestor: the first child seen towards a measured cgroup,
    // and whether another one was seen.
    let mut branches: HashMap<&str, (&str, bool)> = HashMap::new();
    for &path in &measured {
        let mut child = path;
        while let Some(parent) = parent_of(child) {
            if parent == "/" {
                break;
            }
            match branches.get_mut(parent) {
                Some((first, branching)) => {
                    if *first != child {
                        *branching = true;
                    }
                    // The ancestors above were walked from `first` already.
                    break;
                }
                None => {
                    branches.insert(parent, (child, false));
                }
            }
            child = parent;
        }
    }
    branches
        .into_iter()
        .filter(|(dir, (_, branching))| *branching && !measured.contains(dir))
        .map(|(dir, _)| dir.to_owned())
        .collect()
}

/// The walk of one poll over measured cgroups and guards in depth-first
/// order: for each, whether its nearest ancestor read (or carried over) at
/// this poll showed no CPU time since the previous poll.
#[derive(Default)]
pub struct PruneWalk<'a> {
    /// The ancestors of the current cgroup seen at this poll, outermost first.
    open: Vec<(&'a str, bool)>,
    /// Whether figures may be carried over at this poll.
    enabled: bool,
    previous_poll_ns: Option<u64>,
    now_ns: u64,
    /// Reads not made at this poll.
    pub skipped: u64,
}

impl<'a> PruneWalk<'a> {
    /// The walk of the poll at `now_ns`; carrying over only when `enabled`.
    pub fn new(enabled: bool, previous_poll_ns: Option<u64>, now_ns: u64) -> Self {
        Self {
            enabled,
            previous_poll_ns,
            now_ns,
            ..Self::default()
        }
    }

    /// This poll's CPU time of `path` (next in depth-first order), whose
    /// last known figure is `cpu`: carried over when its nearest ancestor
    /// was idle and `may_carry`, else read from `files`.
    pub fn cpu_of(
        &mut self,
        path: &'a str,
        cpu: &mut KnownCpu,
        files: &mut CgroupFiles,
        buf: &mut ReadBuf,
        may_carry: bool,
    ) -> Result<CpuUpdate, ReadError> {
        let carry = self.ancestor_idle(path) && self.enabled && may_carry;
        let update = cpu.update(files, buf, carry, self.previous_poll_ns, self.now_ns);
        let idle = update.as_ref().is_ok_and(|u| u.idle);
        self.skipped += u64::from(update.as_ref().is_ok_and(|u| u.carried));
        self.enter(path, idle);
        update
    }

    /// Whether the nearest ancestor of `path` seen so far was idle since
    /// the previous poll. Call it for every cgroup, in depth-first order.
    fn ancestor_idle(&mut self, path: &str) -> bool {
        while let Some((top, _)) = self.open.last() {
            if is_strict_ancestor(top, path) {
                break;
            }
            self.open.pop();
        }
        self.open.last().is_some_and(|&(_, idle)| idle)
    }

    /// Records `path` (just read or carried over) as an ancestor for what
    /// follows; the root never prunes.
    fn enter(&mut self, path: &'a str, idle: bool) {
        self.open.push((path, idle && path != "/"));
    }
}

/// The CPU time of a cgroup (measured or guard) as last known, and the
/// poll it is known at.
#[derive(Debug, Default, Clone, Copy)]
pub struct KnownCpu(Option<(CpuTime, u64)>);

/// What [`KnownCpu::update`] found.
#[derive(Debug, Clone, Copy)]
pub struct CpuUpdate {
    /// The figure known before, and when (ns), if any.
    pub before: Option<(CpuTime, u64)>,
    /// The figure at this poll.
    pub now: CpuTime,
    /// Whether it is the same as at the previous poll (so the cgroup may prune).
    pub idle: bool,
    /// Whether it was carried over rather than read.
    pub carried: bool,
}

impl KnownCpu {
    /// Whether a figure is known (the cgroup was read before).
    pub fn is_known(&self) -> bool {
        self.0.is_some()
    }

    /// The figure at this poll (`now_ns`): carried over when `carry` (the
    /// nearest ancestor was idle) and the figure is from the previous poll,
    /// else read from `files`. A failed read leaves the known figure as it
    /// was, so that the next delta spans both intervals.
    pub fn update(
        &mut self,
        files: &mut CgroupFiles,
        buf: &mut ReadBuf,
        carry: bool,
        previous_poll_ns: Option<u64>,
        now_ns: u64,
    ) -> Result<CpuUpdate, ReadError> {
        let before = self.0;
        let at_previous_poll = before.filter(|&(_, at)| Some(at) == previous_poll_ns);
        let (now, carried) = match at_previous_poll {
            Some((cpu, _)) if carry => (cpu, true),
            _ => (files.read_cpu(buf)?, false),
        };
        self.0 = Some((now, now_ns));
        Ok(CpuUpdate {
            before,
            now,
            idle: at_previous_poll.is_some_and(|(cpu, _)| cpu == now),
            carried,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_depth_first() {
        let mut keys: Vec<CgroupKey> = ["/a-x", "/a/b", "/", "/a", "/a/b/c", "/a.b", "/b", "/a/a"]
            .into_iter()
            .map(CgroupKey::from)
            .collect();
        keys.sort();
        let sorted: Vec<&str> = keys.iter().map(CgroupKey::as_str).collect();
        assert_eq!(
            sorted,
            ["/", "/a", "/a/a", "/a/b", "/a/b/c", "/a-x", "/a.b", "/b"]
        );
    }

    #[test]
    fn guards_stand_where_measured_cgroups_branch_off() {
        let measured = [
            "/",
            "/kubepods.slice/kubepods-burstable.slice/pod1",
            "/kubepods.slice/kubepods-burstable.slice/pod1/c1",
            "/kubepods.slice/kubepods-burstable.slice/pod1/c2",
            "/kubepods.slice/kubepods-burstable.slice/pod2",
            "/kubepods.slice/kubepods-besteffort.slice/pod3",
            "/system.slice/ssh.service",
            "/user.slice/user-1000.slice/session-1.scope",
        ];
        let guards = guard_paths(measured);
        let guards: Vec<&str> = guards.iter().map(String::as_str).collect();
        // pod1 is measured (it prunes c1 and c2 itself); a chain above one
        // branch (system.slice, user.slice/...) is no guard; the root never.
        assert_eq!(
            guards,
            [
                "/kubepods.slice",
                "/kubepods.slice/kubepods-burstable.slice"
            ]
        );
        assert!(guard_paths(["/a/b"]).is_empty());
        assert_eq!(
            guard_paths(["/s/a", "/s/b"])
                .into_iter()
                .collect::<Vec<_>>(),
            ["/s"]
        );
    }

    #[test]
    fn the_nearest_ancestor_decides() {
        let mut walk = PruneWalk::default();
        assert!(!walk.ancestor_idle("/"));
        walk.enter("/", true);
        assert!(!walk.ancestor_idle("/s"), "the root never prunes");
        walk.enter("/s", true);
        assert!(walk.ancestor_idle("/s/a"));
        walk.enter("/s/a", false);
        assert!(!walk.ancestor_idle("/s/a/x"), "its parent moved");
        assert!(walk.ancestor_idle("/s/b"), "back to /s");
        walk.enter("/s/b", true);
        assert!(!walk.ancestor_idle("/s-x/c"), "/s is no ancestor of /s-x");
        walk.enter("/t", false);
        assert!(!walk.ancestor_idle("/t/a"));
    }
}
