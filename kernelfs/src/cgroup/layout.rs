//! Which cgroup hierarchies a machine has and which one accounts CPU time.
//!
//! Three layouts exist in the field: pure v2 (`cgroup.controllers` at the
//! root), pure v1 (one directory per controller or group of controllers:
//! `cpu,cpuacct`, `memory`, `blkio`...) and hybrid (v1 controllers plus a
//! v2 hierarchy, usually at `unified/`, that holds no controller but does
//! keep per-cgroup `cpu.stat`). In a hybrid layout the workloads (Docker,
//! Kubernetes, Slurm's cgroup/v1 plugin) live in the v1 controllers, so v1
//! accounts for them whenever its `cpuacct` hierarchy has any cgroup; an
//! otherwise empty v1 tree (containers, minimal systems) leaves v2 in charge.

use std::path::{Path, PathBuf};

use super::hierarchy::{CgroupVersion, Hierarchy};
use super::mountinfo::cgroup_mounts;

/// Which hierarchy accounts CPU time, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HierarchyChoice {
    /// v2 on a pure v2 machine, v1 on a v1 one; on a hybrid one, v1 if its
    /// `cpuacct` hierarchy holds any cgroup, else v2.
    #[default]
    Auto,
    /// The unified hierarchy.
    V2,
    /// The v1 `cpuacct` hierarchy (with `memory` and `blkio`).
    V1,
}

/// Why no usable hierarchy was found.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Nothing that looks like a cgroup filesystem.
    #[error("no cgroup filesystem under {root} (no cgroup mount there in /proc/self/mountinfo, and no cgroup.controllers or cgroup.procs file)")]
    NoCgroupFs {
        /// The configured root.
        root: PathBuf,
    },
    /// The requested hierarchy is not there.
    #[error("no cgroup {wanted} hierarchy under {root} (found: {found})")]
    Missing {
        /// What was asked for.
        wanted: &'static str,
        /// The configured root.
        root: PathBuf,
        /// What there is.
        found: String,
    },
}

/// The hierarchies found under a cgroup root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The configured root (`/sys/fs/cgroup`).
    pub root: PathBuf,
    /// Every hierarchy found.
    pub hierarchies: Vec<Hierarchy>,
}

/// Where the figures of a cgroup path are read: CPU time from one
/// hierarchy; memory and I/O from the hierarchy that has the controller,
/// the same one where it can (v2 with `memory`/`io` in its
/// `cgroup.controllers`), else the v1 `memory` and `blkio` hierarchies
/// (hybrid machines, where v2 holds no controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounting {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// Mount point of the hierarchy read for CPU time.
    pub cpu: PathBuf,
    /// Hierarchy read for memory (mount point, version), if any.
    pub memory: Option<(PathBuf, CgroupVersion)>,
    /// Hierarchy read for I/O (mount point, version), if any.
    pub io: Option<(PathBuf, CgroupVersion)>,
}

impl Accounting {
    /// The distinct mount points involved (where a cgroup for a command is created).
    pub fn mount_points(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = vec![&self.cpu];
        for (p, _) in [&self.memory, &self.io].into_iter().flatten() {
            if !out.contains(&p.as_path()) {
                out.push(p);
            }
        }
        out
    }

    /// One line for logs and reports: `v2 at /sys/fs/cgroup`.
    pub fn describe(&self) -> String {
        match self.version {
            CgroupVersion::V2 => format!("cgroup v2 at {}", self.cpu.display()),
            CgroupVersion::V1 => format!("cgroup v1 cpuacct at {}", self.cpu.display()),
        }
    }
}

fn is_file(p: &Path) -> bool {
    p.is_file()
}

