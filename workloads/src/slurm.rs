//! Slurm job names: job name, user, account, partition, QoS and array ids.
//!
//! Without a Slurm client first: a process of the job (any pid listed under
//! its cgroup, steps and tasks included) has them in its environment,
//! which slurmstepd sets (`SLURM_JOB_NAME`, `SLURM_JOB_USER`,
//! `SLURM_JOB_ACCOUNT`, `SLURM_JOB_PARTITION`, `SLURM_JOB_QOS`,
//! `SLURM_ARRAY_JOB_ID`, `SLURM_ARRAY_TASK_ID`; sbatch(1), "OUTPUT
//! ENVIRONMENT VARIABLES"). Reading another user's `/proc/<pid>/environ`
//! needs root (or CAP_SYS_PTRACE). Only these variables are kept, and
//! never logged; the rest of the environment is dropped as it is read.
//! Else `squeue` (with a timeout), which asks slurmctld.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::names::Names;
use crate::resolver::{Found, Lookup, Workload};

/// The variables read, and the attribute each becomes.
const VARIABLES: [(&str, &str); 7] = [
    ("SLURM_JOB_NAME", "job_name"),
    ("SLURM_JOB_USER", "user"),
    ("SLURM_JOB_ACCOUNT", "account"),
    ("SLURM_JOB_PARTITION", "partition"),
    ("SLURM_JOB_QOS", "slurm_qos"),
    ("SLURM_ARRAY_JOB_ID", "array_job_id"),
    ("SLURM_ARRAY_TASK_ID", "array_task_id"),
];

/// Where to look, and the fallback command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmSettings {
    /// procfs (`/proc`; a fixture root in tests).
    pub proc_root: PathBuf,
    /// The `squeue` to ask when no process of the job says; empty for none.
    pub squeue: String,
    /// How long `squeue` may take.
    pub timeout: Duration,
}

impl Default for SlurmSettings {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            squeue: "squeue".to_owned(),
            timeout: Duration::from_secs(3),
        }
    }
}

/// Slurm jobs and their steps, by job id.
pub struct SlurmLookup {
    settings: SlurmSettings,
}

/// At most this many pids are tried per job (the first usually answers).
const MAX_PIDS: usize = 32;

impl SlurmLookup {
    /// A lookup with `settings`.
    pub fn new(settings: SlurmSettings) -> Self {
        Self { settings }
    }

    /// The names in the environment of a process of job `job_id`, from the
    /// pids listed under `cgroup_dir` (its steps' and tasks' included).
    pub fn from_environ(&self, job_id: &str, cgroup_dir: &Path) -> Option<Names> {
        let mut pids = Vec::new();
        collect_pids(cgroup_dir, 4, &mut pids);
        pids.into_iter()
            .find_map(|pid| self.environ_names(pid, job_id))
    }

    fn environ_names(&self, pid: u32, job_id: &str) -> Option<Names> {
        let mut raw = Vec::new();
        std::fs::File::open(
            self.settings
                .proc_root
                .join(pid.to_string())
                .join("environ"),
        )
        .ok()?
        // An environment is at most a few hundred kB (ARG_MAX).
        .take(1 << 20)
        .read_to_end(&mut raw)
        .ok()?;
        names_from_environ(&raw, job_id)
    }

    /// The names from `squeue`, if configured and it knows the job.
    pub fn from_squeue(&self, job_id: &str) -> Result<Option<Names>, String> {
        if self.settings.squeue.is_empty() {
            return Ok(None);
        }
        // Tab-separated, the job name last: it may hold anything but a newline.
        let format = "%u\t%a\t%P\t%q\t%F\t%K\t%A\t%j";
        let output = run_with_timeout(
            Command::new(&self.settings.squeue).args(["-h", "-j", job_id, "-o", format]),
            self.settings.timeout,
        )?;
        Ok(parse_squeue(&output, job_id))
    }
}

