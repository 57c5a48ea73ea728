//! The Helm chart `deploy/helm/alumet-agent` and the plain manifests rendered
//! from it, checked with the real tools, run as processes:
//! - `helm lint --strict` with the defaults and every value set of `ci/`;
//! - a misspelt value fails `helm template` and `helm lint` with its name
//!   (values.schema.json), and so do the settings that cannot work together;
//! - `helm template` of every value set, validated by `kubernetes-validate
//!   --strict` for the oldest (1.27) and the newest (1.37) Kubernetes the
//!   installed kubernetes-validate bundles;
//! - the prometheus-operator objects (ServiceMonitor, PodMonitor) and every
//!   other object against the schemas of the npm packages `kubernetes-models`
//!   and `@kubernetes-models/prometheus-operator` (`helm/validate-models.js`);
//! - `checkov --skip-download` on every rendering, once, with the skips the
//!   chart's README justifies;
//! - `deploy/helm/rendered/` is what `scripts/render-helm.sh` renders now;
//! - the schema knows every key of the agent's configuration, and the agent
//!   accepts the configuration and overrides each value set renders
//!   (`alumet-agent config check`).
//!
//! Tools come from `.k8s-tools/bin` (scripts/install-k8s-tools.sh) or PATH.
//! When one is missing, a test fails in CI (`CI=true`) naming the install
//! script, and elsewhere prints `skipped: ...` and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALL: &str = "bash scripts/install-k8s-tools.sh";
/// The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
/// newest that kubernetes-validate (pinned by the install script) bundles.
const KUBE_OLDEST: &str = "1.27.0";
const KUBE_NEWEST: &str = "1.37.0";
const RELEASE: &str = "alumet-agent";
const NAMESPACE: &str = "alumet";
/// The value sets CI must render, at least (`ci/<name>-values.yaml`).
const REQUIRED_SETS: [&str; 4] = ["defaults", "gpu", "otlp", "servicemonitor"];
/// checkov checks skipped on every rendering (the chart's README, "checkov").
const CHECKOV_SKIPS: [&str; 3] = ["CKV_K8S_15", "CKV_K8S_43", "CKV2_K8S_6"];
/// checkov checks that the chart skips by annotation, only on a DaemonSet
/// granted the privilege they flag (uid 0, CAP_PERFMON).
const CHECKOV_ANNOTATED: [&str; 3] = ["CKV_K8S_23", "CKV_K8S_40", "CKV_K8S_25"];
/// Keys of alumet-config.toml that the chart sets or refuses, absent from
/// the schema's `config` (the list gen-config-schema.py reads too).
fn chart_owned() -> BTreeSet<String> {
    fs::read_to_string(repo().join("deploy/helm/chart-owned-keys.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/alumet-agent")
}

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let local = repo().join(".k8s-tools/bin").join(name);
    if is_executable(&local) {
        return Some(local);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// What a test cannot run without: fails in CI, skips elsewhere.
fn missing(what: &str, fix: &str) {
    let message = format!("{what} (run `{fix}`)");
    if in_ci() {
        panic!("{message}");
    }
    println!("skipped: {message}");
}

/// The tools, in order, or `None` (after `missing`).
fn tools<const N: usize>(names: [&str; N]) -> Option<[PathBuf; N]> {
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| find_tool(n)).collect();
    let absent: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !absent.is_empty() {
        missing(
            &format!("{} not found in .k8s-tools/bin or PATH", absent.join(", ")),
            INSTALL,
        );
        return None;
    }
    Some(
        found
            .into_iter()
            .map(Option::unwrap)
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    )
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs the command, fails the test with its output unless it succeeds.
fn succeed(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let output = run(command);
    let text = output_text(&output);
    assert!(output.status.success(), "{shown} failed:\n{text}");
    text
}

/// The value sets of `ci/`, by name (`gpu` for `ci/gpu-values.yaml`).
fn value_sets() -> Vec<(String, PathBuf)> {
    let mut sets: Vec<(String, PathBuf)> = fs::read_dir(chart().join("ci"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let set = name.strip_suffix("-values.yaml")?.to_owned();
            Some((set, e.path()))
        })
        .collect();
    sets.sort();
    for required in REQUIRED_SETS {
        assert!(
            sets.iter().any(|(s, _)| s == required),
            "ci/{required}-values.yaml is missing"
        );
    }
    sets
}

fn helm_template(helm: &Path, kube_version: &str) -> Command {
    let mut command = Command::new(helm);
    command.arg("template").arg(RELEASE).arg(chart()).args([
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
    ]);
    command
}

/// Every value set rendered for `kube_version`, one file each in `dir`.
fn render_sets(helm: &Path, kube_version: &str, dir: &Path) -> Vec<PathBuf> {
    value_sets()
        .iter()
        .map(|(set, values)| {
            let yaml = succeed(helm_template(helm, kube_version).arg("-f").arg(values));
            let file = dir.join(format!("{set}.yaml"));
            fs::write(&file, yaml).unwrap();
            file
        })
        .collect()
}

#[test]
fn chart_lints_strictly_with_every_value_set() {
    let Some([helm]) = tools(["helm"]) else {
        return;
    };
    succeed(Command::new(&helm).args(["lint", "--strict"]).arg(chart()));
    for (set, values) in value_sets() {
        let text = succeed(
            Command::new(&helm)
                .args(["lint", "--strict"])
                .arg(chart())
                .arg("-f")
                .arg(&values),
        );
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "helm lint with ci/{set}-values.yaml:\n{text}"
        );
    }
}

#[test]
fn misspelt_or_conflicting_values_fail_with_their_names() {
    let Some([helm]) = tools(["helm"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("misspelt.yaml");
    fs::write(&file, "prometheus:\n  serviceMonitr:\n    enabled: true\n").unwrap();
    let file = file.to_str().unwrap();
    // Refused by values.schema.json: `helm template` and `helm lint` fail
    // naming the value. (arguments, what the message must name)
    let schema_cases: [(&[&str], &str); 7] = [
        (&["--set", "resoures.limits.cpu=1"], "resoures"),
        (&["--set", "rapl.acess=group"], "acess"),
        (
            &["--set", "config.plugins.rapl.pollinterval=1s"],
            "pollinterval",
        ),
        (
            &["--set", "config.plugins.cgroups.names.kubernets=off"],
            "kubernets",
        ),
        (&["-f", file], "serviceMonitr"),
        // Set by the chart, not in `config`.
        (
            &[
                "--set",
                "config.plugins.prometheus.listen_address=0.0.0.0:8719",
            ],
            "listen_address",
        ),
        // A value outside the agent's choices.
        (&["--set", "config.plugins.rapl.interface=msr"], "interface"),
    ];
    for (args, name) in schema_cases {
        for lint in [false, true] {
            let mut command = if lint {
                let mut c = Command::new(&helm);
                c.args(["lint", "--strict"]).arg(chart());
                c
            } else {
                helm_template(&helm, KUBE_NEWEST)
            };
            let output = run(command.args(args));
            let text = output_text(&output);
            let verb = if lint { "lint" } else { "template" };
            assert!(
                !output.status.success(),
                "helm {verb} {args:?} succeeded:\n{text}"
            );
            assert!(
                text.contains(name),
                "helm {verb} {args:?} does not name {name}:\n{text}"
            );
        }
    }
    // Settings that cannot work together, refused by the templates: `helm
    // template` (and install) fails naming them; `helm lint` only reports a
    // template's `fail` as information, by design.
    let conflicts: [(&[&str], &str); 4] = [
        (
            &[
                "--set",
                "rapl.perfmon=true",
                "--set",
                "rapl.access=group",
                "--set",
                "rapl.groupId=998",
            ],
            "rapl.perfmon",
        ),
        (&["--set", "rapl.access=group"], "rapl.groupId"),
        (
            &[
                "--set",
                "prometheus.serviceMonitor.enabled=true",
                "--set",
                "prometheus.podMonitor.enabled=true",
            ],
            "prometheus.podMonitor.enabled",
        ),
        (
            &[
                "--set",
                "prometheus.serviceMonitor.enabled=true",
                "--set",
                "prometheus.listenOnPodIP=false",
            ],
            "prometheus.listenOnPodIP",
        ),
    ];
    for (args, name) in conflicts {
        let output = run(helm_template(&helm, KUBE_NEWEST).args(args));
        let text = output_text(&output);
        assert!(
            !output.status.success(),
            "helm template {args:?} succeeded:\n{text}"
        );
        assert!(
            text.contains(name),
            "helm template {args:?} does not name {name}:\n{text}"
        );
    }
}

#[test]
fn every_value_set_validates_on_the_oldest_and_newest_kubernetes() {
    let Some([helm, validate]) = tools(["helm", "kubernetes-validate"]) else {
        return;
    };
    let sets = value_sets();
    for version in [KUBE_OLDEST, KUBE_NEWEST] {
        let dir = tempfile::tempdir().unwrap();
        let files = render_sets(&helm, version, dir.path());
        let text = succeed(
            Command::new(&validate)
                .args(["--strict", "--kubernetes-version", version])
                .args(&files),
        );
        for line in text.lines() {
            let allowed_warning = line.starts_with("WARN")
                && (line.contains("kind ServiceMonitor with api version monitoring.coreos.com/v1")
                    || line.contains("kind PodMonitor with api version monitoring.coreos.com/v1"));
            assert!(
                !(line.starts_with("ERROR") || line.starts_with("WARN")) || allowed_warning,
                "kubernetes-validate --strict for {version}: {line}\n{text}"
            );
        }
        let daemonsets = text
            .lines()
            .filter(|l| l.contains("passed for resource daemonset/"))
            .count();
        assert_eq!(
            daemonsets,
            sets.len(),
            "one DaemonSet per value set:\n{text}"
        );
    }
}

#[test]
fn objects_match_the_kubernetes_models_schemas() {
    let Some([helm, node]) = tools(["helm", "node"]) else {
        return;
    };
    let node_dir = repo().join(".k8s-tools/node");
    if !node_dir
        .join("node_modules/@kubernetes-models/prometheus-operator/package.json")
        .is_file()
        || !node_dir
            .join("node_modules/kubernetes-models/package.json")
            .is_file()
    {
        missing(
            "the npm packages kubernetes-models and @kubernetes-models/prometheus-operator are not in .k8s-tools/node",
            INSTALL,
        );
        return;
    }
    let script = repo().join("deploy/tests/helm/validate-models.js");
    let dir = tempfile::tempdir().unwrap();
    let files = render_sets(&helm, KUBE_NEWEST, dir.path());
    let text = succeed(Command::new(&node).arg(&script).arg(&node_dir).args(&files));
    for kind in [
        "ServiceMonitor",
        "PodMonitor",
        "DaemonSet",
        "ClusterRole",
        "NetworkPolicy",
    ] {
        assert!(
            text.contains(&format!("ok {kind}/")),
            "no {kind} was validated:\n{text}"
        );
    }

    // The validator itself: a misspelt field and a wrong type are refused.
    let bad = dir.path().join("bad.yaml");
    fs::write(
        &bad,
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: bad}\n\
         spec:\n  selector: {matchLabels: {a: b}}\n  endpoints:\n    - port: metrics\n      scrapTimeout: 10s\n      interval: 7\n",
    )
    .unwrap();
    let output = run(Command::new(&node).arg(&script).arg(&node_dir).arg(&bad));
    let text = output_text(&output);
    assert!(
        !output.status.success(),
        "a broken ServiceMonitor passed:\n{text}"
    );
    assert!(text.contains("scrapTimeout: unknown field"), "{text}");
    assert!(text.contains("interval must be string"), "{text}");
}

#[test]
fn checkov_finds_nothing_beyond_the_documented_skips() {
    let Some([helm, checkov]) = tools(["helm", "checkov"]) else {
        return;
    };
    let readme = fs::read_to_string(chart().join("README.md")).unwrap();
    for id in CHECKOV_SKIPS.iter().chain(&CHECKOV_ANNOTATED) {
        assert!(
            readme.contains(id),
            "README.md does not justify the skip of {id}"
        );
    }
    // checkov leaves out hidden directories, as tempdir()'s `.tmp…` are.
    let dir = tempfile::Builder::new()
        .prefix("alumet-checkov-")
        .tempdir()
        .unwrap();
    let files = render_sets(&helm, KUBE_NEWEST, dir.path());
    let plain = dir.path().join("plain");
    fs::create_dir(&plain).unwrap();
    for entry in fs::read_dir(repo().join("deploy/helm/rendered"))
        .unwrap()
        .flatten()
    {
        fs::copy(entry.path(), plain.join(entry.file_name())).unwrap();
    }
    // The annotations appear only where the privilege is granted.
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let root = text.contains("runAsUser: 0\n");
        assert_eq!(
            root,
            text.contains("checkov.io/skip1: CKV_K8S_23="),
            "{}: the root skip annotation must come with uid 0 only",
            file.display()
        );
        assert_eq!(
            text.contains("add: [\"PERFMON\"]"),
            text.contains("checkov.io/skip3: CKV_K8S_25="),
            "{}: the capability skip annotation must come with CAP_PERFMON only",
            file.display()
        );
    }
    let text = succeed(
        Command::new(&checkov)
            .args([
                "--skip-download",
                "--compact",
                "--framework",
                "kubernetes",
                "--output",
                "json",
            ])
            .arg("--skip-check")
            .arg(CHECKOV_SKIPS.join(","))
            .arg("--directory")
            .arg(dir.path())
            .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true")
            .stderr(std::process::Stdio::null()),
    );
    let report: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("checkov's JSON report: {e}:\n{text}"));
    let summary = &report["summary"];
    assert_eq!(summary["failed"], 0, "checkov found problems:\n{text}");
    assert_eq!(
        summary["parsing_errors"], 0,
        "checkov could not read a file:\n{text}"
    );
    assert!(
        summary["resource_count"].as_u64().unwrap_or(0) >= 20,
        "checkov read too little:\n{summary}"
    );
    for skipped in report["results"]["skipped_checks"].as_array().unwrap() {
        let id = skipped["check_id"].as_str().unwrap_or_default();
        assert!(
            CHECKOV_ANNOTATED.contains(&id),
            "checkov skipped {id}, which no annotation of the chart names: {skipped}"
        );
    }
}

