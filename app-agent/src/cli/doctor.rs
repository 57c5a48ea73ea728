//! `alumet-agent doctor`: for the user who runs it, which plugins can run
//! and, for each that cannot, the exact commands that would fix it. It only
//! reads (the configured sysfs and procfs roots, `/etc/group`,
//! `/etc/passwd`, `/proc/self/status`, the udev rule directories) and
//! changes nothing.
//!
//! Each plugin's own availability check says whether it can run; for RAPL,
//! the most common set-up failure, the doctor looks further: who may read
//! `energy_uj` (the group `alumet` and the udev rule the Debian package
//! installs) and whether perf_event is open to this user
//! (`perf_event_paranoid`, `CAP_PERFMON`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use plugin_procfs::ProcfsConfig;
use plugin_rapl::{perf, powercap, RaplConfig};

use crate::config::load::LoadedConfig;

/// The system group whose members may read `energy_uj`.
pub const GROUP: &str = "alumet";

/// The udev rule that gives the group read access, as the package installs it.
const UDEV_RULE: &str = include_str!("../../debian/60-alumet-powercap.rules");

/// Its file name.
const UDEV_RULE_NAME: &str = "60-alumet-powercap.rules";

/// Where udev reads rules from (a local copy in /etc, the package's in /lib).
const UDEV_RULE_DIRS: [&str; 3] = [
    "/etc/udev/rules.d",
    "/usr/lib/udev/rules.d",
    "/lib/udev/rules.d",
];

/// Capability bits (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;

/// The process that runs the doctor, as the kernel sees it.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    /// Effective user id.
    uid: u32,
    /// Effective group id and supplementary groups.
    gids: Vec<u32>,
    /// Effective capabilities.
    cap_eff: u64,
}

impl Identity {
    /// From the text of `/proc/self/status`.
    fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let second = |text: &str| text.split_whitespace().nth(1)?.parse::<u32>().ok();
        let uid = second(field("Uid")?)?;
        let mut gids = vec![second(field("Gid")?)?];
        for g in field("Groups")?.split_whitespace() {
            gids.push(g.parse().ok()?);
        }
        let cap_eff = u64::from_str_radix(field("CapEff")?, 16).ok()?;
        Some(Self { uid, gids, cap_eff })
    }

    fn has_cap(&self, bit: u32) -> bool {
        self.cap_eff & (1u64 << bit) != 0
    }

    /// Whether perf_event lets this process open system-wide counters
    /// whatever `perf_event_paranoid` says.
    fn perf_privileged(&self) -> bool {
        self.uid == 0 || self.has_cap(CAP_PERFMON) || self.has_cap(CAP_SYS_ADMIN)
    }
}

/// A line of `/etc/group`.
#[derive(Debug, Clone, PartialEq)]
struct GroupEntry {
    gid: u32,
    members: Vec<String>,
}

/// `name`'s entry in the text of `/etc/group`.
fn find_group(etc_group: &str, name: &str) -> Option<GroupEntry> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let gid = fields.nth(1)?.trim().parse().ok()?;
        let members = fields
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        Some(GroupEntry { gid, members })
    })
}

/// The name and primary group of `uid` in the text of `/etc/passwd`.
fn find_user(etc_passwd: &str, uid: u32) -> Option<(String, u32)> {
    etc_passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.get(2)?.parse::<u32>().ok()? != uid {
            return None;
        }
        Some((fields[0].to_owned(), fields.get(3)?.parse().ok()?))
    })
}

/// An `energy_uj` this user may not open.
#[derive(Debug, Clone, PartialEq)]
struct UnreadableFile {
    path: PathBuf,
    gid: u32,
    mode: u32,
}

/// What decides how this user gets read access to `energy_uj`.
#[derive(Debug, Clone, PartialEq)]
struct PowercapFacts {
    user: String,
    group: Option<GroupEntry>,
    /// The user's primary group, if known.
    primary_gid: Option<u32>,
    /// The groups of this session.
    session_gids: Vec<u32>,
    rule_installed: Option<PathBuf>,
    unreadable: Vec<UnreadableFile>,
}

