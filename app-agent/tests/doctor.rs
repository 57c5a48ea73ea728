//! `alumet-agent doctor` as a process, on fixture machines (a copy of a
//! RAPL sysfs tree, a procfs with `perf_event_paranoid`), run as an
//! unprivileged user: as `nobody` through `setpriv` when the tests run as
//! root (for whom no file is unreadable), else as the current user. It
//! prints the group fix for an unreadable `energy_uj`, the perf fixes when
//! perf_event is closed, nothing to fix when the counters can be read, and
//! changes nothing (no file mode, no configuration file written).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn is_root() -> bool {
    fs::metadata("/proc/self").unwrap().uid() == 0
}

/// The agent, run as a user who may not read root-only files.
fn unprivileged_agent() -> Command {
    let bin = env!("CARGO_BIN_EXE_alumet-agent");
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.env_remove("ALUMET_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

use alumet::testing::fixture::copy_tree;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every directory of the tree traversable and every file readable by all.
fn open_tree(path: &Path) {
    let meta = fs::metadata(path).unwrap();
    if meta.is_dir() {
        chmod(path, 0o755);
        for entry in fs::read_dir(path).unwrap() {
            open_tree(&entry.unwrap().path());
        }
    } else {
        chmod(path, 0o644);
    }
}

/// A fixture machine: `sys/` (one AMD package, with the power PMU when
/// `with_pmu`) and `proc/sys/kernel/perf_event_paranoid`, readable by
/// all except the `energy_uj` files, which get `energy_mode`.
struct Machine {
    dir: tempfile::TempDir,
    energy_files: Vec<PathBuf>,
}

impl Machine {
    fn new(with_pmu: bool, energy_mode: u32, paranoid: i32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugin-rapl/tests/fixtures/amd_1socket/sys0");
        copy_tree(&fixture, &dir.path().join("sys"));
        if !with_pmu {
            fs::remove_dir_all(dir.path().join("sys/bus")).unwrap();
        }
        let kernel = dir.path().join("proc/sys/kernel");
        fs::create_dir_all(&kernel).unwrap();
        fs::write(kernel.join("perf_event_paranoid"), format!("{paranoid}\n")).unwrap();
        open_tree(dir.path());
        let zones = dir.path().join("sys/class/powercap");
        let energy_files: Vec<PathBuf> = fs::read_dir(&zones)
            .unwrap()
            .map(|e| e.unwrap().path().join("energy_uj"))
            .filter(|p| p.exists())
            .collect();
        assert!(!energy_files.is_empty());
        for f in &energy_files {
            chmod(f, energy_mode);
        }
        Self { dir, energy_files }
    }

    fn doctor(&self) -> Output {
        let config = self.dir.path().join("alumet-config.toml");
        unprivileged_agent()
            .args(["--config", config.to_str().unwrap(), "--plugins", "rapl"])
            .arg("--set")
            .arg(format!(
                "plugins.rapl.sysfs_root={:?}",
                self.dir.path().join("sys").to_str().unwrap()
            ))
            .arg("--set")
            .arg(format!(
                "plugins.procfs.proc_root={:?}",
                self.dir.path().join("proc").to_str().unwrap()
            ))
            // A bare-metal machine (no cpuinfo: no hypervisor flag) whose
            // static counters are about permissions here, not about
            // counting (tests/e2e_trust.rs has the doctor on dead counters).
            .arg("--set")
            .arg(format!(
                "plugins.rapl.proc_root={:?}",
                self.dir.path().join("proc").to_str().unwrap()
            ))
            .args(["--set", "plugins.rapl.counting_check=\"0s\""])
            .arg("doctor")
            .output()
            .unwrap()
    }
}

/// A mode that denies the unprivileged user: root-only for `nobody`; for a
/// non-root test run, the owner itself must be denied.
fn denied_mode() -> u32 {
    if is_root() {
        0o400
    } else {
        0o000
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The user the doctor says it checks for.
fn checked_user(out: &str) -> String {
    let first = out.lines().next().unwrap();
    let rest = first
        .strip_prefix("alumet-agent doctor: checks for user ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"));
    rest.split_whitespace().next().unwrap().to_owned()
}

fn rapl_row(out: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.starts_with("rapl "))
        .unwrap_or_else(|| panic!("no rapl row:\n{out}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn group_exists(name: &str) -> bool {
    fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

#[test]
fn unreadable_energy_uj_gets_the_group_fix_and_nothing_changes() {
    let machine = Machine::new(false, denied_mode(), 2);
    let o = machine.doctor();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(rapl_row(&out), ["rapl", "yes", "no"], "{out}");
    let user = checked_user(&out);
    if is_root() {
        assert_eq!(user, "nobody");
    }
    assert!(
        out.contains(&machine.energy_files[0].display().to_string()),
        "{out}"
    );
    assert!(
        out.contains(&format!("    sudo adduser {user} alumet\n")),
        "{out}"
    );
    assert!(out.contains("log out and back in"), "{out}");
    assert!(
        out.contains("    sudo udevadm trigger --subsystem-match=powercap\n"),
        "{out}"
    );
    assert_eq!(
        out.contains("sudo addgroup --system alumet"),
        !group_exists("alumet"),
        "{out}"
    );
    // no power PMU in this tree: no perf advice
    assert!(!out.contains("perf_event_paranoid=0"), "{out}");
    // the rapl plugin's own line points here too
    assert!(
        out.contains("`alumet-agent doctor` prints the exact commands"),
        "{out}"
    );

    // changes nothing: no default configuration written, modes unchanged
    assert!(out.contains("configuration: the defaults"), "{out}");
    assert!(!machine.dir.path().join("alumet-config.toml").exists());
    for f in &machine.energy_files {
        assert_eq!(fs::metadata(f).unwrap().mode() & 0o7777, denied_mode());
    }
}

#[test]
fn closed_perf_event_gets_sysctl_and_setcap() {
    let machine = Machine::new(true, denied_mode(), 2);
    let o = machine.doctor();
    let out = stdout(&o);
    assert_eq!(rapl_row(&out), ["rapl", "yes", "no"], "{out}");
    assert!(
        out.contains("    sudo sysctl kernel.perf_event_paranoid=0\n"),
        "{out}"
    );
    assert!(out.contains("kernel.perf_event_paranoid is 2"), "{out}");
    let bin = fs::canonicalize(env!("CARGO_BIN_EXE_alumet-agent")).unwrap();
    assert!(
        out.contains(&format!(
            "    sudo setcap cap_perfmon=ep {}\n",
            bin.display()
        )),
        "{out}"
    );
    // and the group fix for powercap as well
    assert!(
        out.contains("sudo udevadm trigger --subsystem-match=powercap"),
        "{out}"
    );

    // perf_event_paranoid 0 already lets users open the counters
    let open = Machine::new(true, denied_mode(), 0);
    let out = stdout(&open.doctor());
    assert!(!out.contains("perf_event_paranoid=0"), "{out}");
    assert!(!out.contains("    sudo setcap"), "{out}");
}

#[test]
fn readable_counters_need_no_fix() {
    let machine = Machine::new(false, 0o444, 2);
    let o = machine.doctor();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(rapl_row(&out), ["rapl", "yes", "yes"], "{out}");
    assert!(!out.contains("adduser"), "{out}");
    assert!(!out.contains("udevadm"), "{out}");
}

/// `doctor` lists what a plugin found, as the plugin's inventory says: the
/// eight ACPI power meters of a two-socket Grace Hopper (plugin-hwmon's
/// fixture) with the domain and resource each is reported as.
#[test]
fn doctor_lists_each_hwmon_channel_and_what_it_will_be_reported_as() {
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-hwmon/tests/fixtures/grace_hopper");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&case.join("sys0"), &dir.path().join("sys"));
    let config = dir.path().join("absent.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_alumet-agent"))
        .args(["--config", config.to_str().unwrap(), "--plugins", "hwmon"])
        .arg("--set")
        .arg(format!(
            "plugins.hwmon.sysfs_root=\"{}\"",
            dir.path().join("sys").display()
        ))
        .arg("doctor")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let expected = fs::read_to_string(case.join("inventory.txt")).unwrap();
    let listed: String = out
        .split("hwmon found:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no inventory in {out}"))
        .lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert_eq!(listed, expected, "{out}");
    assert!(!config.exists(), "doctor wrote no configuration");
}