#[test]
fn committed_manifests_are_what_the_chart_renders() {
    let Some([helm]) = tools(["helm"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    succeed(
        Command::new("bash")
            .arg(repo().join("scripts/render-helm.sh"))
            .arg(dir.path())
            .env("HELM", &helm),
    );
    let files = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let committed_dir = repo().join("deploy/helm/rendered");
    let (rendered, committed) = (files(dir.path()), files(&committed_dir));
    let mut stale: Vec<String> = rendered.symmetric_difference(&committed).cloned().collect();
    for name in rendered.intersection(&committed) {
        if fs::read(dir.path().join(name)).unwrap() != fs::read(committed_dir.join(name)).unwrap() {
            stale.push(name.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "deploy/helm/rendered/ is not what the chart renders ({}): run `bash scripts/render-helm.sh`",
        stale.join(", ")
    );
}

/// Leaf keys of alumet-config.toml, as `config regen` writes it: one
/// `[table]` header, then its `key = value` lines; a table without keys (an
/// open map, e.g. `[plugins.influxdb.tags]`) is a leaf itself.
fn config_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    let mut table_is_empty = false;
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if table_is_empty {
                keys.insert(table.clone());
            }
            table = header.trim().to_owned();
            table_is_empty = true;
        } else if let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            let key = key.trim().trim_matches('"');
            keys.insert(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
            table_is_empty = false;
        }
    }
    if table_is_empty {
        keys.insert(table);
    }
    keys
}

/// Leaf keys of a JSON schema object: properties without properties of their own.
fn schema_keys(schema: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
        return;
    };
    for (key, value) in properties {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if value.get("properties").is_some() {
            schema_keys(value, &path, out);
        } else {
            out.insert(path);
        }
    }
}

