//! The Debian package, end to end. Built once per test run by
//! `scripts/package-deb.sh` from the binary this `cargo test` built (see
//! that script for why not a second, release build), then:
//! - `dpkg-deb --contents` lists exactly the documented files, with their
//!   modes; the conffile, the maintainer scripts and the shipped files are
//!   the ones in the repository;
//! - `lintian` reports no error and no warning (the overrides, each with its
//!   reason, are in app-agent/debian/lintian-overrides);
//! - in CI (`CI=true`) or when asked (`ALUMET_TEST_INSTALL=1`), because it
//!   changes the machine: `dpkg -i`, the installed binary, man page, unit
//!   (`systemd-analyze verify`), the udev rule applied to a fixture sysfs
//!   tree, `doctor` as an unprivileged user before and after, and
//!   `dpkg --purge`, which also runs, with `groupdel` of a group the test
//!   created, when an assertion fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const PACKAGE: &str = "alumet-agent";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    o
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Says why a check was skipped, on the terminal even though the test
/// harness captures what passing tests print with the macros.
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "package_deb: skipped {why}");
}

fn have(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The .deb, built on first use.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out_dir = workspace().join("target/deb-test");
        fs::create_dir_all(&out_dir).unwrap();
        let deb = out_dir.join(format!("{PACKAGE}.deb"));
        let _ = fs::remove_file(&deb);
        let o = run(Command::new("bash")
            .current_dir(workspace())
            .arg("scripts/package-deb.sh")
            .args(["--fast", "-o"])
            .arg(&deb)
            .env("ALUMET_DEB_BINARY", env!("CARGO_BIN_EXE_alumet-agent"))
            .env("ALUMET_DEB_GEN", env!("CARGO_BIN_EXE_alumet-agent-gen"))
            .env("ALUMET_DEB_PROFILE", "deb-test"));
        assert!(
            o.status.success(),
            "scripts/package-deb.sh failed (cargo-deb and the packaging tools: bash scripts/install-packaging-deps.sh):\n{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        assert!(deb.is_file(), "no {}", deb.display());
        deb
    })
}

/// The man pages: one for the agent, one per visible subcommand.
const MAN_PAGES: [&str; 20] = [
    "alumet-agent",
    "alumet-agent-run",
    "alumet-agent-exec",
    "alumet-agent-watch",
    "alumet-agent-config",
    "alumet-agent-config-regen",
    "alumet-agent-config-show",
    "alumet-agent-plugins",
    "alumet-agent-plugins-list",
    "alumet-agent-doctor",
    "alumet-agent-config-check",
    "alumet-agent-ctl",
    "alumet-agent-ctl-status",
    "alumet-agent-ctl-pause",
    "alumet-agent-ctl-resume",
    "alumet-agent-ctl-set-interval",
    "alumet-agent-ctl-trigger",
    "alumet-agent-ctl-reload",
    "alumet-agent-ctl-reopen",
    "alumet-agent-plot",
];

/// Every file of the package (not directories), as `(mode, path)`.
fn expected_files() -> BTreeSet<(String, String)> {
    let mut files: Vec<(&str, String)> = vec![
        ("-rwxr-xr-x", "/usr/bin/alumet-agent".into()),
        ("-rw-r-----", "/etc/alumet/alumet-config.toml".into()),
        (
            "-rw-r--r--",
            "/usr/lib/systemd/system/alumet.service".into(),
        ),
        (
            "-rw-r--r--",
            "/usr/lib/udev/rules.d/60-alumet-powercap.rules".into(),
        ),
        ("-rw-r--r--", "/usr/share/doc/alumet-agent/README.md".into()),
        ("-rw-r--r--", "/usr/share/doc/alumet-agent/copyright".into()),
        (
            "-rw-r--r--",
            "/usr/share/doc/alumet-agent/changelog.Debian.gz".into(),
        ),
        (
            "-rw-r--r--",
            "/usr/share/bash-completion/completions/alumet-agent".into(),
        ),
        (
            "-rw-r--r--",
            "/usr/share/zsh/vendor-completions/_alumet-agent".into(),
        ),
        (
            "-rw-r--r--",
            "/usr/share/fish/vendor_completions.d/alumet-agent.fish".into(),
        ),
        (
            "-rw-r--r--",
            "/usr/share/lintian/overrides/alumet-agent".into(),
        ),
    ];
    for page in MAN_PAGES {
        files.push(("-rw-r--r--", format!("/usr/share/man/man1/{page}.1.gz")));
    }
    files.into_iter().map(|(m, p)| (m.to_owned(), p)).collect()
}

