//! `run` as systemd sees it (a fake `NOTIFY_SOCKET` bound by the test) and
//! as an admin drives it (`alumet-agent ctl` over the control socket), also
//! beside slow, stuck and too many clients of that socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{read_csv, sigterm_and_wait};

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn write_config(dir: &Path) {
    std::fs::write(
        dir.join("alumet-config.toml"),
        r#"[plugins.procfs]
enabled = true
system_poll_interval = "100ms"
process_poll_interval = "200ms"
flush_interval = "50ms"
# Every point a row: the tests read polls back from rows.
keep_zero = true

[plugins.csv]
enabled = true
output_path = "out.csv"
timestamp_format = "unix_ns"
flush_interval = "50ms"
"#,
    )
    .unwrap();
}

/// `run` with procfs and csv on the configuration of `dir`, `extra`
/// arguments before the command; stdin and stdout closed, stderr piped.
fn run_command(dir: &Path, extra: &[&str]) -> Command {
    let mut c = common::agent_command();
    c.current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .args(["--control-socket", dir.join("ctl.sock").to_str().unwrap()])
        .args(["--plugins", "procfs,csv"])
        .args(extra)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn spawn_run(dir: &Path, env: &[(&str, String)]) -> Child {
    let mut c = run_command(dir, &[]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    common::agent_command()
        .args([
            "--control-socket",
            dir.join("ctl.sock").to_str().unwrap(),
            "ctl",
        ])
        .args(args)
        .output()
        .unwrap()
}

fn ctl_ok(dir: &Path, args: &[&str]) -> String {
    let out = ctl(dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every datagram received, with the time it came.
fn collect(socket: UnixDatagram) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => sink.lock().unwrap().push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                )),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    });
    received
}

#[test]
fn systemd_gets_ready_status_reloading_stopping_and_watchdog_pings_paused_or_not() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let notify_path = dir.path().join("notify");
    let received = collect(UnixDatagram::bind(&notify_path).unwrap());
    let child = spawn_run(
        dir.path(),
        &[
            ("NOTIFY_SOCKET", notify_path.display().to_string()),
            // 400 ms: a WATCHDOG=1 every 200 ms.
            ("WATCHDOG_USEC", "400000".into()),
        ],
    );
    assert!(common::wait_until(Duration::from_secs(5), || received
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.contains("READY=1"))));
    std::thread::sleep(Duration::from_millis(1000));
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(800));

    // Paused is not stuck: the pings go on.
    ctl_ok(dir.path(), &["pause", "*"]);
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_millis(800));
    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");

    let messages = received.lock().unwrap().clone();
    let first = |what: &str, after: usize| {
        messages
            .iter()
            .enumerate()
            .skip(after)
            .find(|(_, (_, m))| m.lines().any(|l| l == what))
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no {what} after message {after}: {messages:?}"))
    };
    let ready = first("READY=1", 0);
    let reloading = first("RELOADING=1", ready + 1);
    let ready_again = first("READY=1", reloading + 1);
    let stopping = first("STOPPING=1", ready_again + 1);
    assert!(messages[ready].1.contains("STATUS="));
    assert!(messages[reloading].1.contains("MONOTONIC_USEC="));
    assert!(
        messages.iter().any(
            |(_, m)| m.contains("STATUS=2 plugins running (procfs, csv)") && m.contains("points/s")
        ),
        "{messages:?}"
    );
    let pings: Vec<Instant> = messages[..stopping]
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    // About 1.8 s running, 0.8 s paused, at one ping per 200 ms.
    let running_pings = pings.iter().filter(|t| **t < paused_at).count();
    assert!(
        running_pings >= 6,
        "{running_pings} pings while running: {messages:?}"
    );
    let paused_pings = pings.iter().filter(|t| **t > paused_at).count();
    assert!(
        paused_pings >= 2,
        "{paused_pings} pings while paused: {messages:?}"
    );
}

