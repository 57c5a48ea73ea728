//! The kernel's pseudo-files: `/proc/stat` and its siblings, `/proc/PID/stat`,
//! `mountinfo`, `/proc/PID/cgroup`, the cgroup figure files and cgroup paths.
//! The kernel writes them, but a container runtime, a FUSE mount or a
//! configured root (`proc_root`, `cgroup_root`) can put anything there.

use alumet_kernelfs::cgroup::{
    cgroup_mounts, parse_proc_cgroup, Accounting, CgroupLayout, CgroupVersion, HierarchyChoice,
};
use alumet_kernelfs::parse::{lines, parse_key_value, parse_u64, trim};
use plugin_cgroups::classify::{classify, WORKLOADS};
use plugin_cgroups::reader::{
    parse_blkio_bytes, parse_cpu_stat, parse_cpuacct_stat, parse_io_stat, CpuStat,
};
use plugin_procfs::parse::{
    parse_cpu_line, parse_meminfo_line, parse_netdev_line, parse_pid_stat,
    parse_schedstat_runtime_ns, parse_uptime_seconds, CpuLine, CPU_STATE_NAMES,
};

/// `/proc/stat`, `/proc/meminfo`, `/proc/net/dev` and `/proc/uptime`, line
/// by line as the system source reads them. A line that parses is written
/// back in the kernel's format and must parse to the same figures.
pub fn proc_stat(data: &[u8]) {
    let _ = parse_uptime_seconds(data).inspect(|s| assert!(s.is_finite() && *s >= 0.0));
    for line in lines(data) {
        // `ctxt 123`, `processes 4`...
        if let Some((key, value)) = parse_key_value(line) {
            let mut again = key.to_vec();
            again.extend_from_slice(format!(" {value}").as_bytes());
            assert_eq!(parse_key_value(&again), Some((key, value)));
        }
        if let Some((which, ticks)) = parse_cpu_line(line) {
            assert!((4..=CPU_STATE_NAMES.len()).contains(&ticks.count));
            let mut again = match which {
                CpuLine::Total => "cpu".to_owned(),
                CpuLine::Core(n) => format!("cpu{n}"),
            };
            for t in &ticks.ticks[..ticks.count] {
                again.push_str(&format!(" {t}"));
            }
            assert_eq!(parse_cpu_line(again.as_bytes()), Some((which, ticks)));
        }
        if let Some((key, value, in_kb)) = parse_meminfo_line(line) {
            let mut again = key.to_vec();
            again.extend_from_slice(format!(": {value}").as_bytes());
            if in_kb {
                again.extend_from_slice(b" kB");
            }
            assert_eq!(parse_meminfo_line(&again), Some((key, value, in_kb)));
        }
        if let Some((name, c)) = parse_netdev_line(line) {
            assert!(!name.is_empty() && !name.contains(&b':'));
            let mut again = name.to_vec();
            let [r0, r1, r2, r3] = c.rx;
            let [t0, t1, t2, t3] = c.tx;
            again.extend_from_slice(
                format!(": {r0} {r1} {r2} {r3} 0 0 0 0 {t0} {t1} {t2} {t3} 0 0 0 0").as_bytes(),
            );
            assert_eq!(parse_netdev_line(&again), Some((name, c)));
        }
    }
}

/// `/proc/PID/stat` and `/proc/PID/schedstat`. A stat that parses is
/// written back with its name between parentheses and must parse to the
/// same figures (the name may itself hold `)`: the last one closes it).
pub fn proc_pid_stat(data: &[u8]) {
    let _ = parse_schedstat_runtime_ns(data);
    let Some(s) = parse_pid_stat(data) else {
        return;
    };
    let mut again = b"1 (".to_vec();
    again.extend_from_slice(s.comm);
    again.push(b')');
    again.push(b' ');
    again.push(s.state);
    // cutime and cstime: the sum in one of them gives the same total.
    let rest = format!(
        " {} 0 0 0 -1 0 0 0 0 0 {} {} {} 0 20 0 {} 0 {} {} {}",
        s.ppid,
        s.utime_ticks,
        s.stime_ticks,
        s.children_ticks,
        s.num_threads,
        s.start_ticks,
        s.vsize_bytes,
        s.rss_pages
    );
    again.extend_from_slice(rest.as_bytes());
    assert_eq!(
        parse_pid_stat(&again),
        Some(s),
        "{:?}",
        String::from_utf8_lossy(&again)
    );
}

