//! `/proc/PID/cgroup`: the cgroup of a process in each hierarchy.
//!
//! One line per hierarchy, `ID:CONTROLLERS:PATH` (cgroups(7)): `0::/user.slice`
//! for v2, `4:memory:/docker/ab12` or `2:cpu,cpuacct:/` for v1. The path may
//! itself contain `:`, so a line is split at its first two colons only.

use super::hierarchy::CgroupVersion;
use super::layout::Accounting;

/// One line of `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroupEntry {
    /// Hierarchy id (0 for v2).
    pub hierarchy_id: u32,
    /// Comma-separated v1 controllers; empty for v2.
    pub controllers: String,
    /// The cgroup's path in that hierarchy.
    pub path: String,
}

/// Parses the whole file; malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?.to_owned();
            let path = parts.next()?;
            if !path.starts_with('/') {
                return None;
            }
            Some(ProcCgroupEntry {
                hierarchy_id: id,
                controllers,
                path: path.to_owned(),
            })
        })
        .collect()
}

impl Accounting {
    /// The path, in this accounting's CPU hierarchy, among the entries of a
    /// `/proc/PID/cgroup` file.
    pub fn path_in<'a>(&self, entries: &'a [ProcCgroupEntry]) -> Option<&'a str> {
        entries
            .iter()
            .find(|e| match self.version {
                CgroupVersion::V2 => e.hierarchy_id == 0 && e.controllers.is_empty(),
                CgroupVersion::V1 => e.controllers.split(',').any(|c| c == "cpuacct"),
            })
            .map(|e| e.path.as_str())
    }
}

impl Accounting {
    /// The cgroup of a process (its `/proc/PID/cgroup` entries) in each of
    /// [`Accounting::mount_points`], in that order; `None` if one is missing.
    pub fn own_parents(&self, entries: &[ProcCgroupEntry]) -> Option<Vec<String>> {
        let in_hierarchy = |version: CgroupVersion, controller: &str| {
            entries
                .iter()
                .find(|e| match version {
                    CgroupVersion::V2 => e.hierarchy_id == 0 && e.controllers.is_empty(),
                    CgroupVersion::V1 => e.controllers.split(',').any(|c| c == controller),
                })
                .map(|e| e.path.clone())
        };
        let mut out = vec![in_hierarchy(self.version, "cpuacct")?];
        let mut seen = vec![self.cpu.clone()];
        for (figure, controller) in [(&self.memory, "memory"), (&self.io, "blkio")] {
            if let Some((mount, version)) = figure {
                if !seen.contains(mount) {
                    seen.push(mount.clone());
                    out.push(in_hierarchy(*version, controller)?);
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_file_gives_each_hierarchy() {
        let text = "9:name=systemd:/user.slice/a:b\n4:memory:/docker/ab\n2:cpu,cpuacct:/docker/ab\n0::/user.slice/user-0.slice\nbogus\n";
        let e = parse_proc_cgroup(text);
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].path, "/user.slice/a:b");
        let v1 = Accounting {
            version: CgroupVersion::V1,
            cpu: "/x".into(),
            memory: None,
            io: None,
        };
        assert_eq!(v1.path_in(&e), Some("/docker/ab"));
        let v2 = Accounting {
            version: CgroupVersion::V2,
            ..v1
        };
        assert_eq!(v2.path_in(&e), Some("/user.slice/user-0.slice"));
    }
}