impl CgroupLayout {
    /// Finds the hierarchies under `cgroup_root`: from `<proc_root>/self/mountinfo`
    /// where it lists cgroup mounts under that root, else by looking at the
    /// files under it (fixture trees, or a host's cgroupfs bind-mounted into a container).
    pub fn detect(cgroup_root: &Path, proc_root: &Path) -> Result<Self, LayoutError> {
        let from_mounts: Vec<Hierarchy> = std::fs::read_to_string(proc_root.join("self/mountinfo"))
            .map(|text| cgroup_mounts(&text))
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h.mount_point.starts_with(cgroup_root) && h.mount_point.is_dir())
            .collect();
        let hierarchies = if from_mounts.is_empty() {
            Self::scan(cgroup_root)
        } else {
            from_mounts
        };
        if hierarchies.is_empty() {
            return Err(LayoutError::NoCgroupFs {
                root: cgroup_root.to_path_buf(),
            });
        }
        Ok(Self {
            root: cgroup_root.to_path_buf(),
            hierarchies,
        })
    }

    /// Recognises hierarchies by their files: `cgroup.controllers` (v2) or
    /// `cgroup.procs` (v1, controllers from the directory's name).
    pub fn scan(cgroup_root: &Path) -> Vec<Hierarchy> {
        if is_file(&cgroup_root.join("cgroup.controllers")) {
            return vec![Hierarchy {
                version: CgroupVersion::V2,
                controllers: Vec::new(),
                mount_point: cgroup_root.to_path_buf(),
            }];
        }
        if is_file(&cgroup_root.join("cgroup.procs")) {
            // A single v1 hierarchy mounted at the root itself.
            return vec![Hierarchy {
                version: CgroupVersion::V1,
                controllers: vec!["cpuacct".into(), "memory".into(), "blkio".into()],
                mount_point: cgroup_root.to_path_buf(),
            }];
        }
        let Ok(entries) = std::fs::read_dir(cgroup_root) else {
            return Vec::new();
        };
        let mut found: Vec<(PathBuf, Hierarchy)> = Vec::new();
        let mut names: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.to_owned(), e.path())))
            .collect();
        // Real directories before the symlinks that alias them (`cpu -> cpu,cpuacct`).
        names.sort_by_key(|(_, p)| (p.is_symlink(), p.clone()));
        for (name, path) in names {
            if !path.is_dir() {
                continue;
            }
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if found.iter().any(|(c, _)| *c == canonical) {
                continue;
            }
            let hierarchy = if is_file(&path.join("cgroup.controllers")) {
                Hierarchy {
                    version: CgroupVersion::V2,
                    controllers: Vec::new(),
                    mount_point: path,
                }
            } else if is_file(&path.join("cgroup.procs")) {
                let controllers = if name == "systemd" {
                    vec!["name=systemd".to_owned()]
                } else {
                    name.split(',').map(str::to_owned).collect()
                };
                Hierarchy {
                    version: CgroupVersion::V1,
                    controllers,
                    mount_point: path,
                }
            } else {
                continue;
            };
            found.push((canonical, hierarchy));
        }
        found.into_iter().map(|(_, h)| h).collect()
    }

    /// The unified (v2) hierarchy, if mounted.
    pub fn unified(&self) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| h.version == CgroupVersion::V2)
    }

    /// The v1 hierarchy that has `controller`, if mounted.
    pub fn v1(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| {
            h.version == CgroupVersion::V1 && h.controllers.iter().any(|c| c == controller)
        })
    }

    /// One line: what is mounted where.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .hierarchies
            .iter()
            .map(|h| match h.version {
                CgroupVersion::V2 => format!("v2 at {}", h.mount_point.display()),
                CgroupVersion::V1 => format!(
                    "v1 {} at {}",
                    h.controllers.join(","),
                    h.mount_point.display()
                ),
            })
            .collect();
        parts.join("; ")
    }

    /// The hierarchy that accounts CPU time, per `choice` (see [`HierarchyChoice`]).
    pub fn accounting(&self, choice: HierarchyChoice) -> Result<Accounting, LayoutError> {
        let v1_of = |controller| {
            self.v1(controller)
                .map(|h| (h.mount_point.clone(), CgroupVersion::V1))
        };
        let v2 = || {
            self.unified().map(|h| {
                let controllers = std::fs::read_to_string(h.mount_point.join("cgroup.controllers"))
                    .unwrap_or_default();
                let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
                let in_v2 = || (h.mount_point.clone(), CgroupVersion::V2);
                Accounting {
                    version: CgroupVersion::V2,
                    cpu: h.mount_point.clone(),
                    memory: if has("memory") {
                        Some(in_v2())
                    } else {
                        v1_of("memory")
                    },
                    io: if has("io") {
                        Some(in_v2())
                    } else {
                        v1_of("blkio")
                    },
                }
            })
        };
        let v1 = || {
            self.v1("cpuacct").map(|h| Accounting {
                version: CgroupVersion::V1,
                cpu: h.mount_point.clone(),
                memory: v1_of("memory"),
                io: v1_of("blkio"),
            })
        };
        let missing = |wanted| LayoutError::Missing {
            wanted,
            root: self.root.clone(),
            found: self.describe(),
        };
        match choice {
            HierarchyChoice::V2 => v2().ok_or_else(|| missing("v2")),
            HierarchyChoice::V1 => v1().ok_or_else(|| missing("v1 cpuacct")),
            HierarchyChoice::Auto => match (v2(), v1()) {
                (Some(v2), Some(v1)) => {
                    if has_child_cgroup(&v1.cpu) {
                        Ok(v1)
                    } else {
                        Ok(v2)
                    }
                }
                (Some(v2), None) => Ok(v2),
                (None, Some(v1)) => Ok(v1),
                (None, None) => Err(missing("v2 or v1 cpuacct")),
            },
        }
    }
}

