//! `alumet-agent exec -- CMD`: measure one command.
//!
//! The command runs in a cgroup of its own when one can be created (see
//! [`crate::measure::command_cgroup`]): forked before the agent started and waiting
//! (see [`crate::measure::launch`]), it is moved into the cgroup before it execs, so
//! its first instruction is already counted. Every source is polled right
//! before it starts and right after it exits; the exit is awaited without
//! reaping, so the command is still a zombie (its /proc entry and final CPU
//! time readable) during the last poll.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::load::LoadedConfig;
use crate::config::suggest::closest;
use crate::measure::command_cgroup;
use crate::measure::launch::{Join, PendingCommand};
use crate::measure::session::{Outcome, ReportFiles, Session};
use crate::report::summary::{Method, Wait4Usage};
use crate::service::signals::StopSignals;

/// Exit code of a shell for a command that cannot be found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code of a shell for a command that cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;

/// How long the cgroup's removal waits for the kernel to release exited tasks.
const CGROUP_REMOVAL_PATIENCE: Duration = Duration::from_secs(2);

/// Runs `command` under measurement and returns the exit code to use.
pub fn exec(
    config: &LoadedConfig,
    command: Vec<String>,
    files: ReportFiles,
    mut signals: StopSignals,
) -> i32 {
    // The cgroup first, then the command forked to join it at once (see
    // `launch`), while the plugins start.
    let cgroup = command_cgroup::create(config);
    let join_fds = cgroup.as_ref().map(|cg| cg.join_fds()).unwrap_or_default();
    let join = cgroup.as_ref().ok().map(|cg| Join {
        create_in: cg.cpu_v2_dir(),
        join_fds: &join_fds,
    });
    let mut pending = match PendingCommand::fork_into(&command, join) {
        Ok((pending, created_inside)) => {
            if let Ok(cg) = &cgroup {
                log::debug!(
                    "exec: created {}; the command {}",
                    command_cgroup::describe(cg),
                    if created_inside {
                        "was created inside"
                    } else {
                        "joins it"
                    }
                );
            }
            pending
        }
        Err(e) => {
            remove(cgroup.ok());
            eprintln!("alumet-agent: cannot run `{}`: {e}", command.join(" "));
            return EXIT_CANNOT_EXECUTE;
        }
    };
    let mut session = match Session::start(config) {
        Ok(s) => s,
        Err(code) => {
            remove(cgroup.ok());
            return code;
        }
    };
    if files.plot.is_some() {
        session.enable_plot(format!(
            "Power and CPU usage while running '{}'",
            command.join(" ")
        ));
    }
    // The cgroups source measures the cgroup from the baseline on.
    let cgroups_running = session.is_running("cgroups", config);
    if let (Ok(cg), true) = (&cgroup, cgroups_running) {
        session.exec_target().set_cgroup(cg.path());
    }
    // Poll every source right before the command starts (the cgroup, holding
    // only the waiting child, is the baseline)...
    session.begin_window();
    let in_cgroup = match &cgroup {
        Ok(cg) if cgroups_running => {
            command_cgroup::check_joined(cg, &mut pending).map(|()| cg.path().to_owned())
        }
        Ok(_) => Err("the cgroups plugin is not running".to_owned()),
        Err(why) => Err(why.clone()),
    };
    match in_cgroup {
        Ok(path) => {
            log::debug!("exec: the command runs in cgroup {path}");
            session.set_method(Method::Cgroup(path));
        }
        Err(why) => {
            log::warn!("exec: no cgroup for the command ({why}); measuring its process tree instead, which misses descendants that leave it");
            session.set_method(Method::ProcessTree);
        }
    }
    let spawning = std::time::Instant::now();
    let started = pending.start();
    log::debug!(
        "exec: command released in {} us",
        spawning.elapsed().as_micros()
    );
    if let Err(e) = started {
        let (code, message) = explain_spawn_error(&command[0], &e);
        session.stop();
        remove(cgroup.ok());
        eprintln!("alumet-agent: {message}");
        return code;
    }
    let pid = pending.pid();
    session.exec_target().set(pid);

    // Wait for the exit without reaping: the command stays a zombie, so its
    // /proc entry (with its final CPU time) is still there for the last poll.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(wait_for_exit_keep_zombie(pid));
    });
    let mut rx = Box::pin(rx);
    let exited = loop {
        match signals.wait_or(&mut rx) {
            Ok(result) => break result,
            Err(signal) => {
                // The terminal already sent SIGINT to the whole foreground group;
                // a SIGTERM was meant for us only: pass it on and keep measuring
                // until the command ends.
                // A SIGHUP too, as the terminal would have sent it to the
                // command had it run there alone.
                let forward = match signal {
                    crate::service::signals::StopSignal::Terminate => Some(libc::SIGTERM),
                    crate::service::signals::StopSignal::Hangup => Some(libc::SIGHUP),
                    crate::service::signals::StopSignal::Interrupt => None,
                };
                if let Some(sig) = forward {
                    // SAFETY: kill() with a pid we spawned and have not reaped yet.
                    unsafe {
                        libc::kill(pid as libc::pid_t, sig);
                    }
                }
                log::info!("{}: waiting for the command to exit", signal.name());
            }
        }
    };
    let _ = waiter.join();
    if let Ok(Err(e)) | Err(e) =
        exited.map_err(|_| WaitError("the waiting thread ended early".into()))
    {
        log::warn!(
            "cannot wait for the command without reaping it ({e}); its last CPU time may be missed"
        );
    }
    // ...and right after it exits: the agent's last poll, the zombie still there.
    // Kept until the end (the command may be in it already), then removed.
    let cgroup = cgroup.ok();
    let (wall, finished) = session.finish();
    let (exit_code, wait4) = match reap(pid) {
        Ok((code, usage)) => (code, Some(usage)),
        Err(e) => {
            log::error!("cannot wait for the command: {e}");
            (1, None)
        }
    };
    let mut outlived = Vec::new();
    if let Some(cg) = cgroup {
        match cg.remove(CGROUP_REMOVAL_PATIENCE) {
            Ok(outcome) => outlived = outcome.moved_out,
            Err(e) => log::warn!("exec: {e}"),
        }
    }
    if !outlived.is_empty() {
        log::info!(
            "exec: {} process(es) outlived the command ({:?}): counted while the command ran, now moved out of its cgroup",
            outlived.len(),
            outlived
        );
    }
    finished.report(
        Outcome {
            label: command,
            exit_code,
            wall,
            wait4,
            outlived,
        },
        files,
    )
}

