//! `exec` measures the whole command, however short-lived its processes:
//! the agent as a process, on this machine's real cgroups, RAPL on a
//! fixture at 50 W with 10 W idle.
//! - a shell loop of short-lived python3 processes, RAPL following the
//!   machine's load: its dynamic energy share is its share of the machine's
//!   busy CPU time (from the agent's own `cpu_time` points) within 10 %,
//!   its CPU time wait4's within 5 %;
//! - a daemonised grandchild that outlives the command is counted and
//!   reported, and the agent exits with the command;
//! - without a cgroup (creation made to fail) the report says "process
//!   tree" and still counts the short-lived children (their parent's cutime);
//! - the cgroup is gone after exec, also when the command is killed by a
//!   signal and when the agent gets SIGTERM mid-run;
//! - the command is in its cgroup from its first instruction;
//! - a command cgroup left by a killed agent is removed by the next exec.
//!
//! Needs root to create cgroups: without it the tests say so and pass,
//! except in CI (`CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{read_csv, RaplFixture};

/// The tests of this file one at a time: each measures the machine's CPU.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn can_create_cgroups() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root || std::env::var("CI").is_err(), "CI runs as root");
    if !root {
        eprintln!("skipped: creating cgroups needs root");
    }
    root
}

/// Every directory named `alumet-exec-<pid>` under /sys/fs/cgroup (any hierarchy, any parent).
fn exec_cgroups_of(pid: u32) -> Vec<PathBuf> {
    let name = format!("alumet-exec-{pid}");
    let mut found = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name().to_str() == Some(name.as_str()) {
                found.push(e.path());
            } else if depth < 5 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    found
}

fn agent(dir: &Path, rapl: &RaplFixture) -> Command {
    let mut c = common::agent_command();
    c.current_dir(dir)
        .args(["--config", dir.join("alumet-config.toml").to_str().unwrap()])
        .args(["--plugins", "cgroups,rapl,procfs,energy-attribution,csv"])
        .args(&rapl.args)
        .args(["--set", "plugins.rapl.interface=\"powercap\""])
        .args(["--set", "plugins.rapl.poll_interval=\"200ms\""])
        .args(["--set", "plugins.rapl.flush_interval=\"200ms\""])
        .args(["--set", "plugins.cgroups.poll_interval=\"200ms\""])
        .args(["--set", "plugins.cgroups.flush_interval=\"200ms\""])
        .args(["--set", "plugins.procfs.system_poll_interval=\"200ms\""])
        .args(["--set", "plugins.procfs.process_poll_interval=\"200ms\""])
        .args(["--set", "plugins.procfs.flush_interval=\"200ms\""])
        .args([
            "--set",
            "plugins.energy-attribution.idle_power_w={ package = 10.0 }",
        ])
        .args(["--set", "plugins.csv.timestamp_format=\"unix_ns\""])
        .args(["--output-file", "out.csv"])
        .stdin(Stdio::null());
    c
}

fn json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn cpu_seconds(report: &serde_json::Value) -> (f64, f64) {
    let u = &report["command_usage"];
    let measured = u["user_cpu_s"].as_f64().unwrap()
        + u["system_cpu_s"].as_f64().unwrap()
        + u["children_cpu_s"].as_f64().unwrap();
    let w = &report["wait4"];
    (
        measured,
        w["user_cpu_s"].as_f64().unwrap() + w["system_cpu_s"].as_f64().unwrap(),
    )
}