#[test]
fn schema_knows_every_key_of_the_agent_configuration() {
    let agent = config_keys(&fs::read_to_string(repo().join("alumet-config.toml")).unwrap());
    let schema: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    let mut known = BTreeSet::new();
    schema_keys(&schema["properties"]["config"], "", &mut known);
    let owned = chart_owned();
    let gone: Vec<&String> = owned.difference(&agent).collect();
    assert!(
        gone.is_empty(),
        "chart-owned keys the agent no longer has: {gone:?}"
    );
    let expected: BTreeSet<String> = agent.difference(&owned).cloned().collect();
    let absent: Vec<&String> = expected.difference(&known).collect();
    let unknown: Vec<&String> = known.difference(&expected).collect();
    assert!(
        absent.is_empty() && unknown.is_empty(),
        "values.schema.json's config disagrees with alumet-config.toml: not in the schema {absent:?}, \
         not in the agent {unknown:?} (run `python3 deploy/helm/gen-config-schema.py`)"
    );
}

/// The agent binary built beside this test (target/<profile>/alumet-agent),
/// or $ALUMET_AGENT.
fn agent() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ALUMET_AGENT") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let agent = profile_dir.join("alumet-agent");
    is_executable(&agent).then_some(agent)
}

/// The configuration file of a rendering (its ConfigMap's block scalar).
fn rendered_config(yaml: &str) -> String {
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "alumet-config.toml: |");
    lines
        .next()
        .expect("no alumet-config.toml in the ConfigMap");
    let mut toml = String::new();
    for line in lines {
        if let Some(content) = line.strip_prefix("    ") {
            toml.push_str(content);
        } else if !line.trim().is_empty() {
            break;
        }
        toml.push('\n');
    }
    toml
}

