//! Fixture trees and expected rows, shared by the plugins' fixture tests.
//!
//! A fixture case keeps snapshots of kernel files (`proc0/`, `proc1/`, a
//! sysfs or cgroupfs tree...) and `expected.csv` files. [`apply_snapshot`]
//! makes a temporary root hold exactly one snapshot, overwriting files in
//! place (same inode, as the kernel's files change) so that descriptors a
//! plugin keeps see the new content; [`read_expected`] and [`compare`]
//! check the points of a poll against an `expected.csv`:
//!
//! ```text
//! metric,resource_kind,resource_id,consumer_kind,consumer_id,attributes,value
//! cgroup_cpu_time,local_machine,,cgroup,/system.slice/ssh.service,mode=user;unit=ssh.service;workload=systemd_service,0.25
//! ```
//!
//! `attributes` is `k=v` pairs sorted by key and joined by `;`; lines
//! starting with `#` are comments; fields are split on `,` (fixtures avoid
//! commas in names). Values match within 1e-9 (relative); order does not matter.
//! Symbolic links in a snapshot are made as links (never followed).
//! [`cases`] lists the cases of a crate; [`copy_tree`] copies a whole
//! fixture tree into a temporary root. [`resource_from_text`] and
//! [`consumer_from_text`] read the `kind:id` form that transform plugins'
//! input files use (`cpu_package:0`, `process:42`, `local_machine`), and
//! [`resource_text`] / [`consumer_text`] write it.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::borrow::Cow;

use crate::measurement::{MeasurementPoint, Resource, ResourceConsumer};
use crate::metrics::MetricRegistry;

/// A resource written `kind` or `kind:id` (what [`Resource::kind`] and
/// [`Resource::id`] give, joined by `:`). An unknown kind is a custom one.
pub fn resource_from_text(text: &str) -> Resource {
    let (kind, id) = text.split_once(':').unwrap_or((text, ""));
    let number = || {
        id.parse()
            .unwrap_or_else(|_| panic!("resource {text:?}: {id:?} is not a number"))
    };
    match kind {
        "local_machine" => Resource::LocalMachine,
        "cpu_package" => Resource::CpuPackage { id: number() },
        "cpu_core" => Resource::CpuCore { id: number() },
        "dram" => Resource::Dram { pkg_id: number() },
        "gpu" => Resource::Gpu {
            bus_id: Cow::Owned(id.to_owned()),
        },
        _ => Resource::Custom {
            kind: Cow::Owned(kind.to_owned()),
            id: Cow::Owned(id.to_owned()),
        },
    }
}

/// A consumer written `kind` or `kind:id` (`process:42`,
/// `cgroup:/system.slice/a.service`, `local_machine`). An unknown kind is a
/// custom one.
pub fn consumer_from_text(text: &str) -> ResourceConsumer {
    let (kind, id) = text.split_once(':').unwrap_or((text, ""));
    match kind {
        "local_machine" => ResourceConsumer::LocalMachine,
        "process" => ResourceConsumer::Process {
            pid: id
                .parse()
                .unwrap_or_else(|_| panic!("consumer {text:?}: {id:?} is not a pid")),
        },
        "cgroup" => ResourceConsumer::ControlGroup { path: id.into() },
        _ => ResourceConsumer::Custom {
            kind: Cow::Owned(kind.to_owned()),
            id: Cow::Owned(id.to_owned()),
        },
    }
}

/// The `kind:id` text of a resource (`local_machine` alone).
pub fn resource_text(r: &Resource) -> String {
    match r {
        Resource::LocalMachine => "local_machine".into(),
        other => format!("{}:{}", other.kind(), other.id()),
    }
}

/// The `kind:id` text of a consumer (`local_machine` alone).
pub fn consumer_text(c: &ResourceConsumer) -> String {
    match c {
        ResourceConsumer::LocalMachine => "local_machine".into(),
        other => format!("{}:{}", other.kind(), other.id()),
    }
}