/// A proc tree where a process appears whose files are FIFOs with no
/// writer: opening them blocks the poller, as a hung kernel read would.
#[test]
fn the_watchdog_stops_when_a_poll_never_returns() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let proc_root = dir.path().join("proc");
    alumet::testing::fixture::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-procfs/tests/fixtures/basic/proc0"),
        &proc_root,
    );
    let notify_path = dir.path().join("notify");
    let received = collect(UnixDatagram::bind(&notify_path).unwrap());
    let proc_root_arg = format!("plugins.procfs.proc_root={:?}", proc_root.to_str().unwrap());
    let mut c = run_command(
        dir.path(),
        &[
            "--set",
            &proc_root_arg,
            "--set",
            "plugins.procfs.process_refresh_interval=\"100ms\"",
        ],
    );
    c.env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1000));

    let stuck = proc_root.join("4242");
    std::fs::create_dir(&stuck).unwrap();
    for name in ["stat", "cmdline"] {
        let path = std::ffi::CString::new(stuck.join(name).to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
    }
    let stalled_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1200));
    // Stuck for good (as systemd would, after WatchdogSec).
    child.kill().unwrap();
    child.wait().unwrap();

    let messages = received.lock().unwrap().clone();
    let pings: Vec<Instant> = messages
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    let before = pings.iter().filter(|t| **t < stalled_at).count();
    assert!(before >= 3, "{before} pings before the stall: {messages:?}");
    // The scan that opens the FIFO comes within 100 ms; a ping under way may still land.
    let after = pings
        .iter()
        .filter(|t| **t > stalled_at + Duration::from_millis(500))
        .count();
    assert_eq!(after, 0, "pings while stuck: {messages:?}");
    assert!(
        messages.iter().any(|(_, m)| m.contains("STATUS=STALLED")),
        "{messages:?}"
    );
}