#[test]
fn a_loop_of_short_lived_processes_gets_its_share_and_its_cpu_time() {
    if !can_create_cgroups() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // 10 W idle (as configured) + 20 W per busy CPU: each interval's dynamic
    // energy follows its busy CPU time, so shares add up whatever else runs.
    let rapl = RaplFixture::start_load_following(dir.path(), 10.0, 20.0);
    let script = "for i in $(seq 12); do python3 -c 'sum(range(1500000))'; done";
    let out = agent(dir.path(), &rapl)
        .args(["exec", "--json", "report.json", "--", "sh", "-c", script])
        .output()
        .unwrap();
    drop(rapl);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("measured as cgroup /"), "{stderr}");
    let report = json(dir.path());
    let (measured, wait4) = cpu_seconds(&report);
    assert!(wait4 > 0.3, "{stderr}");
    assert!(
        (measured - wait4).abs() <= 0.05 * wait4,
        "cgroup {measured} s vs wait4 {wait4} s\n{stderr}"
    );

    let path = report["measured_as"]["cgroup"].as_str().unwrap().to_owned();
    let rows = read_csv(&dir.path().join("out.csv"));
    // The command's window: from one poll interval before its first cgroup
    // point (the baseline poll) to its last; the other sources poll on
    // their own threads, a few ms apart.
    let polls: BTreeSet<u64> = rows
        .iter()
        .filter(|r| r.metric == "cgroup_cpu_time" && r.consumer.1 == path)
        .map(|r| r.timestamp_ns)
        .collect();
    let (first, last) = (*polls.first().unwrap(), *polls.last().unwrap());
    let in_window = |t: u64| t + 150_000_000 > first && t <= last + 50_000_000;
    let command_cpu: f64 = rows
        .iter()
        .filter(|r| r.metric == "cgroup_cpu_time" && r.consumer.1 == path)
        .map(|r| r.value)
        .sum();
    let busy_cpu: f64 = rows
        .iter()
        .filter(|r| {
            r.metric == "cpu_time" && r.consumer.0 == "local_machine" && in_window(r.timestamp_ns)
        })
        .filter(|r| {
            matches!(
                r.attr("state"),
                Some("user" | "nice" | "system" | "irq" | "softirq")
            )
        })
        .map(|r| r.value)
        .sum();
    let dynamic = |filter: &dyn Fn(&common::Row) -> bool| -> f64 {
        rows.iter()
            .filter(|r| r.attr("level") == Some("cgroup") && r.attr("part") == Some("dynamic"))
            .filter(|r| r.resource.0 == "cpu_package" && in_window(r.timestamp_ns))
            .filter(|r| filter(r))
            .map(|r| r.value)
            .sum()
    };
    let command_j = dynamic(&|r| r.metric == "attributed_energy" && r.consumer.1 == path);
    let all_j = dynamic(&|r| r.metric == "attributed_energy" || r.metric == "unattributed_energy");
    let cpu_share = command_cpu / busy_cpu;
    let energy_share = command_j / all_j;
    eprintln!("command {command_cpu:.3} s of {busy_cpu:.3} s busy ({cpu_share:.3}); {command_j:.2} J of {all_j:.2} J dynamic ({energy_share:.3})");
    assert!(
        cpu_share > 0.01,
        "the loop used {cpu_share} of the busy CPU\n{stderr}"
    );
    assert!(
        (energy_share - cpu_share).abs() <= 0.1 * cpu_share,
        "energy share {energy_share} vs CPU share {cpu_share}\n{stderr}"
    );
    // The report's number is the same attribution.
    let package = report["energy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["domain"] == "package")
        .unwrap_or_else(|| panic!("{report}"));
    let reported = package["command_dynamic_energy_j"].as_f64().unwrap();
    assert!(
        (reported - command_j).abs() <= 0.1 * command_j,
        "report {reported} J vs CSV {command_j} J"
    );
}

