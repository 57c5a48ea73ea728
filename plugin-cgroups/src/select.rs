//! Which cgroups become series: the workloads people account for (by
//! default), or every cgroup; plus glob patterns on the path to add or
//! leave out cgroups. The hierarchy root is always read: it is the whole
//! machine, against which the energy model measures every cgroup's share.

use alumet_kernelfs::glob::Glob;
use serde::{Deserialize, Serialize};

use crate::classify::Classification;

/// The base rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SelectMode {
    /// Slurm/OAR jobs and steps, pods, containers, systemd services, user sessions.
    #[default]
    Workloads,
    /// Every cgroup found (within `max_depth`).
    All,
}

/// The selection rules.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Base rule.
    pub mode: SelectMode,
    /// Paths that are selected whatever the base rule says.
    pub include: Vec<Glob>,
    /// Paths that are never selected (wins over `include`).
    pub exclude: Vec<Glob>,
}

impl Selection {
    /// Whether cgroup `path`, classified as `class`, is measured.
    pub fn selects(&self, path: &str, class: &Classification) -> bool {
        if self.exclude.iter().any(|g| g.matches(path.as_bytes())) {
            return false;
        }
        if self.include.iter().any(|g| g.matches(path.as_bytes())) {
            return true;
        }
        match self.mode {
            SelectMode::All => true,
            SelectMode::Workloads => class.is_workload(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;

    #[test]
    fn patterns_add_and_remove() {
        let s = Selection {
            mode: SelectMode::Workloads,
            include: vec![Glob::new("/machine.slice/*")],
            exclude: vec![Glob::new("*/systemd-*.service")],
        };
        let sel = |p: &str| s.selects(p, &classify(p));
        assert!(sel("/system.slice/ssh.service"));
        assert!(!sel("/system.slice/systemd-journald.service"));
        assert!(sel("/machine.slice/qemu-1-vm.scope"));
        assert!(!sel("/system.slice"));
        let all = Selection {
            mode: SelectMode::All,
            include: vec![],
            exclude: vec![],
        };
        assert!(all.selects("/system.slice", &classify("/system.slice")));
    }
}
