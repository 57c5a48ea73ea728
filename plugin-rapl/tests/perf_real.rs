//! The real perf implementation ([`PerfEventOpener`]) opens what a sysfs
//! PMU description says, through perf_event_open, pid = -1 on one CPU.
//!
//! Without RAPL hardware, the fixture describes the kernel's `software`
//! PMU (type 1) with `energy-pkg` standing for its `cpu-clock` event
//! (config 0, counts nanoseconds): the same code path as the power PMU, on
//! a counter every Linux kernel has. Counting system-wide needs root or
//! CAP_PERFMON (or perf_event_paranoid ≤ 0), like RAPL itself.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::fs;
use std::io;
use std::path::Path;

use alumet_energy::Verdict;
use plugin_rapl::perf::{self, PerfCounterOpener, PerfEventOpener};

fn software_pmu_tree(root: &Path) {
    let pmu = root.join(perf::POWER_PMU_DIR);
    fs::create_dir_all(pmu.join("events")).unwrap();
    fs::create_dir_all(pmu.join("format")).unwrap();
    fs::write(pmu.join("type"), "1\n").unwrap();
    fs::write(pmu.join("cpumask"), "0\n").unwrap();
    fs::write(pmu.join("format/event"), "config:0-63\n").unwrap();
    fs::write(pmu.join("events/energy-pkg"), "event=0x00\n").unwrap();
    fs::write(pmu.join("events/energy-pkg.scale"), "1e-9\n").unwrap();
    fs::write(pmu.join("events/energy-pkg.unit"), "Joules\n").unwrap();
    let topo = root.join("devices/system/cpu/cpu0/topology");
    fs::create_dir_all(&topo).unwrap();
    fs::write(topo.join("physical_package_id"), "0\n").unwrap();
}

#[test]
fn real_opener_counts_system_wide_on_the_socket_cpu() {
    let root = tempfile::tempdir().unwrap();
    software_pmu_tree(root.path());
    let opened = match perf::open(root.path(), &PerfEventOpener, 500.0) {
        Ok(opened) => opened,
        Err(e) if e.is_permission_denied() => {
            // Not root and no CAP_PERFMON: the error must say so, which is
            // what the plugin turns into its message.
            assert!(e.to_string().contains("power/energy-pkg/ on CPU 0"), "{e}");
            eprintln!("skipping the counting check: {e}");
            return;
        }
        Err(e) => panic!("perf_event_open failed: {e}"),
    };
    let mut readers = opened.readers;
    assert_eq!(readers.len(), 1);
    let reader = &mut readers[0];
    assert_eq!(reader.origin(), "perf event power/energy-pkg/ on CPU 0");
    assert_eq!(
        reader.read().unwrap().verdict,
        Verdict::Start,
        "first read primes"
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    // cpu-clock on CPU 0 advances with wall time while the counter is enabled.
    let Verdict::Consumed(seconds) = reader.read().unwrap().verdict else {
        panic!("the counter advanced")
    };
    assert!(seconds > 0.04 && seconds < 10.0, "{seconds}");
}

#[test]
fn real_opener_reports_what_the_kernel_refuses() {
    let root = tempfile::tempdir().unwrap();
    software_pmu_tree(root.path());
    // No such CPU: the kernel refuses, and the error names event and CPU.
    let pmu = perf::discover(root.path()).unwrap();
    let err = PerfEventOpener.open(&pmu.events[0], 100_000).err().unwrap();
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENODEV) | Some(libc::EINVAL) | Some(libc::EACCES) | Some(libc::EPERM)
        ),
        "{err}"
    );
    // A PMU description the builder cannot parse is an error, not a panic.
    fs::write(
        root.path()
            .join(perf::POWER_PMU_DIR)
            .join("events/energy-pkg"),
        "umask=0x1\n",
    )
    .unwrap();
    let err = PerfEventOpener.open(&pmu.events[0], 0).err().unwrap();
    assert_ne!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
}

/// The software PMU's `dummy` event (PERF_COUNT_SW_DUMMY, config 9) opens
/// system-wide like a RAPL event and never counts: the same as a cloud VM's
/// `energy-psys`, through the real `perf_event_open`.
#[test]
fn a_real_counter_that_opens_but_never_counts_is_refused_by_the_check() {
    let root = tempfile::tempdir().unwrap();
    software_pmu_tree(root.path());
    let pmu = root.path().join(perf::POWER_PMU_DIR);
    fs::remove_file(pmu.join("events/energy-pkg")).unwrap();
    fs::remove_file(pmu.join("events/energy-pkg.scale")).unwrap();
    fs::remove_file(pmu.join("events/energy-pkg.unit")).unwrap();
    fs::write(pmu.join("events/energy-psys"), "event=0x09\n").unwrap();
    fs::write(pmu.join("events/energy-psys.scale"), "1e-9\n").unwrap();
    fs::write(pmu.join("events/energy-psys.unit"), "Joules\n").unwrap();
    let config = plugin_rapl::RaplConfig {
        sysfs_root: root.path().to_owned(),
        proc_root: root.path().join("proc"),
        ..plugin_rapl::RaplConfig::default()
    };
    match plugin_rapl::probe(&config, &plugin_rapl::Backends::real()) {
        Err(e) if e.to_string().contains("Permission denied") => {
            eprintln!("skipping: {e}");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.starts_with("RAPL counters do not count: perf event power/energy-psys/ on CPU 0 (stayed at 0) did not advance in 100ms"),
                "{text}"
            );
            // bare metal (the proc root has no cpuinfo): a fault to fix
            assert!(!e.is_absent(), "{text}");
        }
        Ok(p) => panic!("a counter that never counts was kept: {:?}", p.readers),
    }
    // cpu-clock (config 0) does count: kept after a few milliseconds.
    fs::write(pmu.join("events/energy-psys"), "event=0x00\n").unwrap();
    match plugin_rapl::probe(&config, &plugin_rapl::Backends::real()) {
        Ok(p) => assert_eq!(p.readers.len(), 1),
        Err(e) if e.to_string().contains("Permission denied") => {}
        Err(e) => panic!("{e}"),
    }
}