/// One thing to run, and why.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    command: String,
    why: String,
}

fn step(command: impl Into<String>, why: impl Into<String>) -> Step {
    Step {
        command: command.into(),
        why: why.into(),
    }
}

/// The rule's effective lines (comments left out).
fn rule_lines() -> impl Iterator<Item = &'static str> {
    UDEV_RULE
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
}

/// The commands that make every unreadable `energy_uj` readable by
/// `facts.user` through the group, in the order they must run.
fn powercap_steps(facts: &PowercapFacts) -> Vec<Step> {
    let mut steps = Vec::new();
    if facts.group.is_none() {
        steps.push(step(
            format!("sudo addgroup --system {GROUP}"),
            format!("the group `{GROUP}` does not exist (the alumet-agent package creates it)"),
        ));
    }
    if facts.rule_installed.is_none() {
        let rule: Vec<&str> = rule_lines().collect();
        steps.push(step(
            format!(
                "printf '%s\\n' '{}' | sudo tee /etc/udev/rules.d/{UDEV_RULE_NAME} >/dev/null",
                rule.join("' '")
            ),
            "the udev rule that gives the group read access is not installed (the package installs it)",
        ));
    }
    let granted = facts.group.as_ref().is_some_and(|g| {
        facts
            .unreadable
            .iter()
            .all(|f| f.gid == g.gid && f.mode & 0o040 != 0)
    });
    if !granted {
        steps.push(step(
            "sudo udevadm trigger --subsystem-match=powercap",
            "apply the rule to the zones present now (new zones get it when they appear)",
        ));
    }
    let listed = facts
        .group
        .as_ref()
        .is_some_and(|g| g.members.contains(&facts.user) || facts.primary_gid == Some(g.gid));
    let in_session = facts
        .group
        .as_ref()
        .is_some_and(|g| facts.session_gids.contains(&g.gid));
    if !listed && !in_session {
        steps.push(step(
            format!("sudo adduser {} {GROUP}", facts.user),
            "then log out and back in (or run `newgrp alumet`) so that the session has the group",
        ));
    } else if !in_session {
        steps.push(step(
            format!("newgrp {GROUP}"),
            format!(
                "{} is in the group but this session started before: log out and back in, or start a shell with the group",
                facts.user
            ),
        ));
    }
    if steps.is_empty() {
        if let Some(f) = facts.unreadable.first() {
            steps.push(step(
                format!("ls -l {}", f.path.display()),
                "the group has read access and this session has the group, yet the file cannot be read: look for a security module (AppArmor, SELinux) or a container that mounts sysfs differently",
            ));
        }
    }
    steps
}

/// The commands that open perf_event's RAPL counters to this user, when
/// the power PMU exists and the kernel denies them.
fn perf_steps(paranoid: Option<i32>, privileged: bool, exe: &Path) -> Vec<Step> {
    match paranoid {
        Some(level) if level > 0 && !privileged => vec![
            step(
                "sudo sysctl kernel.perf_event_paranoid=0",
                format!("kernel.perf_event_paranoid is {level}: 0 lets every user read system-wide counters (until reboot; persist it in /etc/sysctl.d/)"),
            ),
            step(
                format!("sudo setcap cap_perfmon=ep {}", exe.display()),
                "or: give this binary CAP_PERFMON, for every user who runs it",
            ),
        ],
        _ => Vec::new(),
    }
}

/// The facts the doctor reads from this machine.
struct Machine {
    identity: Option<Identity>,
    user: String,
    primary_gid: Option<u32>,
    group: Option<GroupEntry>,
    rule_installed: Option<PathBuf>,
    exe: PathBuf,
}

