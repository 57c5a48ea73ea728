//! Helpers shared by the tests that run `alumet-agent` as a process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
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
/// unnoticed. The new text is written over the old one, then the file is
/// cut to its length: a reader never sees it empty (truncating first would
/// let the agent read "" between the two calls).
pub fn write_in_place(path: &Path, value: u64) {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let text = format!("{value}\n");
    f.write_all_at(text.as_bytes(), 0).unwrap();
    f.set_len(text.len() as u64).unwrap();
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

/// A powercap tree with one package zone under `<dir>/sys`, whose
/// `energy_uj` a thread advances every 10 ms at `power_w` (in place, as the
/// kernel does) until the fixture is dropped.
pub struct RaplFixture {
    /// `--set` argument pointing the rapl plugin at the tree.
    pub sysfs_root_arg: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RaplFixture {
    /// Creates the tree and starts the thread.
    pub fn start(dir: &Path, power_w: f64) -> Self {
        let zone = dir.join("sys/class/powercap/intel-rapl:0");
        std::fs::create_dir_all(&zone).unwrap();
        std::fs::write(zone.join("name"), "package-0\n").unwrap();
        std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
        let energy_file = zone.join("energy_uj");
        std::fs::write(&energy_file, "1000000\n").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let step_uj = (power_w * 10_000.0) as u64;
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut energy_uj = 1_000_000u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    energy_uj += step_uj;
                    write_in_place(&energy_file, energy_uj);
                }
            })
        };
        Self {
            sysfs_root_arg: format!(
                "plugins.rapl.sysfs_root={:?}",
                dir.join("sys").to_str().unwrap()
            ),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RaplFixture {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
