//! Measuring what runs already: `watch --pid PID` (a process and its
//! descendants, until it exits) and `exec --cgroup PATH` (an existing
//! cgroup, until it is removed). Both stop early on SIGINT/SIGTERM and
//! report like `exec`.
//!
//! Neither can hold what it measures for a last poll the way `exec` holds
//! its zombie child: a watched process's CPU time since its last procfs poll
//! is lost when it exits (its parent's `cutime` has it, but the parent is
//! not in the tree), and a cgroup is polled when it empties, which is
//! before whoever removes it does so.

use std::time::Duration;

use plugin_cgroups::CgroupsConfig;

use crate::config::load::LoadedConfig;
use alumet::pipeline::SourceSelector;

use crate::measure::session::{Outcome, ReportFiles, Session, TRIGGER_TIMEOUT};
use crate::report::summary::Method;
use crate::service::signals::StopSignals;

const CHECK_EVERY: Duration = Duration::from_millis(50);

/// Start time of `pid` (field 22 of /proc/PID/stat): with the pid, identifies a process.
fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Waits until `gone()` holds, or a stop signal (then returns its name).
fn wait_until_gone(
    signals: &mut StopSignals,
    gone: impl Fn() -> bool + Send + 'static,
) -> Option<&'static str> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && !gone() {
                std::thread::sleep(CHECK_EVERY);
            }
            let _ = tx.send(());
        })
    };
    let mut rx = Box::pin(rx);
    let result = loop {
        match signals.wait_or(&mut rx) {
            Ok(_) => break None,
            Err(crate::service::signals::StopSignal::Hangup) => {
                log::info!("SIGHUP: ignored, still measuring")
            }
            Err(signal) => break Some(signal.name()),
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    result
}

/// `watch --pid PID`.
pub fn pid(config: &LoadedConfig, pid: u32, files: ReportFiles, mut signals: StopSignals) -> i32 {
    let Some(started) = start_time_of(pid) else {
        eprintln!("alumet-agent: no process with pid {pid} (nothing to watch)");
        return 1;
    };
    let mut session = match Session::start(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    session.set_method(Method::ProcessTree);
    session.exec_target().set(pid);
    if files.plot.is_some() {
        session.enable_plot(format!(
            "Power and CPU usage of process {pid} and its descendants"
        ));
    }
    session.begin_window();
    let stopped_by = wait_until_gone(&mut signals, move || start_time_of(pid) != Some(started));
    if let Some(signal) = stopped_by {
        log::info!("{signal}: stopping the watch of pid {pid}, which still runs");
    }
    let (wall, finished) = session.finish();
    finished.report(
        Outcome {
            label: vec![format!("pid {pid}")],
            exit_code: 0,
            wall,
            wait4: None,
            outlived: Vec::new(),
        },
        files,
    )
}

/// Whether no process is left in cgroup `dir` or below (v2 `cgroup.events`;
/// v1: no process in it and no child cgroup).
fn is_unpopulated(dir: &std::path::Path) -> bool {
    if let Ok(events) = std::fs::read_to_string(dir.join("cgroup.events")) {
        return events.lines().any(|l| l.trim() == "populated 0");
    }
    let no_procs =
        std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|t| t.trim().is_empty());
    let no_children = std::fs::read_dir(dir).is_ok_and(|entries| {
        !entries
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    });
    no_procs && no_children
}

/// `exec --cgroup PATH`.
pub fn cgroup(
    config: &LoadedConfig,
    path: &str,
    files: ReportFiles,
    mut signals: StopSignals,
) -> i32 {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let Some((_, table, enabled)) = config.plugins.iter().find(|(m, _, _)| m.name == "cgroups")
    else {
        eprintln!("alumet-agent: the cgroups plugin is not built in");
        return 1;
    };
    if !enabled {
        eprintln!("alumet-agent: exec --cgroup needs the cgroups plugin; enable it (--plugins cgroups,...)");
        return 1;
    }
    let accounting = match alumet::config::deserialize_config::<CgroupsConfig>(table.clone())
        .map_err(|e| e.to_string())
        .and_then(|c| c.accounting().map_err(|e| e.to_string()))
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("alumet-agent: cannot measure cgroup {path}: {e}");
            return 1;
        }
    };
    let dir = alumet_kernelfs::cgroup::dir_of(&accounting.cpu, &path);
    if !dir.is_dir() {
        eprintln!(
            "alumet-agent: no cgroup {path} ({} does not exist)",
            dir.display()
        );
        return 1;
    }
    let mut session = match Session::start(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    session.exec_target().set_cgroup(path.clone());
    session.set_method(Method::Cgroup(path.clone()));
    if files.plot.is_some() {
        session.enable_plot(format!("Power and CPU usage of cgroup {path}"));
    }
    session.begin_window();
    let watched = dir.clone();
    let handle = session.handle();
    let emptied = std::sync::atomic::AtomicBool::new(false);
    let stopped_by = wait_until_gone(&mut signals, move || {
        if !watched.is_dir() {
            return true;
        }
        // Whoever removes the cgroup does so once it is empty: poll then,
        // while its counters still exist, so that its last interval is not lost.
        let empty = is_unpopulated(&watched);
        if empty && !emptied.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let _ = handle.trigger_now(SourceSelector::All, TRIGGER_TIMEOUT);
        } else if !empty {
            emptied.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        false
    });
    match stopped_by {
        Some(signal) => {
            log::info!("{signal}: stopping the measurement of {path}, which still exists")
        }
        None => log::info!("cgroup {path} was removed"),
    }
    let (wall, finished) = session.finish();
    finished.report(
        Outcome {
            label: vec![format!("cgroup {path}")],
            exit_code: 0,
            wall,
            wait4: None,
            outlived: Vec::new(),
        },
        files,
    )
}
