//! The agent as a process (cgroups, rapl on a fixture, energy-attribution,
//! csv) against the real workload managers, each started once by the
//! project's own `scripts/managers.sh` (installed by
//! `scripts/install-managers.sh`, which the test command runs):
//! - a busy Docker container and a busy Podman container (runc, cgroupfs):
//!   its name, image and a listed label;
//! - a Slurm job (`sbatch -J -A -p` on a one-node Slurm with munge): its
//!   job name, user, account and partition;
//! - a libvirt/QEMU VM: workload `vm` and its name.
//!
//! Each is measured from the first poll after it starts, and gets energy
//! like any other cgroup (`attributed_energy`, level cgroup), with its names.
//!
//! Needs root and the managers. Where they are not installed the tests say
//! so and pass, except in CI (`CI=true`), where they must run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{read_csv, Row};

/// One manager at a time: each test's agent and workload get the machine's
/// two cores to themselves.
static SERIAL: Mutex<()> = Mutex::new(());

const POLL_MS: u64 = 500;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/managers.sh")
}

/// A started manager, stopped when dropped.
struct Manager(&'static str);

impl Manager {
    /// Starts `name` (`docker`, `podman`, `slurm`, `libvirt`), or `None`
    /// (skipped) where its `binary` is not installed, outside CI.
    fn up(name: &'static str, binary: &str) -> Option<Self> {
        if !is_root() || !installed(binary) {
            assert!(
                std::env::var("CI").is_err(),
                "CI runs as root with the managers installed (scripts/install-managers.sh): {binary} missing"
            );
            eprintln!("skipped: {binary} is not installed, or not root (bash scripts/install-managers.sh)");
            return None;
        }
        let manager = Manager(name);
        let out = Command::new("bash")
            .arg(script())
            .arg(format!("{name}-up"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}-up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(manager)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg(format!("{}-down", self.0))
            .output();
    }
}

fn is_root() -> bool {
    // SAFETY: getuid(2) has no preconditions.
    unsafe { libc::getuid() == 0 }
}

fn installed(binary: &str) -> bool {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .any(|d| Path::new(d).join(binary).exists())
}

/// Runs `program args`, which must succeed; its stdout, trimmed.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The agent measuring for `seconds` while `start` starts a workload (it
/// returns what the test needs to find it, taken once the manager said it
/// started); the CSV rows, and when `start` returned (ns).
fn measure<T>(seconds: u64, start: impl FnOnce() -> T) -> (Vec<Row>, u64, T, String) {
    let dir = tempfile::tempdir().unwrap();
    let rapl = common::RaplFixture::start_load_following(dir.path(), 10.0, 15.0);
    let csv_path = dir.path().join("out.csv");
    let interval = format!("\"{POLL_MS}ms\"");
    let agent = common::agent_in(dir.path())
        .args(["--plugins", "cgroups,rapl,energy-attribution,csv"])
        .args(&rapl.args)
        .args(["--set", "plugins.rapl.interface=\"powercap\""])
        .args(["--set", "plugins.rapl.poll_interval=\"100ms\""])
        .args(["--set", "plugins.rapl.flush_interval=\"100ms\""])
        .args([
            "--set",
            &format!("plugins.cgroups.poll_interval={interval}"),
        ])
        .args([
            "--set",
            &format!("plugins.cgroups.flush_interval={interval}"),
        ])
        .args(["--set", "plugins.cgroups.names.container_labels=[\"app\"]"])
        .args(["--set", "plugins.energy-attribution.levels=[\"cgroup\"]"])
        .args(["--set", "plugins.csv.timestamp_format=\"unix_ns\""])
        .args(["--set", "plugins.csv.flush_interval=\"100ms\""])
        .args(["--output-file", csv_path.to_str().unwrap()])
        .arg("run")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready = common::wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&csv_path).is_ok_and(|t| t.contains("cgroups_measured"))
    });
    assert!(ready, "the agent wrote no cgroups point");
    // Past the agent's first second (inotify_delay), as a service is: from
    // then on a new cgroup is known at the next poll.
    std::thread::sleep(Duration::from_millis(1200));
    let found = start();
    let started_ns = now_ns();
    std::thread::sleep(Duration::from_secs(seconds));
    let (code, stderr) = common::sigterm_and_wait(agent);
    drop(rapl);
    assert_eq!(code, Some(0), "{stderr}");
    (read_csv(&csv_path), started_ns, found, stderr)
}

