//! What a mounted cgroup hierarchy is: its version, controllers and mount
//! point. Mountinfo finds them; the layout chooses among them.

use std::path::PathBuf;

/// Version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy: one hierarchy per controller group.
    V1,
    /// Unified hierarchy.
    V2,
}

impl CgroupVersion {
    /// `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// v1 controllers of this hierarchy (`cpu`, `cpuacct`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    /// Where it is mounted (under the configured cgroup root).
    pub mount_point: PathBuf,
}
