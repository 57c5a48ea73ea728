//! Every numeric setting has a checked range: for each key of the default
//! configuration (`config regen`, every plugin) whose value is a duration,
//! a whole number or a real number, `config check` refuses values that
//! cannot work (a nanosecond, a hundred thousand hours, 2^63 − 1, NaN,
//! infinity) with exit code 2, the key's name and the allowed range. New
//! keys are covered without changing this test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::agent_command as agent;

fn regen(dir: &Path) -> toml::Table {
    let path = dir.join("all.toml");
    let o = agent()
        .args(["--config", path.to_str().unwrap(), "config", "regen"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(&path).unwrap().parse().unwrap()
}

fn is_duration(text: &str) -> bool {
    alumet::config::parse_duration(text).is_ok()
}

/// `(dotted key, value kind)` of every numeric key under `table`.
fn numeric_keys(table: &toml::Table, prefix: &str, out: &mut Vec<(String, &'static str)>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            toml::Value::Table(t) => numeric_keys(t, &format!("{path}."), out),
            toml::Value::String(s) if is_duration(s) => out.push((path, "duration")),
            toml::Value::Integer(_) => out.push((path, "integer")),
            toml::Value::Float(_) => out.push((path, "real")),
            _ => {}
        }
    }
}

/// `config check` with every plugin enabled and `key = value`.
/// Settings without which a plugin cannot be enabled at all (the BMC to
/// read has no default): given, so that the others are what is checked.
const REQUIRED: &[(&str, &[(&str, &str)])] = &[(
    "redfish",
    &[
        ("endpoint", "\"https://127.0.0.1\""),
        ("username", "\"monitor\""),
        ("password", "\"secret\""),
    ],
)];

fn check_with(config: &Path, plugin: Option<&str>, key: &str, value: &str) -> Output {
    let mut cmd = agent();
    cmd.args(["--config", config.to_str().unwrap()]);
    if let Some(plugin) = plugin {
        cmd.args(["--set", &format!("plugins.{plugin}.enabled=true")]);
        for (_, settings) in REQUIRED.iter().filter(|(p, _)| *p == plugin) {
            for (k, v) in *settings {
                cmd.args(["--set", &format!("plugins.{plugin}.{k}={v}")]);
            }
        }
    }
    cmd.args(["--set", &format!("{key}={value}"), "config", "check"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn every_numeric_setting_refuses_values_that_cannot_work_and_names_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = regen(dir.path());
    let mut keys = Vec::new();
    numeric_keys(&defaults, "", &mut keys);
    assert!(keys.len() > 40, "too few numeric keys found: {keys:?}");
    let config = dir.path().join("all.toml");
    let mut failures = Vec::new();
    for (key, kind) in &keys {
        let plugin = key
            .strip_prefix("plugins.")
            .and_then(|rest| rest.split('.').next());
        // The key as its section names it (`names.engine_timeout` in
        // `[plugins.cgroups]`, `output_queue_capacity` in `[agent]`).
        let leaf = match plugin {
            Some(p) => &key[format!("plugins.{p}.").len()..],
            None => key.rsplit('.').next().unwrap(),
        };
        let bad: &[&str] = match *kind {
            "duration" => &["\"1ns\"", "\"100000h\""],
            "integer" => &["9223372036854775807"],
            _ => &["nan", "inf"],
        };
        for value in bad {
            let o = check_with(&config, plugin, key, value);
            let err = String::from_utf8_lossy(&o.stderr);
            let refused = o.status.code() == Some(2);
            // A value beyond the key's integer type is refused by its
            // type, whose range the message gives ("expected u32").
            let explained = err.contains(&format!("`{leaf}`")) || err.contains(", expected u");
            if !(refused && explained) {
                failures.push(format!(
                    "{key} = {value}: exit {:?}, {}",
                    o.status.code(),
                    err.trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} numeric keys accept values that cannot work:\n{}",
        failures.len(),
        keys.len(),
        failures.join("\n")
    );
}

#[test]
fn the_defaults_are_within_their_ranges() {
    let dir = tempfile::tempdir().unwrap();
    regen(dir.path());
    let config = dir.path().join("all.toml");
    // Every plugin enabled, every value its default.
    let defaults = regen(dir.path());
    let plugins: Vec<String> = defaults["plugins"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for plugin in plugins {
        let o = check_with(
            &config,
            Some(&plugin),
            "agent.output_queue_capacity",
            "1024",
        );
        assert!(
            o.status.success(),
            "{plugin}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
