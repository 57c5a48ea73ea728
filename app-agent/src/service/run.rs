//! `run`, the service mode: measure until SIGINT/SIGTERM; on SIGHUP reload
//! the configuration; tell systemd where it stands (`notify.rs`); serve the
//! control socket (`control_socket.rs`).
//!
//! A reload reads and validates the new configuration first (an invalid
//! one is logged and the running pipeline goes on untouched). Then only
//! the plugins whose section changed restart in the running pipeline
//! (`reload.rs` says which; their sources poll a last time, their outputs
//! flush and close, then they start again with the same element names),
//! plugins enabled or disabled start or stop, and every other element runs
//! on untouched: the same poll schedule, the same Prometheus socket, the
//! same counters. A change of `[agent]` (queues, retries: the whole
//! pipeline's) restarts the whole pipeline in-process instead, and the log
//! names the key. Either way, and also when the new configuration is
//! invalid, every output then reopens its file: the CSV
//! output appends to its path, so the same file goes on without a second
//! header, and a file renamed away (logrotate) is left complete while a
//! new one starts with its header.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alumet::pipeline::PipelineHandle;

use crate::agent::{self, Agent, StartError};
use crate::config::load::{ConfigFailure, LoadedConfig};
use crate::service::control_socket::{self, Running, SharedRunning};
use crate::service::notify::{self, Notifier};
use crate::service::reload::{self, Plan};
use crate::service::signals::{StopSignal, StopSignals};

/// Exit code for an invalid configuration.
const EXIT_INVALID_CONFIG: i32 = 2;
/// How often `STATUS=` is refreshed when there is no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Runs the service until a stop signal. `reload` reads the configuration
/// again (same file, same command-line overrides).
pub fn run(
    config: LoadedConfig,
    mut signals: StopSignals,
    control_socket: Option<&Path>,
    reload: impl Fn() -> Result<LoadedConfig, ConfigFailure>,
) -> i32 {
    let notifier = Arc::new(Notifier::from_env());
    let running: SharedRunning = Arc::new(Mutex::new(Running::default()));
    let mut agent = match start(&config, &running) {
        Ok(a) => a,
        Err(code) => return code,
    };
    // What runs from now on, as a reload compares and restarts it.
    let mut config = continue_files(config);
    let _socket = open_control_socket(control_socket, running.clone());
    notifier.send(&format!("READY=1\nSTATUS={}", status_line(&running, None)));
    let health = Health::start(notifier.clone(), running.clone());
    loop {
        let signal = signals.wait();
        if signal != StopSignal::Hangup {
            log::info!(
                "{}: stopping (last poll, flushing outputs); send it again to exit at once",
                signal.name()
            );
            break;
        }
        notifier.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
            notify::monotonic_usec()
        ));
        reload_begun(&running);
        match reload().map_err(|e| e.to_string()).and_then(|c| {
            agent::check_plugin_configs(&c)?;
            Ok(c)
        }) {
            Err(e) => {
                log::error!(
                    "SIGHUP: the configuration is invalid; still running on the previous one: {e}"
                );
                // logrotate's postrotate sends SIGHUP whatever the file
                // holds: the outputs reopen all the same, or they would go
                // on writing into the renamed file until it is deleted.
                agent.reopen_outputs();
                reload_finished(
                    &running,
                    Err(format!(
                        "the configuration is invalid; still running on the previous one: {e}"
                    )),
                );
            }
            Ok(new_config) => {
                let new_config = continue_files(new_config);
                let outcome = match reload::plan(&config, &new_config, &agent.plugin_names()) {
                    Plan::Plugins { stop, start } => {
                        let what = describe(&stop, &start);
                        log::info!("SIGHUP: reloading {}: {what}", new_config.path.display());
                        match agent.restart_plugins(&stop, &start, &new_config, &config) {
                            Ok(on_previous) => {
                                agent.reopen_outputs();
                                set_running(&running, Some(&agent));
                                let what = if on_previous.is_empty() {
                                    what
                                } else {
                                    format!(
                                        "{what}; {} could not run on the new section and went back to the previous one (see the agent's log)",
                                        on_previous.join(", ")
                                    )
                                };
                                // What runs is what the next reload compares with.
                                let mut new_config = new_config;
                                keep_sections(&mut new_config, &config, &on_previous);
                                config = new_config;
                                log::info!("reloaded");
                                Ok((agent, Ok(what)))
                            }
                            Err(e) => {
                                log::error!("SIGHUP: {e}; restarting the whole pipeline");
                                restart_whole(agent, &mut config, new_config, &running)
                            }
                        }
                    }
                    Plan::Whole(key) => {
                        log::info!(
                            "SIGHUP: reloading {}: {key} changed, which applies to the whole pipeline: restarting it (last poll, flush, restart)",
                            new_config.path.display()
                        );
                        restart_whole(agent, &mut config, new_config, &running)
                    }
                };
                match outcome {
                    Ok((a, done)) => {
                        agent = a;
                        reload_finished(&running, done);
                    }
                    Err(code) => {
                        stopping(&running);
                        health.stop();
                        notifier.send("STOPPING=1");
                        return code;
                    }
                }
            }
        }
        notifier.send(&format!("READY=1\nSTATUS={}", status_line(&running, None)));
    }
    health.stop();
    notifier.send("STOPPING=1\nSTATUS=stopping: last poll, flushing outputs");
    signals.force_exit_on_next();
    stopping(&running);
    set_running(&running, None);
    agent.stop();
    log::info!("stopped");
    0
}