/// `/proc/self/mountinfo`: the cgroup hierarchies it lists, and the
/// accounting each choice makes of them.
pub fn mountinfo(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let hierarchies = cgroup_mounts(&text);
    assert!(hierarchies.len() <= text.lines().count());
    for (i, h) in hierarchies.iter().enumerate() {
        if h.version == CgroupVersion::V2 {
            assert!(h.controllers.is_empty());
        }
        for other in &hierarchies[..i] {
            assert!(other.version != h.version || other.controllers != h.controllers);
        }
    }
    let layout = CgroupLayout {
        root: "/nonexistent/alumet-fuzz".into(),
        hierarchies,
    };
    let _ = layout.describe();
    for choice in [
        HierarchyChoice::V1,
        HierarchyChoice::V2,
        HierarchyChoice::Auto,
    ] {
        if let Ok(accounting) = layout.accounting(choice) {
            assert!(layout
                .hierarchies
                .iter()
                .any(|h| h.mount_point == accounting.cpu));
            let _ = accounting.mount_points();
        }
    }
}

/// `/proc/PID/cgroup`: its entries, and a process's cgroup in each kind
/// of accounting.
pub fn proc_cgroup(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let entries = parse_proc_cgroup(&text);
    assert!(entries.len() <= text.lines().count());
    for e in &entries {
        assert!(e.path.starts_with('/'));
    }
    let v1 = Accounting {
        version: CgroupVersion::V1,
        cpu: "/sys/fs/cgroup/cpu,cpuacct".into(),
        memory: Some(("/sys/fs/cgroup/memory".into(), CgroupVersion::V1)),
        io: Some(("/sys/fs/cgroup/blkio".into(), CgroupVersion::V1)),
    };
    let v2 = Accounting {
        version: CgroupVersion::V2,
        cpu: "/sys/fs/cgroup".into(),
        memory: Some(("/sys/fs/cgroup".into(), CgroupVersion::V2)),
        io: Some(("/sys/fs/cgroup/blkio".into(), CgroupVersion::V1)),
    };
    for accounting in [v1, v2] {
        let path = accounting.path_in(&entries);
        if let Some(parents) = accounting.own_parents(&entries) {
            assert_eq!(parents.first().map(String::as_str), path);
            assert_eq!(parents.len(), accounting.mount_points().len());
        }
    }
}

/// The figure files of one cgroup: v2 `cpu.stat` and `io.stat`, v1
/// `cpuacct.stat` and `blkio.throttle.io_service_bytes`, and the files of
/// one number (`memory.current`, `cpuacct.usage`...). Parsed figures
/// written back in the kernel's format parse to the same figures.
pub fn cgroup_stat(data: &[u8]) {
    // `memory.current`, `memory.peak`, `cpuacct.usage`...: one number.
    if let Some(n) = parse_u64(trim(data)) {
        assert_eq!(parse_u64(format!("{n}\n").trim().as_bytes()), Some(n));
    }
    if let Some(stat) = parse_cpu_stat(data) {
        let CpuStat {
            usage_us,
            user_us,
            system_us,
        } = stat;
        let again =
            format!("usage_usec {usage_us}\nuser_usec {user_us}\nsystem_usec {system_us}\n");
        assert_eq!(parse_cpu_stat(again.as_bytes()), Some(stat));
    }
    if let Some((user, system)) = parse_cpuacct_stat(data) {
        let again = format!("user {user}\nsystem {system}\n");
        assert_eq!(parse_cpuacct_stat(again.as_bytes()), Some((user, system)));
    }
    let (read, write) = parse_io_stat(data);
    let again = format!("8:0 rbytes={read} wbytes={write} rios=1 wios=1\n");
    assert_eq!(parse_io_stat(again.as_bytes()), (read, write));
    let (read, write) = parse_blkio_bytes(data);
    let again = format!(
        "8:0 Read {read}\n8:0 Write {write}\nTotal {}\n",
        read.wrapping_add(write)
    );
    assert_eq!(parse_blkio_bytes(again.as_bytes()), (read, write));
}

/// A cgroup's path (directory names under the cgroup root, made by
/// whoever may create cgroups): its workload and attributes.
pub fn cgroup_path(data: &[u8]) {
    let path = String::from_utf8_lossy(data);
    let c = classify(&path);
    assert!(WORKLOADS.contains(&c.workload), "{:?}", c.workload);
    for (i, (key, _)) in c.attributes.iter().enumerate() {
        assert!(
            !c.attributes[..i].iter().any(|(k, _)| k == key),
            "{key} twice in {:?}",
            c.attributes
        );
        // Outputs leave name keys out to find a series' earlier points
        // (OAR's `user` comes from its path, and no lookup names OAR jobs).
        assert!(
            !alumet_workloads::names::is_name_key(key)
                || (*key == "user" && c.workload.starts_with("oar")),
            "{key} in {:?}",
            c.workload
        );
    }
}
