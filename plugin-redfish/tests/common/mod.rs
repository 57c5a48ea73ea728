//! The Redfish service the tests read: DMTF-format mockup files served by
//! sushy-tools' static emulator (`sushy-static`, installed by
//! scripts/install-redfish-emulator.sh) over HTTPS with a certificate of a
//! private CA (scripts/make-test-certs.sh), started once per test binary;
//! and, per test, `bmc_front.py` in front of it for what sushy-static lacks
//! (sessions, credentials, faults).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use alumet::measurement::{MeasurementPoint, MeasurementValue};
use alumet::testing::peer::{free_port, ChildProcess};
use plugin_redfish::RedfishConfig;
use serde_json::Value;

/// The python the tests run (where sushy-tools is installed).
pub fn python() -> String {
    std::env::var("ALUMET_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// sushy-static serving a copy of `tests/mockups/rackmount`.
pub struct Emulator {
    pub dir: PathBuf,
    pub port: u16,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The emulator exits when this pipe closes (when the test binary
    /// exits: a static is never dropped, so it cannot be killed on drop).
    _stdin: Mutex<ChildStdin>,
}

/// Starts sushy-static in a python that also exits at the end of its stdin.
const LAUNCHER: &str = "import os, sys, threading\n\
sys.argv = ['sushy-static'] + sys.argv[1:]\n\
from sushy_tools.static import main as m\n\
threading.Thread(target=m.main, daemon=True).start()\n\
sys.stdin.read()\n\
os._exit(0)\n";

impl Emulator {
    /// The emulator of this test binary, started at the first call.
    pub fn get() -> &'static Emulator {
        static EMULATOR: OnceLock<Emulator> = OnceLock::new();
        EMULATOR.get_or_init(Emulator::start)
    }

    fn start() -> Emulator {
        let dir = std::env::temp_dir().join(format!("alumet-redfish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mockups/rackmount"),
            &dir.join("mockup"),
        );
        let certs = dir.join("certs");
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/make-test-certs.sh"))
            .arg(&certs)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "make-test-certs.sh failed (openssl missing?)"
        );
        let port = free_port();
        let mut child = Command::new(python())
            .args(["-c", LAUNCHER])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .arg("-m")
            .arg(dir.join("mockup/redfish/v1"))
            .arg("-c")
            .arg(certs.join("server.pem"))
            .arg("-k")
            .arg(certs.join("server.key"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with sushy-tools (run scripts/install-redfish-emulator.sh)");
        let stdin = child.stdin.take().unwrap();
        // Killed at once if it fails to come up.
        let mut guard = ChildProcess::new(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                !guard.exited(),
                "sushy-static exited at start: is sushy-tools installed for {}? (scripts/install-redfish-emulator.sh)",
                python()
            );
            assert!(Instant::now() < deadline, "sushy-static did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        // From now on its life is the pipe's.
        std::mem::forget(guard);
        Emulator {
            port,
            ca: certs.join("ca.pem"),
            cert: certs.join("server.pem"),
            key: certs.join("server.key"),
            dir,
            _stdin: Mutex::new(stdin),
        }
    }

    /// The emulator's own URL (no sessions, no authentication).
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Rewrites the resource at `/redfish/v1/<path>` (atomically: the
    /// emulator reads the file at each request).
    pub fn write(&self, path: &str, value: &Value) {
        let file = self
            .dir
            .join("mockup/redfish/v1")
            .join(path)
            .join("index.json");
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    }

    /// Sets `PowerControl[0].PowerConsumedWatts` of chassis `id`.
    pub fn set_power_control(&self, id: &str, watts: f64) {
        let path = format!("Chassis/{id}/Power");
        let mut v = self.read(&path);
        v["PowerControl"][0]["PowerConsumedWatts"] = watts.into();
        self.write(&path, &v);
    }

    /// Sets the EnvironmentMetrics readings of chassis `id`.
    pub fn set_environment(&self, id: &str, kwh: f64, watts: f64) {
        let path = format!("Chassis/{id}/EnvironmentMetrics");
        let mut v = self.read(&path);
        v["EnergykWh"]["Reading"] = kwh.into();
        v["PowerWatts"]["Reading"] = watts.into();
        self.write(&path, &v);
    }

    fn read(&self, path: &str) -> Value {
        let file = self
            .dir
            .join("mockup/redfish/v1")
            .join(path)
            .join("index.json");
        serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
    }
}

/// bmc_front.py in front of the emulator: sessions for one user, faults.
pub struct Front {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _child: ChildProcess,
}

impl Front {
    /// A front accepting `user` / `password`.
    pub fn start(user: &str, password: &str) -> Front {
        let emulator = Emulator::get();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bmc_front.py"))
            .args(["--port", &port.to_string()])
            .arg("--cert")
            .arg(&emulator.cert)
            .arg("--key")
            .arg(&emulator.key)
            .arg("--ca")
            .arg(&emulator.ca)
            .args(["--upstream", &emulator.endpoint()])
            .args(["--user", user, "--password", password])
            .arg("--control")
            .arg(dir.path().join("control.json"))
            .arg("--stats")
            .arg(dir.path().join("stats.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let child = ChildProcess::new(child);
        wait_for_port(port, "bmc_front.py");
        Front {
            port,
            dir,
            _child: child,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Faults from now on (see bmc_front.py).
    pub fn control(&self, value: Value) {
        let file = self.dir.path().join("control.json");
        let tmp = self.dir.path().join("control.json.tmp");
        std::fs::write(&tmp, value.to_string()).unwrap();
        std::fs::rename(tmp, file).unwrap();
    }

    /// Its counts: logins, refused, deleted, gets.
    pub fn stats(&self) -> Value {
        let text = std::fs::read(self.dir.path().join("stats.json")).unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    /// A config logging in to this front, password in a file.
    pub fn config(&self, password: &str, chassis: &[&str]) -> RedfishConfig {
        let password_file = self.dir.path().join("password");
        let mut f = std::fs::File::create(&password_file).unwrap();
        writeln!(f, "{password}").unwrap();
        RedfishConfig {
            endpoint: self.endpoint(),
            username: "admin".into(),
            password_file: password_file.display().to_string(),
            ca_file: Emulator::get().ca.display().to_string(),
            chassis: chassis.iter().map(|s| s.to_string()).collect(),
            ..RedfishConfig::default()
        }
    }
}

/// The value of an F64 point.
pub fn value(p: &MeasurementPoint) -> f64 {
    match p.value {
        MeasurementValue::F64(v) => v,
        MeasurementValue::U64(v) => v as f64,
    }
}

/// The string value of attribute `key`.
pub fn attr(p: &MeasurementPoint, key: &str) -> Option<String> {
    p.attr(key).map(|v| v.to_string())
}

/// Seconds from `a` to `b`.
pub fn seconds(a: &MeasurementPoint, b: &MeasurementPoint) -> f64 {
    (b.timestamp.unix_nanos() as f64 - a.timestamp.unix_nanos() as f64) / 1e9
}

/// Every log line of this test binary, collected.
pub mod logs {
    use std::sync::Mutex;

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Collector;

    impl log::Log for Collector {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                let line = format!("{} {}", r.level(), r.args());
                eprintln!("{line}");
                LINES.lock().unwrap().push(line);
            }
        }
        fn flush(&self) {}
    }

    /// Installs the collector (once).
    pub fn init() {
        static LOGGER: Collector = Collector;
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    }

    /// The lines that contain every one of `parts`.
    pub fn matching(parts: &[&str]) -> Vec<String> {
        LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .cloned()
            .collect()
    }
}
