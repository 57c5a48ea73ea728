//! The fleet monitoring artefacts of `deploy/monitoring` against the real
//! tools: the Grafana dashboards (`dashboards/*.json`) and the Prometheus
//! rules (`rules/alumet.rules.yaml`, unit-tested by `rules/tests/*.yaml`).
//!
//! - `promtool check rules` and `promtool test rules` pass;
//! - every dashboard is well formed (schema version, the `datasource`,
//!   `cluster` and `node` variables, no undefined variable) and the README
//!   names every dashboard and alert;
//! - the live check: the agent (procfs, cgroups, rapl on a fixture whose
//!   counter the test freezes half-way, cpu-power-model, energy-attribution,
//!   energy-to-carbon, an influxdb output to a closed port that drops, and
//!   the prometheus endpoint) measures real cgroups the test creates, named
//!   as a Slurm job (`/slurm/uid_0/job_4242`, its names from a process's
//!   `SLURM_JOB_*` environment), a libvirt VM and a Kubernetes container
//!   (its names from a local HTTPS server speaking the API's JSON); a real
//!   Prometheus on 127.0.0.1 scrapes it every second, with the labels
//!   `cluster` and `node`, a second target that is down, and the rules
//!   loaded. Then every panel's query, its variables resolved as Grafana
//!   would (`label_values` against that Prometheus), parses
//!   (`promtool query instant`) and returns data, or the test lists it;
//!   every recording rule has series; every alert's expression runs, and
//!   with its windows cut to the frozen phase the alerts that should fire
//!   here fire (agent down, sensor stopped, estimate where measured, output
//!   dropping) and the others do not.
//!
//! Needs root (cgroups), `prometheus`, `promtool`, `python3` and `openssl`
//! (`scripts/install-test-servers.sh`). Without them the tests print
//! `skipped: ...` and pass, except under CI (`CI=true`), where that is a
//! failure. Everything listens on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alumet::testing::peer::ChildProcess;
use alumet_kernelfs::cgroup::{dir_of, Accounting, CgroupLayout, CommandCgroup, HierarchyChoice};
use serde_json::{json, Value};

use common::{encode, free_port, http, wait_until};

const CLUSTER: &str = "test-cluster";
const NODE: &str = "node-a";
const DOWN_NODE: &str = "node-down";
const POD_UID: &str = "0d3c5c1e-5a4b-4d6f-9c1e-1f2a3b4c5d6e";
const TOKEN: &str = "fleet-test-token";

