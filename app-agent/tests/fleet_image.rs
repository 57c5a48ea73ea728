//! The container image, end to end, with the real tools and no registry.
//! `scripts/build-image.sh` builds it from this commit (the release binary:
//! a release build, a no-op when target/release is fresh; the base root
//! filesystem from Debian packages, made once and kept in target/image/),
//! then:
//! - a second build from the same inputs gives the same image digest and a
//!   byte-identical OCI archive;
//! - the archive and the image are at most 40 MB;
//! - `skopeo inspect oci-archive:...` shows the org.opencontainers.image.*
//!   labels (version, revision = this commit, created = its time...), and the
//!   configuration's default user is 65532:65532, not root;
//! - NVML: a stand-in libnvidia-ml.so.1 (`cc`), put where the NVIDIA
//!   container toolkit injects the driver's (its legacy hook: the multiarch
//!   directory, since the image has /etc/debian_version; CDI on a Red Hat
//!   family host: /usr/lib64, with the image's ld.so.cache updated by the
//!   host's ldconfig as CDI's update-ldcache hook does), is loaded by the
//!   agent in the image; without the toolkit, the agent says it has no driver;
//! - `podman load` of the archive, then `podman run` as the Helm chart's
//!   DaemonSet runs it: the chart's rendered ConfigMap (deploy/helm/rendered/)
//!   mounted at /etc/alumet, the host's /proc and /sys read-only where that
//!   configuration expects them, a read-only root filesystem with a tmpfs for
//!   the control socket, the listen address given with `--set` (the chart
//!   gives the pod's IP; here the host's loopback, `--network host`). The
//!   agent runs as uid 65532, `podman exec ... ctl status` answers, and a
//!   real Prometheus on 127.0.0.1 (Debian's `prometheus`) scraping it every
//!   second gets the series of a host process (Prometheus itself) and of a
//!   host cgroup (the agent's own container's, in the host's hierarchy);
//!   `podman stop` ends the agent (PID 1 in its container) with status 0;
//! - the container, the image and the archives are removed, even when an
//!   assertion fails.
//!
//! Needs root, buildah, podman with runc, skopeo, mmdebstrap, strip, cc,
//! ldconfig and prometheus: `bash scripts/install-image-tools.sh`. Without them the test
//! says `skipped: ...` and passes, except under CI (`CI=true`), where that
//! is a failure naming the install script. Podman runs with a
//! containers.conf of the test's own (CONTAINERS_CONF: runc, cgroupfs, lower
//! rlimits), as `scripts/managers.sh podman-up` writes for this machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const IMAGE_NAME: &str = "localhost/alumet-agent-test";
/// The image's default user (deploy/image/Containerfile).
const USER: &str = "65532:65532";
const MAX_BYTES: u64 = 40_000_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// On the terminal even though the harness captures what the macros print.
fn note(what: &str) {
    let _ = writeln!(std::io::stderr(), "fleet_image: {what}");
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn have(command: &str) -> bool {
    common::find_binary(command).is_some()
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(command).is_file())
}

/// What is missing to run this test here, if anything.
fn missing() -> Vec<String> {
    let mut missing: Vec<String> = [
        "buildah",
        "podman",
        "runc",
        "skopeo",
        "mmdebstrap",
        "strip",
        "prometheus",
        "cc",
        "ldconfig",
    ]
    .into_iter()
    .filter(|c| !have(c))
    .map(str::to_owned)
    .collect();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (podman's host mounts, mmdebstrap's root mode)".into());
    }
    missing
}

