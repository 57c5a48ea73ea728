//! The process that `alumet-agent exec` measures, shared with plugins.
//!
//! The agent starts measuring before it spawns the command, so plugins learn
//! the child's pid only later: they keep an [`ExecTarget`] from their start
//! context and read it at each poll (one atomic load).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The pid of the measured command, once it is known. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ExecTarget(Arc<AtomicU32>);

impl ExecTarget {
    /// No target yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the measured process (the agent does this right after spawning it).
    pub fn set(&self, pid: u32) {
        self.0.store(pid, Ordering::Release);
    }

    /// The measured process, if `exec` has started one.
    pub fn get(&self) -> Option<u32> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }
}
