//! Helpers shared by the tests that run `alumet-agent` as a process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The agent binary, with the caller's config and log environment removed.
pub fn agent_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_alumet-agent"));
    c.env_remove("ALUMET_CONFIG").env_remove("RUST_LOG");
    c
}

/// One CSV row, as plugin-csv writes it (unix_ns timestamps).
#[derive(Debug)]
pub struct Row {
    pub timestamp_ns: u64,
    pub metric: String,
    pub value: f64,
    pub resource: (String, String),
    pub consumer: (String, String),
    pub attributes: BTreeMap<String, String>,
}

pub fn read_csv(path: &Path) -> Vec<Row> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "timestamp",
            "metric",
            "unit",
            "value",
            "resource_kind",
            "resource_id",
            "consumer_kind",
            "consumer_id",
            "attributes"
        ]
    );
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            Row {
                timestamp_ns: r[0].parse().unwrap(),
                metric: r[1].to_owned(),
                value: r[3].parse().unwrap(),
                resource: (r[4].to_owned(), r[5].to_owned()),
                consumer: (r[6].to_owned(), r[7].to_owned()),
                attributes: r[8]
                    .split(';')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_owned(), v.to_owned())
                    })
                    .collect(),
            }
        })
        .collect()
}

impl Row {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// Every data row of a CSV file with a header, each checked to parse.
pub fn csv_rows(path: &Path) -> Vec<csv::StringRecord> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap();
    reader
        .records()
        .map(|r| r.expect("every row parses"))
        .collect()
}

/// Sends SIGTERM to the agent and waits: (exit code, stderr).
pub fn sigterm_and_wait(child: Child) -> (Option<i32>, String) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rewrites a sysfs-like file in place (same inode, as the kernel does):
/// the agent keeps such files open and re-reads them, so a rename would go
/// unnoticed.
pub fn write_in_place(path: &Path, value: u64) {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(format!("{value}\n").as_bytes()).unwrap();
}

/// Polls `f` every 20 ms until it holds or `timeout` passes; returns its last value.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