/// The names in a process's environment (`/proc/PID/environ`: `NAME=value`
/// entries separated by NUL bytes), if it is a process of job `job_id`.
pub fn names_from_environ(raw: &[u8], job_id: &str) -> Option<Names> {
    let mut values: [Option<&[u8]>; VARIABLES.len()] = [None; VARIABLES.len()];
    let mut its_job = false;
    for entry in raw.split(|&b| b == 0) {
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (&entry[..eq], &entry[eq + 1..]);
        if name == b"SLURM_JOB_ID" {
            its_job = value == job_id.as_bytes();
        } else if let Some(i) = VARIABLES.iter().position(|(v, _)| v.as_bytes() == name) {
            values[i] = Some(value);
        }
    }
    // A process that merely sits in the cgroup (or a nested job's) is
    // not taken at its word.
    if !its_job {
        return None;
    }
    let mut names = Names::new();
    for ((_, key), value) in VARIABLES.iter().zip(values) {
        if let Some(v) = value {
            names.push(*key, String::from_utf8_lossy(v));
        }
    }
    Some(names)
}

/// The names in one line of `squeue -o "%u\t%a\t%P\t%q\t%F\t%K\t%A\t%j"`
/// (`%A`: the job's own id, an array task's included).
pub fn parse_squeue(output: &str, job_id: &str) -> Option<Names> {
    let line = output.lines().find(|l| !l.trim().is_empty())?;
    let fields: Vec<&str> = line.splitn(8, '\t').collect();
    let [user, account, partition, qos, array_job, array_task, id, name] = fields[..] else {
        return None;
    };
    if id.trim() != job_id {
        return None;
    }
    let given = |v: &str| {
        let v = v.trim();
        (!v.is_empty() && v != "(null)" && v != "N/A").then(|| v.to_owned())
    };
    let mut names = Names::new();
    for (key, value) in [
        ("job_name", given(name)),
        ("user", given(user)),
        ("account", given(account)),
        ("partition", given(partition)),
        ("slurm_qos", given(qos)),
    ] {
        if let Some(v) = value {
            names.push(key, v);
        }
    }
    // Not an array job: %K is N/A and %F is the job itself. Both or
    // neither: a placeholder is no name.
    if let (Some(job), Some(task)) = (given(array_job), given(array_task)) {
        names.push("array_job_id", job);
        names.push("array_task_id", task);
    }
    Some(names)
}

fn collect_pids(dir: &Path, depth: usize, out: &mut Vec<u32>) {
    if out.len() >= MAX_PIDS {
        return;
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&entry.path(), depth - 1, out);
        }
    }
}

/// Runs `command`, killing it after `timeout`; its stdout, or why not.
fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<String, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut stdout = child.stdout.take();
    // The output is small; read it on a thread so a full pipe cannot stall the wait.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.take(1 << 20).read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} did not answer within {timeout:?}"));
            }
            Err(e) => return Err(format!("{program}: {e}")),
        }
    }
    reader
        .join()
        .map_err(|_| format!("reading {program}'s output failed"))
}

impl Lookup for SlurmLookup {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn key(&self, workload: &Workload) -> Option<String> {
        if !matches!(workload.kind.as_str(), "slurm_job" | "slurm_step") {
            return None;
        }
        workload.attribute("job_id").map(|id| format!("slurm:{id}"))
    }

