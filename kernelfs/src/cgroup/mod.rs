//! Control groups: where the hierarchies are mounted, which hierarchy
//! accounts CPU time, memory and I/O, what `/proc/PID/cgroup` says, and
//! creating a cgroup for a command.
//!
//! Paths of cgroups are written relative to their hierarchy's root, with a
//! leading `/`: `/` is the root, `/system.slice/ssh.service` a service. That
//! is the id of a `cgroup` consumer in every output.

mod hierarchy;
mod layout;
mod mountinfo;
mod proc_cgroup;
mod run_in;

pub use hierarchy::{CgroupVersion, Hierarchy};
pub use layout::{Accounting, CgroupLayout, HierarchyChoice, LayoutError};
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

/// Whether `dir` lies on a cgroup filesystem (v1 or v2) rather than on
/// ordinary files (a fixture tree, a copy). The kernel's own files keep
/// invariants that a copy need not, such as a cgroup's CPU time including
/// its descendants'.
pub fn is_cgroup_filesystem(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string we own; statfs writes into
    // the struct we own and we read it only when it succeeded.
    if unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statfs succeeded, so the struct is initialised (it was zeroed anyway).
    let kind = unsafe { stat.assume_init() }.f_type;
    kind == libc::CGROUP2_SUPER_MAGIC || kind == libc::CGROUP_SUPER_MAGIC
}

/// Whether the hierarchy mounted at `mount` holds cgroup `rel`, or one of
/// its ancestors below the root (on a hybrid machine: whether v1 `cpuacct`
/// accounts a cgroup of the v2 tree).
pub fn holds(mount: &Path, rel: &str) -> bool {
    let mut prefix = String::new();
    for component in rel.split('/').filter(|c| !c.is_empty()) {
        prefix.push('/');
        prefix.push_str(component);
        if dir_of(mount, &prefix).is_dir() {
            return true;
        }
    }
    false
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

    #[test]
    fn only_cgroupfs_is_a_cgroup_filesystem() {
        let tmp = std::env::temp_dir();
        assert!(!is_cgroup_filesystem(&tmp));
        assert!(!is_cgroup_filesystem(Path::new("/nonexistent/alumet")));
        // This machine's hierarchies, where there are some (every CI machine).
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for hierarchy in cgroup_mounts(&mountinfo) {
            assert!(
                is_cgroup_filesystem(&hierarchy.mount_point),
                "{hierarchy:?}"
            );
        }
    }
}