/// The agent's arguments in a rendering's DaemonSet, Kubernetes' $(VAR)
/// expanded as the kubelet would.
fn rendered_args(yaml: &str) -> Vec<String> {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "args:");
    let header = lines.next().expect("no args in the DaemonSet");
    let indent = header.len() - header.trim_start().len();
    let mut args = Vec::new();
    for line in lines {
        let text = line.trim_start();
        if line.len() - text.len() <= indent || !(text.starts_with("- ") || text.starts_with('#')) {
            break;
        }
        if let Some(value) = text.strip_prefix("- ") {
            let value = if value.starts_with('"') {
                serde_json::from_str::<String>(value).unwrap()
            } else {
                value.to_owned()
            };
            args.push(
                value
                    .replace("$(POD_IP)", "10.1.2.3")
                    .replace("$(NODE_NAME)", "node-1"),
            );
        }
    }
    args
}

#[test]
fn the_agent_accepts_what_every_value_set_renders() {
    let Some([helm]) = tools(["helm"]) else {
        return;
    };
    let Some(agent) = agent() else {
        missing(
            "no alumet-agent binary beside this test or in $ALUMET_AGENT",
            "cargo build -p app-agent",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (set, values) in value_sets() {
        let yaml = succeed(helm_template(&helm, KUBE_NEWEST).arg("-f").arg(&values));
        let config = dir.path().join(format!("{set}.toml"));
        fs::write(&config, rendered_config(&yaml)).unwrap();
        let mut args = rendered_args(&yaml);
        assert_eq!(
            args.first().map(String::as_str),
            Some("--config"),
            "{set}: {args:?}"
        );
        assert_eq!(
            args.last().map(String::as_str),
            Some("run"),
            "{set}: {args:?}"
        );
        args[1] = config.to_str().unwrap().to_owned();
        args.pop();
        let text = succeed(Command::new(&agent).args(&args).args(["config", "check"]));
        assert!(text.contains("valid"), "{set}: {text}");
    }
}