impl Machine {
    fn read() -> Self {
        let identity = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| Identity::parse(&s));
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let found = identity.as_ref().and_then(|i| find_user(&passwd, i.uid));
        let (user, primary_gid) = match found {
            Some((name, gid)) => (name, Some(gid)),
            None => (
                std::env::var("USER").unwrap_or_else(|_| "$USER".to_owned()),
                None,
            ),
        };
        let group = std::fs::read_to_string("/etc/group")
            .ok()
            .and_then(|g| find_group(&g, GROUP));
        let rule_installed = UDEV_RULE_DIRS
            .iter()
            .map(|d| Path::new(d).join(UDEV_RULE_NAME))
            .find(|p| p.is_file());
        let exe =
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/alumet-agent"));
        Self {
            identity,
            user,
            primary_gid,
            group,
            rule_installed,
            exe,
        }
    }
}

/// The `energy_uj` files under `sysfs_root` this process may not open.
fn unreadable_energy_files(sysfs_root: &Path) -> Vec<UnreadableFile> {
    let Ok(discovery) = powercap::discover(sysfs_root) else {
        return Vec::new();
    };
    discovery
        .zones
        .iter()
        .map(|z| z.energy_path())
        .filter_map(|path| match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let meta = std::fs::metadata(&path).ok()?;
                Some(UnreadableFile {
                    gid: meta.gid(),
                    mode: meta.mode() & 0o7777,
                    path,
                })
            }
            _ => None,
        })
        .collect()
}

/// A group id as a name where it is `alumet` or root, else as a number.
fn group_name(gid: u32, alumet: Option<&GroupEntry>) -> String {
    match (gid, alumet) {
        (0, _) => "root".to_owned(),
        (g, Some(a)) if a.gid == g => GROUP.to_owned(),
        (g, _) => g.to_string(),
    }
}

fn print_steps(steps: &[Step]) {
    for s in steps {
        println!("    {}", s.command);
        println!("        # {}", s.why);
    }
}

