//! Helpers shared by the tests that run `alumet-agent` as a process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub mod influxd;
pub mod reload;

/// The agent binary, with the caller's config and log environment removed.
/// The agent is killed when the test's thread ends, so that a test that
/// fails (panics) before it stops its agent leaves none running.
pub fn agent_command() -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(env!("CARGO_BIN_EXE_alumet-agent"));
    c.env_remove("ALUMET_CONFIG").env_remove("RUST_LOG");
    // SAFETY: prctl(2) only, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// The agent run in `dir` with `dir/alumet-config.toml`, its output piped.
pub fn agent_in(dir: &Path) -> Command {
    let mut c = agent_command();
    c.current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
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
    // Written over the old content, then cut to length: a reader never
    // sees the file empty (as it could between a truncation and the write).
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

/// `--set` arguments that point the rapl plugin at the fixture tree `sys`
/// on a bare-metal machine (an empty proc root: no `hypervisor` flag), so
/// that nothing of the host's RAPL or hypervisor reaches the test. With
/// `check_counting` false the start-up check that the counters count is off:
/// for tests that move a static fixture's counters by hand, at their pace
/// (tests/e2e_trust.rs tests the check on moving and dead counters).
pub fn rapl_root_args(sys: &Path, check_counting: bool) -> Vec<String> {
    let proc_root = sys.with_file_name(format!(
        "{}-proc",
        sys.file_name().and_then(|n| n.to_str()).unwrap_or("sys")
    ));
    fs::create_dir_all(&proc_root).unwrap();
    let mut args = rapl_machine_args(sys, &proc_root);
    if !check_counting {
        args.extend([
            "--set".to_owned(),
            "plugins.rapl.counting_check=\"0s\"".to_owned(),
        ]);
    }
    args
}

/// Makes `proc` and `sys` describe a KVM guest: cpuinfo with the
/// `hypervisor` flag, and the KVM clock source (as this project's CI
/// machines are).
pub fn kvm_guest(proc: &Path, sys: &Path) {
    alumet_kernelfs::virt::write_kvm_guest_fixture(proc, sys).unwrap();
}

/// A `power` PMU under `sys` whose only event, `energy-psys`, opens like
/// the real one and never counts: the kernel's software PMU (type 1) and
/// its `dummy` event (PERF_COUNT_SW_DUMMY, config 9), through the real
/// `perf_event_open` (root or CAP_PERFMON needed, as for RAPL).
pub fn dead_perf_psys(sys: &Path) {
    let pmu = sys.join("bus/event_source/devices/power");
    fs::create_dir_all(pmu.join("events")).unwrap();
    fs::create_dir_all(pmu.join("format")).unwrap();
    fs::write(pmu.join("type"), "1\n").unwrap();
    fs::write(pmu.join("cpumask"), "0\n").unwrap();
    fs::write(pmu.join("format/event"), "config:0-63\n").unwrap();
    fs::write(pmu.join("events/energy-psys"), "event=0x09\n").unwrap();
    fs::write(
        pmu.join("events/energy-psys.scale"),
        "2.3283064365386962890625e-10\n",
    )
    .unwrap();
    fs::write(pmu.join("events/energy-psys.unit"), "Joules\n").unwrap();
    let topology = sys.join("devices/system/cpu/cpu0/topology");
    fs::create_dir_all(&topology).unwrap();
    fs::write(topology.join("physical_package_id"), "0\n").unwrap();
}

/// A powercap package zone under `sys` whose `energy_uj` never moves.
pub fn dead_powercap_zone(sys: &Path) {
    let zone = sys.join("class/powercap/intel-rapl:0");
    fs::create_dir_all(&zone).unwrap();
    fs::write(zone.join("name"), "package-0\n").unwrap();
    fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
    fs::write(zone.join("energy_uj"), "123456789\n").unwrap();
}

/// `--set` arguments pointing the rapl plugin at the roots `sys` and `proc`.
pub fn rapl_machine_args(sys: &Path, proc: &Path) -> Vec<String> {
    vec![
        "--set".to_owned(),
        format!("plugins.rapl.sysfs_root={:?}", sys.to_str().unwrap()),
        "--set".to_owned(),
        format!("plugins.rapl.proc_root={:?}", proc.to_str().unwrap()),
    ]
}

/// `--set` arguments for a machine without RAPL (an empty sysfs root), so
/// that a test with the rapl plugin enabled does not depend on the host.
pub fn no_rapl_args(dir: &Path) -> Vec<String> {
    let sys = dir.join("no-rapl-sys");
    fs::create_dir_all(&sys).unwrap();
    rapl_root_args(&sys, true)
}

/// A powercap tree with one package zone under `<dir>/sys`, whose
/// `energy_uj` a thread advances every 10 ms at `power_w` (in place, as the
/// kernel does) until the fixture is dropped.
pub struct RaplFixture {
    /// `--set` arguments pointing the rapl plugin at the tree, on a bare-metal machine.
    pub args: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The machine's busy CPU time so far, in seconds (/proc/stat: every
/// state but idle and iowait; guest time is inside user).
fn busy_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

impl RaplFixture {
    /// Creates the tree and starts the thread.
    pub fn start(dir: &Path, power_w: f64) -> Self {
        Self::start_with(dir, move |_| power_w * 0.01)
    }

    /// A package whose power follows the machine's load, as a real CPU's
    /// does: `idle_w` plus `w_per_busy_cpu` for each CPU kept busy (from
    /// /proc/stat). Its dynamic energy is then proportional to the busy CPU
    /// time of each interval, whatever else runs on the machine.
    pub fn start_load_following(dir: &Path, idle_w: f64, w_per_busy_cpu: f64) -> Self {
        let mut last = busy_cpu_seconds();
        Self::start_with(dir, move |_| {
            let now = busy_cpu_seconds();
            let busy_s = (now - last).max(0.0);
            last = now;
            idle_w * 0.01 + w_per_busy_cpu * busy_s
        })
    }

    /// The tree, and a thread adding `joules(step)` J at each 10 ms step.
    pub fn start_with(dir: &Path, mut joules: impl FnMut(u64) -> f64 + Send + 'static) -> Self {
        let zone = dir.join("sys/class/powercap/intel-rapl:0");
        std::fs::create_dir_all(&zone).unwrap();
        std::fs::write(zone.join("name"), "package-0\n").unwrap();
        std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
        let energy_file = zone.join("energy_uj");
        std::fs::write(&energy_file, "1000000\n").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut energy_uj = 1_000_000u64;
                let mut step = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    step += 1;
                    energy_uj += (joules(step) * 1e6) as u64;
                    write_in_place(&energy_file, energy_uj);
                }
            })
        };
        Self {
            args: rapl_root_args(&dir.join("sys"), true),
            stop,
            thread: Some(thread),
        }
    }
}