/// Removes a command cgroup the command never ran in.
fn remove(cgroup: Option<alumet_kernelfs::cgroup::CommandCgroup>) {
    if let Some(cg) = cgroup {
        let _ = cg.remove(CGROUP_REMOVAL_PATIENCE);
    }
}

/// Why waiting for the child failed.
#[derive(Debug)]
pub struct WaitError(String);

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Waits until `pid` has exited, leaving it unreaped (a zombie).
fn wait_for_exit_keep_zombie(pid: u32) -> Result<(), WaitError> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a local; pid is our child.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(WaitError(err.to_string()));
        }
    }
}

/// Reaps `pid` with wait4, which also gives its CPU time.
fn reap(pid: u32) -> Result<(i32, Wait4Usage), WaitError> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our child.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(WaitError(err.to_string()));
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((
        code,
        Wait4Usage {
            user_cpu_s: seconds(usage.ru_utime),
            system_cpu_s: seconds(usage.ru_stime),
        },
    ))
}

/// The exit code and message for a command that could not be started.
pub fn explain_spawn_error(program: &str, error: &std::io::Error) -> (i32, String) {
    use std::os::unix::fs::PermissionsExt;
    match error.kind() {
        std::io::ErrorKind::NotFound => {
            let hint = suggest_program(program)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let what = if program.contains('/') {
                "no such file"
            } else {
                "command not found in PATH"
            };
            (
                EXIT_NOT_FOUND,
                format!("cannot run `{program}`: {what}{hint}"),
            )
        }
        std::io::ErrorKind::PermissionDenied => {
            let path = resolve(program);
            let detail = match path.as_deref().map(std::fs::metadata) {
                Some(Ok(m)) if m.is_dir() => "it is a directory".to_owned(),
                Some(Ok(m)) if m.permissions().mode() & 0o111 == 0 => {
                    format!("it is not executable (run `chmod +x {program}`)")
                }
                _ => "permission denied (no execute permission on the file, a parent directory not searchable, or a noexec mount)".to_owned(),
            };
            (
                EXIT_CANNOT_EXECUTE,
                format!("cannot run `{program}`: {detail}"),
            )
        }
        _ => (
            EXIT_CANNOT_EXECUTE,
            format!("cannot run `{program}`: {error}"),
        ),
    }
}

fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.exists())
    })
}

/// The closest existing file name: in the program's directory when it has
/// one, else among the commands in PATH.
fn suggest_program(program: &str) -> Option<String> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    if program.contains('/') {
        let path = Path::new(program);
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file = path.file_name()?.to_str()?;
        let candidates = names(dir);
        let best = closest(file, candidates.iter().map(String::as_str))?;
        Some(dir.join(best).to_string_lossy().into_owned())
    } else {
        let paths = std::env::var_os("PATH")?;
        let candidates: Vec<String> = std::env::split_paths(&paths)
            .flat_map(|d| names(&d))
            .collect();
        closest(program, candidates.iter().map(String::as_str)).map(str::to_owned)
    }
}