/// `dpkg-deb --contents`: files as `(mode, path)`, each owned by root.
fn listed_files(deb: &Path) -> BTreeSet<(String, String)> {
    let o = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(fields[1], "0/0", "not owned by root: {l}");
            let path = fields[5].strip_prefix('.').unwrap().to_owned();
            (fields[0].to_owned(), path)
        })
        .collect()
}

fn control_file(deb: &Path, name: &str) -> String {
    let o = run(Command::new("dpkg-deb").arg("--info").arg(deb).arg(name));
    assert!(o.status.success(), "{name}: {}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn contents_are_exactly_the_documented_files() {
    let deb = deb();
    let listed = listed_files(deb);
    let expected = expected_files();
    let missing: Vec<_> = expected.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:?}\nunexpected: {extra:?}"
    );

    assert_eq!(
        control_file(deb, "conffiles"),
        "/etc/alumet/alumet-config.toml\n"
    );
    let control = control_file(deb, "control");
    assert!(control.contains("Package: alumet-agent\n"), "{control}");
    assert!(
        control.contains(&format!("Version: {}-1\n", env!("CARGO_PKG_VERSION"))),
        "{control}"
    );
    let depends = control
        .lines()
        .find(|l| l.starts_with("Depends:"))
        .unwrap_or_default();
    assert!(depends.contains("adduser"), "{control}");

    // Maintainer scripts: the group, the unit enabled through
    // deb-systemd-helper, never started at install (only try-restart on upgrade).
    let postinst = control_file(deb, "postinst");
    assert!(
        postinst.contains("addgroup --system --quiet alumet"),
        "{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper enable alumet.service"),
        "{postinst}"
    );
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    assert!(
        postinst.contains("deb-systemd-invoke try-restart alumet.service"),
        "{postinst}"
    );
    let postrm = control_file(deb, "postrm");
    assert!(
        postrm.contains("deb-systemd-helper purge alumet.service"),
        "{postrm}"
    );

    // The shipped files are the repository's (and the generated pages match the binary).
    let root = tempfile::tempdir().unwrap();
    let o = run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let shipped = |p: &str| fs::read(root.path().join(p.trim_start_matches('/'))).unwrap();
    let repo = |p: &str| fs::read(workspace().join(p)).unwrap();
    assert_eq!(
        shipped("/etc/alumet/alumet-config.toml"),
        repo("alumet-config.toml")
    );
    assert_eq!(
        shipped("/usr/lib/systemd/system/alumet.service"),
        repo("app-agent/alumet.service")
    );
    assert_eq!(
        shipped("/usr/lib/udev/rules.d/60-alumet-powercap.rules"),
        repo("app-agent/debian/60-alumet-powercap.rules")
    );
    assert_eq!(
        shipped("/usr/share/doc/alumet-agent/README.md"),
        repo("README.md")
    );
    let copyright = text(&shipped("/usr/share/doc/alumet-agent/copyright"));
    assert!(copyright.contains("License: EUPL-1.2"), "{copyright}");
    assert!(
        copyright.contains("EUROPEAN UNION PUBLIC LICENCE v. 1.2"),
        "the copyright file lacks the licence text"
    );
    let unit = text(&shipped("/usr/lib/systemd/system/alumet.service"));
    assert!(
        unit.contains(
            "ExecStart=/usr/bin/alumet-agent --config /etc/alumet/alumet-config.toml run"
        ),
        "{unit}"
    );
    let bash = text(&shipped(
        "/usr/share/bash-completion/completions/alumet-agent",
    ));
    assert!(
        bash.contains("doctor") && bash.contains("--config"),
        "{bash}"
    );
}

