//! A cgroup created to run one command in, so that the kernel accounts for
//! its whole process tree, however short-lived its processes are.
//!
//! A process joins it before it runs the command, from inside, between fork
//! and exec: it writes `0` (itself) to descriptors the parent opened
//! ([`CommandCgroup::join_fds`], [`join_raw`]: plain `write(2)`s, safe after
//! fork), or, in a v2 hierarchy, it is created inside (clone3
//! `CLONE_INTO_CGROUP`, [`CommandCgroup::cpu_v2_dir`]).
//!
//! Why from inside, and through v1's `tasks` file: a move of a process
//! (`cgroup.procs`, or another thread's id) write-locks the kernel's
//! `cgroup_threadgroup_rwsem`, which after a while idle waits for an RCU
//! grace period (4.5–20 ms measured here, BENCHMARKS.md) while holding
//! `cgroup_mutex`, so mkdir, rmdir and the command's exit wait too. A
//! thread moving itself (`0`) through `tasks` is exempt from that lock on
//! current kernels (0.5 ms measured here on 6.18; older ones take it and
//! cost what a move costs), and between fork and exec the child is a
//! single thread, so that moves the whole process. v2 has no such file for domain
//! cgroups: there the child is created inside, or joins through
//! `cgroup.procs` where clone3 cannot.
//!
//! At the end, processes that outlived the command (daemons) are moved to
//! the parent cgroup so that the directory can be removed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::dir_of;
use super::layout::Accounting;

/// Why a cgroup could not be created or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// mkdir failed.
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `cgroup.procs` could not be opened for writing, or a pid written to it.
    #[error("cannot write to {path}: {source}")]
    Procs {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// rmdir failed for good.
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// What [`CommandCgroup::remove`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoveOutcome {
    /// Processes still in the cgroup after the command ended, moved to the parent.
    pub moved_out: Vec<u32>,
}

/// A cgroup (one directory per involved hierarchy) created for a command.
#[derive(Debug)]
pub struct CommandCgroup {
    /// Path in the CPU hierarchy (the consumer id).
    path: String,
    /// (mount point, parent path, directory) per hierarchy, the CPU one first.
    dirs: Vec<(PathBuf, String, PathBuf)>,
    /// Per hierarchy (same order), the file a process writes `0` to, to
    /// join (`tasks` in v1, `cgroup.procs` in v2), and its path.
    join_files: Vec<(File, PathBuf)>,
    /// Whether the CPU hierarchy (the first of `dirs`) is cgroup v2.
    cpu_is_v2: bool,
    removed: bool,
}

/// Where a cgroup for a command may be created, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentChoice {
    /// The same path in every hierarchy (configured by the user).
    Fixed(String),
    /// The agent's own cgroup in each hierarchy (from `/proc/self/cgroup`):
    /// the command then stays under the limits of whatever runs the agent
    /// (a Slurm job, a systemd unit).
    Own,
    /// The root of every hierarchy (root only).
    Root,
}

fn join_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{}/{name}", parent.trim_end_matches('/'))
    }
}

impl CommandCgroup {
    /// Creates cgroup `<parent>/<name>` in every hierarchy of `accounting`,
    /// `parents` giving the parent path in each (same order as
    /// [`Accounting::mount_points`]). On failure nothing is left behind.
    pub fn create_in(
        accounting: &Accounting,
        parents: &[String],
        name: &str,
    ) -> Result<Self, CgroupError> {
        let mut created = CommandCgroup {
            path: String::new(),
            dirs: Vec::new(),
            join_files: Vec::new(),
            cpu_is_v2: accounting.version == super::CgroupVersion::V2,
            removed: false,
        };
        for (mount, parent) in accounting.mount_points().into_iter().zip(parents) {
            let path = join_path(parent, name);
            if created.path.is_empty() {
                created.path = path.clone();
            }
            let dir = dir_of(mount, &path);
            std::fs::create_dir(&dir).map_err(|source| CgroupError::Create {
                path: dir.clone(),
                source,
            })?;
            created
                .dirs
                .push((mount.to_path_buf(), parent.clone(), dir.clone()));
            // Only v1 has `tasks` (see the module's comment).
            let mut join_path = dir.join("tasks");
            if !join_path.exists() {
                join_path = dir.join("cgroup.procs");
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&join_path)
                .map_err(|source| CgroupError::Procs {
                    path: join_path.clone(),
                    source,
                })?;
            created.join_files.push((file, join_path));
        }
        Ok(created)
    }

    /// Creates cgroup `<parent>/<name>` with the same parent path in every hierarchy.
    pub fn create(accounting: &Accounting, parent: &str, name: &str) -> Result<Self, CgroupError> {
        let parents = vec![parent.to_owned(); accounting.mount_points().len()];
        Self::create_in(accounting, &parents, name)
    }