/// The command's output; panics with everything it said unless it succeeded.
fn ok(cmd: &mut Command) -> String {
    let o = output(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Podman, buildah and skopeo with the test's containers.conf.
struct Tools {
    conf: tempfile::TempDir,
}

impl Tools {
    fn new() -> Self {
        let conf = tempfile::tempdir().unwrap();
        // runc: crun refuses hybrid cgroups. cgroupfs: no systemd needed.
        // Lower rlimits: podman's defaults need CAP_SYS_RESOURCE.
        fs::write(
            conf.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Self { conf }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("CONTAINERS_CONF", self.conf.path().join("containers.conf"));
        c
    }

    fn podman(&self, args: &[&str]) -> Command {
        let mut c = self.command("podman");
        c.args(args);
        c
    }
}

/// One run of scripts/build-image.sh: the archive, and how long it took.
struct Build {
    archive: PathBuf,
    took: Duration,
    log: String,
}

fn build(tools: &Tools, tag: &str, archive: &Path) -> Build {
    let start = Instant::now();
    let o = output(
        tools
            .command("bash")
            .current_dir(workspace())
            .arg("scripts/build-image.sh")
            .env("ALUMET_IMAGE_NAME", IMAGE_NAME)
            .env("ALUMET_IMAGE_TAG", tag)
            .env("ALUMET_IMAGE_OUT", archive)
            // The release binary, and the base kept by the first build.
            .env_remove("ALUMET_IMAGE_BINARY")
            .env_remove("ALUMET_IMAGE_REFRESH"),
    );
    let log = text(&o.stderr);
    assert!(
        o.status.success(),
        "scripts/build-image.sh failed (the tools: bash scripts/install-image-tools.sh):\n{log}"
    );
    let printed = text(&o.stdout);
    assert_eq!(
        printed.trim(),
        archive.to_str().unwrap(),
        "the script prints the archive's path, and only that, on stdout"
    );
    assert!(archive.is_file(), "no archive at {}", archive.display());
    Build {
        archive: archive.to_owned(),
        took: start.elapsed(),
        log,
    }
}

/// `skopeo inspect` (or `--config`) of an OCI archive, as JSON.
fn inspect(tools: &Tools, archive: &Path, config: bool) -> serde_json::Value {
    let mut c = tools.command("skopeo");
    c.arg("inspect");
    if config {
        c.arg("--config");
    }
    c.arg(format!("oci-archive:{}", archive.display()));
    serde_json::from_str(&ok(&mut c)).unwrap()
}

/// Removes, at the end whatever happens, the image's tag, the container
/// and the archives.
struct Cleanup<'a> {
    tools: &'a Tools,
    image: String,
    container: String,
    files: Vec<PathBuf>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let quiet = |mut c: Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(self.tools.podman(&["rm", "-f", "-t", "2", &self.container]));
        quiet(self.tools.podman(&["rmi", "-f", &self.image]));
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's configuration: the TOML of the Helm chart's rendered
/// ConfigMap (deploy/helm/rendered/, written by scripts/render-helm.sh), and
/// the file it came from.
fn agent_config() -> (String, PathBuf) {
    let rendered = workspace().join("deploy/helm/rendered");
    let mut files: Vec<PathBuf> = fs::read_dir(&rendered)
        .unwrap_or_else(|e| panic!("{}: {e} (bash scripts/render-helm.sh)", rendered.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .find_map(|f| configmap_toml(&fs::read_to_string(&f).unwrap()).map(|toml| (toml, f)))
        .unwrap_or_else(|| {
            panic!(
                "no ConfigMap with alumet-config.toml in {} (bash scripts/render-helm.sh)",
                rendered.display()
            )
        })
}

/// `data."alumet-config.toml"` of the first ConfigMap in a multi-document
/// YAML file, written as a literal block scalar (`|`), as `helm template`
/// renders the chart's.
fn configmap_toml(yaml: &str) -> Option<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    for doc in yaml.split("\n---") {
        let lines: Vec<&str> = doc.lines().collect();
        if !lines.iter().any(|l| l.trim_end() == "kind: ConfigMap") {
            continue;
        }
        let Some(at) = lines.iter().position(|l| {
            let t = l.trim();
            t.starts_with("alumet-config.toml: |") || t.starts_with("\"alumet-config.toml\": |")
        }) else {
            continue;
        };
        let key_indent = indent(lines[at]);
        let body: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > key_indent)
            .copied()
            .collect();
        let block = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent(l))
            .min()?;
        let toml: Vec<&str> = body.iter().map(|l| l.get(block..).unwrap_or("")).collect();
        return Some(format!("{}\n", toml.join("\n").trim_end()));
    }
    None
}

/// The host's /proc, /sys and /sys/fs/cgroup, mounted read-only where the
/// configuration's `proc_root`, `sysfs_root`/`sys_root` and `cgroup_root`
/// say: `(host path, container path)`, none below another.
fn host_mounts(config: &str) -> Vec<(String, String)> {
    let table: toml::Table = toml::from_str(config).unwrap();
    let mut mounts: Vec<(String, String)> = Vec::new();
    let plugins = table.get("plugins").and_then(|p| p.as_table());
    for plugin in plugins.into_iter().flat_map(|p| p.values()) {
        let Some(plugin) = plugin.as_table() else {
            continue;
        };
        for (key, host) in [
            ("proc_root", "/proc"),
            ("sysfs_root", "/sys"),
            ("sys_root", "/sys"),
            ("cgroup_root", "/sys/fs/cgroup"),
        ] {
            if let Some(at) = plugin.get(key).and_then(|v| v.as_str()) {
                // The container's own /proc or /sys: nothing to mount.
                if at != host && !mounts.iter().any(|(_, c)| c == at) {
                    mounts.push((host.to_owned(), at.to_owned()));
                }
            }
        }
    }
    // /host/sys/fs/cgroup is inside the /sys mounted at /host/sys.
    mounts.sort_by(|a, b| a.1.cmp(&b.1));
    let all = mounts.clone();
    mounts.retain(|(host, at)| {
        !all.iter().any(|(h, a)| {
            a != at
                && host
                    .strip_prefix(h.as_str())
                    .is_some_and(|rest| rest.starts_with('/') && at == &format!("{a}{rest}"))
        })
    });
    mounts
}

/// A real Prometheus on 127.0.0.1 scraping `target` every second.
struct Prometheus {
    _process: Killed,
    pid: u32,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Self {
        let binary = common::find_binary("prometheus").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
                 scrape_configs:\n  - job_name: alumet\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = common::free_port();
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
        let pid = child.id();
        let server = Self {
            _process: Killed(child),
            pid,
            port,
            _dir: dir,
        };
        let ready = common::wait_until(Duration::from_secs(20), || {
            matches!(common::http(port, "GET", "/-/ready"), Some((200, _)))
        });
        assert!(
            ready,
            "prometheus did not start: {:?}",
            fs::read_to_string(server._dir.path().join("prometheus.log"))
        );
        server
    }

    /// `/api/v1/query`: the `data.result` array.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", common::encode(promql));
        let Some((200, body)) = common::http(self.port, "GET", &path) else {
            return Vec::new();
        };
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A stand-in for the driver's libnvidia-ml.so.1: NVML that loads and then
/// finds no kernel driver (`NVML_ERROR_DRIVER_NOT_LOADED`).
const FAKE_NVML: &str = "int nvmlInit_v2(void) { return 9; }\n\
    int nvmlInitWithFlags(unsigned int f) { (void)f; return 9; }\n\
    int nvmlShutdown(void) { return 0; }\n\
    const char *nvmlErrorString(int r) { (void)r; return \"Driver Not Loaded\"; }\n";

/// A library put into a container's root filesystem before it starts, in
/// `dir`, as the NVIDIA toolkit does; with the loader cache updated as its
/// CDI hook `update-ldcache` does (the host's ldconfig on the container's
/// root, `dir` added in /etc/ld.so.conf.d) when `ldcache`.
#[derive(Debug, Clone, Copy)]
struct Injected<'a> {
    library: &'a Path,
    dir: &'a str,
    ldcache: bool,
}

/// What `plugins list` says of nvidia in a container of `image`.
fn nvml_reason(tools: &Tools, image: &str, injected: Option<Injected>) -> String {
    let name = format!("alumet-fleet-nvml-{}", std::process::id());
    let created = ok(&mut tools.podman(&["create", "--name", &name, image, "plugins", "list"]));
    struct Remove<'a>(&'a Tools, String);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = self.0.podman(&["rm", "-f", &self.1]).output();
        }
    }
    let _remove = Remove(tools, created.trim().to_owned());
    if let Some(Injected {
        library,
        dir,
        ldcache,
    }) = injected
    {
        let root = PathBuf::from(ok(&mut tools.podman(&["mount", &name])).trim());
        let inside = root.join(dir.trim_start_matches('/'));
        fs::create_dir_all(&inside).unwrap();
        fs::copy(library, inside.join("libnvidia-ml.so.1")).unwrap();
        if ldcache {
            fs::write(
                root.join("etc/ld.so.conf.d/00-nvcr-test.conf"),
                format!("{dir}\n"),
            )
            .unwrap();
            let ldconfig = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
                .into_iter()
                .find(|p| Path::new(p).is_file())
                .unwrap_or("ldconfig");
            ok(Command::new(ldconfig).arg("-r").arg(&root).args([
                "-f",
                "/etc/ld.so.conf",
                "-C",
                "/etc/ld.so.cache",
            ]));
        }
        ok(&mut tools.podman(&["unmount", &name]));
    }
    let o = output(&mut tools.podman(&["start", "-a", &name]));
    let said = format!("{}{}", text(&o.stdout), text(&o.stderr));
    said.lines()
        .find(|l| l.trim_start().starts_with("nvidia:"))
        .unwrap_or_else(|| panic!("plugins list says nothing of nvidia:\n{said}"))
        .trim()
        .to_owned()
}

