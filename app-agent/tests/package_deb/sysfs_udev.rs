//! For the package test: a fixture sysfs tree laid out as the kernel does
//! (devices/ and class/powercap links), and an interpreter that applies
//! a udev rule file to one of its devices as udev would. `udevadm test`
//! only knows the real /sys and never runs RUN programs, so this is how
//! the test checks the rule's effect; `udevadm test` still checks that udev
//! parses the rule.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run, text};

/// One parsed key of a udev rule: key, operator, value.
pub type RuleKey = (String, String, String);

pub fn parse_udev_line(line: &str) -> Vec<RuleKey> {
    let mut keys = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let op_at = rest.find(['=', '!', '+', ':']).unwrap();
        let key = rest[..op_at].trim().to_owned();
        let after = &rest[op_at..];
        let op = ["==", "!=", "+=", ":=", "="]
            .into_iter()
            .find(|o| after.starts_with(o))
            .unwrap();
        let value_and_rest = after[op.len()..].trim_start().strip_prefix('"').unwrap();
        let end = value_and_rest.find('"').unwrap();
        keys.push((key, op.to_owned(), value_and_rest[..end].to_owned()));
        rest = value_and_rest[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    keys
}

/// Applies the rules of `rule_file` to the device `devpath` (subsystem
/// `subsystem`, ACTION=add) of the fixture sysfs at `sys_root`, as udev
/// would: the match keys, then each RUN program with `%p` expanded and
/// `/sys` meaning the fixture. Knows only the keys our rule uses, and
/// fails on any other so that the rule cannot outgrow this check.
pub fn apply_udev_rule(rule_file: &Path, sys_root: &Path, devpath: &str, subsystem: &str) {
    let syspath = sys_root.join(devpath.trim_start_matches('/'));
    for line in fs::read_to_string(rule_file).unwrap().lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut matched = true;
        let mut programs = Vec::new();
        for (key, op, value) in parse_udev_line(line) {
            match (key.as_str(), op.as_str()) {
                ("SUBSYSTEM", "==") => matched &= subsystem == value,
                ("ACTION", "!=") => matched &= value != "add",
                ("ACTION", "==") => matched &= value == "add",
                ("TEST", "==") => matched &= syspath.join(&value).exists(),
                ("RUN", "+=") => programs.push(value),
                _ => panic!("the test's udev interpreter does not know {key}{op}: extend it"),
            }
        }
        if !matched {
            continue;
        }
        for program in programs {
            let expanded = program.replace("%p", devpath);
            let args: Vec<String> = expanded
                .split_whitespace()
                .map(|a| match a.strip_prefix("/sys/") {
                    Some(rest) => sys_root.join(rest).to_str().unwrap().to_owned(),
                    None => a.to_owned(),
                })
                .collect();
            let o = run(Command::new(&args[0]).args(&args[1..]));
            assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        }
    }
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A sysfs tree as the kernel lays it out: the powercap control type, a
/// package zone and its core subzone under devices/, class/powercap/
/// links to the zones, and a thermal device with a file of the same name
/// that the rule must leave alone. `energy_uj` files are root-only (0400).
pub struct FixtureSysfs {
    dir: tempfile::TempDir,
}

pub const CONTROL_TYPE: &str = "/devices/virtual/powercap/intel-rapl";
pub const ZONES: [(&str, &str); 2] = [
    (
        "/devices/virtual/powercap/intel-rapl/intel-rapl:0",
        "package-0",
    ),
    (
        "/devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0",
        "core",
    ),
];
pub const THERMAL: &str = "/devices/virtual/thermal/thermal_zone0";

impl FixtureSysfs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let class = sys.join("class/powercap");
        fs::create_dir_all(&class).unwrap();
        fs::create_dir_all(sys.join(CONTROL_TYPE.trim_start_matches('/'))).unwrap();
        fs::write(
            sys.join(CONTROL_TYPE.trim_start_matches('/'))
                .join("enabled"),
            "1\n",
        )
        .unwrap();
        for (devpath, name) in ZONES {
            let zone = sys.join(devpath.trim_start_matches('/'));
            fs::create_dir_all(&zone).unwrap();
            fs::write(zone.join("name"), format!("{name}\n")).unwrap();
            fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
            fs::write(zone.join("energy_uj"), "1000000\n").unwrap();
            let zone_name = Path::new(devpath).file_name().unwrap();
            std::os::unix::fs::symlink(&zone, class.join(zone_name)).unwrap();
        }
        let thermal = sys.join(THERMAL.trim_start_matches('/'));
        fs::create_dir_all(&thermal).unwrap();
        fs::write(thermal.join("energy_uj"), "1\n").unwrap();
        // readable by all, except the counters
        for d in [dir.path().to_path_buf(), sys.clone()] {
            chmod(&d, 0o755);
        }
        for f in Self::energy_files_of(&sys)
            .into_iter()
            .chain([thermal.join("energy_uj")])
        {
            chmod(&f, 0o400);
        }
        Self { dir }
    }

    pub fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    fn energy_files_of(sys: &Path) -> Vec<PathBuf> {
        ZONES
            .iter()
            .map(|(devpath, _)| sys.join(devpath.trim_start_matches('/')).join("energy_uj"))
            .collect()
    }

    pub fn energy_files(&self) -> Vec<PathBuf> {
        Self::energy_files_of(&self.sys())
    }

    pub fn thermal_file(&self) -> PathBuf {
        self.sys()
            .join(THERMAL.trim_start_matches('/'))
            .join("energy_uj")
    }

    /// `doctor` of the installed binary, as `nobody`, with these
    /// supplementary groups, on this tree.
    pub fn doctor_as_nobody(&self, groups: &[u32]) -> (Option<i32>, String) {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534"]);
        if groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            c.arg(format!("--groups={}", list.join(",")));
        }
        let o = run(c
            .args([
                "--",
                "/usr/bin/alumet-agent",
                "--plugins",
                "rapl",
                "--config",
            ])
            .arg(self.dir.path().join("no-such-config.toml"))
            .arg("--set")
            .arg(format!(
                "plugins.rapl.sysfs_root={:?}",
                self.sys().to_str().unwrap()
            ))
            // A bare-metal machine (an empty proc root: no hypervisor flag)
            // whose static counters are about permissions here, not about
            // counting (tests/e2e_trust.rs has the doctor on dead counters).
            .arg("--set")
            .arg(format!(
                "plugins.rapl.proc_root={:?}",
                self.dir.path().join("no-proc").to_str().unwrap()
            ))
            .args(["--set", "plugins.rapl.counting_check=\"0s\""])
            .arg("doctor")
            .env_remove("ALUMET_CONFIG")
            .env_remove("RUST_LOG"));
        (o.status.code(), text(&o.stdout))
    }
}