    /// Tries each of `choices` in order; the first that works is kept. The
    /// agent's own cgroups are read from `<proc_root>/self/cgroup`. Returns
    /// the errors of the choices tried when none works.
    pub fn create_for_command(
        accounting: &Accounting,
        proc_root: &Path,
        choices: &[ParentChoice],
        name: &str,
    ) -> Result<Self, Vec<CgroupError>> {
        let mut errors = Vec::new();
        let own = std::fs::read_to_string(proc_root.join("self/cgroup"))
            .map(|t| super::parse_proc_cgroup(&t))
            .unwrap_or_default();
        let count = accounting.mount_points().len();
        for choice in choices {
            let (accounting, parents) = match choice {
                ParentChoice::Fixed(p) => (accounting.clone(), vec![p.clone(); count]),
                ParentChoice::Root => (accounting.clone(), vec!["/".to_owned(); count]),
                ParentChoice::Own => match accounting.own_parents(&own) {
                    Some(p) => same_path_only(accounting, p),
                    None => continue,
                },
            };
            match Self::create_in(&accounting, &parents, name) {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(e),
            }
        }
        Err(errors)
    }

    /// The cgroup's path relative to its hierarchies' roots (the consumer id).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The directories created, one per hierarchy.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, _, d)| d.as_path())
    }

    /// Makes `cmd` join this cgroup between fork and exec, so that its first
    /// instruction is already counted. (std then forks instead of using
    /// posix_spawn: a few ms for a large parent; see BENCHMARKS.md.)
    pub fn join_on_exec(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let fds = self.join_fds();
        // SAFETY: the closure only calls write(2) on descriptors opened
        // before the fork, which is safe between fork and exec.
        unsafe {
            cmd.pre_exec(move || join_raw(&fds));
        }
    }

    /// The directory in the CPU hierarchy when that is cgroup v2: a process
    /// can be created straight into it (clone3 `CLONE_INTO_CGROUP`), which
    /// spares the move, and the RCU grace period the kernel makes a move of
    /// a process after a while wait for (4–20 ms measured). Its descriptor
    /// is then the first of [`CommandCgroup::join_fds`], to skip.
    pub fn cpu_v2_dir(&self) -> Option<&Path> {
        if self.cpu_is_v2 {
            self.dirs.first().map(|(_, _, d)| d.as_path())
        } else {
            None
        }
    }

    /// The descriptors a single-threaded process writes `0` to, one per
    /// hierarchy, the CPU one first, to join this cgroup (see [`join_raw`]
    /// and the module's comment); valid while `self` lives.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.join_files.iter().map(|(f, _)| f.as_raw_fd()).collect()
    }

    /// The file behind each of [`CommandCgroup::join_fds`], for messages.
    pub fn join_paths(&self) -> impl Iterator<Item = &Path> {
        self.join_files.iter().map(|(_, p)| p.as_path())
    }

    /// Moves every process still inside to the parent cgroup, then removes
    /// the directories, retrying for up to `patience` while the kernel
    /// finishes releasing exited tasks.
    pub fn remove(mut self, patience: Duration) -> Result<RemoveOutcome, CgroupError> {
        self.removed = true;
        self.join_files.clear();
        let mut outcome = RemoveOutcome::default();
        let mut first_error = None;
        // Children first would matter only for nested cgroups, which we never create.
        for (mount, parent, dir) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let parent_procs = dir_of(&mount, &parent).join("cgroup.procs");
            let deadline = Instant::now() + patience;
            loop {
                for pid in pids_in(&dir) {
                    if std::fs::write(&parent_procs, format!("{pid}\n")).is_ok()
                        && !outcome.moved_out.contains(&pid)
                    {
                        outcome.moved_out.push(pid);
                    }
                }
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => {
                        if Instant::now() >= deadline {
                            first_error.get_or_insert(CgroupError::Remove {
                                path: dir.clone(),
                                source: e,
                            });
                            break;
                        }
                        // The kernel releases an exited task from its cgroup shortly after
                        // the parent reaps it: retry soon (this wait is in every `exec`).
                        std::thread::sleep(Duration::from_micros(250));
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }
}

impl CommandCgroup {
    /// Removes the cgroups named `<prefix><pid>` beside this one (in each of
    /// its hierarchies) whose pid is no longer running (under `proc_root`)
    /// and that hold no process: what an earlier agent killed before it
    /// could clean up left behind. Returns the directories removed.
    pub fn remove_stale_siblings(&self, prefix: &str, proc_root: &Path) -> Vec<PathBuf> {
        let parents: Vec<PathBuf> = self
            .dirs
            .iter()
            .map(|(mount, parent, _)| dir_of(mount, parent))
            .collect();
        remove_stale(&parents, prefix, proc_root)
    }
}

/// See [`CommandCgroup::remove_stale_siblings`]. rmdir refuses a cgroup
/// that still holds a process or a child cgroup, so a command still
/// running in one is never disturbed.
fn remove_stale(parents: &[PathBuf], prefix: &str, proc_root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if proc_root.join(pid.to_string()).exists() {
                continue;
            }
            if std::fs::remove_dir(entry.path()).is_ok() {
                removed.push(entry.path());
            }
        }
    }
    removed
}