/// Checks the workload whose consumer id `matches`: measured from the poll
/// after it started, carrying `names`, and given energy that carries them.
fn check_workload(
    rows: &[Row],
    started_ns: u64,
    matches: impl Fn(&str) -> bool,
    names: &[(&str, &str)],
    stderr: &str,
) {
    let cpu: Vec<&Row> = rows
        .iter()
        .filter(|r| r.metric == "cgroup_cpu_time" && matches(&r.consumer.1))
        .collect();
    let Some(first) = cpu.iter().map(|r| r.timestamp_ns).min() else {
        panic!("the workload was not measured:\n{stderr}");
    };
    // Its cgroup exists once the manager's command returns: the first poll
    // after that measures it (slack: the start of the command itself).
    assert!(
        first <= started_ns + (POLL_MS + 300) * 1_000_000,
        "first measured {} ms after it started",
        (first as i64 - started_ns as i64) / 1_000_000
    );
    let polls: Vec<i64> = rows
        .iter()
        .filter(|r| r.metric == "cgroups_measured")
        .map(|r| (r.timestamp_ns as i64 - started_ns as i64) / 1_000_000)
        .filter(|ms| (-1000..2000).contains(ms))
        .collect();
    eprintln!("polls around the start (ms): {polls:?}");
    let named = |r: &&&Row| names.iter().all(|(k, v)| r.attr(k) == Some(*v));
    let named_cpu = cpu.iter().filter(named).count();
    assert!(
        named_cpu > 0,
        "no point with {names:?}; attributes seen: {:?}\n{stderr}",
        cpu.last().map(|r| &r.attributes)
    );
    let cpu_s: f64 = cpu.iter().map(|r| r.value).sum();
    let energy: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.metric == "attributed_energy"
                && r.attr("level") == Some("cgroup")
                && matches(&r.consumer.1)
        })
        .collect();
    let energy_j: f64 = energy.iter().map(|r| r.value).sum();
    let named_energy_j: f64 = energy.iter().filter(named).map(|r| r.value).sum();
    eprintln!(
        "{names:?}: first point {} ms after start, {cpu_s:.3} s of CPU, {energy_j:.3} J ({named_energy_j:.3} J with its names)",
        (first as i64 - started_ns as i64) / 1_000_000
    );
    assert!(cpu_s > 0.0, "no CPU time");
    assert!(energy_j > 0.0, "no energy attributed\n{stderr}");
    assert!(named_energy_j > 0.0, "its energy does not carry its names");
}

#[test]
fn docker_containers_by_name_image_and_label() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_docker) = Manager::up("docker", "dockerd") else {
        return;
    };
    let name = format!("alumet-web-{}", std::process::id());
    let (rows, started, id, stderr) = measure(3, || {
        run(
            "docker",
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--label",
                "app=shop",
                "alumet-busybox:1",
                "sh",
                "-c",
                "while :; do :; done",
            ],
        )
    });
    let _ = run("docker", &["rm", "-f", &name]);
    check_workload(
        &rows,
        started,
        |c| c.ends_with(&id),
        &[
            ("workload", "container"),
            ("runtime", "docker"),
            ("container_name", &name),
            ("image", "alumet-busybox:1"),
            ("label_app", "shop"),
        ],
        &stderr,
    );
}

#[test]
fn podman_containers_by_name_image_label_and_pod() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_podman) = Manager::up("podman", "podman") else {
        return;
    };
    let name = format!("alumet-pweb-{}", std::process::id());
    let pod = format!("alumet-pod-{}", std::process::id());
    run("podman", &["pod", "create", "--name", &pod]);
    let (rows, started, id, stderr) = measure(3, || {
        run(
            "podman",
            &[
                "run",
                "-d",
                "--pod",
                &pod,
                "--name",
                &name,
                "--label",
                "app=pshop",
                "localhost/alumet-busybox:1",
                "sh",
                "-c",
                "while :; do :; done",
            ],
        )
    });
    check_workload(
        &rows,
        started,
        |c| c.ends_with(&format!("libpod-{id}")),
        &[
            ("workload", "container"),
            ("runtime", "podman"),
            ("container_name", &name),
            ("image", "localhost/alumet-busybox:1"),
            ("label_app", "pshop"),
            ("podman_pod", &pod),
        ],
        &stderr,
    );
}

#[test]
fn slurm_jobs_by_name_user_account_and_partition() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_slurm) = Manager::up("slurm", "slurmctld") else {
        return;
    };
    let workdir = tempfile::tempdir().unwrap();
    let (rows, started, job_id, stderr) = measure(4, || {
        let out = run(
            "sbatch",
            &[
                "--parsable",
                "-J",
                "alumet-train",
                "-A",
                "physics",
                "-p",
                "debug",
                "-D",
                workdir.path().to_str().unwrap(),
                "--wrap",
                "i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done",
            ],
        );
        let job_id = out.split(';').next().unwrap().to_owned();
        // Started: its cgroup exists once it runs.
        let running = common::wait_until(Duration::from_secs(20), || {
            run("squeue", &["-h", "-j", &job_id, "-o", "%T"]) == "RUNNING"
        });
        assert!(running, "job {job_id} did not start");
        job_id
    });
    let _ = Command::new("scancel").arg(&job_id).status();
    // The job and its steps (which get the energy: the innermost measured).
    let job = format!("/job_{job_id}");
    let job_or_step = |c: &str| c.ends_with(&job) || c.contains(&format!("{job}/"));
    assert!(
        rows.iter()
            .any(|r| r.consumer.1.ends_with(&job) && r.attr("workload") == Some("slurm_job")),
        "the job's cgroup is not a slurm_job"
    );
    check_workload(
        &rows,
        started,
        job_or_step,
        &[
            ("job_id", &job_id),
            ("job_name", "alumet-train"),
            ("user", "root"),
            ("account", "physics"),
            ("partition", "debug"),
        ],
        &stderr,
    );
}

#[test]
fn libvirt_vms_by_name() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !Path::new("/dev/kvm").exists() {
        assert!(std::env::var("CI").is_err(), "CI machines have KVM");
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    let Some(_libvirt) = Manager::up("libvirt", "libvirtd") else {
        return;
    };
    let vm = format!("alumet-vm-{}", std::process::id());
    let (rows, started, (), stderr) = measure(3, || {
        run("bash", &[script().to_str().unwrap(), "libvirt-vm", &vm]);
    });
    check_workload(
        &rows,
        started,
        |c| c.starts_with("/machine") && c.contains(&format!("-{vm}")),
        &[("workload", "vm"), ("vm_name", &vm)],
        &stderr,
    );
}