fn git(args: &[&str]) -> String {
    ok(Command::new("git").current_dir(workspace()).args(args))
        .trim()
        .to_owned()
}

#[test]
fn image_is_reproducible_small_labelled_non_root_and_measures_the_host() {
    let missing = missing();
    if !missing.is_empty() {
        let why = format!(
            "missing {}: bash scripts/install-image-tools.sh",
            missing.join(", ")
        );
        assert!(!ci(), "{why} (CI=true)");
        note(&format!("skipped: {why}"));
        return;
    }
    let started = Instant::now();
    let tools = Tools::new();
    let tag = format!("t{}", std::process::id());
    let image = format!("{IMAGE_NAME}:{tag}");
    let out = workspace().join("target/image-test");
    fs::create_dir_all(&out).unwrap();
    let container = format!("alumet-fleet-image-{}", std::process::id());
    let first_archive = out.join(format!("{tag}-1.oci.tar"));
    let second_archive = out.join(format!("{tag}-2.oci.tar"));
    let _cleanup = Cleanup {
        tools: &tools,
        image: image.clone(),
        container: container.clone(),
        files: vec![first_archive.clone(), second_archive.clone()],
    };

    // ---- Two builds from one commit: one digest, one archive.
    let first = build(&tools, &tag, &first_archive);
    let release = first
        .log
        .lines()
        .find(|l| l.contains("release build:"))
        .unwrap_or("release build: not run");
    note(&format!(
        "first build: {:.1} s ({release})",
        first.took.as_secs_f64()
    ));
    let second = build(&tools, &tag, &second_archive);
    note(&format!("second build: {:.1} s", second.took.as_secs_f64()));
    assert!(
        second.log.contains("reusing the base root filesystem"),
        "the second build made the base again:\n{}",
        second.log
    );
    let manifest = inspect(&tools, &first.archive, false);
    let digest = manifest["Digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{manifest}");
    assert_eq!(
        inspect(&tools, &second.archive, false)["Digest"],
        manifest["Digest"],
        "two builds of one commit gave two digests"
    );
    assert!(
        fs::read(&first.archive).unwrap() == fs::read(&second.archive).unwrap(),
        "two builds of one commit gave two different archives"
    );
    note(&format!("digest {digest}"));

    // ---- Size.
    let archive_bytes = fs::metadata(&first.archive).unwrap().len();
    assert!(
        archive_bytes <= MAX_BYTES,
        "the archive is {archive_bytes} bytes"
    );

    // ---- Labels and user, as skopeo reads them from the archive.
    let labels = &manifest["Labels"];
    let label = |k: &str| {
        labels[format!("org.opencontainers.image.{k}")]
            .as_str()
            .unwrap_or_else(|| panic!("no label org.opencontainers.image.{k}: {labels}"))
            .to_owned()
    };
    let commit_time: i64 = std::env::var("SOURCE_DATE_EPOCH")
        .unwrap_or_else(|_| git(&["log", "-1", "--format=%ct"]))
        .parse()
        .unwrap();
    let created = ok(Command::new("date").args([
        "-u",
        "-d",
        &format!("@{commit_time}"),
        "+%Y-%m-%dT%H:%M:%SZ",
    ]));
    assert_eq!(label("title"), "alumet-agent");
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(label("revision"), git(&["rev-parse", "HEAD"]));
    assert_eq!(label("created"), created.trim());
    assert_eq!(label("licenses"), "EUPL-1.2");
    for k in [
        "description",
        "source",
        "url",
        "documentation",
        "vendor",
        "authors",
    ] {
        assert!(!label(k).is_empty(), "empty label {k}");
    }
    assert!(
        labels["org.alumet.image.debian-packages"]
            .as_str()
            .is_some_and(|p| p.contains("libc6=")),
        "{labels}"
    );
    let config = inspect(&tools, &first.archive, true);
    assert_eq!(config["created"].as_str(), Some(created.trim()), "{config}");
    assert_eq!(config["config"]["User"].as_str(), Some(USER), "{config}");

    // ---- podman load, from the archive alone.
    ok(&mut tools.podman(&["rmi", "-f", &image]));
    let loaded = ok(&mut tools.podman(&["load", "-q", "-i", first.archive.to_str().unwrap()]));
    assert!(loaded.contains(&image), "podman load: {loaded}");
    let size: u64 = ok(&mut tools.podman(&["image", "inspect", "--format", "{{.Size}}", &image]))
        .trim()
        .parse()
        .unwrap();
    assert!(size <= MAX_BYTES, "the image is {size} bytes");
    note(&format!(
        "archive {archive_bytes} bytes, image {size} bytes unpacked"
    ));

    // ---- NVML where the NVIDIA toolkit injects it (a stand-in library).
    let nvml = tempfile::tempdir().unwrap();
    fs::write(nvml.path().join("nvml.c"), FAKE_NVML).unwrap();
    let library = nvml.path().join("libnvidia-ml.so.1");
    ok(Command::new("cc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libnvidia-ml.so.1", "-o"])
        .arg(&library)
        .arg(nvml.path().join("nvml.c")));
    let absent = "libnvidia-ml.so could not be loaded";
    let loaded = "libnvidia-ml.so was found, but NVML reports no running kernel driver";
    let multiarch = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    let at = |dir, ldcache| {
        Some(Injected {
            library: &library,
            dir,
            ldcache,
        })
    };
    let cases = [
        // No toolkit: the agent says so and goes on.
        (None, absent),
        // The legacy hook's place in an image with /etc/debian_version:
        // on the loader's default path.
        (at(multiarch.as_str(), false), loaded),
        // CDI on a Red Hat family host: the host's path, found through
        // the cache that the hook updates (the image ships one for it)...
        (at("/usr/lib64", true), loaded),
        // ...and not without it.
        (at("/usr/lib64", false), absent),
    ];
    for (place, expected) in cases {
        let reason = nvml_reason(&tools, &image, place);
        assert!(reason.contains(expected), "{place:?}: {reason}");
    }

    // ---- podman run as the chart runs it.
    let (toml, origin) = agent_config();
    note(&format!(
        "configuration: the ConfigMap of {}",
        origin.display()
    ));
    let config_dir = tempfile::tempdir().unwrap();
    fs::write(config_dir.path().join("alumet-config.toml"), &toml).unwrap();
    let agent_port = common::free_port();
    let mut run = tools.podman(&["run", "-d", "--name", &container, "--network", "host"]);
    // readOnlyRootFilesystem, and the chart's emptyDir for the control socket.
    run.args([
        "--read-only",
        "--mount",
        "type=tmpfs,destination=/run/alumet,tmpfs-mode=0755,chown=true",
    ]);
    run.arg("-v")
        .arg(format!("{}:/etc/alumet:ro", config_dir.path().display()));
    let mounts = host_mounts(&toml);
    assert!(
        mounts.iter().any(|(host, _)| host == "/proc"),
        "the configuration reads no host /proc: {mounts:?}\n{toml}"
    );
    for (host, at) in &mounts {
        run.arg("-v").arg(format!("{host}:{at}:ro"));
    }
    run.arg(&image).args([
        "--config",
        "/etc/alumet/alumet-config.toml",
        "--set",
        &format!("plugins.prometheus.listen_address=\"127.0.0.1:{agent_port}\""),
        "run",
    ]);
    let id = ok(&mut run).trim().to_owned();
    let logs = || {
        let o = output(&mut tools.podman(&["logs", &container]));
        format!("{}{}", text(&o.stdout), text(&o.stderr))
    };
    let serving = common::wait_until(Duration::from_secs(30), || {
        matches!(common::http(agent_port, "GET", "/metrics"), Some((200, _)))
    });
    assert!(serving, "the agent does not serve /metrics:\n{}", logs());

    // The default user, as the kernel sees the agent.
    let pid = ok(&mut tools.podman(&["inspect", "--format", "{{.State.Pid}}", &container]));
    let status = fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().nth(1),
        Some("65532"),
        "{uid}\n{}",
        logs()
    );
    // What the chart's liveness probe runs.
    let o =
        output(&mut tools.podman(&["exec", &container, "/usr/bin/alumet-agent", "ctl", "status"]));
    assert!(
        o.status.success() && text(&o.stdout).contains("procfs"),
        "ctl status: {}{}\n{}",
        text(&o.stdout),
        text(&o.stderr),
        logs()
    );

    // ---- A real Prometheus scrapes it: host processes and cgroups.
    let prometheus = Prometheus::start(agent_port);
    let process = format!(
        "alumet_process_cpu_time_seconds_total{{consumer_kind=\"process\",consumer_id=\"{}\"}}",
        prometheus.pid
    );
    let cgroup = format!("alumet_cgroup_cpu_time_seconds_total{{consumer_id=~\".*{id}.*\"}}");
    let mut seen = (false, false, false);
    let found = common::wait_until(Duration::from_secs(60), || {
        seen = (
            prometheus.query("up{job=\"alumet\"} == 1").len() == 1,
            !prometheus.query(&process).is_empty(),
            !prometheus.query(&cgroup).is_empty(),
        );
        seen == (true, true, true)
    });
    assert!(
        found,
        "(scraped, host process, host cgroup) = {seen:?}; {process} and {cgroup}\n{}",
        logs()
    );
    note(&format!(
        "prometheus has the host's process {} and the container's cgroup",
        prometheus.pid
    ));

    // ---- SIGTERM to PID 1: a clean stop.
    ok(&mut tools.podman(&["stop", "-t", "10", &container]));
    let code = ok(&mut tools.podman(&["inspect", "--format", "{{.State.ExitCode}}", &container]));
    assert_eq!(code.trim(), "0", "{}", logs());
    note(&format!(
        "test time {:.1} s",
        started.elapsed().as_secs_f64()
    ));
}

