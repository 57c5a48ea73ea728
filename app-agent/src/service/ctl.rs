//! `alumet-agent ctl …`: the client of the control socket of a running
//! agent (see `control_socket.rs` for the protocol).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::cli::args::CtlCommand;

/// How long to wait for the agent's answer (`trigger` waits for polls,
/// `reload` for the reload).
const ANSWER_TIMEOUT: Duration =
    Duration::from_secs(crate::service::control_socket::RELOAD_TIMEOUT.as_secs() + 5);

/// Runs one `ctl` command; returns the exit code (0 done, 1 refused or unreachable).
pub fn run(socket: &Path, command: &CtlCommand) -> i32 {
    let (request, json) = match command {
        CtlCommand::Status { json } => ("status".to_owned(), *json),
        CtlCommand::Pause { source } => (format!("pause {source}"), false),
        CtlCommand::Resume { source } => (format!("resume {source}"), false),
        CtlCommand::SetInterval { source, interval } => {
            (format!("set-interval {source} {interval}"), false)
        }
        CtlCommand::Trigger { source } => (
            format!("trigger {}", source.as_deref().unwrap_or("*")),
            false,
        ),
        CtlCommand::Reload => ("reload".to_owned(), false),
        CtlCommand::Reopen => ("reopen".to_owned(), false),
    };
    if request.contains('\n') {
        eprintln!("alumet-agent: ctl: a name cannot contain a newline");
        return 1;
    }
    let answer = match ask(socket, &request) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("alumet-agent: ctl: {}: {e}", socket.display());
            return 1;
        }
    };
    if answer.get("ok") != Some(&Value::Bool(true)) {
        let error = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the agent refused the request");
        eprintln!("alumet-agent: ctl: {error}");
        return 1;
    }
    if json {
        println!("{answer}");
    } else if matches!(command, CtlCommand::Status { .. }) {
        print_status(&answer);
    } else if let Some(message) = answer.get("message").and_then(Value::as_str) {
        println!("{message}");
    } else if let Some(sources) = answer.get("sources").and_then(Value::as_array) {
        let names: Vec<&str> = sources.iter().filter_map(Value::as_str).collect();
        println!("done: {}", names.join(", "));
    }
    0
}

fn ask(socket: &Path, request: &str) -> std::io::Result<Value> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    // An agent that refuses (too many clients) answers at once and closes:
    // its line is still there to read when the request cannot be written.
    let written = stream.write_all(format!("{request}\n").as_bytes());
    let mut line = Vec::new();
    let read = read_line((&stream).take(ANSWER_MAX_BYTES), &mut line);
    if line.is_empty() {
        written?;
        read.map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => std::io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "no answer within {} s; see the agent's log",
                    ANSWER_TIMEOUT.as_secs()
                ),
            ),
            _ => e,
        })?;
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "the agent closed the connection without an answer",
        ));
    }
    serde_json::from_slice(&line).map_err(|e| {
        std::io::Error::new(ErrorKind::InvalidData, format!("unreadable answer ({e})"))
    })
}

/// The longest answer read (`status` of a large pipeline is far below).
const ANSWER_MAX_BYTES: u64 = 64 << 20;

/// Up to the first newline (left out) or the end; `line` keeps what came
/// before an error.
fn read_line(mut from: impl Read, line: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&buf[..end]);
            return Ok(());
        }
        line.extend_from_slice(&buf[..n]);
    }
}

fn print_status(answer: &Value) {
    let plugins: Vec<&str> = answer["plugins"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!("plugins: {}", plugins.join(", "));
    let reloads = &answer["reloads"];
    if let Some(done) = reloads["done"].as_u64().filter(|n| *n > 0) {
        let last = &reloads["last"];
        let outcome = if last["ok"].as_bool() == Some(true) {
            "done"
        } else {
            "failed"
        };
        println!(
            "reloads: {done}; the last {outcome}: {}",
            last["message"].as_str().unwrap_or("?")
        );
    }
    println!(
        "{:<32} {:>10} {:>12} {:>8} {:>8} {:>10} {:>9}",
        "SOURCE", "POLLS", "POINTS OUT", "MISSED", "ERRORS", "DROPPED", "BUFFERED"
    );
    for s in answer["sources"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:>10} {:>12} {:>8} {:>8} {:>10} {:>9}",
            s["name"].as_str().unwrap_or("?"),
            count(&s["polls"]),
            count(&s["points_out"]),
            count(&s["missed_ticks"]),
            count(&s["errors"]),
            count(&s["dropped_points"]),
            count(&s["buffered_points"])
        );
    }
    let transforms = answer["transforms"].as_array().into_iter().flatten();
    let mut transforms = transforms.peekable();
    if transforms.peek().is_some() {
        println!(
            "{:<32} {:>10} {:>12} {:>8}",
            "TRANSFORM", "POINTS IN", "POINTS OUT", "ERRORS"
        );
    }
    for t in transforms {
        let disabled = if t["disabled"].as_bool() == Some(true) {
            " (disabled)"
        } else {
            ""
        };
        println!(
            "{:<32} {:>10} {:>12} {:>8}{disabled}",
            t["name"].as_str().unwrap_or("?"),
            count(&t["points_in"]),
            count(&t["points_out"]),
            count(&t["errors"])
        );
    }
    println!(
        "buffers waiting for the transforms: {}",
        count(&answer["transform_queue_depth"])
    );
    println!(
        "{:<32} {:>10} {:>12} {:>10} {:>8} {:>10} {:>9}",
        "OUTPUT", "WRITTEN", "BATCHES", "THINNED", "RETRIES", "DROPPED", "QUEUED"
    );
    for o in answer["outputs"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:>10} {:>12} {:>10} {:>8} {:>10} {:>9}",
            o["name"].as_str().unwrap_or("?"),
            count(&o["written_points"]),
            count(&o["written_batches"]),
            count(&o["thinned_points"]),
            count(&o["retries"]),
            count(&o["dropped_points"]),
            count(&o["queue_depth"])
        );
    }
    println!("dropped in total: {}", answer["total_dropped_points"]);
    let elements = answer["sources"]
        .as_array()
        .into_iter()
        .chain(answer["transforms"].as_array())
        .chain(answer["outputs"].as_array())
        .flatten();
    for e in elements {
        if let Some(error) = e["last_error"].as_str() {
            println!(
                "last error of {}: {error}",
                e["name"].as_str().unwrap_or("?")
            );
        }
    }
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}
