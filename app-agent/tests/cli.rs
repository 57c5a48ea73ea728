//! The agent as a process: help, version, plugin list, config generation,
//! run with signals, exec, config errors, overrides.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{agent_command as agent, csv_rows, wait_until};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("the agent runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A config with procfs (fast) and csv, written by `config regen`.
fn fast_config(dir: &Path) -> (PathBuf, PathBuf) {
    let config = dir.join("alumet-config.toml");
    let csv = dir.join("out.csv");
    let o = run(agent().current_dir(dir).args([
        "--config",
        config.to_str().unwrap(),
        "--plugins",
        "procfs,csv",
        "config",
        "regen",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    (config, csv)
}

fn fast_overrides(csv: &Path) -> Vec<String> {
    vec![
        "--set".into(),
        "plugins.procfs.system_poll_interval=\"20ms\"".into(),
        "--set".into(),
        "plugins.procfs.process_poll_interval=\"50ms\"".into(),
        "--set".into(),
        "plugins.procfs.flush_interval=\"50ms\"".into(),
        "--output-file".into(),
        csv.to_str().unwrap().into(),
    ]
}

fn spawn_run(dir: &Path, config: &Path, csv: &Path) -> Child {
    agent()
        .current_dir(dir)
        .args(["--config", config.to_str().unwrap()])
        .args(fast_overrides(csv))
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn help_and_version() {
    let o = run(agent().arg("--help"));
    assert!(o.status.success());
    let help = stdout(&o);
    for word in ["exec", "run", "config", "plugins", "--set", "Examples"] {
        assert!(help.contains(word), "help lacks {word}: {help}");
    }
    let o = run(agent().args(["exec", "--help"]));
    assert!(o.status.success());
    assert!(stdout(&o).contains("Example"));
    let o = run(agent().arg("--version"));
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("alumet-agent "), "{}", stdout(&o));
}

#[test]
fn plugins_list_shows_every_plugin_and_why_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(agent().current_dir(dir.path()).args(["plugins", "list"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for name in [
        "procfs",
        "rapl",
        "nvidia",
        "csv",
        "influxdb",
        "prometheus",
        "energy-attribution",
    ] {
        assert!(out.contains(name), "{out}");
    }
    // No GPU driver here: the list says so.
    assert!(out.contains("nvidia:"), "{out}");
}

#[test]
fn the_shipped_config_is_what_regen_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regen.toml");
    let o = run(agent().args(["--config", path.to_str().unwrap(), "config", "regen"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let generated = std::fs::read_to_string(&path).unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../alumet-config.toml"
    ))
    .unwrap();
    assert_eq!(
        generated, shipped,
        "run `alumet-agent --config alumet-config.toml config regen` to update the shipped file"
    );
    assert!(generated.contains("# "), "the file explains its keys");
}

#[test]
fn regen_then_run_on_this_machine_produces_output_and_sigterm_flushes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config, csv) = fast_config(dir.path());
    let child = spawn_run(dir.path(), &config, &csv);
    assert!(wait_until(Duration::from_secs(20), || std::fs::metadata(
        &csv
    )
    .map(|m| m.len() > 200)
    .unwrap_or(false)));
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = csv_rows(&csv);
    assert!(rows.iter().all(|r| r.len() == 9));
    assert!(rows.iter().any(|r| &r[1] == "cpu_time"));
    assert!(rows.iter().any(|r| &r[1] == "process_cpu_time"));
    // The file ends with a complete line: the last buffer was flushed.
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.ends_with('\n'));
}

#[test]
fn sigint_ends_a_run_with_exit_0_and_a_complete_file() {
    let dir = tempfile::tempdir().unwrap();
    let (config, csv) = fast_config(dir.path());
    let child = agent()
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .args(fast_overrides(&csv))
        // Slow system polls: the last one can only come from the shutdown.
        .args(["--set", "plugins.procfs.system_poll_interval=\"1h\""])
        .args(["--set", "plugins.csv.timestamp_format=\"unix_ns\""])
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || std::fs::metadata(
        &csv
    )
    .map(|m| m.len() > 200)
    .unwrap_or(false)));
    let signal_sent_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = csv_rows(&csv);
    assert!(rows.iter().all(|r| r.len() == 9));
    // The last poll, taken after the signal, reached the file.
    let last_system_poll: u64 = rows
        .iter()
        .filter(|r| &r[1] == "cpu_time")
        .map(|r| r[0].parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert!(
        last_system_poll >= signal_sent_ns,
        "the shutdown poll is missing"
    );
}

#[test]
fn exec_returns_the_command_exit_code_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (config, csv) = fast_config(dir.path());
    let json = dir.path().join("summary.json");
    let o = run(agent()
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .args(fast_overrides(&csv))
        .args([
            "exec",
            "--json",
            json.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "sleep 0.3; exit 3",
        ]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("summary for 'sh -c sleep 0.3; exit 3'"),
        "{err}"
    );
    assert!(err.contains("exit 3"), "{err}");
    assert!(
        err.contains("energy not measured: rapl: the plugin is disabled"),
        "no RAPL here, and the report says so: {err}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(summary["exit_code"], 3);
    assert!(summary["wall_s"].as_f64().unwrap() >= 0.3);
    assert!(summary["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["metric"] == "cpu_time"));
}

#[test]
fn exec_reports_a_killed_command_as_128_plus_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (config, csv) = fast_config(dir.path());
    let o = run(agent()
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .args(fast_overrides(&csv))
        .args(["exec", "--", "sh", "-c", "kill -KILL $$"]));
    assert_eq!(o.status.code(), Some(128 + 9), "{}", stderr(&o));
}

#[test]
fn exec_of_a_missing_or_unexecutable_command_fails_like_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let (config, csv) = fast_config(dir.path());
    let exec = |cmd: &str| {
        run(agent()
            .current_dir(dir.path())
            .args(["--config", config.to_str().unwrap()])
            .args(fast_overrides(&csv))
            .args(["exec", "--", cmd]))
    };
    let o = exec("/nonexistent");
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("cannot run `/nonexistent`"),
        "{}",
        stderr(&o)
    );

    std::fs::write(dir.path().join("benchmark.sh"), "#!/bin/sh\nexit 0\n").unwrap();
    let o = exec("./benchmrk.sh");
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("did you mean `./benchmark.sh`"),
        "{}",
        stderr(&o)
    );

    // Not executable: 126 and the fix.
    let o = exec("./benchmark.sh");
    assert_eq!(o.status.code(), Some(126));
    assert!(stderr(&o).contains("chmod +x"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

/// Runs the agent on a config file and returns (exit code, stderr).
fn with_config(text: &str, extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let o = run(agent()
        .current_dir(dir.path())
        .args(["--config", path.to_str().unwrap()])
        .args(extra)
        .args(["config", "show"]));
    (o.status.code(), stderr(&o))
}

#[test]
fn config_errors_name_the_line_and_the_closest_valid_name() {
    let (code, err) = with_config(
        "[plugins.procfs]\nenabled = true\n\n[plugins.rappl]\nenabled = true\n",
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml:4:"), "{err}");
    assert!(
        err.contains("unknown plugin `rappl`") && err.contains("did you mean `rapl`"),
        "{err}"
    );

    let (code, err) = with_config("[plugins.procfs]\nsystem_pol_interval = \"1s\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml:2:1"), "{err}");
    assert!(err.contains("did you mean `system_poll_interval`"), "{err}");

    // `enabled` is read by the agent, not the plugin: still a valid name.
    let (code, err) = with_config("[plugins.csv]\nenabeld = true\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml:2:1"), "{err}");
    assert!(err.contains("did you mean `enabled`"), "{err}");

    let (code, err) = with_config("[plugins.procfs]\nper_cpu = \"yes\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml:2:"), "{err}");
    assert!(err.contains("expected a boolean"), "{err}");

    let (code, err) = with_config("[plugins.procfs]\nsystem_poll_interval = \"10 sec\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml:2:"), "{err}");
    assert!(
        err.contains("\"10ms\""),
        "an example of a valid duration: {err}"
    );

    let (code, err) = with_config("[plugins.procfs\nenabled = true\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml:1:"), "{err}");

    let (code, err) = with_config("[agnet]\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("did you mean `agent`"), "{err}");

    let (code, err) = with_config("", &["--plugins", "procfs,cvs"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("did you mean `csv`"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn overrides_take_effect_and_secrets_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[plugins.influxdb]\ntoken = \"s3cr3t-token\"\n[plugins.prometheus]\nbearer_token = \"b3arer-s3cr3t\"\nbasic_password = \"pa55-s3cr3t\"\n[plugins.opentelemetry]\nheaders = \"api-key=s3cr3t-key\"\n",
    )
    .unwrap();
    let o = run(agent().current_dir(dir.path()).args([
        "--config",
        path.to_str().unwrap(),
        "--set",
        "plugins.procfs.per_cpu=true",
        "--plugins",
        "procfs",
        "config",
        "show",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let shown: toml::Table = toml::from_str(&stdout(&o)).unwrap();
    let plugins = shown["plugins"].as_table().unwrap();
    assert_eq!(plugins["procfs"]["per_cpu"].as_bool(), Some(true));
    assert_eq!(plugins["procfs"]["enabled"].as_bool(), Some(true));
    assert_eq!(plugins["csv"]["enabled"].as_bool(), Some(false));
    let out = stdout(&o) + &stderr(&o);
    for secret in ["s3cr3t-token", "b3arer-s3cr3t", "pa55-s3cr3t", "s3cr3t-key"] {
        assert!(!out.contains(secret), "a secret leaked: {out}");
    }
    assert_eq!(
        plugins["prometheus"]["bearer_token"].as_str(),
        Some("<redacted>")
    );
    assert!(out.contains("<redacted>"));
    // The file is readable by others and holds a secret: warned.
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
}

#[test]
fn plugins_selection_runs_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let (config, csv) = fast_config(dir.path());
    let o = run(agent()
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .args(fast_overrides(&csv))
        .args(["--set", "plugins.procfs.processes=false"])
        .args(["exec", "--", "true"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = csv_rows(&csv);
    assert!(rows.iter().any(|r| &r[1] == "cpu_time"));
    assert!(
        !rows.iter().any(|r| r[1].starts_with("process_")),
        "processes=false took effect"
    );
}

#[test]
fn nothing_to_measure_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(agent()
        .current_dir(dir.path())
        .args(["--plugins", "csv", "exec", "--", "true"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("nothing can be measured"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_output_file_that_cannot_be_written_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = fast_config(dir.path());
    let missing = dir.path().join("no/such/dir/out.csv");
    let o = run(agent()
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .args(["--output-file", missing.to_str().unwrap()])
        .args(["exec", "--", "true"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(missing.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
}

/// Every plugin README that shows its default block shows it exactly as
/// `config regen` writes it (a new key, a changed default or doc line must
/// reach the README).
#[test]
fn every_readme_default_block_is_what_config_regen_writes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let dir = entry.file_name().to_string_lossy().into_owned();
        let Some(plugin) = dir.strip_prefix("plugin-") else {
            continue;
        };
        let readme = entry.path().join("README.md");
        let Ok(text) = std::fs::read_to_string(&readme) else {
            continue;
        };
        if text.contains("as `alumet-agent config regen` writes it") {
            common::assert_readme_shows_regen_block(plugin, &readme);
            checked.push(plugin.to_owned());
        }
    }
    checked.sort();
    for expected in [
        "cgroups",
        "csv",
        "influxdb",
        "opentelemetry",
        "procfs",
        "prometheus",
        "rapl",
    ] {
        assert!(checked.iter().any(|c| c == expected), "{checked:?}");
    }
}