/// Keeps the memory and I/O hierarchies only where the agent's own cgroup
/// has the same path as in the CPU hierarchy: the cgroups source reads every
/// hierarchy at the CPU path, so a command's cgroup elsewhere would be read
/// by nothing (and would cost a mkdir and an rmdir in every `exec`).
fn same_path_only(accounting: &Accounting, parents: Vec<String>) -> (Accounting, Vec<String>) {
    let mounts: Vec<PathBuf> = accounting
        .mount_points()
        .iter()
        .map(|m| m.to_path_buf())
        .collect();
    let keep = |mount: &Path| {
        mounts
            .iter()
            .position(|m| m == mount)
            .and_then(|i| parents.get(i))
            .is_some_and(|p| Some(p) == parents.first())
    };
    let mut reduced = accounting.clone();
    for figure in [&mut reduced.memory, &mut reduced.io] {
        if figure.as_ref().is_some_and(|(m, _)| !keep(m)) {
            *figure = None;
        }
    }
    let kept: Vec<String> = mounts
        .iter()
        .zip(&parents)
        .filter(|(m, _)| reduced.mount_points().contains(&m.as_path()))
        .map(|(_, p)| p.clone())
        .collect();
    (reduced, kept)
}

impl Drop for CommandCgroup {
    fn drop(&mut self) {
        if !self.removed && !self.dirs.is_empty() {
            let leftover = CommandCgroup {
                path: std::mem::take(&mut self.path),
                dirs: std::mem::take(&mut self.dirs),
                join_files: Vec::new(),
                cpu_is_v2: self.cpu_is_v2,
                removed: false,
            };
            if let Err(e) = leftover.remove(Duration::from_millis(200)) {
                log::warn!("{e}");
            }
        }
    }
}

fn pids_in(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Makes the calling process, single-threaded (between fork and exec), join
/// the cgroup whose [`CommandCgroup::join_fds`] are `fds`. Only `write(2)`:
/// safe to call between fork and exec.
pub fn join_raw(fds: &[RawFd]) -> io::Result<()> {
    join_raw_each(fds).map_err(|(_, e)| e)
}

/// Like [`join_raw`], trying every descriptor even after one failed; the
/// index of the first that failed and its error. (No allocation: an
/// `io::Error` from an errno is a plain value.)
pub fn join_raw_each(fds: &[RawFd]) -> Result<(), (usize, io::Error)> {
    let mut first_failure = None;
    for (i, &fd) in fds.iter().enumerate() {
        let msg = b"0\n";
        // SAFETY: fd is a descriptor the parent opened for writing; the
        // buffer is a static slice of the given length.
        let n = unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
        if n < 0 && first_failure.is_none() {
            first_failure = Some((i, io::Error::last_os_error()));
        }
    }
    match first_failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupVersion;

    #[test]
    fn stale_command_cgroups_of_dead_agents_are_removed_and_nothing_else() {
        let tmp = std::env::temp_dir().join(format!("alumet-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let parent = tmp.join("cg");
        let proc_root = tmp.join("proc");
        for d in [
            "cg/alumet-exec-41",       // dead agent: removed
            "cg/alumet-exec-42",       // live agent: kept
            "cg/alumet-exec-43/child", // dead, not empty: kept
            "cg/alumet-exec-x",        // not a pid: kept
            "cg/other-44",             // not ours: kept
            "proc/42",
        ] {
            std::fs::create_dir_all(tmp.join(d)).unwrap();
        }
        let removed = remove_stale(std::slice::from_ref(&parent), "alumet-exec-", &proc_root);
        assert_eq!(removed, vec![parent.join("alumet-exec-41")]);
        for kept in [
            "alumet-exec-42",
            "alumet-exec-43",
            "alumet-exec-x",
            "other-44",
        ] {
            assert!(parent.join(kept).is_dir(), "{kept}");
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn hierarchies_where_the_agent_is_elsewhere_are_left_out() {
        let accounting = Accounting {
            version: CgroupVersion::V2,
            cpu: "/cg/unified".into(),
            memory: Some(("/cg/memory".into(), CgroupVersion::V1)),
            io: Some(("/cg/blkio".into(), CgroupVersion::V1)),
        };
        let parents = vec![
            "/user.slice".to_owned(),
            "/sandbox/x".to_owned(),
            "/user.slice".to_owned(),
        ];
        let (reduced, kept) = same_path_only(&accounting, parents);
        assert_eq!(reduced.memory, None);
        assert_eq!(reduced.io, accounting.io);
        assert_eq!(kept, vec!["/user.slice", "/user.slice"]);
        assert_eq!(reduced.mount_points().len(), 2);
    }
}
