//! Helpers shared by the tests that run `alumet-agent` as a process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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

/// Copies a fixture tree (directories and files) to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Fails unless `readme` shows the `[plugins.NAME]` block exactly as
/// `config regen` writes it (up to its first blank line).
pub fn assert_readme_shows_regen_block(plugin: &str, readme: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alumet-config.toml");
    let out = agent_command()
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap(), "config", "regen"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let written = std::fs::read_to_string(&config).unwrap();
    let header = format!("[plugins.{plugin}]");
    let start = written.find(&header).unwrap();
    let section: String = written[start..]
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let text = std::fs::read_to_string(readme).unwrap();
    assert!(
        text.contains(&section),
        "{} must show the block exactly as regen writes it:\n{section}",
        readme.display()
    );
}
