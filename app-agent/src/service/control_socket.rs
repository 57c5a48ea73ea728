//! The runtime control socket of `run`: a Unix stream socket (mode 0660,
//! group `alumet` where that group exists; nothing on the network) that
//! `alumet-agent ctl` talks to.
//!
//! Protocol: one request line (`status`, `pause GLOB`, `resume GLOB`,
//! `set-interval GLOB DURATION`, `trigger [GLOB]`, `reload`), one JSON
//! answer line (`{"ok":true,...}` or `{"ok":false,"error":"..."}`), then the
//! connection closes. `reload` answers when the reload it asked for is
//! done, with its outcome. Every command goes to the pipeline's
//! [`PipelineHandle`]; sources are named as `status` prints them
//! (`plugin/source`), `*` and `?` allowed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alumet::pipeline::{PipelineHandle, SourceSelector};
use alumet_kernelfs::glob::Glob;
use serde_json::{json, Value};

/// The longest request line read.
const MAX_REQUEST_BYTES: u64 = 4096;
/// A client that sends nothing for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `trigger` waits for the polls.
const TRIGGER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `reload` waits for the reload it requested (a whole restart
/// includes the last poll and the outputs' flush); `ctl` waits longer.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// `reload` requests waiting at once; more are refused.
const MAX_WAITING_RELOADS: usize = 8;

/// What the socket serves: the current pipeline (swapped at each reload)
/// and the plugins running it.
#[derive(Default)]
pub struct Running {
    /// The pipeline's control handle; `None` while none runs.
    pub handle: Option<PipelineHandle>,
    /// Names of the running plugins.
    pub plugins: Vec<String>,
    /// The reloads the service loop began and finished.
    pub reloads: Reloads,
    /// The agent is stopping: no reload will be done any more.
    pub stopping: bool,
}

/// The service loop's reloads, so that `ctl reload` can wait for the one
/// its request started and answer with its outcome.
#[derive(Default)]
pub struct Reloads {
    /// Reloads begun (one per SIGHUP the service loop took).
    pub begun: u64,
    /// Reloads finished, whatever their outcome.
    pub finished: u64,
    /// The outcome of the last finished one: `Ok(what was done)` or
    /// `Err(why the previous configuration goes on)`.
    pub last: Option<Result<String, String>>,
}

/// Shared between the service loop and the socket thread.
pub type SharedRunning = Arc<Mutex<Running>>;

/// Where the socket lives when `--control-socket` is not given:
/// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else
/// `/run/alumet` for root, else `$XDG_RUNTIME_DIR/alumet`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        let first = dir.to_string_lossy().split(':').next()?.to_owned();
        return Some(Path::new(&first).join("control.sock"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/run/alumet/control.sock"));
    }
    std::env::var_os("XDG_RUNTIME_DIR").map(|d| Path::new(&d).join("alumet/control.sock"))
}

/// The listening socket; the file is removed on drop.
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` and serves it from a thread of its own. A socket that
/// another live agent answers on is left alone (error).
pub fn serve(path: &Path, running: SharedRunning) -> Result<ControlSocket, String> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is the control socket of another running agent (give this one --control-socket PATH)",
                path.display()
            ));
        }
        // Left by an agent that is gone.
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale {}: {e}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    let socket = ControlSocket {
        path: path.to_owned(),
    };
    restrict(path)?;
    std::thread::Builder::new()
        .name("control-socket".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => serve_one(s, &running),
                    Err(e) => log::debug!("control socket: accept: {e}"),
                }
            }
        })
        .map_err(|e| format!("cannot start the control socket thread: {e}"))?;
    Ok(socket)
}

/// Mode 0660, group `alumet` if it exists.
fn restrict(path: &Path) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    // SAFETY: getgrnam with a NUL-terminated name; the result is read at once.
    let gid = unsafe {
        let group = libc::getgrnam(c"alumet".as_ptr());
        if group.is_null() {
            None
        } else {
            Some((*group).gr_gid)
        }
    };
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("cannot give {} to group alumet: {e}", path.display()))?;
    }
    Ok(())
}

fn serve_one(stream: UnixStream, running: &SharedRunning) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut line = String::new();
    let answer = match BufReader::new((&stream).take(MAX_REQUEST_BYTES)).read_line(&mut line) {
        Ok(n) if n as u64 >= MAX_REQUEST_BYTES && !line.ends_with('\n') => {
            fail(format!("request longer than {MAX_REQUEST_BYTES} bytes"))
        }
        Ok(_) if line.split_whitespace().collect::<Vec<_>>() == ["reload"] => {
            // Waits for the service loop: from a thread of its own, so that
            // `status` is answered meanwhile.
            return answer_reload_later(stream, running.clone());
        }
        Ok(_) => answer(line.trim(), running),
        Err(e) => json!({"ok": false, "error": format!("cannot read the request: {e}")}),
    };
    send(&stream, &answer);
}

fn send(stream: &UnixStream, answer: &Value) {
    let mut out = answer.to_string();
    out.push('\n');
    let _ = (&*stream).write_all(out.as_bytes());
}

fn answer_reload_later(stream: UnixStream, running: SharedRunning) {
    static WAITING: AtomicUsize = AtomicUsize::new(0);
    if WAITING.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING_RELOADS {
        WAITING.fetch_sub(1, Ordering::SeqCst);
        return send(
            &stream,
            &fail(format!(
                "{MAX_WAITING_RELOADS} reload requests are already waiting; try again"
            )),
        );
    }
    let spawned = std::thread::Builder::new()
        .name("control-reload".into())
        .spawn(move || {
            let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
            send(&stream, &reload(&running, RELOAD_TIMEOUT));
            WAITING.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        WAITING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Asks the service loop for a reload (the same path as `kill -HUP`) and
/// waits, at most `timeout`, for a reload begun after the request to
/// finish; answers with its outcome.
pub fn reload(running: &SharedRunning, timeout: Duration) -> Value {
    let Ok(begun_before) = running.lock().map(|r| r.reloads.begun) else {
        return fail("internal error: the agent state is poisoned");
    };
    // SAFETY: kill() on our own pid.
    unsafe {
        libc::kill(std::process::id() as libc::pid_t, libc::SIGHUP);
    }
    let deadline = Instant::now() + timeout;
    loop {
        match running.lock() {
            // A reload that began before this request may have read the
            // file before it changed: wait for one begun after.
            Ok(r) if r.reloads.finished > begun_before => {
                return match &r.reloads.last {
                    Some(Ok(done)) => json!({"ok": true, "message": format!("reloaded: {done}")}),
                    Some(Err(why)) => fail(format!("reload failed: {why}")),
                    None => fail("internal error: a reload finished without an outcome"),
                };
            }
            Ok(r) if r.stopping => return fail("the agent is stopping; the reload was not done"),
            Ok(_) => {}
            Err(_) => return fail("internal error: the agent state is poisoned"),
        }
        if Instant::now() >= deadline {
            return fail(format!(
                "the reload was requested but has not finished after {} s; see the agent's log",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn fail(message: impl std::fmt::Display) -> Value {
    json!({"ok": false, "error": message.to_string()})
}

/// The answer to one request line (but `reload`, which [`serve_one`]
/// answers from a thread of its own).
fn answer(request: &str, running: &SharedRunning) -> Value {
    let words: Vec<&str> = request.split_whitespace().collect();
    let (handle, plugins, reloads) = match running.lock() {
        Ok(r) => match &r.handle {
            Some(h) => (h.clone(), r.plugins.clone(), reloads_json(&r.reloads)),
            None => return fail("no pipeline is running right now (reloading?); try again"),
        },
        Err(_) => return fail("internal error: the agent state is poisoned"),
    };
    match words.as_slice() {
        ["status"] => {
            let mut answer = status(&handle, &plugins);
            answer["reloads"] = reloads;
            answer
        }
        ["pause", pattern] => for_each(&handle, pattern, |h, s| h.pause(s)),
        ["resume", pattern] => for_each(&handle, pattern, |h, s| h.resume(s)),
        ["set-interval", pattern, interval] => match alumet::config::parse_duration(interval) {
            Ok(d) => for_each(&handle, pattern, |h, s| h.set_poll_interval(s, d)),
            Err(e) => fail(format!("invalid interval {interval:?}: {e}")),
        },
        ["trigger"] => for_each(&handle, "*", |h, s| h.trigger_now(s, TRIGGER_TIMEOUT)),
        ["trigger", pattern] => for_each(&handle, pattern, |h, s| h.trigger_now(s, TRIGGER_TIMEOUT)),
        _ => fail(format!(
            "unknown request {request:?}; expected status, pause SOURCE, resume SOURCE, set-interval SOURCE DURATION, trigger [SOURCE] or reload"
        )),
    }
}

/// Applies `apply` to every source whose name matches `pattern`.
fn for_each(
    handle: &PipelineHandle,
    pattern: &str,
    apply: impl Fn(
        &PipelineHandle,
        SourceSelector,
    ) -> Result<(), alumet::pipeline::control::ControlError>,
) -> Value {
    let glob = Glob::new(pattern);
    let names: Vec<String> = handle
        .source_names()
        .into_iter()
        .filter(|n| glob.matches(n.as_bytes()))
        .collect();
    if names.is_empty() {
        return fail(format!(
            "no source matches {pattern:?}; sources: {}",
            handle.source_names().join(", ")
        ));
    }
    for name in &names {
        if let Err(e) = apply(handle, SourceSelector::Name(name.clone())) {
            return fail(format!("{name}: {e}"));
        }
    }
    json!({"ok": true, "sources": names})
}

/// `{"done": N, "last": {"ok": bool, "message": "..."} or null}`.
fn reloads_json(reloads: &Reloads) -> Value {
    let last = match &reloads.last {
        Some(Ok(done)) => json!({"ok": true, "message": done}),
        Some(Err(why)) => json!({"ok": false, "message": why}),
        None => Value::Null,
    };
    json!({"done": reloads.finished, "last": last})
}

/// Every counter, queue depth and last error, per source, transform and
/// output. Queue depths: `buffered_points` (polled, held until the
/// source's next flush), `transform_queue_depth` (buffers waiting for the
/// transforms), `queue_depth` (batches waiting in front of an output).
pub fn status(handle: &PipelineHandle, plugins: &[String]) -> Value {
    let stats = handle.stats();
    let sources: Vec<Value> = stats
        .sources
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "polls": s.polls,
                "points_out": s.points,
                "missed_ticks": s.missed_ticks,
                "errors": s.errors,
                "dropped_points": s.dropped_points,
                "buffered_points": s.buffered_points,
                "last_error": s.last_error,
            })
        })
        .collect();
    let transforms: Vec<Value> = stats
        .transforms
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "points_in": t.points_in,
                "points_out": t.points_out,
                "errors": t.errors,
                "disabled": t.disabled,
                "last_error": t.last_error,
            })
        })
        .collect();
    let outputs: Vec<Value> = stats
        .outputs
        .iter()
        .map(|o| {
            json!({
                "name": o.name,
                "written_points": o.written_points,
                "written_batches": o.written_batches,
                "retries": o.retries,
                "dropped_points": o.dropped_points,
                "queue_depth": o.queue_depth,
                "last_error": o.last_error,
            })
        })
        .collect();
    json!({
        "ok": true,
        "plugins": plugins,
        "sources": sources,
        "transforms": transforms,
        "outputs": outputs,
        "transform_queue_depth": stats.transform_queue_depth,
        "total_dropped_points": stats.total_dropped_points,
    })
}