#[test]
fn lintian_reports_no_error_and_no_warning() {
    let deb = deb();
    assert!(
        have("lintian"),
        "lintian is missing: bash scripts/install-packaging-deps.sh"
    );
    let o = run(Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(deb));
    let out = text(&o.stdout);
    let flagged: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(
        o.status.success() && flagged.is_empty(),
        "lintian: {flagged:?}\n{out}{}",
        text(&o.stderr)
    );
}

// ---------------------------------------------------------------- install

/// `man` as a user would run it (and as root it would also save formatted
/// pages under /var/cache/man, which the purge would leave behind).
fn man_as_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "man",
    ]);
    c
}

fn install_allowed() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("ALUMET_TEST_INSTALL").is_ok_and(|v| v == "1")
}

fn group_gid(name: &str) -> Option<u32> {
    fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f[2].parse().unwrap())
        })
}

fn installed() -> bool {
    let o = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    o.status.success() && text(&o.stdout).contains("installed")
}

/// Purges the package, and deletes the group if the test created it, even
/// when an assertion fails.
struct Installed {
    group_existed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", PACKAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !self.group_existed && group_gid("alumet").is_some() {
            let _ = Command::new("groupdel").arg("alumet").status();
        }
    }
}

#[path = "package_deb/sysfs_udev.rs"]
mod sysfs_udev;
use sysfs_udev::{apply_udev_rule, FixtureSysfs, CONTROL_TYPE, THERMAL, ZONES};