fn has_child_cgroup(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    #[test]
    fn pure_v2_is_the_root_itself() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("cgroup.controllers"));
        let l = CgroupLayout::detect(d.path(), Path::new("/nonexistent")).unwrap();
        let a = l.accounting(HierarchyChoice::Auto).unwrap();
        assert_eq!(a.version, CgroupVersion::V2);
        assert_eq!(a.cpu, d.path());
    }

    #[test]
    fn hybrid_prefers_v1_only_when_it_holds_cgroups() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("unified/cgroup.controllers"));
        touch(&r.join("cpu,cpuacct/cgroup.procs"));
        std::os::unix::fs::symlink(r.join("cpu,cpuacct"), r.join("cpuacct")).unwrap();
        touch(&r.join("memory/cgroup.procs"));
        touch(&r.join("systemd/cgroup.procs"));
        let l = CgroupLayout::detect(r, Path::new("/nonexistent")).unwrap();
        assert_eq!(l.hierarchies.len(), 4, "{l:?}");
        let a = l.accounting(HierarchyChoice::Auto).unwrap();
        assert_eq!(a.version, CgroupVersion::V2);
        // The unified tree has no controller: memory comes from v1.
        assert_eq!(a.memory, Some((r.join("memory"), CgroupVersion::V1)));
        std::fs::create_dir(r.join("cpu,cpuacct/docker")).unwrap();
        let a = l.accounting(HierarchyChoice::Auto).unwrap();
        assert_eq!(a.version, CgroupVersion::V1);
        assert_eq!(a.cpu, r.join("cpu,cpuacct"));
        assert_eq!(a.memory, Some((r.join("memory"), CgroupVersion::V1)));
        assert_eq!(a.io, None);
        assert_eq!(
            l.accounting(HierarchyChoice::V2).unwrap().cpu,
            r.join("unified")
        );
    }

    #[test]
    fn nothing_there_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let e = CgroupLayout::detect(d.path(), Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("no cgroup filesystem under"), "{e}");
        touch(&d.path().join("cgroup.controllers"));
        let l = CgroupLayout::detect(d.path(), Path::new("/nonexistent")).unwrap();
        let e = l.accounting(HierarchyChoice::V1).unwrap_err();
        assert!(
            e.to_string().contains("no cgroup v1 cpuacct hierarchy"),
            "{e}"
        );
    }
}
