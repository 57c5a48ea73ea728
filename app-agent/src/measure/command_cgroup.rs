//! The cgroup `exec` runs its command in, so that the kernel counts every
//! process of the command, however short-lived. It is created in the
//! hierarchy the cgroups plugin reads, under the agent's own cgroup (the
//! command stays under the limits of whatever runs the agent: a Slurm job,
//! a systemd unit), a configured parent, or the root when run as root; and
//! removed after the last poll. Where none can be created the command is
//! measured by its process tree instead, and the report says so.

use std::path::PathBuf;

use alumet_kernelfs::cgroup::{CommandCgroup, ParentChoice};
use plugin_cgroups::CgroupsConfig;

use crate::config::load::LoadedConfig;
use crate::measure::launch::PendingCommand;

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

/// Whether the command, forked to join `cgroup` (see `launch`), is in it:
/// Ok when its CPU time is counted there from its first instruction. Not
/// joining the other hierarchies (v1 memory or blkio, on hybrid machines)
/// is only a warning: its memory and I/O are then not the cgroup's.
pub fn check_joined(cgroup: &CommandCgroup, pending: &mut PendingCommand) -> Result<(), String> {
    let Err(failure) = pending.joined() else {
        return Ok(());
    };
    let file = cgroup
        .join_paths()
        .nth(failure.index)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| cgroup.path().to_owned());
    if failure.index == 0 {
        return Err(format!(
            "the command cannot join its cgroup ({file}: {})",
            failure.error
        ));
    }
    log::warn!(
        "exec: the command cannot join {file} ({}): its memory and I/O are not those of its cgroup",
        failure.error
    );
    Ok(())
}