/// What the doctor adds under the rapl plugin's line when it cannot run.
fn explain_rapl(rapl: &RaplConfig, proc_root: &Path, machine: &Machine) {
    let session_gids = machine
        .identity
        .as_ref()
        .map(|i| i.gids.clone())
        .unwrap_or_default();
    let unreadable = unreadable_energy_files(&rapl.sysfs_root);
    if let Some(first) = unreadable.first() {
        println!(
            "  {} energy_uj file(s) under {} cannot be read by {} ({}: group {}, mode {:04o}).",
            unreadable.len(),
            rapl.sysfs_root.join(powercap::POWERCAP_DIR).display(),
            machine.user,
            first.path.display(),
            group_name(first.gid, machine.group.as_ref()),
            first.mode
        );
        println!("  To read them through the group `{GROUP}`, without root, run:");
        let facts = PowercapFacts {
            user: machine.user.clone(),
            group: machine.group.clone(),
            primary_gid: machine.primary_gid,
            session_gids,
            rule_installed: machine.rule_installed.clone(),
            unreadable,
        };
        print_steps(&powercap_steps(&facts));
    }
    if perf::discover(&rapl.sysfs_root).is_ok() {
        let paranoid = std::fs::read_to_string(proc_root.join("sys/kernel/perf_event_paranoid"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        let privileged = machine
            .identity
            .as_ref()
            .is_some_and(Identity::perf_privileged);
        let steps = perf_steps(paranoid, privileged, &machine.exe);
        if !steps.is_empty() {
            println!("  Or read RAPL through perf_event, with one of:");
            print_steps(&steps);
        }
    }
}

/// Runs the checks and prints the report. Exits 0 when every enabled plugin
/// can run or has simply nothing to measure here (no GPU, no RAPL, the dead
/// counters of a virtual machine); 1 when one cannot run because of a fault
/// a person can fix (a permission, a counter that does not count on bare
/// metal, a broken driver).
pub fn run(config: &LoadedConfig, config_found: bool) -> i32 {
    let machine = Machine::read();
    let uid = machine
        .identity
        .as_ref()
        .map(|i| i.uid.to_string())
        .unwrap_or_else(|| "?".to_owned());
    println!(
        "alumet-agent doctor: checks for user {} (uid {uid}); nothing is changed",
        machine.user
    );
    if config_found {
        println!("configuration: {}", config.path.display());
    } else {
        println!(
            "configuration: the defaults ({} does not exist)",
            config.path.display()
        );
    }
    println!("machine: {}", config.machine_kind());
    println!();
    println!("{:<20} {:<8} CAN RUN", "PLUGIN", "ENABLED");
    let mut failures = Vec::new();
    let mut faults = 0;
    for (meta, table, enabled) in &config.plugins {
        let result = (meta.check_availability)(table.clone());
        let can_run = match &result {
            Ok(()) => "yes",
            Err(e) if e.is_absent() => "absent",
            Err(_) => "no",
        };
        println!(
            "{:<20} {:<8} {can_run}",
            meta.name,
            if *enabled { "yes" } else { "no" },
        );
        if let Err(e) = result {
            if *enabled && !e.is_absent() {
                faults += 1;
            }
            failures.push((meta.name, table, *enabled, e));
        }
    }
    let rapl_runs = config.is_enabled("rapl") && !failures.iter().any(|f| f.0 == "rapl");
    print_inventories(config);
    if failures.is_empty() {
        println!("\nevery plugin can run here as {}", machine.user);
    } else if faults > 0 {
        println!("\nwhy, and how to fix it:");
    } else {
        println!("\nwhy some plugins do not run (information: nothing to fix):");
    }
    for (name, table, enabled, error) in failures {
        if !enabled {
            println!("{name} (disabled): {error}");
            continue;
        }
        if error.is_absent() {
            println!("{name} (nothing to measure here, not a fault): {error}");
            continue;
        }
        println!("{name}: {error}");
        if name == "rapl" {
            let rapl: RaplConfig =
                alumet::config::deserialize_config(table.clone()).unwrap_or_default();
            let proc_root = procfs_root(config);
            explain_rapl(&rapl, &proc_root, &machine);
        }
    }
    println!();
    println!("CPU energy: {}", cpu_energy_line(config, rapl_runs));
    if faults > 0 {
        1
    } else {
        0
    }
}

/// What each enabled plugin found here (hwmon channels, a BMC's sensors...)
/// and what each will be reported as.
fn print_inventories(config: &LoadedConfig) {
    for (meta, table, enabled) in &config.plugins {
        if !enabled {
            continue;
        }
        let lines = (meta.inventory)(table.clone());
        if lines.is_empty() {
            continue;
        }
        println!("\n{} found:", meta.name);
        for line in lines {
            println!("  {line}");
        }
    }
}

/// How the CPU's energy will be known: measured by rapl, estimated by
/// cpu-power-model (and with which model), or not at all.
fn cpu_energy_line(config: &LoadedConfig, rapl_runs: bool) -> String {
    if rapl_runs {
        return "measured by rapl".to_owned();
    }
    if !config.is_enabled("cpu-power-model") {
        return "not measured and not estimated (enable cpu-power-model for an estimate)"
            .to_owned();
    }
    let model: plugin_cpu_power_model::Config = config.section("cpu-power-model");
    let topology = plugin_cpu_power_model::topology::read(&model.proc_root, &model.sys_root);
    let cpu = plugin_cpu_power_model::cpus::cpuinfo_model_name(&model.proc_root);
    match topology.map_err(|e| e.to_string()).and_then(|t| {
        plugin_cpu_power_model::choose_model(&model, &t, cpu.as_deref()).map_err(|e| e.to_string())
    }) {
        Ok(m) => format!(
            "will be ESTIMATED by cpu-power-model (model {}), not measured",
            m.name
        ),
        Err(e) => format!("not measured, and cpu-power-model cannot estimate it: {e}"),
    }
}

/// Where procfs is, from `[plugins.procfs]` (for `perf_event_paranoid`).
fn procfs_root(config: &LoadedConfig) -> PathBuf {
    config.section::<ProcfsConfig>("procfs").proc_root
}

#[cfg(test)]
mod tests;