/// Every file under `dir`, relative to it. Symbolic links are not files
/// and are not followed (sysfs links form cycles: `hwmonN/device/hwmon/hwmonN`).
pub fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    entries_under(dir).0
}

/// Every symbolic link under `dir` (relative to it) and its target, as
/// written in the link.
pub fn links_under(dir: &Path) -> BTreeSet<(PathBuf, PathBuf)> {
    entries_under(dir).1
}

type Entries = (BTreeSet<PathBuf>, BTreeSet<(PathBuf, PathBuf)>);

fn entries_under(dir: &Path) -> Entries {
    let (mut files, mut links) = (BTreeSet::new(), BTreeSet::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let Ok(rel) = path.strip_prefix(dir).map(Path::to_path_buf) else {
                continue;
            };
            if kind.is_symlink() {
                if let Ok(target) = std::fs::read_link(&path) {
                    links.insert((rel, target));
                }
            } else if kind.is_dir() {
                stack.push(path);
            } else {
                files.insert(rel);
            }
        }
    }
    (files, links)
}

fn dirs_under(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                dirs_under(&path, out);
                out.push(path);
            }
        }
    }
}

/// The fixture cases under `root` (e.g. a crate's `tests/fixtures`): its
/// directories, sorted. Fails if there are fewer than `at_least` (a case
/// that went missing must not pass unnoticed).
pub fn cases(root: &Path, at_least: usize) -> Vec<PathBuf> {
    let mut cases: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= at_least,
        "fixture cases missing in {}: {} found, at least {at_least} expected",
        root.display(),
        cases.len()
    );
    cases
}

/// Copies the tree `from` into `to` (created if needed), e.g. a fixture's
/// sysfs into a temporary root. Panics on I/O errors.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Makes `root` hold exactly the files and symbolic links of `snapshot`:
/// files are overwritten in place, links made as in the snapshot (sysfs's
/// `class/hwmon/hwmonN` and `device`), files and links absent from the
/// snapshot removed, and directories left empty removed (a process or
/// cgroup that is gone). Panics on I/O errors.
pub fn apply_snapshot(root: &Path, snapshot: &Path) {
    let (wanted, wanted_links) = entries_under(snapshot);
    let (present, present_links) = entries_under(root);
    for rel in present.iter().filter(|rel| !wanted.contains(*rel)) {
        std::fs::remove_file(root.join(rel)).unwrap();
    }
    for link in present_links.difference(&wanted_links) {
        std::fs::remove_file(root.join(&link.0)).unwrap();
    }
    for rel in &wanted {
        let dst = root.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(&dst, std::fs::read(snapshot.join(rel)).unwrap()).unwrap();
    }
    for (rel, target) in wanted_links.difference(&present_links) {
        let dst = root.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &dst).unwrap();
    }
    // Deepest first, so that a parent emptied by its child's removal goes too.
    let mut dirs = Vec::new();
    dirs_under(root, &mut dirs);
    for d in dirs {
        if std::fs::read_dir(&d).unwrap().next().is_none() {
            std::fs::remove_dir(&d).unwrap();
        }
    }
}

/// One expected or actual point: metric, resource kind and id, consumer
/// kind and id, attributes (as text), and the value.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub struct Row {
    /// Everything but the value.
    pub key: [String; 6],
    /// The value.
    pub value: f64,
}

/// The row of a point.
pub fn row_of(p: &MeasurementPoint, metrics: &MetricRegistry) -> Row {
    let mut attrs: Vec<(String, String)> = p
        .attributes
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    attrs.sort();
    let attrs: Vec<String> = attrs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    Row {
        key: [
            metrics
                .get(p.metric)
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            p.resource.kind().to_owned(),
            p.resource.id().into_owned(),
            p.consumer.kind().to_owned(),
            p.consumer.id().into_owned(),
            attrs.join(";"),
        ],
        value: p.value.as_f64(),
    }
}