/// The whole pipeline restarted on `new`, with the reload's outcome; back
/// on `config` if `new` cannot run (outcome `Err`). `Err`: not even that
/// can run (the exit code).
fn restart_whole(
    agent: Agent,
    config: &mut LoadedConfig,
    new: LoadedConfig,
    running: &SharedRunning,
) -> Result<(Agent, Result<String, String>), i32> {
    set_running(running, None);
    agent.stop();
    match start(&new, running) {
        Ok(a) => {
            *config = new;
            log::info!("reloaded");
            Ok((a, Ok("the whole pipeline restarted".into())))
        }
        Err(_) => {
            log::error!("SIGHUP: the new configuration cannot run (see above); going back to the previous one");
            let a = start(config, running)?;
            Ok((
                a,
                Err("the new configuration cannot run (see the agent's log); the whole pipeline restarted on the previous one".into()),
            ))
        }
    }
}

/// A reload begun, for `ctl reload` (see `control_socket::reload`).
fn reload_begun(running: &SharedRunning) {
    if let Ok(mut r) = running.lock() {
        r.reloads.begun += 1;
    }
}

/// A reload finished with its outcome, for `ctl reload`.
fn reload_finished(running: &SharedRunning, outcome: Result<String, String>) {
    if let Ok(mut r) = running.lock() {
        r.reloads.finished += 1;
        r.reloads.last = Some(outcome);
    }
}

/// No reload will be done any more.
fn stopping(running: &SharedRunning) {
    if let Ok(mut r) = running.lock() {
        r.stopping = true;
    }
}

/// Puts `from`'s sections of `plugins` into `into`.
fn keep_sections(into: &mut LoadedConfig, from: &LoadedConfig, plugins: &[String]) {
    for (meta, table, _) in &mut into.plugins {
        if plugins.iter().any(|p| p == meta.name) {
            if let Some((_, old, _)) = from.plugins.iter().find(|(m, _, _)| m.name == meta.name) {
                *table = old.clone();
            }
        }
    }
}

/// What a partial reload does, in one phrase for the log.
fn describe(stop: &[String], start: &[String]) -> String {
    let restarted: Vec<&str> = start
        .iter()
        .filter(|p| stop.contains(p))
        .map(String::as_str)
        .collect();
    let started: Vec<&str> = start
        .iter()
        .filter(|p| !stop.contains(p))
        .map(String::as_str)
        .collect();
    let stopped: Vec<&str> = stop
        .iter()
        .filter(|p| !start.contains(p))
        .map(String::as_str)
        .collect();
    let mut parts = Vec::new();
    for (verb, list) in [
        ("restarting", restarted),
        ("starting", started),
        ("stopping", stopped),
    ] {
        if !list.is_empty() {
            parts.push(format!("{verb} {}", list.join(", ")));
        }
    }
    if parts.is_empty() {
        "no plugin section changed; the outputs reopen their files".into()
    } else {
        format!(
            "{} (their sections changed); the other plugins keep running, the outputs reopen their files",
            parts.join("; ")
        )
    }
}

fn start(config: &LoadedConfig, running: &SharedRunning) -> Result<Agent, i32> {
    match agent::start(config, |_| Ok(())) {
        Ok(a) => {
            set_running(running, Some(&a));
            Ok(a)
        }
        Err(StartError::InvalidConfig(m)) => {
            log::error!("{m}");
            Err(EXIT_INVALID_CONFIG)
        }
        Err(StartError::Fatal(m)) => {
            log::error!("{m}");
            Err(1)
        }
    }
}

