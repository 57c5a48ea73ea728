//! The agent as a process with `cgroups,rapl,procfs,energy-attribution,csv`:
//! two real cgroups that the test creates, busy 3:1 (three spinning shells
//! in one, one in the other, for the same 2 s), RAPL on a fixture powercap
//! tree advanced at 20 W, idle power 5 W. After SIGTERM the CSV holds:
//! - the cgroups' CPU time equal to the kernel's figure (nothing lost at shutdown);
//! - their attributed energy (level=cgroup) in a 3:1 ratio within 10 %;
//! - per interval, cgroup-level attributed + unattributed = the dynamic
//!   energy that the process level also splits (to 1e-9 relative), and never
//!   a cgroup and its ancestor both attributed.
//!
//! And the agent on a cgroup root with nothing in it says so in one line
//! and runs the other plugins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use alumet_kernelfs::cgroup::{
    join_raw, kernel_cpu_seconds, CgroupLayout, CommandCgroup, HierarchyChoice, ParentChoice,
};
use common::{read_csv, wait_until};

fn spin_in(cgroup: &CommandCgroup, flag: &Path) -> std::process::Child {
    let fds = cgroup.join_fds();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("while [ -e '{}' ]; do :; done", flag.display()));
    // SAFETY: the closure only calls write(2) and sched_setaffinity(2),
    // on descriptors and a CPU set made before the fork.
    unsafe {
        let mut one_cpu: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut one_cpu);
        cmd.pre_exec(move || {
            join_raw(&fds)?;
            // All spinners on CPU 0: the scheduler then gives each the same
            // share in every interval, whatever else runs on the machine.
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one_cpu) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

#[test]
fn two_real_cgroups_busy_3_to_1_get_energy_3_to_1_and_nothing_is_lost() {
    let layout = match CgroupLayout::detect(Path::new("/sys/fs/cgroup"), Path::new("/proc")) {
        Ok(l) => l,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "CI must have cgroups: {e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let accounting = layout.accounting(HierarchyChoice::Auto).unwrap();
    let tag = format!("alumet-e2e-{}", std::process::id());
    let created = (
        CommandCgroup::create_for_command(
            &accounting,
            Path::new("/proc"),
            &[ParentChoice::Own, ParentChoice::Root],
            &format!("{tag}-a"),
        ),
        CommandCgroup::create_for_command(
            &accounting,
            Path::new("/proc"),
            &[ParentChoice::Own, ParentChoice::Root],
            &format!("{tag}-b"),
        ),
    );
    let (a, b) = match created {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            assert!(std::env::var("CI").is_err(), "CI runs as root: {a:?} {b:?}");
            eprintln!("skipped: cannot create cgroups here");
            return;
        }
    };

    let dir = tempfile::tempdir().unwrap();
    let rapl = common::RaplFixture::start(dir.path(), 20.0);
    let csv_path = dir.path().join("out.csv");
    let include = format!("plugins.cgroups.include=[\"*/{tag}-*\"]");
    let agent = common::agent_command()
        .current_dir(dir.path())
        .args([
            "--config",
            dir.path().join("alumet-config.toml").to_str().unwrap(),
        ])
        .args(["--plugins", "cgroups,rapl,procfs,energy-attribution,csv"])
        .args(&rapl.args)
        .args(["--set", "plugins.rapl.interface=\"powercap\""])
        .args(["--set", "plugins.rapl.poll_interval=\"100ms\""])
        .args(["--set", "plugins.rapl.flush_interval=\"100ms\""])
        .args(["--set", "plugins.cgroups.poll_interval=\"200ms\""])
        .args(["--set", "plugins.cgroups.flush_interval=\"200ms\""])
        .args(["--set", "plugins.procfs.process_poll_interval=\"200ms\""])
        .args(["--set", "plugins.procfs.flush_interval=\"200ms\""])
        .args(["--set", &include])
        .args([
            "--set",
            "plugins.energy-attribution.idle_power_w={ package = 5.0 }",
        ])
        .args(["--set", "plugins.csv.timestamp_format=\"unix_ns\""])
        .args(["--set", "plugins.csv.flush_interval=\"100ms\""])
        .args(["--output-file", csv_path.to_str().unwrap()])
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The cgroups are measured (their first poll is the baseline) before they get busy.
    let a_path = a.path().to_owned();
    let started = wait_until(Duration::from_secs(20), || {
        fs::read_to_string(&csv_path).is_ok_and(|t| t.contains("cgroups_measured"))
    });
    assert!(started, "the agent wrote no cgroups point");
    std::thread::sleep(Duration::from_millis(300));

    let flag = dir.path().join("spin");
    fs::write(&flag, "").unwrap();
    let mut children: Vec<_> = (0..3).map(|_| spin_in(&a, &flag)).collect();
    children.push(spin_in(&b, &flag));
    std::thread::sleep(Duration::from_secs(2));
    fs::remove_file(&flag).unwrap();
    for c in &mut children {
        c.wait().unwrap();
    }
    let kernel_a = kernel_cpu_seconds(&accounting, a.path()).unwrap();
    let kernel_b = kernel_cpu_seconds(&accounting, b.path()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = common::sigterm_and_wait(agent);
    drop(rapl);
    let b_path = b.path().to_owned();
    a.remove(Duration::from_secs(2)).unwrap();
    b.remove(Duration::from_secs(2)).unwrap();
    assert_eq!(code, Some(0), "{stderr}");

    let rows = read_csv(&csv_path);
    let cpu_of = |path: &str| -> f64 {
        rows.iter()
            .filter(|r| r.metric == "cgroup_cpu_time" && r.consumer.1 == path)
            .map(|r| r.value)
            .sum()
    };
    let (cpu_a, cpu_b) = (cpu_of(&a_path), cpu_of(&b_path));
    for (agent, kernel) in [(cpu_a, kernel_a), (cpu_b, kernel_b)] {
        assert!(
            (agent - kernel).abs() <= 0.02 * kernel,
            "agent {agent} s vs kernel {kernel} s\n{stderr}"
        );
    }

    let is_cgroup_level = |r: &&common::Row| r.attr("level") == Some("cgroup");
    let energy_of = |path: &str| -> f64 {
        rows.iter()
            .filter(is_cgroup_level)
            .filter(|r| r.metric == "attributed_energy" && r.consumer.1 == path)
            .map(|r| r.value)
            .sum()
    };
    let (energy_a, energy_b) = (energy_of(&a_path), energy_of(&b_path));
    eprintln!("cpu {cpu_a:.3} s / {cpu_b:.3} s, energy {energy_a:.3} J / {energy_b:.3} J");
    assert!(energy_b > 0.1, "{energy_b} J\n{stderr}");
    let ratio = energy_a / energy_b;
    let cpu_ratio = cpu_a / cpu_b;
    assert!(
        (cpu_ratio - 3.0).abs() <= 0.3,
        "the spinners shared CPU 0 {cpu_ratio}:1"
    );
    assert!(
        (ratio - 3.0).abs() <= 0.3,
        "energy ratio {ratio}, cpu ratio {cpu_ratio}"
    );

    // Per (domain, interval end): both levels split the same dynamic energy.
    let mut by_level: BTreeMap<(String, u64), (f64, f64)> = BTreeMap::new();
    let mut attributed_cgroups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for r in &rows {
        if !(r.metric == "attributed_energy" || r.metric == "unattributed_energy")
            || r.attr("part") != Some("dynamic")
        {
            continue;
        }
        let key = (r.attr("domain").unwrap().to_owned(), r.timestamp_ns);
        let entry = by_level.entry(key).or_default();
        if r.attr("level") == Some("cgroup") {
            entry.1 += r.value;
            if r.metric == "attributed_energy" {
                attributed_cgroups
                    .entry(r.timestamp_ns)
                    .or_default()
                    .push(r.consumer.1.clone());
            }
        } else {
            entry.0 += r.value;
        }
    }
    assert!(by_level.len() >= 10, "{by_level:?}");
    for ((domain, t), (process_j, cgroup_j)) in &by_level {
        assert!(
            (process_j - cgroup_j).abs() <= 1e-9 * process_j.abs().max(1e-12),
            "{domain} at {t}: process level {process_j} J, cgroup level {cgroup_j} J"
        );
    }
    for (t, paths) in &attributed_cgroups {
        for p in paths {
            for q in paths {
                assert!(
                    !alumet_kernelfs::cgroup::is_strict_ancestor(p, q),
                    "at {t}: {p} and its descendant {q} both attributed"
                );
            }
        }
    }
}

#[test]
fn without_a_cgroup_filesystem_one_line_says_so_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-cgroups");
    fs::create_dir(&empty).unwrap();
    let csv_path = dir.path().join("out.csv");
    let agent = common::agent_command()
        .current_dir(dir.path())
        .args([
            "--config",
            dir.path().join("alumet-config.toml").to_str().unwrap(),
        ])
        .args(["--plugins", "cgroups,procfs,csv"])
        .args([
            "--set",
            &format!("plugins.cgroups.cgroup_root={:?}", empty.to_str().unwrap()),
        ])
        .args(["--set", "plugins.procfs.processes=false"])
        .args(["--output-file", csv_path.to_str().unwrap()])
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let measured = wait_until(Duration::from_secs(20), || {
        fs::read_to_string(&csv_path).is_ok_and(|t| t.lines().count() > 1)
    });
    let (code, stderr) = common::sigterm_and_wait(agent);
    assert!(measured, "{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("cgroups")).collect();
    let said = lines
        .iter()
        .find(|l| l.contains("no cgroup filesystem under") && l.contains("cgroup_root"));
    assert!(said.is_some(), "{stderr}");
    assert!(fs::read_to_string(&csv_path).unwrap().contains("cpu_time"));
}