/// The header line of an `expected.csv`.
pub const EXPECTED_HEADER: &str =
    "metric,resource_kind,resource_id,consumer_kind,consumer_id,attributes,value";

/// Reads an `expected.csv`. Panics, naming the file and line, on a bad one.
pub fn read_expected(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    assert_eq!(
        lines.next(),
        Some(EXPECTED_HEADER),
        "{}: bad header",
        path.display()
    );
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 7, "{}: bad line {line:?}", path.display());
            Row {
                key: [f[0], f[1], f[2], f[3], f[4], f[5]].map(str::to_owned),
                value: f[6]
                    .parse()
                    .unwrap_or_else(|e| panic!("{}: bad value in {line:?}: {e}", path.display())),
            }
        })
        .collect()
}

/// Panics with every missing, unexpected and wrong row when `actual` is
/// not `expected` (in any order, values within 1e-9 relative).
pub fn compare(label: &str, mut expected: Vec<Row>, mut actual: Vec<Row>) {
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    actual.sort_by(|a, b| a.key.cmp(&b.key));
    let mut problems = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < expected.len() || j < actual.len() {
        let order = match (expected.get(i), actual.get(j)) {
            (Some(e), Some(a)) => e.key.cmp(&a.key),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                problems.push(format!(
                    "missing:    {} = {}",
                    expected[i].key.join(","),
                    expected[i].value
                ));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                problems.push(format!(
                    "unexpected: {} = {}",
                    actual[j].key.join(","),
                    actual[j].value
                ));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (e, a) = (expected[i].value, actual[j].value);
                if (e - a).abs() > 1e-9 * e.abs().max(1.0) {
                    problems.push(format!(
                        "wrong value: {}: expected {e}, got {a}",
                        expected[i].key.join(",")
                    ));
                }
                i += 1;
                j += 1;
            }
        }
    }
    assert!(problems.is_empty(), "{label}:\n{}", problems.join("\n"));
}

/// Adds the keys of `<case_dir>/config.toml`, if there is one, to a plugin's
/// configuration table (they win).
pub fn with_case_overrides(mut table: toml::Table, case_dir: &Path) -> toml::Table {
    let path = case_dir.join("config.toml");
    if path.exists() {
        let text = std::fs::read_to_string(&path).unwrap();
        let extra: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        table.extend(extra);
    }
    table
}

/// Checks the points of each poll window `(n, from, to)` of a fixture run
/// against `expected.csv` (n = 1), `expected2.csv`... of `case_dir`;
/// `what` names the snapshots in messages (`proc`, `cgroup`).
pub fn check_windows(
    case_dir: &Path,
    what: &str,
    points: &[MeasurementPoint],
    metrics: &MetricRegistry,
    windows: &[(
        usize,
        crate::measurement::Timestamp,
        crate::measurement::Timestamp,
    )],
) {
    assert!(
        !windows.is_empty(),
        "{}: no {what}1 snapshot",
        case_dir.display()
    );
    for &(n, from, to) in windows {
        let actual = points
            .iter()
            .filter(|p| from <= p.timestamp && p.timestamp <= to)
            .map(|p| row_of(p, metrics))
            .collect();
        let file = if n == 1 {
            "expected.csv".to_owned()
        } else {
            format!("expected{n}.csv")
        };
        compare(
            &format!("case {}, poll after {what}{n}", case_dir.display()),
            read_expected(&case_dir.join(file)),
            actual,
        );
    }
}

/// Fails unless the directories of `fixtures_dir` are exactly `cases`
/// (so that no fixture case is left without a test).
pub fn assert_cases_are(fixtures_dir: &Path, cases: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(fixtures_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut known: Vec<String> = cases.iter().map(|s| (*s).to_owned()).collect();
    known.sort();
    assert_eq!(found, known);
}
