//! The cgroup mounts listed in `/proc/self/mountinfo`.
//!
//! A line is `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`
//! (proc(5)). For `cgroup` (v1) mounts the super options name the
//! controllers (`rw,cpu,cpuacct`, `rw,name=systemd`); `cgroup2` mounts have
//! all the v2 controllers. Mount points escape space, tab, newline and
//! backslash as octal (`\040`).

use std::path::PathBuf;

use super::hierarchy::{CgroupVersion, Hierarchy};

/// Mount options of the kernel that are not controller names.
const NON_CONTROLLER_OPTIONS: [&str; 10] = [
    "rw",
    "ro",
    "relatime",
    "noatime",
    "nosuid",
    "nodev",
    "noexec",
    "clone_children",
    "noprefix",
    "xattr",
];

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let octal = bytes
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok());
            if let Some(v) = octal {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup hierarchies mounted according to `mountinfo` (the text of
/// `/proc/self/mountinfo`). Malformed lines are skipped. A hierarchy
/// mounted twice is listed once (its first mount).
pub fn cgroup_mounts(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let Some(mount_point) = fields.get(4) else {
            continue;
        };
        let mut after = after.split(' ');
        let (Some(fstype), Some(_source), Some(super_options)) =
            (after.next(), after.next(), after.next())
        else {
            continue;
        };
        let (version, controllers) = match fstype {
            "cgroup2" => (CgroupVersion::V2, Vec::new()),
            "cgroup" => {
                let controllers: Vec<String> = super_options
                    .split(',')
                    .filter(|o| {
                        !NON_CONTROLLER_OPTIONS.contains(o) && !o.starts_with("release_agent=")
                    })
                    .map(str::to_owned)
                    .collect();
                (CgroupVersion::V1, controllers)
            }
            _ => continue,
        };
        let hierarchy = Hierarchy {
            version,
            controllers,
            mount_point: PathBuf::from(unescape(mount_point)),
        };
        let duplicate = out
            .iter()
            .any(|h| h.version == hierarchy.version && h.controllers == hierarchy.controllers);
        if !duplicate {
            out.push(hierarchy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
38 33 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
39 33 0:34 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
40 33 0:35 / /sys/fs/cgroup/my\\040dir rw shared:18 - cgroup cgroup rw,blkio
garbage line
41 33 0:35 / /host/cgroup/memory rw shared:19 - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_mounts_are_found_with_their_controllers() {
        let m = cgroup_mounts(HYBRID);
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!(m[0].version, CgroupVersion::V2);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[1].controllers, vec!["name=systemd"]);
        assert_eq!(m[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m[4].mount_point, PathBuf::from("/sys/fs/cgroup/my dir"));
    }
}