    fn lookup(&self, workload: &Workload) -> Result<Found, String> {
        let Some(job_id) = workload.attribute("job_id") else {
            return Ok(Found::Unknown);
        };
        if let Some(names) = self.from_environ(job_id, &workload.cgroup_dir) {
            return Ok(Found::Names(names));
        }
        match self.from_squeue(job_id)? {
            Some(names) => Ok(Found::Names(names)),
            // No process yet (the job cgroup comes before its steps): later.
            None => Ok(Found::NotYet),
        }
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_tree(environ: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let cgroup = root.path().join("cg/slurm_n1/uid_1000/job_42");
        let task = cgroup.join("step_batch/task_0");
        std::fs::create_dir_all(&task).unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), "").unwrap();
        std::fs::write(task.join("cgroup.procs"), "4242\n").unwrap();
        let proc_root = root.path().join("proc");
        std::fs::create_dir_all(proc_root.join("4242")).unwrap();
        std::fs::write(proc_root.join("4242/environ"), environ).unwrap();
        (root, cgroup, proc_root)
    }

    #[test]
    fn names_from_a_job_process_environment_and_nothing_else() {
        let (_root, cgroup, proc_root) = job_tree(
            b"HOME=/home/alice\0SLURM_JOB_ID=42\0SLURM_JOB_NAME=train model\0SLURM_JOB_USER=alice\0SLURM_JOB_ACCOUNT=physics\0SLURM_JOB_PARTITION=gpu\0SLURM_JOB_QOS=normal\0SLURM_ARRAY_JOB_ID=40\0SLURM_ARRAY_TASK_ID=2\0AWS_SECRET_ACCESS_KEY=hunter2\0",
        );
        let lookup = SlurmLookup::new(SlurmSettings {
            proc_root,
            squeue: String::new(),
            ..SlurmSettings::default()
        });
        let names = lookup.from_environ("42", &cgroup).unwrap();
        assert_eq!(
            names.0,
            [
                ("job_name", "train model"),
                ("user", "alice"),
                ("account", "physics"),
                ("partition", "gpu"),
                ("slurm_qos", "normal"),
                ("array_job_id", "40"),
                ("array_task_id", "2"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // Another job's process in the cgroup is not believed.
        assert_eq!(lookup.from_environ("43", &cgroup), None);
        let w = Workload {
            kind: "slurm_step".to_owned(),
            attributes: vec![("job_id".to_owned(), "42".to_owned())],
            cgroup_dir: cgroup.join("step_batch"),
        };
        assert_eq!(lookup.key(&w).as_deref(), Some("slurm:42"));
        assert!(matches!(lookup.lookup(&w), Ok(Found::Names(_))));
    }

    #[test]
    fn without_a_process_squeue_answers_and_its_absence_is_not_yet() {
        let (_root, cgroup, proc_root) = job_tree(b"");
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("squeue");
        std::fs::write(
            &fake,
            "#!/bin/sh\n[ \"$3\" = 7 ] || exit 1\nprintf 'bob\\tchem\\tdebug\\t(null)\\t7\\tN/A\\t7\\tmy job\\tx\\n'\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let lookup = SlurmLookup::new(SlurmSettings {
            proc_root,
            squeue: fake.to_string_lossy().into_owned(),
            timeout: Duration::from_secs(5),
        });
        let names = lookup.from_squeue("7").unwrap().unwrap();
        assert_eq!(names.get("job_name"), Some("my job\tx"));
        assert_eq!(names.get("user"), Some("bob"));
        assert_eq!(names.get("slurm_qos"), None);
        assert_eq!(names.get("array_task_id"), None);
        let w = |id: &str| Workload {
            kind: "slurm_job".to_owned(),
            attributes: vec![("job_id".to_owned(), id.to_owned())],
            cgroup_dir: cgroup.clone(),
        };
        assert!(matches!(lookup.lookup(&w("7")), Ok(Found::Names(_))));
        // squeue fails for job 8: nothing yet.
        assert_eq!(lookup.lookup(&w("8")), Ok(Found::NotYet));

        let slow = dir.path().join("slow-squeue");
        std::fs::write(&slow, "#!/bin/sh\nsleep 5\n").unwrap();
        std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let lookup = SlurmLookup::new(SlurmSettings {
            squeue: slow.to_string_lossy().into_owned(),
            timeout: Duration::from_millis(200),
            ..SlurmSettings::default()
        });
        let started = Instant::now();
        assert!(lookup.from_squeue("7").is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn squeue_lines() {
        assert_eq!(
            parse_squeue("alice\tphys\tgpu\tlow\t40\t2\t43\ttrain\n", "42"),
            None,
            "another job's line"
        );
        let names = parse_squeue("alice\tphys\tgpu\tlow\t40\t2\t42\ttrain\n", "42").unwrap();
        assert_eq!(names.get("array_job_id"), Some("40"));
        assert_eq!(names.get("array_task_id"), Some("2"));
        assert_eq!(parse_squeue("", "42"), None);
        assert_eq!(parse_squeue("garbage", "42"), None);
    }
}
