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
//!
//! Up to [`MAX_CLIENTS`] clients are served at once, each on a thread of
//! its own; each must send its whole request line within
//! [`REQUEST_DEADLINE`] of connecting (however it trickles it), and its
//! answer, once ready, must be taken within [`ANSWER_DEADLINE`]. A client
//! beyond the limit gets a one-line refusal at once. Why a bound and
//! deadlines rather than evicting the slowest like the Prometheus endpoint:
//! only root and group `alumet` can connect, and they can pause every
//! source anyway; what must not happen is that one stuck or slow tool (a
//! `socat` left open, a script that never ends its line) blocks `ctl
//! status` or `ctl reload` for the others, and with 16 clients each gone
//! within seconds it cannot.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alumet::pipeline::{PipelineHandle, SourceSelector};
use alumet_kernelfs::glob::Glob;
use serde_json::{json, Value};

use crate::service::control_request::{self, Request};

/// The longest request line read.
const MAX_REQUEST_BYTES: usize = 4096;
/// Clients served at once; more are refused with a one-line answer.
const MAX_CLIENTS: usize = 16;
/// From connecting to the end of the request line, however it arrives.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// From the answer being ready to its last byte taken by the client.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
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
            let clients = Arc::new(AtomicUsize::new(0));
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => admit(s, &clients, &running),
                    Err(e) => log::debug!("control socket: accept: {e}"),
                }
            }
        })
        .map_err(|e| format!("cannot start the control socket thread: {e}"))?;
    Ok(socket)
}

/// Serves `stream` on a thread of its own, or refuses it at once.
fn admit(stream: UnixStream, clients: &Arc<AtomicUsize>, running: &SharedRunning) {
    let connected = Instant::now();
    if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
        clients.fetch_sub(1, Ordering::SeqCst);
        return refuse(
            &stream,
            format!("{MAX_CLIENTS} clients are being served already; try again in a few seconds"),
        );
    }
    let slot = ClientSlot(clients.clone());
    let running = running.clone();
    let refusal = stream.try_clone();
    let spawned = std::thread::Builder::new()
        .name("control-client".into())
        .spawn(move || {
            let _slot = slot;
            serve_one(stream, connected, &running);
        });
    // The closure, and the slot in it, went with the failed spawn: tell the client why.
    if let (Err(e), Ok(stream)) = (spawned, refusal) {
        refuse(
            &stream,
            format!("cannot start a thread for this request: {e}"),
        );
    }
}

/// One client being served; the count goes down when it is dropped.
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A one-line refusal, never waiting for the client: it fits in the
/// socket's buffer, and if it does not, the client is not listening.
fn refuse(stream: &UnixStream, why: String) {
    let _ = stream.set_nonblocking(true);
    let mut line = fail(why).to_string();
    line.push('\n');
    let _ = (&*stream).write_all(line.as_bytes());
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

fn serve_one(stream: UnixStream, connected: Instant, running: &SharedRunning) {
    let answer = match read_request(&stream, connected + REQUEST_DEADLINE) {
        Ok(line) => match control_request::parse(&line) {
            Ok(Request::Reload) => reload_bounded(running),
            Ok(request) => answer(request, running),
            Err(why) => fail(why),
        },
        Err(why) => fail(why),
    };
    send(&stream, &answer, Instant::now() + ANSWER_DEADLINE);
}

/// The request line, read by `deadline` whatever the pace of its bytes.
/// A client that closes its side without a newline has sent its line.
fn read_request(stream: &UnixStream, deadline: Instant) -> Result<String, String> {
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    loop {
        let end = line.iter().position(|&b| b == b'\n');
        if end.unwrap_or(line.len()) > MAX_REQUEST_BYTES {
            return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
        }
        if let Some(end) = end {
            line.truncate(end);
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the request line was not complete within {} s",
                REQUEST_DEADLINE.as_secs()
            ));
        }
        // `set_read_timeout` refuses zero, which `left` is not here.
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("cannot read the request: {e}"))?;
        match (&*stream).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the request: {e}")),
        }
    }
    String::from_utf8(line).map_err(|_| "the request is not UTF-8".to_owned())
}

/// The answer line, written by `deadline` or not at all.
fn send(stream: &UnixStream, answer: &Value, deadline: Instant) {
    let mut out = answer.to_string();
    out.push('\n');
    let mut rest = out.as_bytes();
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
            log::debug!("control socket: a client did not take its answer in time");
            return;
        }
        match (&*stream).write(rest) {
            Ok(0) => return,
            Ok(n) => rest = &rest[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// `reload`, unless [`MAX_WAITING_RELOADS`] already wait: those hold
/// their clients' threads for up to [`RELOAD_TIMEOUT`], and the other
/// commands must keep slots.
fn reload_bounded(running: &SharedRunning) -> Value {
    static WAITING: AtomicUsize = AtomicUsize::new(0);
    if WAITING.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING_RELOADS {
        WAITING.fetch_sub(1, Ordering::SeqCst);
        return fail(format!(
            "{MAX_WAITING_RELOADS} reload requests are already waiting; try again"
        ));
    }
    let answer = reload(running, RELOAD_TIMEOUT);
    WAITING.fetch_sub(1, Ordering::SeqCst);
    answer
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

/// The answer to one request (but `reload`, see [`reload_bounded`]).
fn answer(request: Request<'_>, running: &SharedRunning) -> Value {
    let (handle, plugins, reloads) = match running.lock() {
        Ok(r) => match &r.handle {
            Some(h) => (h.clone(), r.plugins.clone(), reloads_json(&r.reloads)),
            None => return fail("no pipeline is running right now (reloading?); try again"),
        },
        Err(_) => return fail("internal error: the agent state is poisoned"),
    };
    match request {
        Request::Status => {
            let mut answer = status(&handle, &plugins);
            answer["reloads"] = reloads;
            answer
        }
        Request::Pause(pattern) => for_each(&handle, pattern, |h, s| h.pause(s)),
        Request::Resume(pattern) => for_each(&handle, pattern, |h, s| h.resume(s)),
        Request::SetInterval(pattern, d) => {
            for_each(&handle, pattern, |h, s| h.set_poll_interval(s, d))
        }
        Request::Trigger(pattern) => {
            for_each(&handle, pattern, |h, s| h.trigger_now(s, TRIGGER_TIMEOUT))
        }
        // What logrotate's postrotate needs, without reading the
        // configuration again (SIGHUP also reopens, whatever the file holds).
        Request::Reopen => match handle.reopen_outputs() {
            Ok(()) => json!({"ok": true, "message": "every output flushed and reopened its files"}),
            Err(e) => fail(format!("cannot reopen the outputs: {e}")),
        },
        Request::Reload => reload_bounded(running),
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
                "thinned_points": o.thinned_points,
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
