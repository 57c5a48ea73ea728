//! Control groups: where the hierarchies are mounted, which hierarchy
//! accounts CPU time, memory and I/O, what `/proc/PID/cgroup` says, and
//! creating a cgroup for a command.
//!
//! Paths of cgroups are written relative to their hierarchy's root, with a
//! leading `/`: `/` is the root, `/system.slice/ssh.service` a service. That
//! is the id of a `cgroup` consumer in every output.

mod layout;
mod mountinfo;
mod proc_cgroup;
mod run_in;

pub use layout::{
    Accounting, CgroupLayout, CgroupVersion, Hierarchy, HierarchyChoice, LayoutError,
};
pub use mountinfo::cgroup_mounts;
pub use proc_cgroup::{parse_proc_cgroup, ProcCgroupEntry};
pub use run_in::{
    join_raw, join_raw_each, CgroupError, CommandCgroup, ParentChoice, RemoveOutcome,
};

use std::path::{Path, PathBuf};

/// The directory of cgroup `rel` (`/a/b`) in the hierarchy mounted at `mount`.
pub fn dir_of(mount: &Path, rel: &str) -> PathBuf {
    let trimmed = rel.trim_start_matches('/');
    if trimmed.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(trimmed)
    }
}

/// The kernel's own total CPU time of cgroup `rel` in seconds (v2
/// `usage_usec` of `cpu.stat`, v1 `cpuacct.usage`): the figure to check
/// measurements against.
pub fn kernel_cpu_seconds(accounting: &Accounting, rel: &str) -> std::io::Result<f64> {
    let dir = dir_of(&accounting.cpu, rel);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected content");
    match accounting.version {
        CgroupVersion::V2 => {
            let text = std::fs::read_to_string(dir.join("cpu.stat"))?;
            let usec: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(bad)?;
            Ok(usec / 1e6)
        }
        CgroupVersion::V1 => {
            let ns: f64 = std::fs::read_to_string(dir.join("cpuacct.usage"))?
                .trim()
                .parse()
                .map_err(|_| bad())?;
            Ok(ns / 1e9)
        }
    }
}

/// The parent of cgroup path `rel`; `None` for the root.
pub fn parent_of(rel: &str) -> Option<&str> {
    if rel == "/" || rel.is_empty() {
        return None;
    }
    match rel.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&rel[..i]),
        None => Some("/"),
    }
}

/// Whether `ancestor` is a strict ancestor of `rel` (`/a` of `/a/b`, `/` of everything else).
pub fn is_strict_ancestor(ancestor: &str, rel: &str) -> bool {
    if ancestor == rel {
        return false;
    }
    if ancestor == "/" {
        return rel.starts_with('/') && rel.len() > 1;
    }
    rel.len() > ancestor.len()
        && rel.starts_with(ancestor)
        && rel.as_bytes()[ancestor.len()] == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_relate_on_component_boundaries() {
        assert!(is_strict_ancestor("/", "/a"));
        assert!(is_strict_ancestor("/a", "/a/b"));
        assert!(!is_strict_ancestor("/a", "/ab"));
        assert!(!is_strict_ancestor("/a", "/a"));
        assert!(!is_strict_ancestor("/", "/"));
        assert_eq!(parent_of("/a/b"), Some("/a"));
        assert_eq!(parent_of("/a"), Some("/"));
        assert_eq!(parent_of("/"), None);
        assert_eq!(
            dir_of(Path::new("/sys/fs/cgroup"), "/"),
            PathBuf::from("/sys/fs/cgroup")
        );
        assert_eq!(dir_of(Path::new("/x"), "/a/b"), PathBuf::from("/x/a/b"));
    }
}