/// `name` on the PATH or in /usr/bin (where the test servers' packages put it).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A loopback port free now (the caller binds it soon after).
pub fn free_port() -> u16 {
    alumet::testing::peer::free_port()
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One HTTP/1.1 request on loopback; status and body, None if refused.
pub fn http(port: u16, method: &str, path_and_query: &str) -> Option<(u16, String)> {
    http_with_headers(port, method, path_and_query, &[])
}

/// [`http`] with extra request headers.
pub fn http_with_headers(
    port: u16,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for RaplFixture {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A file holding one unsigned integer.
pub fn read_u64(path: &Path) -> u64 {
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// The `[plugins.NAME]` block of the configuration `config regen` writes.
pub fn regen_section(name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alumet-config.toml");
    let out = agent_command()
        .args(["--config", path.to_str().unwrap(), "config", "regen"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let written = fs::read_to_string(&path).unwrap();
    let start = written.find(&format!("[plugins.{name}]")).unwrap();
    written[start..]
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Fails unless `readme` shows the `[plugins.NAME]` block exactly as
/// `config regen` writes it (up to its first blank line).
pub fn assert_readme_shows_regen_block(plugin: &str, readme: &Path) {
    let section = regen_section(plugin);
    let text = std::fs::read_to_string(readme).unwrap();
    assert!(
        text.contains(&section),
        "{} must show the block exactly as regen writes it:\n{section}",
        readme.display()
    );
}
