//! Unit tests of the doctor: parsing of the identity and the user and
//! group databases, and the steps chosen for each set-up state.
use super::*;

const STATUS: &str = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t24 27 998 \nCapEff:\t0000004000000000\n";

fn facts() -> PowercapFacts {
    PowercapFacts {
        user: "alice".into(),
        group: Some(GroupEntry {
            gid: 998,
            members: vec!["alice".into()],
        }),
        primary_gid: Some(1000),
        session_gids: vec![1000, 998],
        rule_installed: Some(PathBuf::from("/lib/udev/rules.d/60-alumet-powercap.rules")),
        unreadable: vec![UnreadableFile {
            path: PathBuf::from("/sys/class/powercap/intel-rapl:0/energy_uj"),
            gid: 998,
            mode: 0o440,
        }],
    }
}

fn commands(steps: &[Step]) -> Vec<&str> {
    steps.iter().map(|s| s.command.as_str()).collect()
}

#[test]
fn identity_from_proc_self_status() {
    let id = Identity::parse(STATUS).unwrap();
    assert_eq!(id.uid, 1000);
    assert_eq!(id.gids, [1000, 24, 27, 998]);
    assert!(id.has_cap(CAP_PERFMON) && id.perf_privileged());
    assert!(Identity::parse("Uid:\tx\n").is_none());
}

#[test]
fn group_and_user_databases() {
    let group = "root:x:0:\nalumet:x:998:alice, bob\nalumets:x:997:\n";
    assert_eq!(
        find_group(group, "alumet"),
        Some(GroupEntry {
            gid: 998,
            members: vec!["alice".into(), "bob".into()]
        })
    );
    assert_eq!(
        find_group("alumet:x:998:\n", "alumet").unwrap().members,
        Vec::<String>::new()
    );
    assert_eq!(find_group(group, "nope"), None);
    let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    assert_eq!(find_user(passwd, 1000), Some(("alice".into(), 1000)));
    assert_eq!(find_user(passwd, 5), None);
}

#[test]
fn nothing_set_up_gives_every_step_in_order() {
    let f = PowercapFacts {
        group: None,
        rule_installed: None,
        session_gids: vec![1000],
        unreadable: vec![UnreadableFile {
            gid: 0,
            mode: 0o400,
            ..facts().unreadable[0].clone()
        }],
        ..facts()
    };
    let steps = powercap_steps(&f);
    let c = commands(&steps);
    assert_eq!(c.len(), 4, "{c:?}");
    assert_eq!(c[0], "sudo addgroup --system alumet");
    assert!(c[1].contains("sudo tee /etc/udev/rules.d/60-alumet-powercap.rules"));
    assert!(c[1].contains(r#"SUBSYSTEM=="powercap""#), "{}", c[1]);
    assert_eq!(c[2], "sudo udevadm trigger --subsystem-match=powercap");
    assert_eq!(c[3], "sudo adduser alice alumet");
    assert!(steps[3].why.contains("log out and back in"));
}

#[test]
fn package_installed_but_user_not_in_the_group() {
    let f = PowercapFacts {
        group: Some(GroupEntry {
            gid: 998,
            members: vec![],
        }),
        session_gids: vec![1000],
        ..facts()
    };
    assert_eq!(commands(&powercap_steps(&f)), ["sudo adduser alice alumet"]);
}

#[test]
fn member_whose_session_predates_the_membership() {
    let f = PowercapFacts {
        session_gids: vec![1000],
        ..facts()
    };
    let steps = powercap_steps(&f);
    assert_eq!(commands(&steps), ["newgrp alumet"]);
    assert!(steps[0].why.contains("log out and back in"));
}

#[test]
fn rule_installed_but_not_applied_yet() {
    let mut f = facts();
    f.unreadable[0].gid = 0;
    assert_eq!(
        commands(&powercap_steps(&f)),
        ["sudo udevadm trigger --subsystem-match=powercap"]
    );
    // the right group without the read bit is not applied either
    let mut f = facts();
    f.unreadable[0].mode = 0o400;
    assert_eq!(
        commands(&powercap_steps(&f)),
        ["sudo udevadm trigger --subsystem-match=powercap"]
    );
}

#[test]
fn all_in_place_yet_unreadable_points_at_the_file() {
    let c = powercap_steps(&facts());
    assert_eq!(
        commands(&c),
        ["ls -l /sys/class/powercap/intel-rapl:0/energy_uj"]
    );
    assert!(c[0].why.contains("security module"));
}

#[test]
fn perf_fix_only_when_paranoid_and_unprivileged() {
    let exe = Path::new("/usr/bin/alumet-agent");
    let c = perf_steps(Some(2), false, exe);
    assert_eq!(
        commands(&c),
        [
            "sudo sysctl kernel.perf_event_paranoid=0",
            "sudo setcap cap_perfmon=ep /usr/bin/alumet-agent"
        ]
    );
    assert!(perf_steps(Some(0), false, exe).is_empty());
    assert!(perf_steps(Some(2), true, exe).is_empty());
    assert!(perf_steps(None, false, exe).is_empty());
}

#[test]
fn the_rule_can_be_quoted_in_a_shell_command() {
    let lines: Vec<&str> = rule_lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(!lines[0].contains('\''));
    assert!(lines[0].starts_with(r#"SUBSYSTEM=="powercap""#));
}