#[test]
fn configmap_toml_reads_helm_block_scalars() {
    let yaml = "---\n# Source: x/templates/service.yaml\nkind: Service\n---\n\
                apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  alumet-config.toml: |\n    \
                [plugins.procfs]\n    proc_root = \"/host/proc\"\n\n    [plugins.cgroups]\n    \
                cgroup_root = \"/host/sys/fs/cgroup\"\n---\nkind: DaemonSet\n";
    let toml = configmap_toml(yaml).unwrap();
    assert_eq!(
        toml,
        "[plugins.procfs]\nproc_root = \"/host/proc\"\n\n[plugins.cgroups]\ncgroup_root = \"/host/sys/fs/cgroup\"\n"
    );
    assert_eq!(
        host_mounts(&toml),
        [
            ("/proc".to_owned(), "/host/proc".to_owned()),
            (
                "/sys/fs/cgroup".to_owned(),
                "/host/sys/fs/cgroup".to_owned()
            )
        ]
    );
    let with_sys =
        format!("{toml}[plugins.rapl]\nsysfs_root = \"/host/sys\"\nproc_root = \"/host/proc\"\n");
    assert_eq!(
        host_mounts(&with_sys),
        [
            ("/proc".to_owned(), "/host/proc".to_owned()),
            ("/sys".to_owned(), "/host/sys".to_owned())
        ]
    );
}