#[test]
fn a_daemonised_grandchild_is_counted_and_reported_and_the_agent_exits_with_the_command() {
    let _serial = serial();
    if !can_create_cgroups() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rapl = RaplFixture::start(dir.path(), 50.0);
    let script = "sh -c 'i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; exec sleep 30' </dev/null >/dev/null 2>&1 & echo $! > daemon.pid; sleep 1";
    let started = Instant::now();
    let out = agent(dir.path(), &rapl)
        .args(["exec", "--json", "report.json", "--", "sh", "-c", script])
        .output()
        .unwrap();
    let took = started.elapsed();
    drop(rapl);
    let daemon: i32 = fs::read_to_string(dir.path().join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = Path::new(&format!("/proc/{daemon}")).exists();
    // SAFETY: kill(2) of the daemon the test started.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(alive, "the daemon should outlive the command");
    assert!(
        took < Duration::from_secs(20),
        "the agent waited for the daemon: {took:?}"
    );
    let report = json(dir.path());
    let outlived: Vec<i64> = report["outlived"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(outlived, vec![i64::from(daemon)], "{stderr}");
    assert!(stderr.contains("outlived the command"), "{stderr}");
    // Its busy loop ran while the command did: counted in the command's CPU time.
    let (measured, wait4) = cpu_seconds(&report);
    assert!(
        measured > wait4 + 0.05,
        "cgroup {measured} s, wait4 (without the daemon) {wait4} s"
    );
}

#[test]
fn without_a_cgroup_the_process_tree_still_counts_short_lived_children() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let rapl = RaplFixture::start(dir.path(), 50.0);
    let script =
        "for i in $(seq 25); do sh -c 'i=0; while [ $i -lt 15000 ]; do i=$((i+1)); done'; done";
    let out = agent(dir.path(), &rapl)
        .args(["--set", "agent.exec_cgroup_parent=\"/no/such/parent\""])
        .args(["exec", "--json", "report.json", "--", "sh", "-c", script])
        .output()
        .unwrap();
    drop(rapl);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no cgroup for the command"), "{stderr}");
    assert!(stderr.contains("measured as process tree"), "{stderr}");
    let report = json(dir.path());
    assert_eq!(report["measured_as"]["method"], "process tree");
    let (measured, wait4) = cpu_seconds(&report);
    assert!(wait4 > 0.2, "{stderr}");
    assert!(
        report["command_usage"]["children_cpu_s"].as_f64().unwrap() > 0.5 * wait4,
        "the short-lived children are counted through their parent\n{stderr}"
    );
    assert!(
        (measured - wait4).abs() <= 0.1 * wait4 + 0.02,
        "process tree {measured} s vs wait4 {wait4} s\n{stderr}"
    );
}

#[test]
fn the_cgroup_is_gone_after_exec_also_when_killed_or_terminated() {
    let _serial = serial();
    if !can_create_cgroups() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rapl = RaplFixture::start(dir.path(), 50.0);
    for (script, code) in [("true", 0), ("kill -9 $$", 137)] {
        let child = agent(dir.path(), &rapl)
            .args(["exec", "--", "sh", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("measured as cgroup"), "{stderr}");
        assert_eq!(exec_cgroups_of(pid), Vec::<PathBuf>::new(), "{script}");
    }
    // SIGTERM to the agent mid-run: passed on to the command, which ends; then the cgroup goes.
    let child = agent(dir.path(), &rapl)
        .args(["exec", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let created = common::wait_until(Duration::from_secs(20), || !exec_cgroups_of(pid).is_empty());
    assert!(created, "no alumet-exec-{pid} cgroup appeared");
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = common::sigterm_and_wait(child);
    assert_eq!(code, Some(128 + libc::SIGTERM), "{stderr}");
    assert_eq!(exec_cgroups_of(pid), Vec::<PathBuf>::new(), "{stderr}");
}

#[test]
fn the_command_is_in_its_cgroup_from_its_first_instruction() {
    let _serial = serial();
    if !can_create_cgroups() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rapl = RaplFixture::start(dir.path(), 50.0);
    // The shell's first `cat` reads its cgroups before anything else: already
    // the command's, in every hierarchy the cgroup was made in (on a hybrid
    // machine, v1 ones beside v2), which `find` then lists.
    let child = agent(dir.path(), &rapl)
        .args([
            "exec",
            "--",
            "sh",
            "-c",
            "cat /proc/self/cgroup; echo ---; find /sys/fs/cgroup -maxdepth 7 -type d -name \"alumet-exec-$PPID\"",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    drop(rapl);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (cgroups, dirs) = stdout.split_once("---").unwrap();
    let name = format!("/alumet-exec-{pid}");
    let in_own = cgroups
        .lines()
        .filter(|l| l.trim_end().ends_with(&name))
        .count();
    let made = dirs.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(made >= 1, "{stdout}\n{stderr}");
    assert_eq!(
        in_own, made,
        "the command's /proc/self/cgroup names {name} in {in_own} of the {made} hierarchies it was made in:\n{stdout}\n{stderr}"
    );
    // The cgroup the report names is that one.
    assert!(
        stderr.contains("measured as cgroup ") && stderr.contains(&name),
        "{stderr}"
    );
}

#[test]
fn a_command_cgroup_left_by_a_killed_agent_is_removed_by_the_next_exec() {
    let _serial = serial();
    if !can_create_cgroups() {
        return;
    }
    // The agent creates its command's cgroup beside itself, in the cgroup of
    // this test (its parent), in the hierarchy that accounts CPU time: v2 or
    // v1 cpuacct, depending on what managers left in cpuacct. A stale
    // cgroup goes in both; the one in the agent's hierarchy must go.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut candidates = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mounts: &[&str] = if controllers.is_empty() {
            &["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        } else if controllers.split(',').any(|c| c == "cpuacct") {
            &["/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"]
        } else {
            &[]
        };
        let marker = if controllers.is_empty() {
            "cgroup.controllers"
        } else {
            "cpuacct.usage"
        };
        if let Some(m) = mounts.iter().find(|m| Path::new(m).join(marker).exists()) {
            candidates.push(format!("{m}{}", path.trim_end_matches('/')));
        }
    }
    if candidates.is_empty() {
        eprintln!("skipped: no cgroup v2 or v1 cpuacct mount");
        return;
    }
    // A pid that ran and is gone: an agent killed before its cleanup.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale: Vec<PathBuf> = candidates
        .iter()
        .map(|parent| PathBuf::from(format!("{parent}/alumet-exec-{dead_pid}")))
        .collect();
    for s in &stale {
        fs::create_dir(s).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let rapl = RaplFixture::start(dir.path(), 50.0);
    let out = agent(dir.path(), &rapl)
        .args(["-v", "exec", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let removed: Vec<&PathBuf> = stale
        .iter()
        .filter(|s| stderr.contains(&format!("removed {}, left behind", s.display())))
        .collect();
    let still_there: Vec<bool> = removed.iter().map(|s| s.exists()).collect();
    for s in &stale {
        let _ = fs::remove_dir(s);
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("measured as cgroup"), "{stderr}");
    assert!(!removed.is_empty(), "none of {stale:?} removed:\n{stderr}");
    assert!(
        still_there.iter().all(|e| !e),
        "{removed:?} said removed but still there"
    );
}