fn rapl_row(out: &str) -> Vec<String> {
    out.lines()
        .find(|l| l.starts_with("rapl "))
        .unwrap_or_else(|| panic!("no rapl row:\n{out}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn installs_runs_and_purges_cleanly() {
    if !install_allowed() {
        skipped("dpkg -i / dpkg --purge, which change this machine: CI runs them (CI=true); set ALUMET_TEST_INSTALL=1 to run them here");
        return;
    }
    let deb = deb();
    assert_eq!(
        fs::metadata("/proc/self").unwrap().uid(),
        0,
        "dpkg -i needs root"
    );
    assert!(
        !installed(),
        "alumet-agent is installed on this machine: the test would purge it; remove it first"
    );
    let guard = Installed {
        group_existed: group_gid("alumet").is_some(),
    };

    let o = run(Command::new("dpkg").arg("-i").arg(deb));
    assert!(
        o.status.success(),
        "dpkg -i: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(installed());

    // The binary, from its installed path.
    let o = run(Command::new("/usr/bin/alumet-agent").arg("--version"));
    assert_eq!(
        text(&o.stdout),
        format!("alumet-agent {}\n", env!("CARGO_PKG_VERSION"))
    );

    // The man pages, through man-db.
    let o = run(man_as_nobody().args(["-w", "alumet-agent"]));
    assert_eq!(
        text(&o.stdout).trim(),
        "/usr/share/man/man1/alumet-agent.1.gz"
    );
    let o = run(man_as_nobody()
        .args(["-P", "cat", "alumet-agent"])
        .env("MANWIDTH", "100"));
    let page = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(page.contains("alumet-agent-doctor(1)"), "{page}");
    assert!(page.contains("--config"), "{page}");
    let o = run(man_as_nobody()
        .args(["-P", "cat", "alumet-agent-doctor"])
        .env("MANWIDTH", "100"));
    assert!(
        text(&o.stdout).contains("exact command"),
        "{}",
        text(&o.stdout)
    );

    // The conffile: root-only for writing, not world-readable.
    let meta = fs::metadata("/etc/alumet/alumet-config.toml").unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, 0, 0)
    );

    // The unit: at /lib/systemd/system (/lib is /usr/lib on Debian), enabled, accepted by systemd.
    let unit = Path::new("/lib/systemd/system/alumet.service");
    assert!(unit.is_file());
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/alumet.service");
    assert_eq!(
        fs::read_link(wants).unwrap(),
        unit,
        "the unit is not enabled"
    );
    if have("systemd-analyze") {
        // As a user: it runs `man` for Documentation=man:..., which as root
        // would leave a formatted page in /var/cache/man after the purge.
        let o = run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["systemd-analyze", "verify"])
            .arg(unit));
        let said = format!("{}{}", text(&o.stdout), text(&o.stderr));
        let about_unit: Vec<&str> = said.lines().filter(|l| l.contains("alumet")).collect();
        assert!(
            o.status.success() && about_unit.is_empty(),
            "systemd-analyze verify: {said}"
        );
    } else {
        skipped("systemd-analyze verify: not installed (apt-get install systemd)");
    }

    // The group, and the udev rule.
    let gid = group_gid("alumet").expect("the group alumet exists after install");
    let rule = Path::new("/usr/lib/udev/rules.d/60-alumet-powercap.rules");
    assert!(rule.is_file());
    if have("udevadm") {
        // udev parses it (udevadm test never runs RUN programs and only
        // knows the real /sys, hence the interpreter below for its effect).
        let o = run(Command::new("udevadm").args([
            "test",
            "--action=add",
            "/sys/devices/virtual/mem/null",
        ]));
        let said = text(&o.stderr);
        assert!(
            said.contains(&format!("Reading rules file: {}", rule.display())),
            "{said}"
        );
        let complaints: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("60-alumet-powercap.rules:"))
            .collect();
        assert!(complaints.is_empty(), "udev: {complaints:?}");
    } else {
        skipped("udevadm test: udev is not installed");
    }

    let tree = FixtureSysfs::new();
    // Before the rule: nobody cannot read RAPL; the doctor knows the group
    // and the rule are there and says what is left.
    let (code, out) = tree.doctor_as_nobody(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(rapl_row(&out), ["rapl", "yes", "no"], "{out}");
    assert!(
        out.contains("    sudo udevadm trigger --subsystem-match=powercap\n"),
        "{out}"
    );
    assert!(out.contains("    sudo adduser nobody alumet\n"), "{out}");
    assert!(!out.contains("addgroup"), "{out}");
    assert!(!out.contains("sudo tee"), "{out}");

    // The rule, applied to every device of the tree as udev would on "add".
    apply_udev_rule(rule, &tree.sys(), CONTROL_TYPE, "powercap");
    for (devpath, _) in ZONES {
        apply_udev_rule(rule, &tree.sys(), devpath, "powercap");
    }
    apply_udev_rule(rule, &tree.sys(), THERMAL, "thermal");
    for f in tree.energy_files() {
        let m = fs::metadata(&f).unwrap();
        assert_eq!(
            (m.gid(), format!("{:o}", m.mode() & 0o7777)),
            (gid, "440".to_owned()),
            "{}",
            f.display()
        );
    }
    let m = fs::metadata(tree.thermal_file()).unwrap();
    assert_eq!(
        (m.gid(), format!("{:o}", m.mode() & 0o7777)),
        (0, "400".to_owned()),
        "not a powercap zone"
    );

    // After it: only the membership is missing...
    let (_, out) = tree.doctor_as_nobody(&[]);
    assert!(out.contains("    sudo adduser nobody alumet\n"), "{out}");
    assert!(!out.contains("udevadm trigger"), "{out}");
    // ...and with it, nobody reads RAPL.
    let (code, out) = tree.doctor_as_nobody(&[gid]);
    assert_eq!(rapl_row(&out), ["rapl", "yes", "yes"], "{out}");
    assert_eq!(code, Some(0), "{out}");

    // Purge: every file gone, the enablement too; the system group stays,
    // as Debian packages keep theirs (files may still carry its gid).
    let o = run(Command::new("dpkg").args(["--purge", PACKAGE]));
    assert!(o.status.success(), "dpkg --purge: {}", text(&o.stderr));
    assert!(!installed());
    for (_, path) in expected_files() {
        assert!(
            fs::symlink_metadata(&path).is_err(),
            "{path} is left after purge"
        );
    }
    for left in [
        "/etc/alumet",
        "/etc/systemd/system/multi-user.target.wants/alumet.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/alumet.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-masked/alumet.service",
    ] {
        assert!(
            fs::symlink_metadata(left).is_err(),
            "{left} is left after purge"
        );
    }
    assert_eq!(group_gid("alumet"), Some(gid));
    drop(guard);
}
