//! The command that `alumet-agent exec` measures, shared with plugins.
//!
//! The agent starts measuring before it spawns the command, so plugins learn
//! the child's pid only later: they keep an [`ExecTarget`] from their start
//! context and read it at each poll (one atomic load). Where the agent runs
//! the command in a cgroup of its own, the target also names that cgroup
//! (set before the command starts), so that the cgroups source measures it
//! whatever the selection rules say.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

#[derive(Debug, Default)]
struct Inner {
    pid: AtomicU32,
    cgroup: OnceLock<String>,
    /// Pids found to descend from the command, decided when they were measured.
    tree: Mutex<HashSet<u32>>,
}

/// The pid (and cgroup) of the measured command, once known. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ExecTarget(Arc<Inner>);

impl ExecTarget {
    /// No target yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the measured process (the agent does this right after spawning it).
    pub fn set(&self, pid: u32) {
        self.0.pid.store(pid, Ordering::Release);
    }

    /// The measured process, if `exec` has started one.
    pub fn get(&self) -> Option<u32> {
        match self.0.pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Sets the cgroup the command runs in (its path relative to the
    /// hierarchy root, as in `cgroup` consumers). Only the first call counts.
    pub fn set_cgroup(&self, path: impl Into<String>) {
        let _ = self.0.cgroup.set(path.into());
    }

    /// The cgroup the command runs in, if the agent created one.
    pub fn cgroup(&self) -> Option<&str> {
        self.0.cgroup.get().map(String::as_str)
    }

    /// Records that `pid` belongs to the command's process tree. The
    /// process source calls this when it measures the process, so that
    /// membership does not depend on the process still existing later.
    pub fn add_tree_member(&self, pid: u32) {
        self.0
            .tree
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pid);
    }

    /// Whether `pid` is the command or was found to descend from it.
    pub fn is_tree_member(&self, pid: u32) -> bool {
        self.get() == Some(pid)
            || self
                .0
                .tree
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&pid)
    }
}
