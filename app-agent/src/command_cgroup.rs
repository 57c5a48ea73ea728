//! The cgroup `exec` runs its command in, so that the kernel counts every
//! process of the command, however short-lived. It is created in the
//! hierarchy the cgroups plugin reads, under the agent's own cgroup (the
//! command stays under the limits of whatever runs the agent: a Slurm job,
//! a systemd unit), a configured parent, or the root when run as root; and
//! removed after the last poll. Where none can be created the command is
//! measured by its process tree instead, and the report says so.

use std::path::PathBuf;
use std::thread::JoinHandle;

use alumet_kernelfs::cgroup::{CgroupError, CommandCgroup, ParentChoice};
use plugin_cgroups::CgroupsConfig;

use crate::config::LoadedConfig;

/// The name of a command's cgroup, before the agent's pid.
const NAME_PREFIX: &str = "alumet-exec-";

/// Creates the command's cgroup (and removes those that killed agents left
/// behind beside it). Err: why the command runs without a cgroup of its own.
pub fn create(config: &LoadedConfig) -> Result<CommandCgroup, String> {
    if !config.agent.exec_in_cgroup {
        return Err("agent.exec_in_cgroup is false".into());
    }
    if !config.is_enabled("cgroups") {
        return Err("the cgroups plugin is not enabled".into());
    }
    let Some((_, table, _)) = config.plugins.iter().find(|(m, _, _)| m.name == "cgroups") else {
        return Err("the cgroups plugin is not built in".into());
    };
    let cgroups: CgroupsConfig = alumet::config::deserialize_config(table.clone())
        .map_err(|e| format!("[plugins.cgroups]: {e}"))?;
    let accounting = cgroups.accounting().map_err(|e| e.to_string())?;
    let choices = if config.agent.exec_cgroup_parent.is_empty() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mut c = vec![ParentChoice::Own];
        if root {
            c.push(ParentChoice::Root);
        }
        c
    } else {
        vec![ParentChoice::Fixed(config.agent.exec_cgroup_parent.clone())]
    };
    let name = format!("{NAME_PREFIX}{}", std::process::id());
    let created = CommandCgroup::create_for_command(
        &accounting,
        &cgroups.proc_root,
        &choices,
        &name,
    )
    .map_err(|errors| {
        let tried: Vec<String> = errors.iter().map(ToString::to_string).collect();
        if tried.is_empty() {
            "the agent's own cgroup is unknown (no /proc/self/cgroup entry for the hierarchy)"
                .to_owned()
        } else {
            tried.join("; ")
        }
    })?;
    for stale in created.remove_stale_siblings(NAME_PREFIX, &cgroups.proc_root) {
        log::info!(
            "exec: removed {}, left behind by an agent that was killed",
            stale.display()
        );
    }
    Ok(created)
}

/// The directories of a cgroup, for messages.
pub fn describe(cgroup: &CommandCgroup) -> String {
    let dirs: Vec<PathBuf> = cgroup.dirs().map(|d| d.to_path_buf()).collect();
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command's way into its cgroup: already inside the CPU hierarchy
/// (created there, see `launch`), and moved into the others on a thread of
/// its own, since the kernel makes the first move into a cgroup after a
/// while wait for an RCU grace period (4-20 ms measured, BENCHMARKS.md),
/// which then passes while the plugins start and the baseline is polled.
pub struct Placement {
    path: String,
    created_inside: bool,
    mover: Option<JoinHandle<(CommandCgroup, Result<(), CgroupError>)>>,
    cgroup: Option<CommandCgroup>,
}

impl Placement {
    /// Starts moving process `pid` into `cgroup` (every hierarchy, or all
    /// but the CPU one when it was `created_inside` it).
    pub fn start(cgroup: CommandCgroup, pid: u32, created_inside: bool) -> Self {
        let path = cgroup.path().to_owned();
        let mover = std::thread::spawn(move || {
            let moved = if created_inside {
                cgroup.add_process_except_cpu(pid)
            } else {
                cgroup.add_process(pid)
            };
            (cgroup, moved)
        });
        Self {
            path,
            created_inside,
            mover: Some(mover),
            cgroup: None,
        }
    }

    /// The cgroup's path in the CPU hierarchy (the consumer id).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Once Ok, the command's CPU time is counted in the cgroup from its
    /// first instruction: it was created inside, or its move is done. Only
    /// moves into v1 memory/blkio hierarchies (hybrid machines) may be left,
    /// which finish while the command runs (descendants it forks before then
    /// stay out of those two: best effort, as v1 I/O accounting is).
    pub fn cpu_ready(&mut self) -> Result<(), String> {
        if self.created_inside {
            return Ok(());
        }
        match self.join() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(format!(
                "cannot move the command into cgroup {}: {e}",
                self.path
            )),
            None => Err("the thread moving the command into its cgroup failed".to_owned()),
        }
    }

    /// The cgroup, every move done (to remove it).
    pub fn into_cgroup(mut self) -> Option<CommandCgroup> {
        if let Some(Err(e)) = self.join() {
            if self.created_inside {
                log::warn!("exec: {e}: the command's memory and I/O are not those of its cgroup");
            }
        }
        self.cgroup
    }

    /// Waits for the mover (once); its outcome, None if it panicked.
    fn join(&mut self) -> Option<Result<(), CgroupError>> {
        let (cgroup, moved) = self.mover.take()?.join().ok()?;
        self.cgroup = Some(cgroup);
        Some(moved)
    }
}