/// Grafana's global variables, at the scale of this test (1 s scrapes, a
/// run of about a minute).
const BUILTINS: [(&str, &str); 5] = [
    ("__rate_interval", "10s"),
    ("__interval", "2s"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
];

/// The alerts of the rules file, and the node each fires for in this setup
/// (their windows cut to the frozen phase), or `None`: must not fire.
const ALERTS: [(&str, Option<&str>); 9] = [
    ("AlumetAgentDown", Some(DOWN_NODE)),
    ("AlumetAgentsAbsent", None),
    ("AlumetAgentRestarting", None),
    ("AlumetEnergySensorStopped", Some(NODE)),
    ("AlumetCpuEnergyEstimatedNotMeasured", Some(NODE)),
    ("AlumetOutputDroppingPoints", Some(NODE)),
    ("AlumetOutputRetrying", Some(NODE)),
    ("AlumetPrometheusSeriesLimit", None),
    ("AlumetWorkloadNamesMissing", None),
];

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

fn rules_file() -> PathBuf {
    monitoring().join("rules/alumet.rules.yaml")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `what`, or `None` after `skipped: why` (a failure under CI).
fn required<T>(what: Option<T>, why: &str) -> Option<T> {
    if what.is_none() {
        assert!(
            !in_ci(),
            "{why} (CI=true: run scripts/install-test-servers.sh, as root)"
        );
        eprintln!("skipped: {why}");
    }
    what
}

fn tool(name: &str) -> Option<PathBuf> {
    required(
        common::find_binary(name),
        &format!("`{name}` is not installed (scripts/install-test-servers.sh)"),
    )
}

fn run_tool(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------
// The dashboards as files.

struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let dir = monitoring().join("dashboards");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard in {}", dir.display());
    files
        .into_iter()
        .map(|p| Dashboard {
            file: p.file_name().unwrap().to_string_lossy().into_owned(),
            json: serde_json::from_str(&fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        })
        .collect()
}

/// Every panel, those of rows included.
fn panels(d: &Dashboard) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d.json["panels"], &mut out);
    out
}

/// One query of a panel.
struct Query {
    where_: String,
    expr: String,
}

fn queries(d: &Dashboard) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                where_: format!(
                    "{} / {:?} / {}",
                    d.file,
                    p["title"].as_str().unwrap_or(""),
                    t["refId"].as_str().unwrap_or("?")
                ),
                expr: t["expr"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    out
}

fn variables(d: &Dashboard) -> &[Value] {
    d.json["templating"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The query of a `query` variable (`definition`, or `query` as a string
/// or as the editor's object).
fn variable_query(v: &Value) -> String {
    v["definition"]
        .as_str()
        .or_else(|| v["query"].as_str())
        .or_else(|| v["query"]["query"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// `label_values(SELECTOR, LABEL)` → (selector, label).
fn label_values_parts(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_owned(), label.trim().to_owned()))
}

/// Replaces `$name`, `${name}`, `${name:format}` and `[[name]]`.
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = text.to_owned();
    for name in names {
        let value = &values[name];
        out = out.replace(&format!("[[{name}]]"), value);
        out = out.replace(&format!("${{{name}}}"), value);
        while let Some(at) = out.find(&format!("${{{name}:")) {
            let end = at + out[at..].find('}').unwrap();
            out.replace_range(at..=end, value);
        }
        let token = format!("${name}");
        let mut from = 0;
        while let Some(found) = out[from..].find(&token) {
            let at = from + found;
            let after = at + token.len();
            let boundary = out[after..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            if boundary {
                out.replace_range(at..after, value);
                from = at + value.len();
            } else {
                from = after;
            }
        }
    }
    out
}

/// A value in a PromQL regex inside a double-quoted string, as Grafana escapes it.
fn regex_escape(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if "\\.^$*+?()[]{}|".contains(c) {
                format!("\\\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What a variable holding `values` expands to.
fn variable_value(v: &Value, values: &[String]) -> String {
    let multi = v["multi"].as_bool().unwrap_or(false) || v["includeAll"].as_bool().unwrap_or(false);
    if multi {
        let alternatives: Vec<String> = values.iter().map(|s| regex_escape(s)).collect();
        format!("({})", alternatives.join("|"))
    } else {
        values[0].clone()
    }
}

fn builtins() -> BTreeMap<String, String> {
    BUILTINS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The `$names` a text uses.
fn referenced_variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = if bytes.get(i + 1) == Some(&b'{') {
                i + 2
            } else {
                i + 1
            };
            let end = start
                + text[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(text.len() - start);
            // `$1` in label_replace's replacement is not a variable.
            if end > start && !bytes[start].is_ascii_digit() {
                out.insert(text[start..end].to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Static checks.

#[test]
fn every_dashboard_is_well_formed_and_uses_only_its_variables() {
    let mut uids = BTreeSet::new();
    for d in dashboards() {
        let j = &d.json;
        let file = &d.file;
        assert!(
            j["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
            "{file}: schemaVersion of a current Grafana (>= 39)"
        );
        let uid = j["uid"].as_str().unwrap_or("");
        assert!(
            !uid.is_empty() && uid.len() <= 40 && uids.insert(uid.to_owned()),
            "{file}: uid {uid:?} empty, too long or not unique"
        );
        assert!(
            j["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Alumet / ")),
            "{file}: title"
        );
        assert!(j["id"].is_null(), "{file}: id must be null to import");
        let vars = variables(&d);
        let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
        let ds = vars.iter().find(|v| v["name"] == "datasource");
        assert!(
            ds.is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "{file}: a Prometheus datasource variable `datasource`"
        );
        for name in ["cluster", "node"] {
            assert!(names.contains(&name), "{file}: variable {name}");
        }
        if file.contains("kubernetes") {
            assert!(names.contains(&"namespace"), "{file}: variable namespace");
        }
        let mut defined: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
        defined.extend(BUILTINS.iter().map(|(k, _)| (*k).to_owned()));
        for v in vars.iter().filter(|v| v["type"] == "query") {
            let query = variable_query(v);
            assert!(
                label_values_parts(&query).is_some(),
                "{file}: variable {}: label_values(SELECTOR, LABEL) expected, got {query:?}",
                v["name"]
            );
            assert_eq!(
                v["datasource"]["uid"], "${datasource}",
                "{file}: {}",
                v["name"]
            );
            for r in referenced_variables(&query) {
                assert!(
                    defined.contains(&r),
                    "{file}: variable {} uses ${r}",
                    v["name"]
                );
            }
        }
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("");
            assert!(!title.is_empty(), "{file}: a panel without title");
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: panel id of {title:?} repeated"
            );
            let pos = &p["gridPos"];
            assert!(
                pos["x"].as_u64().unwrap() + pos["w"].as_u64().unwrap() <= 24,
                "{file}: {title:?} wider than the grid"
            );
            let kind = p["type"].as_str().unwrap();
            if kind == "row" || kind == "text" {
                continue;
            }
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{file}: {title:?} has no description"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{file}: {title:?}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {title:?} has no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{file}: {title:?}");
                let expr = t["expr"].as_str().unwrap_or("");
                assert!(
                    !expr.trim().is_empty(),
                    "{file}: {title:?} has an empty query"
                );
                for r in referenced_variables(expr) {
                    assert!(
                        defined.contains(&r),
                        "{file}: {title:?} uses undefined ${r}"
                    );
                }
            }
        }
    }
}

/// The alert names of the rules file (`- alert: NAME` lines).
fn alert_names_in_file() -> Vec<String> {
    fs::read_to_string(rules_file())
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn the_readme_names_every_dashboard_and_alert_and_the_test_knows_every_alert() {
    let readme = fs::read_to_string(monitoring().join("README.md")).unwrap();
    for d in dashboards() {
        assert!(
            readme.contains(&d.file),
            "README.md does not name {}",
            d.file
        );
    }
    let in_file: BTreeSet<String> = alert_names_in_file().into_iter().collect();
    let known: BTreeSet<String> = ALERTS.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(in_file, known, "ALERTS here and the rules file differ");
    for name in &in_file {
        assert!(
            readme.contains(name.as_str()),
            "README.md does not describe {name}"
        );
    }
    for label in ["cluster", "node"] {
        assert!(
            readme.contains(&format!("`{label}`")),
            "README.md: label {label}"
        );
    }
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let rules = rules_file();
    let (ok, text) = run_tool(&promtool, &["check", "rules", rules.to_str().unwrap()]);
    assert!(ok, "promtool check rules:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
    let mut tests: Vec<PathBuf> = fs::read_dir(monitoring().join("rules/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no rule unit tests");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(|p| p.to_str().unwrap()));
    let (ok, text) = run_tool(&promtool, &args);
    assert!(ok, "promtool test rules:\n{text}");
    // Every alert has a unit test.
    let tested: String = tests
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    for name in alert_names_in_file() {
        assert!(
            tested.contains(&format!("alertname: {name}")),
            "no unit test for {name}"
        );
    }
}

// ---------------------------------------------------------------------------
// The live check: workloads.

/// A cgroup at a fixed path (its missing parents created, and removed at drop).
struct TestCgroup {
    cgroup: Option<CommandCgroup>,
    parents: Vec<PathBuf>,
}

impl TestCgroup {
    fn create(accounting: &Accounting, path: &str) -> Result<Self, String> {
        let (parent, name) = path.rsplit_once('/').unwrap();
        let mut parents = Vec::new();
        for mount in accounting.mount_points() {
            let mut dir = mount.to_path_buf();
            for component in parent.split('/').filter(|c| !c.is_empty()) {
                dir.push(component);
                if !dir.exists() {
                    fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    parents.push(dir.clone());
                }
            }
            // The leaf a killed run may have left (empty, so removable).
            let _ = fs::remove_dir(dir_of(mount, path));
        }
        let parent = if parent.is_empty() { "/" } else { parent };
        match CommandCgroup::create(accounting, parent, name) {
            Ok(c) => Ok(Self {
                cgroup: Some(c),
                parents,
            }),
            Err(e) => {
                for p in parents.iter().rev() {
                    let _ = fs::remove_dir(p);
                }
                Err(e.to_string())
            }
        }
    }

    /// A light CPU load in this cgroup, with `env`.
    fn spin(&self, env: &[(&str, &str)]) -> ChildProcess {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("while :; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.05; done")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.cgroup.as_ref().unwrap().join_on_exec(&mut cmd);
        ChildProcess::new(cmd.spawn().unwrap())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(c) = self.cgroup.take() {
            let _ = c.remove(Duration::from_secs(2));
        }
        // A parent is busy for a moment after its child's removal (the
        // kernel takes the child's state down asynchronously).
        for p in self.parents.iter().rev() {
            wait_until(Duration::from_secs(2), || {
                fs::remove_dir(p).is_ok() || !p.exists()
            });
        }
    }
}

/// The cgroups of a Slurm job, a libvirt VM and a Kubernetes container.
fn workload_cgroups(
    accounting: &Accounting,
    container_id: &str,
) -> Result<(TestCgroup, TestCgroup, TestCgroup), String> {
    Ok((
        TestCgroup::create(accounting, "/slurm/uid_0/job_4242")?,
        TestCgroup::create(accounting, "/machine/qemu-1-test.libvirt-qemu")?,
        TestCgroup::create(
            accounting,
            &format!("/kubepods/burstable/pod{POD_UID}/{container_id}"),
        )?,
    ))
}

/// The Kubernetes API server's pod list, as a local HTTPS server (Python's
/// http.server and ssl) serves it: `GET /api/v1/pods` (the list, and a
/// watch that sends a bookmark and stays open), bearer token checked.
const KUBE_API_PY: &str = r#"
import http.server, json, os, socketserver, ssl, sys, time

port_file, cert, key, token, pods_file = sys.argv[1:6]
with open(pods_file) as f:
    pods = json.load(f)
version = pods["metadata"]["resourceVersion"]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def status(self, code, reason, message):
        self.reply(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": message, "reason": reason, "code": code})

    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer " + token:
            return self.status(401, "Unauthorized", "Unauthorized")
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if path != "/api/v1/pods":
            return self.status(404, "NotFound", "the server could not find the requested resource")
        if params.get("watch") in ("1", "true"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            bookmark = {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                                       "metadata": {"resourceVersion": version}}}
            self.wfile.write((json.dumps(bookmark) + "\n").encode())
            self.wfile.flush()
            time.sleep(int(params.get("timeoutSeconds", "60")))
            return
        self.reply(200, pods)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"#;

struct KubeApi {
    _process: ChildProcess,
    port: u16,
    ca_file: PathBuf,
    token_file: PathBuf,
}

impl KubeApi {
    /// Serves one pod of node NODE, namespace `shop`, whose container `app`
    /// has id `container_id`.
    fn start(python: &Path, dir: &Path, container_id: &str) -> Self {
        let certs = dir.join("certs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-certs.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg(&certs)
            .status()
            .unwrap();
        assert!(status.success(), "make-test-certs.sh (openssl) failed");
        let pods = json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "7"},
            "items": [{
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": "web-0",
                    "namespace": "shop",
                    "uid": POD_UID,
                    "resourceVersion": "7",
                    "labels": {"app": "web"}
                },
                "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "nginx:1.27"}]},
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{
                        "name": "app",
                        "image": "nginx:1.27",
                        "containerID": format!("containerd://{container_id}"),
                        "ready": true,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
                    }]
                }
            }]
        });
        let pods_file = dir.join("pods.json");
        fs::write(&pods_file, pods.to_string()).unwrap();
        let token_file = dir.join("token");
        fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let script = dir.join("kube_api.py");
        fs::write(&script, KUBE_API_PY).unwrap();
        let port_file = dir.join("kube_api.port");
        let child = Command::new(python)
            .arg(&script)
            .arg(&port_file)
            .arg(certs.join("server.pem"))
            .arg(certs.join("server.key"))
            .arg(TOKEN)
            .arg(&pods_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("kube_api.log")).unwrap())
            .spawn()
            .unwrap();
        let process = ChildProcess::new(child);
        assert!(
            wait_until(Duration::from_secs(10), || port_file.exists()),
            "the API server did not start: {:?}",
            fs::read_to_string(dir.join("kube_api.log"))
        );
        Self {
            _process: process,
            port: fs::read_to_string(&port_file)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
            ca_file: certs.join("ca.pem"),
            token_file,
        }
    }
}

// ---------------------------------------------------------------------------
// The live check: Prometheus.

struct Prometheus {
    _process: ChildProcess,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes the agent (as node NODE) and a closed port (as DOWN_NODE)
    /// every second, with the rules loaded.
    fn start(binary: &Path, agent_port: u16, dead_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n  \
                 external_labels:\n    cluster: {CLUSTER}\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: alumet\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{agent_port}']\n        labels: {{cluster: {CLUSTER}, node: {NODE}}}\n      \
                 - targets: ['127.0.0.1:{dead_port}']\n        labels: {{cluster: {CLUSTER}, node: {DOWN_NODE}}}\n",
                rules = rules_file().canonicalize().unwrap().display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Self {
            _process: ChildProcess::new(child),
            port,
            dir,
        };
        let ready = wait_until(Duration::from_secs(20), || {
            matches!(http(port, "GET", "/-/ready"), Some((200, _)))
        });
        assert!(ready, "prometheus did not start: {:?}", server.log());
        server
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let (status, body) = http(self.port, "GET", path).ok_or("no answer")?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || answer["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(answer["data"].clone())
    }

    /// `/api/v1/query` now: the result's series, or the server's error.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.get(&format!("/api/v1/query?query={}", encode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The most samples of one series matching `selector` in the last 5 minutes.
    fn samples(&self, selector: &str) -> usize {
        self.query(&format!("max(count_over_time({selector}[5m]))"))
            .ok()
            .and_then(|r| {
                r.first()
                    .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            })
            .unwrap_or(0.0) as usize
    }

    fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let data = self.get(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            encode(selector)
        ))?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .filter(|v| !v.is_empty())
            .collect())
    }

    /// Waits until each of `selectors` has `min` samples; the ones that never do.
    /// (Asked every 250 ms: the machine's two cores also run the agent and Prometheus.)
    fn wait_for(&self, selectors: &[&str], min: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing: Vec<String> = selectors
                .iter()
                .filter(|s| self.samples(s) < min)
                .map(|s| (*s).to_owned())
                .collect();
            if missing.is_empty() || Instant::now() > deadline {
                return missing;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The node labels of a query's result.
fn nodes_of(result: &[Value]) -> BTreeSet<String> {
    result
        .iter()
        .map(|s| s["metric"]["node"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// `expr` with every range (`[5m]`, `[1d]`) set to `window`; strings untouched.
fn with_windows(expr: &str, window: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            in_string = !in_string;
        }
        if c == '\\' && in_string {
            out.push(c);
            if let Some((_, next)) = chars.next() {
                out.push(next);
            }
            continue;
        }
        if c == '[' && !in_string {
            if let Some(len) = expr[i..].find(']') {
                let inner = &expr[i + 1..i + len];
                let is_range = inner.len() > 1
                    && inner[..inner.len() - 1].chars().all(|c| c.is_ascii_digit())
                    && inner.ends_with(['s', 'm', 'h', 'd', 'w', 'y']);
                if is_range {
                    out.push_str(&format!("[{window}]"));
                    for _ in 0..len {
                        chars.next();
                    }
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn agent_config(dir: &Path, prometheus_port: u16, api: &KubeApi, influx_port: u16) -> PathBuf {
    let path = dir.join("alumet-config.toml");
    fs::write(
        &path,
        format!(
            r#"[plugins.prometheus]
listen_address = "127.0.0.1:{prometheus_port}"

[plugins.rapl]
interface = "powercap"
poll_interval = "200ms"
flush_interval = "500ms"

[plugins.procfs]
system_poll_interval = "500ms"
process_poll_interval = "1s"
flush_interval = "500ms"

[plugins.cgroups]
poll_interval = "500ms"
flush_interval = "500ms"

[plugins.cgroups.names]
kubernetes = "api_server"
api_url = "https://127.0.0.1:{api_port}"
node_name = "{NODE}"
token_file = "{token}"
ca_file = "{ca}"
squeue = ""

[plugins.cpu-power-model]
max_delay = "1s"

[plugins.energy-attribution]
max_delay = "3s"
idle_power_w = {{ package = 5.0 }}

[plugins.energy-to-carbon]
country = "FR"

[plugins.influxdb]
url = "http://127.0.0.1:{influx_port}"
batch_size = 10
max_buffer_points = 20
retry_initial_delay = "50ms"
retry_max_delay = "200ms"
shutdown_timeout = "100ms"
# At the scale of this test's 1 s scrapes (10 s by default).
own_metrics_interval = "1s"
"#,
            api_port = api.port,
            token = api.token_file.display(),
            ca = api.ca_file.display(),
        ),
    )
    .unwrap();
    path
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn every_panel_and_alert_runs_on_a_real_prometheus_scraping_the_agent() {
    let started = Instant::now();
    let (Some(prometheus_bin), Some(promtool), Some(python), Some(_openssl)) = (
        tool("prometheus"),
        tool("promtool"),
        tool("python3"),
        tool("openssl"),
    ) else {
        return;
    };
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if required(root.then_some(()), "not root: cannot create cgroups").is_none() {
        return;
    }
    let layout = CgroupLayout::detect(Path::new("/sys/fs/cgroup"), Path::new("/proc"));
    let Some(layout) = required(layout.ok(), "no cgroup filesystem") else {
        return;
    };
    let accounting = layout.accounting(HierarchyChoice::Auto).unwrap();

    // The workloads: a Slurm job, a VM, a Kubernetes container.
    let container_id = format!("{:016x}", 0x7e57_c0de_u64).repeat(4);
    let created = workload_cgroups(&accounting, &container_id);
    let why = created
        .as_ref()
        .err()
        .map(|e| format!("cannot create cgroups here: {e}"));
    let Some((job, vm, pod_container)) = required(created.ok(), why.as_deref().unwrap_or(""))
    else {
        return;
    };
    let _job_process = job.spin(&[
        ("SLURM_JOB_ID", "4242"),
        ("SLURM_JOB_NAME", "train"),
        ("SLURM_JOB_USER", "alice"),
        ("SLURM_JOB_ACCOUNT", "physics"),
        ("SLURM_JOB_PARTITION", "gpu"),
    ]);
    let _vm_process = vm.spin(&[]);
    let _container_process = pod_container.spin(&[]);

    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(&python, dir.path(), &container_id);

    // RAPL: a package at 30 W, whose counter the test freezes half-way.
    let frozen = Arc::new(AtomicBool::new(false));
    let rapl = {
        let frozen = frozen.clone();
        common::RaplFixture::start_with(dir.path(), move |_| {
            if frozen.load(Ordering::Relaxed) {
                0.0
            } else {
                0.3
            }
        })
    };

    let agent_port = free_port();
    let dead_port = free_port();
    let influx_port = free_port();
    let config = agent_config(dir.path(), agent_port, &api, influx_port);
    let agent_log = dir.path().join("agent.log");
    let agent = common::agent_command()
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .args([
            "--control-socket",
            dir.path().join("control.sock").to_str().unwrap(),
        ])
        .args([
            "--plugins",
            "procfs,cgroups,rapl,cpu-power-model,energy-attribution,energy-to-carbon,influxdb,prometheus",
        ])
        .args(&rapl.args)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&agent_log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = ChildProcess::new(agent);
    let log = || fs::read_to_string(&agent_log).unwrap_or_default();
    let serving = wait_until(Duration::from_secs(30), || {
        http(agent_port, "GET", "/metrics").is_some_and(|(s, _)| s == 200)
    });
    assert!(serving, "the agent's endpoint did not answer:\n{}", log());
    let prometheus = Prometheus::start(&prometheus_bin, agent_port, dead_port);
    eprintln!("agent and prometheus up after {:.1?}", started.elapsed());

    // Phase 1: measured, each workload named and attributed energy.
    let named = [
        r#"alumet_attributed_energy_joules_total{level="cgroup", namespace="shop", pod="web-0", container="app"}"#,
        r#"alumet_attributed_energy_joules_total{level="cgroup", workload="slurm_job", job_id="4242", job_name="train", user="alice", account="physics", partition="gpu"}"#,
        r#"alumet_attributed_energy_joules_total{level="cgroup", workload="vm", vm_name="test"}"#,
        r#"alumet_carbon_emission_total{energy_metric="attributed_energy", level="cgroup", namespace="shop"}"#,
        r#"alumet_rapl_consumed_energy_joules_total{cluster="test-cluster", node="node-a", domain="package"}"#,
        r#"alumet_dropped_points_total{node="node-a"}"#,
    ];
    let missing = prometheus.wait_for(&named, 3, Duration::from_secs(40));
    assert!(
        missing.is_empty(),
        "never in Prometheus: {missing:#?}\nagent log:\n{}",
        tail(&log(), 30)
    );
    eprintln!("measured phase ready after {:.1?}", started.elapsed());

    // Phase 2: the counter freezes; the agent says so and the model estimates.
    frozen.store(true, Ordering::Relaxed);
    let frozen_at = Instant::now();
    let frozen_unix = unix_now();
    let estimated = [
        r#"alumet_energy_unmeasured_time_seconds_total{node="node-a", domain="package", reason="frozen"}"#,
        r#"alumet_estimated_cpu_energy_joules_total{node="node-a", estimated="true"}"#,
        r#"alumet_attributed_energy_joules_total{level="cgroup", estimated="true", namespace="shop"}"#,
        r#"alumet_attributed_energy_joules_total{level="cgroup", estimated="true", job_id="4242"}"#,
        r#"alumet_attributed_energy_joules_total{level="cgroup", estimated="true", vm_name="test"}"#,
        r#"alumet_carbon_emission_total{energy_metric="estimated_cpu_energy"}"#,
    ];
    let missing = prometheus.wait_for(&estimated, 3, Duration::from_secs(40));
    assert!(
        missing.is_empty(),
        "never in Prometheus after the freeze: {missing:#?}\nagent log:\n{}",
        tail(&log(), 30)
    );
    // At least 6 s of scrapes after the last measured point reached Prometheus.
    let settle = Duration::from_secs(11).saturating_sub(frozen_at.elapsed());
    std::thread::sleep(settle);
    eprintln!("estimated phase ready after {:.1?}", started.elapsed());

    // Every panel: variables resolved, parsed by promtool, data returned.
    let mut failures = Vec::new();
    let mut checked = 0;
    for d in dashboards() {
        let mut values = builtins();
        for v in variables(&d) {
            let name = v["name"].as_str().unwrap().to_owned();
            let kind = v["type"].as_str().unwrap_or("");
            let resolved = match kind {
                "datasource" => continue,
                "query" => {
                    let query = variable_query(v);
                    let (selector, label) = label_values_parts(&query).unwrap();
                    let selector = substitute(&selector, &values);
                    match prometheus.label_values(&label, &selector) {
                        Ok(found) if !found.is_empty() => variable_value(v, &found),
                        Ok(_) => {
                            failures
                                .push(format!("{}: variable {name}: no value for {query}", d.file));
                            ".*".to_owned()
                        }
                        Err(e) => {
                            failures.push(format!("{}: variable {name}: {e}", d.file));
                            ".*".to_owned()
                        }
                    }
                }
                "custom" | "constant" => {
                    let current = &v["current"]["value"];
                    let chosen: Vec<String> = match current {
                        Value::Array(a) => a
                            .iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect(),
                        Value::String(s) => vec![s.clone()],
                        _ => vec![v["query"].as_str().unwrap_or("").to_owned()],
                    };
                    variable_value(v, &chosen)
                }
                other => panic!("{}: variable {name} of type {other}", d.file),
            };
            values.insert(name, resolved);
        }
        for q in queries(&d) {
            checked += 1;
            let expr = substitute(&q.expr, &values);
            let (parsed, text) =
                run_tool(&promtool, &["query", "instant", &prometheus.url(), &expr]);
            if !parsed {
                failures.push(format!(
                    "{}: promtool: {}\n    {expr}",
                    q.where_,
                    text.trim()
                ));
                continue;
            }
            match prometheus.query(&expr) {
                Ok(result) if result.is_empty() => {
                    failures.push(format!("{}: EMPTY\n    {expr}", q.where_));
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{}: {e}\n    {expr}", q.where_)),
            }
        }
    }
    eprintln!(
        "{checked} panel queries checked after {:.1?}",
        started.elapsed()
    );

    // The rules as Prometheus loaded them: each evaluated without error,
    // every recording rule has series.
    let groups = prometheus.get("/api/v1/rules").unwrap();
    let rules: Vec<Value> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(rules.len() >= ALERTS.len() + 5, "rules loaded: {rules:#?}");
    let mut alerts_seen = BTreeSet::new();
    // The frozen phase, less the time its last measured points may take to
    // be flushed and scraped on a loaded machine.
    let window = format!(
        "{}s",
        (unix_now() - frozen_unix - 5.0).floor().max(6.0) as u64
    );
    for rule in &rules {
        let name = rule["name"].as_str().unwrap();
        let expr = rule["query"].as_str().unwrap();
        if rule["health"] != "ok" {
            failures.push(format!(
                "rule {name}: health {} {}",
                rule["health"], rule["lastError"]
            ));
        }
        if rule["type"] == "recording" {
            match prometheus.query(name) {
                Ok(r) if r.is_empty() => failures.push(format!("recording rule {name}: no series")),
                Ok(_) => {}
                Err(e) => failures.push(format!("recording rule {name}: {e}")),
            }
            continue;
        }
        alerts_seen.insert(name.to_owned());
        if let Err(e) = prometheus.query(expr) {
            failures.push(format!("alert {name}: {e}"));
        }
        let expected = ALERTS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("alert {name} unknown to this test"))
            .1;
        let short = with_windows(expr, &window);
        match prometheus.query(&short) {
            Ok(result) => {
                let fired = nodes_of(&result);
                let want: BTreeSet<String> = expected.iter().map(|n| (*n).to_owned()).collect();
                if fired != want {
                    let series: Vec<&Value> = result.iter().map(|s| &s["metric"]).collect();
                    failures.push(format!(
                        "alert {name} with [{window}] windows fired for {fired:?}, expected {want:?}\n    {short}\n    {series:?}"
                    ));
                }
            }
            Err(e) => failures.push(format!("alert {name} with [{window}] windows: {e}")),
        }
    }
    let expected_alerts: BTreeSet<String> = ALERTS.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(alerts_seen, expected_alerts, "alerts loaded by Prometheus");
    // Prometheus itself evaluates AlumetAgentDown as pending (for: 2m) for the down target.
    let active = prometheus.get("/api/v1/alerts").unwrap();
    let down: Vec<&Value> = active["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "AlumetAgentDown")
        .collect();
    if down.len() != 1 || down[0]["labels"]["node"] != DOWN_NODE {
        failures.push(format!("Prometheus's AlumetAgentDown alerts: {down:?}"));
    }

    let exit = {
        // SAFETY: kill(2) on the pid of our child, not yet reaped.
        let child = agent.child_mut().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop:\n{}",
                tail(&log(), 20)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    drop(rapl);
    eprintln!("done after {:.1?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {checked} panel queries, or rules, failed:\n  {}\nagent log:\n{}\nprometheus log:\n{}",
        failures.len(),
        failures.join("\n  "),
        tail(&log(), 20),
        tail(&prometheus.log(), 20)
    );
    assert_eq!(exit, Some(0), "the agent's exit:\n{}", tail(&log(), 20));
}