#[test]
fn ctl_status_matches_the_csv_and_pause_resume_stop_and_bring_back_points() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let child = spawn_run(dir.path(), &[]);
    let socket = dir.path().join("ctl.sock");
    assert!(common::wait_until(Duration::from_secs(5), || socket.exists()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    std::thread::sleep(Duration::from_millis(700));

    let human = ctl_ok(dir.path(), &["status"]);
    assert!(
        human.contains("procfs/system") && human.contains("csv/file"),
        "{human}"
    );

    ctl_ok(dir.path(), &["pause", "procfs/*"]);
    // Let the last buffers reach the file.
    std::thread::sleep(Duration::from_millis(500));
    let status: serde_json::Value =
        serde_json::from_str(&ctl_ok(dir.path(), &["status", "--json"])).unwrap();
    let points_out: u64 = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["points_out"].as_u64().unwrap())
        .sum();
    let written = status["outputs"][0]["written_points"].as_u64().unwrap();
    // Points of thinned series left out (zeros, unchanged gauges): counted, not lost.
    let thinned = status["outputs"][0]["thinned_points"].as_u64().unwrap();
    let rows = read_csv(&dir.path().join("out.csv")).len() as u64;
    assert!(rows > 0);
    assert_eq!(points_out, rows + thinned, "{status}");
    assert_eq!(written, rows, "{status}");
    assert_eq!(status["total_dropped_points"], 0);
    for element in status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .chain(status["outputs"].as_array().unwrap())
    {
        assert!(
            element["last_error"].is_null(),
            "no error on this run: {element}"
        );
        assert!(element.as_object().unwrap().contains_key("last_error"));
    }
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        read_csv(&dir.path().join("out.csv")).len() as u64,
        rows,
        "paused: no new point"
    );

    let resumed = ctl_ok(dir.path(), &["resume", "procfs/sys*"]);
    assert!(
        resumed.contains("procfs/system") && !resumed.contains("procfs/processes"),
        "{resumed}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = read_csv(&dir.path().join("out.csv"));
    assert!(after.len() as u64 > rows, "resumed: points again");

    // A paused source polled on demand; a new interval applied.
    let process_rows =
        |rows: &[common::Row]| rows.iter().filter(|r| r.consumer.0 == "process").count();
    let before_trigger = process_rows(&read_csv(&dir.path().join("out.csv")));
    let triggered = ctl_ok(dir.path(), &["trigger", "procfs/proc*"]);
    assert!(triggered.contains("procfs/processes"), "{triggered}");
    assert!(common::wait_until(Duration::from_secs(2), || process_rows(
        &read_csv(&dir.path().join("out.csv"))
    )
        > before_trigger));
    ctl_ok(dir.path(), &["set-interval", "procfs/system", "250ms"]);
    let set_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    std::thread::sleep(Duration::from_millis(1300));
    let mut times: Vec<u64> = read_csv(&dir.path().join("out.csv"))
        .iter()
        .filter(|r| r.metric == "tasks_running" && r.timestamp_ns > set_at)
        .map(|r| r.timestamp_ns)
        .collect();
    times.dedup();
    let mut gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    assert!(gaps.len() >= 2, "{times:?}");
    let median_ms = gaps[gaps.len() / 2] as f64 / 1e6;
    assert!(
        (200.0..320.0).contains(&median_ms),
        "250 ms applies: {median_ms} ms, {times:?}"
    );

    // Garbage, an endless line: an error answer, and the socket still serves.
    {
        use std::io::{Read, Write};
        let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let _ = raw.write_all(&[b'x'; 10_000]);
        let mut answer = String::new();
        let _ = raw.read_to_string(&mut answer);
        assert!(
            answer.contains("\"ok\":false") && answer.contains("longer than"),
            "{answer}"
        );
    }
    assert!(ctl_ok(dir.path(), &["status"]).contains("procfs/system"));

    // Errors name what exists.
    let unknown = ctl(dir.path(), &["pause", "rapl/*"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("procfs/system"));

    refused_outside_the_mode(dir.path());

    // `ctl reload` takes the SIGHUP path and answers when it is done, with
    // its outcome; the pipeline answers again at once.
    let reloaded = ctl_ok(dir.path(), &["reload"]);
    assert!(reloaded.starts_with("reloaded: "), "{reloaded}");
    let status: serde_json::Value =
        serde_json::from_str(&ctl_ok(dir.path(), &["status", "--json"])).unwrap();
    assert_eq!(status["reloads"]["done"], 1, "{status}");
    assert_eq!(status["reloads"]["last"]["ok"], true, "{status}");
    // A broken file: the answer says so and names the file and line; the
    // previous configuration goes on.
    let config = dir.path().join("alumet-config.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("enabled = true", "enabeld = true")).unwrap();
    let refused = ctl(dir.path(), &["reload"]);
    let refused_stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{refused_stderr}");
    assert!(
        refused_stderr.contains("reload failed")
            && refused_stderr.contains("alumet-config.toml:2")
            && refused_stderr.contains("enabled"),
        "{refused_stderr}"
    );
    assert!(ctl_ok(dir.path(), &["status"]).contains("reloads: 2; the last failed"));
    std::fs::write(&config, good).unwrap();

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr.matches("reloaded").count(), 1, "{stderr}");

    // No agent there: a clear error naming the socket.
    let nobody_there = common::agent_command()
        .args([
            "--control-socket",
            socket.to_str().unwrap(),
            "ctl",
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(nobody_there.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nobody_there.stderr).contains(socket.to_str().unwrap()));
    assert!(!socket.exists(), "the socket is removed at exit");
}

/// `ctl ARGS`, killed if it has not exited within `limit`: (exit code,
/// stderr), or `None` when it was killed.
fn ctl_within(dir: &Path, args: &[&str], limit: Duration) -> Option<(Option<i32>, String)> {
    let mut child = common::agent_command()
        .args([
            "--control-socket",
            dir.join("ctl.sock").to_str().unwrap(),
            "ctl",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !common::wait_until(limit, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Issue #30: the control socket served one client at a time, and a client
/// sending a byte every few seconds held it for as long as it went on
/// (`ctl status` then failed after 25 s, "Resource temporarily
/// unavailable"). Now a trickling client is answered with an error at its
/// 5 s request deadline while `ctl status` is answered beside it at once;
/// 16 clients are served at once, and the 17th is refused with one line.
#[test]
fn slow_stuck_and_surplus_control_clients_never_block_ctl() {
    const MAX_CLIENTS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let child = spawn_run(dir.path(), &[]);
    let socket = dir.path().join("ctl.sock");
    assert!(common::wait_until(Duration::from_secs(10), || socket.exists()));
    ctl_ok(dir.path(), &["status"]);

    // "status" and spaces, a byte a second, never a newline.
    let trickler = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(&socket).unwrap();
            let connected = Instant::now();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut answer = Vec::new();
            let mut buf = [0u8; 512];
            for byte in b"status".iter().chain([b' '; 24].iter()) {
                if s.write_all(&[*byte]).is_err() {
                    break;
                }
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            let _ = s.read_to_end(&mut answer);
            (
                connected.elapsed(),
                String::from_utf8_lossy(&answer).into_owned(),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    // Beside it, `ctl status` is answered at once.
    let started = Instant::now();
    let beside = ctl_within(dir.path(), &["status"], Duration::from_secs(4));
    assert!(
        matches!(&beside, Some((Some(0), _))),
        "ctl status beside a slow client: {beside:?} after {:?}",
        started.elapsed()
    );
    let (lasted, answer) = trickler.join().unwrap();
    assert!(
        answer.contains(r#""ok":false"#) && answer.contains("not complete within 5 s"),
        "{answer:?} after {lasted:?}"
    );
    assert!(
        lasted >= Duration::from_millis(4500) && lasted < Duration::from_secs(8),
        "{lasted:?}"
    );

    // 16 clients connected, none has sent its line yet: the 17th gets a
    // one-line refusal at once.
    let held: Vec<UnixStream> = (0..MAX_CLIENTS)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let refused = ctl_within(dir.path(), &["status"], Duration::from_secs(4));
    let Some((code, stderr)) = refused else {
        panic!("the 17th client waited instead of being refused");
    };
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("16 clients are being served already; try again"),
        "{stderr}"
    );
    // The 16 are all served, at once.
    for mut s in &held {
        s.write_all(b"status\n").unwrap();
    }
    for mut s in held {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with(r#"{"ok":true"#), "{answer}");
    }
    // And once they are gone, anyone again.
    assert!(common::wait_until(Duration::from_secs(5), || ctl(
        dir.path(),
        &["status"]
    )
    .status
    .success()));

    let (code, stderr) = sigterm_and_wait(child);
    assert_eq!(code, Some(0), "{stderr}");
}

/// `nobody` (not the owner, not in the group) cannot connect.
fn refused_outside_the_mode(dir: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || common::find_binary("setpriv").is_none() {
        eprintln!("skipped: the refusal check needs root and setpriv");
        return;
    }
    // The directory may be entered by anyone: the socket's own mode is what refuses.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_alumet-agent"))
        .args([
            "--control-socket",
            dir.join("ctl.sock").to_str().unwrap(),
            "ctl",
            "status",
        ])
        .env_remove("ALUMET_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("setpriv:") {
        eprintln!("skipped: setpriv cannot run the agent as nobody here: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    // The same command as root gets through, so the refusal is the mode's.
    ctl_ok(dir, &["status"]);
}

/// The CSV output writes into a FIFO that nobody reads: once the pipe is
/// full its write never returns. The watchdog stops and `STATUS=` names
/// the output while `ctl status` shows its queue growing; once the test
/// reads the FIFO the output returns and the pings come back.
#[test]
fn the_watchdog_stops_while_an_output_is_stuck_in_a_write_and_comes_back() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let fifo = dir.path().join("out.csv");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
    let notify_path = dir.path().join("notify");
    let received = collect(UnixDatagram::bind(&notify_path).unwrap());
    // Read and write, so that opening the FIFO does not wait for a reader.
    let mut c = run_command(dir.path(), &["--set", "plugins.csv.append=true"]);
    c.env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000");
    let child = c.spawn().unwrap();
    let stalled = || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains("STATUS=STALLED: csv/file does not return"))
    };
    // The pipe holds 64 KiB: a few polls of every process fill it.
    assert!(
        common::wait_until(Duration::from_secs(10), stalled),
        "{:?}",
        received.lock().unwrap()
    );
    let stalled_at = Instant::now();
    std::thread::sleep(Duration::from_millis(600));
    let status: serde_json::Value =
        serde_json::from_str(&ctl_ok(dir.path(), &["status", "--json"])).unwrap();
    let csv = &status["outputs"][0];
    assert_eq!(csv["name"], "csv/file");
    assert!(
        csv["queue_depth"].as_u64().unwrap() >= 2,
        "batches wait behind the stuck write: {status}"
    );

    // A reader: the write returns, the output catches up.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drained = {
        let stop = stop.clone();
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                match reader.read(&mut buf) {
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            all
        })
    };
    let resumed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let (code, stderr) = sigterm_and_wait(child);
    stop.store(true, std::sync::atomic::Ordering::Release);
    let text = drained.join().unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        text.starts_with(b"timestamp,metric"),
        "the header came first"
    );

    let messages = received.lock().unwrap().clone();
    let pings: Vec<Instant> = messages
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    let while_stuck = pings
        .iter()
        .filter(|t| **t > stalled_at && **t < resumed_at)
        .count();
    assert_eq!(while_stuck, 0, "pings while stuck: {messages:?}");
    let after = pings.iter().filter(|t| **t > resumed_at).count();
    assert!(after >= 2, "{after} pings once it returns: {messages:?}");
}

/// `timeout(1)` signals the command, then its whole process group: the
/// agent gets SIGTERM twice in a row. That is one request to stop, not a
/// second one meaning "exit now": every point must still be written.
#[test]
fn a_stop_signal_delivered_twice_at_once_still_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("alumet-config.toml"),
        // Nothing written before the shutdown: a forced exit would leave no row.
        "[plugins.procfs]\nenabled = true\nprocesses = false\nsystem_poll_interval = \"100ms\"\nflush_interval = \"1h\"\n\n[plugins.csv]\nenabled = true\noutput_path = \"out.csv\"\ntimestamp_format = \"unix_ns\"\nflush_interval = \"1h\"\n",
    )
    .unwrap();
    let child = spawn_run(dir.path(), &[]);
    assert!(common::wait_until(Duration::from_secs(10), || dir
        .path()
        .join("ctl.sock")
        .exists()));
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id() as i32;
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // As timeout(1) does: the copy to the process group right after.
    std::thread::sleep(Duration::from_millis(1));
    // SAFETY: as above; the agent is still stopping, not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("exiting now"), "{stderr}");
    let rows = read_csv(&dir.path().join("out.csv"));
    assert!(
        rows.iter().filter(|r| r.metric == "cpu_time").count() >= 4,
        "the points of the run were written at the shutdown:\n{stderr}"
    );
}