fn set_running(running: &SharedRunning, agent: Option<&Agent>) {
    if let Ok(mut r) = running.lock() {
        r.handle = agent.map(Agent::handle);
        r.plugins = agent.map(Agent::plugin_names).unwrap_or_default();
    }
}

/// After the first start, outputs go on in the files they wrote: the CSV
/// output appends (header only into a new or empty file).
fn continue_files(mut config: LoadedConfig) -> LoadedConfig {
    for (meta, table, _) in &mut config.plugins {
        if meta.name == "csv" {
            table.insert("append".into(), toml::Value::Boolean(true));
        }
    }
    config
}

fn open_control_socket(
    path: Option<&Path>,
    running: SharedRunning,
) -> Option<control_socket::ControlSocket> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => control_socket::default_path()?,
    };
    match control_socket::serve(&path, running) {
        Ok(s) => {
            log::info!("control socket: {}", path.display());
            Some(s)
        }
        Err(e) => {
            log::warn!("no control socket: {e}");
            None
        }
    }
}

/// One line for `STATUS=`: plugins, points per second, drops.
fn status_line(running: &SharedRunning, rate: Option<f64>) -> String {
    let Ok(r) = running.lock() else {
        return "state unavailable".into();
    };
    let Some(handle) = &r.handle else {
        return "no pipeline running".into();
    };
    let stats = handle.stats();
    let rate = rate
        .map(|p| format!("{p:.0} points/s"))
        .unwrap_or_else(|| "starting".into());
    format!(
        "{} plugins running ({}); {rate}; {} points dropped",
        r.plugins.len(),
        r.plugins.join(", "),
        stats.total_dropped_points
    )
}

/// Total points of the running pipeline, and its control handle.
fn progress(running: &SharedRunning) -> Option<(u64, PipelineHandle)> {
    let r = running.lock().ok()?;
    let handle = r.handle.clone()?;
    let points = handle.stats().sources.iter().map(|s| s.points).sum();
    Some((points, handle))
}

/// The thread that refreshes `STATUS=` and, under `WatchdogSec=`, sends
/// `WATCHDOG=1` while the pipeline's heartbeat beats (every poller thread
/// answers between its polls, paused or not; no output and no transform
/// is stuck in one call): a poll, write or transform that does not return
/// gets no ping, `STATUS=STALLED` names it, and systemd restarts the agent.
struct Health {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Health {
    fn start(notifier: Arc<Notifier>, running: SharedRunning) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !notifier.is_enabled() {
            return Self { stop, thread: None };
        }
        let watchdog = notifier.watchdog_interval();
        let every = watchdog.unwrap_or(STATUS_EVERY).min(STATUS_EVERY);
        let beat_timeout = (every / 2).min(Duration::from_secs(1));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("health".into())
                .spawn(move || {
                    let mut last = (Instant::now(), progress(&running).map(|p| p.0));
                    while !stop.load(Ordering::Acquire) {
                        sleep_unless(&stop, every.saturating_sub(beat_timeout));
                        let now = progress(&running);
                        // None: a reload is in progress, its RELOADING/READY say so.
                        let stalled = match &now {
                            Some((_, handle)) if !handle.is_shutting_down() => {
                                handle.stalled(beat_timeout)
                            }
                            _ => Vec::new(),
                        };
                        let alive = stalled.is_empty();
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let mut message = String::new();
                        if watchdog.is_some() && alive {
                            message.push_str("WATCHDOG=1\n");
                        }
                        let now = (Instant::now(), now.map(|p| p.0));
                        if let (Some(points0), Some(points1)) = (last.1, now.1) {
                            let secs = now.0.duration_since(last.0).as_secs_f64();
                            let rate = points1.saturating_sub(points0) as f64 / secs.max(1e-3);
                            let state = if alive {
                                String::new()
                            } else {
                                format!("STALLED: {} does not return; ", stalled.join(", "))
                            };
                            message.push_str(&format!(
                                "STATUS={state}{}",
                                status_line(&running, Some(rate))
                            ));
                        }
                        if !message.is_empty() {
                            notifier.send(message.trim_end());
                        }
                        last = now;
                    }
                })
                .ok()
        };
        Self { stop, thread }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps `total`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::Acquire) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
