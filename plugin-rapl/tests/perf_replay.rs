//! The perf path, through a double of the perf boundary that replays raw
//! counts: event discovery from a fixture PMU, one counter per socket,
//! conversion with the `.scale` file, and 64-bit counters.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use plugin_rapl::powercap::StdFileOpener;
use plugin_rapl::{perf, Interface, InterfaceChoice, RaplConfig};

/// Counts per joule with the kernel's scale of 2^-32 J.
const PER_J: u64 = 1 << 32;

#[test]
fn intel_two_sockets_through_perf() {
    let tree = SysfsCopy::of("intel_2socket");
    let big = u64::MAX - PER_J; // wraps at 64 bits during the run
    let replay = Arc::new(ReplayPerf::new(&[
        (
            "energy-pkg",
            0,
            &[1000, 1000 + 12 * PER_J, 1000 + 20 * PER_J],
        ),
        (
            "energy-pkg",
            28,
            &[
                big,
                big.wrapping_add(3 * PER_J),
                big.wrapping_add(4 * PER_J),
            ],
        ),
        ("energy-cores", 0, &[0, 8 * PER_J, 8 * PER_J]),
        ("energy-cores", 28, &[0, PER_J / 2, PER_J]),
        ("energy-gpu", 0, &[0, PER_J / 4, PER_J / 4]),
        ("energy-gpu", 28, &[0, 0, 0]),
        ("energy-ram", 0, &[0, 3 * PER_J, 5 * PER_J]),
        ("energy-ram", 28, &[0, PER_J / 8, PER_J / 8]),
        ("energy-psys", 0, &[0, 30 * PER_J, 31 * PER_J]),
        // the second socket's psys counter does not advance
        ("energy-psys", 28, &[0, 0, 0]),
    ]));
    let config = RaplConfig {
        interface: InterfaceChoice::Auto,
        ..manual_config(tree.root())
    };
    let run = run_plugin(
        config,
        backends(replay.clone(), Arc::new(StdFileOpener)),
        2,
        |_| {},
    );
    assert_eq!(run.interface, Interface::Perf);

    // Each event on one CPU of each socket (cpumask 0,28), psys too (as
    // candidates: it is reported once, from the one that advances).
    let mut opened: Vec<(String, u32)> = replay
        .opened()
        .into_iter()
        .map(|(e, cpu, scale)| {
            assert_eq!(scale, 2f64.powi(-32), "scale read from the .scale file");
            (e, cpu)
        })
        .collect();
    opened.sort();
    let names = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
        v.iter().map(|(e, c)| (e.to_string(), *c)).collect()
    };
    assert_eq!(
        opened,
        names(&[
            ("energy-cores", 0),
            ("energy-cores", 28),
            ("energy-gpu", 0),
            ("energy-gpu", 28),
            ("energy-pkg", 0),
            ("energy-pkg", 28),
            ("energy-psys", 0),
            ("energy-psys", 28),
            ("energy-ram", 0),
            ("energy-ram", 28),
        ])
    );

    let row = |poll, kind: &str, id: &str, domain: &str, energy_j| Row {
        poll,
        resource_kind: kind.into(),
        resource_id: id.into(),
        domain: domain.into(),
        energy_j,
        die: String::new(),
    };
    let mut expected = vec![
        row(1, "cpu_package", "0", "package", 12.0),
        row(1, "cpu_package", "1", "package", 3.0),
        row(1, "cpu_package", "0", "core", 8.0),
        row(1, "cpu_package", "1", "core", 0.5),
        row(1, "cpu_package", "0", "uncore", 0.25),
        row(1, "cpu_package", "1", "uncore", 0.0),
        row(1, "dram", "0", "dram", 3.0),
        row(1, "dram", "1", "dram", 0.125),
        row(1, "local_machine", "", "psys", 30.0),
        row(2, "cpu_package", "0", "package", 8.0),
        row(2, "cpu_package", "1", "package", 1.0),
        row(2, "cpu_package", "0", "core", 0.0),
        row(2, "cpu_package", "1", "core", 0.5),
        row(2, "cpu_package", "0", "uncore", 0.0),
        row(2, "cpu_package", "1", "uncore", 0.0),
        row(2, "dram", "0", "dram", 2.0),
        row(2, "dram", "1", "dram", 0.0),
        row(2, "local_machine", "", "psys", 1.0),
    ];
    expected.sort_by(|a, b| {
        (a.poll, &a.resource_kind, &a.resource_id, &a.domain).cmp(&(
            b.poll,
            &b.resource_kind,
            &b.resource_id,
            &b.domain,
        ))
    });
    assert_rows_match(&run.rows_up_to(2), &expected);
}

#[test]
fn the_scale_file_is_read_not_assumed() {
    let tree = SysfsCopy::of("amd_1socket");
    // A kernel reporting in microjoules per count.
    write_in_place(
        &tree
            .root()
            .join("bus/event_source/devices/power/events/energy-pkg.scale"),
        "1e-6\n",
    );
    let replay = Arc::new(ReplayPerf::new(&[(
        "energy-pkg",
        0,
        &[5, 1_500_005, 1_500_006],
    )]));
    let config = RaplConfig {
        interface: InterfaceChoice::Perf,
        ..manual_config(tree.root())
    };
    let run = run_plugin(config, backends(replay, Arc::new(StdFileOpener)), 2, |_| {});
    assert_eq!(run.interface, Interface::Perf);
    let energies: Vec<f64> = run
        .polls
        .iter()
        .take(2)
        .map(|p| {
            assert_eq!(p.len(), 1, "AMD exposes energy-pkg only: {p:?}");
            p[0].energy_j
        })
        .collect();
    assert!((energies[0] - 1.5).abs() < 1e-12, "{energies:?}");
    assert!((energies[1] - 1e-6).abs() < 1e-12, "{energies:?}");
}

#[test]
fn pmu_discovery_reads_events_scales_and_sockets() {
    let pmu = perf::discover(&fixture("intel_2socket").join("sys0")).unwrap();
    assert_eq!(pmu.pmu_type, 24);
    let names: Vec<&str> = pmu.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "energy-pkg",
            "energy-cores",
            "energy-gpu",
            "energy-ram",
            "energy-psys"
        ]
    );
    assert_eq!(
        pmu.cpus,
        vec![
            perf::SocketCpu {
                cpu: 0,
                package_id: 0,
                die_id: None
            },
            perf::SocketCpu {
                cpu: 28,
                package_id: 1,
                die_id: None
            },
        ]
    );
}

#[test]
fn a_unit_other_than_joules_is_refused() {
    let tree = SysfsCopy::of("amd_1socket");
    write_in_place(
        &tree
            .root()
            .join("bus/event_source/devices/power/events/energy-pkg.unit"),
        "Watts\n",
    );
    let err = perf::discover(tree.root()).unwrap_err();
    assert!(err.to_string().contains("expected \"Joules\""), "{err}");
}

#[test]
fn multi_socket_psys_is_opened_on_every_socket_and_the_advancing_one_kept() {
    let tree = SysfsCopy::of("intel_2socket_psys");
    let replay = Arc::new(ReplayPerf::new(&[
        ("energy-pkg", 0, &[0, 2 * PER_J, 3 * PER_J]),
        ("energy-pkg", 56, &[0, PER_J, 2 * PER_J]),
        ("energy-ram", 0, &[0, PER_J, PER_J]),
        ("energy-ram", 56, &[0, PER_J, PER_J]),
        // Only package 1's psys counter advances; package 0's reads 0.
        ("energy-psys", 0, &[0, 0, 0]),
        ("energy-psys", 56, &[7 * PER_J, 12 * PER_J, 20 * PER_J]),
    ]));
    let config = RaplConfig {
        interface: InterfaceChoice::Perf,
        ..manual_config(tree.root())
    };
    let run = run_plugin(
        config,
        backends(replay.clone(), Arc::new(StdFileOpener)),
        2,
        |_| {},
    );
    let psys: Vec<f64> = run
        .polls
        .iter()
        .take(2)
        .map(|p| {
            let rows: Vec<&Row> = p.iter().filter(|r| r.domain == "psys").collect();
            assert_eq!(rows.len(), 1, "psys reported once per poll: {p:?}");
            assert_eq!(rows[0].resource_kind, "local_machine");
            rows[0].energy_j
        })
        .collect();
    assert_eq!(psys, vec![5.0, 8.0]);
    let psys_cpus: Vec<u32> = replay
        .opened()
        .into_iter()
        .filter(|(e, _, _)| e == "energy-psys")
        .map(|(_, cpu, _)| cpu)
        .collect();
    assert_eq!(psys_cpus, vec![0, 56]);
}

#[test]
fn one_cpu_per_die_gives_one_point_per_die_with_a_die_attribute() {
    let tree = SysfsCopy::of("intel_2socket_2die");
    let replay = Arc::new(ReplayPerf::new(&[
        ("energy-pkg", 0, &[0, 10 * PER_J]),
        ("energy-pkg", 24, &[PER_J, 12 * PER_J]),
        ("energy-pkg", 48, &[0, 12 * PER_J]),
        ("energy-pkg", 72, &[0, 13 * PER_J]),
        ("energy-ram", 0, &[0, 2 * PER_J]),
        ("energy-ram", 24, &[PER_J, 3 * PER_J + PER_J / 4]),
        ("energy-ram", 48, &[0, 2 * PER_J + PER_J / 2]),
        ("energy-ram", 72, &[0, 2 * PER_J + 3 * PER_J / 4]),
    ]));
    let config = RaplConfig {
        interface: InterfaceChoice::Perf,
        ..manual_config(tree.root())
    };
    let run = run_plugin(config, backends(replay, Arc::new(StdFileOpener)), 1, |_| {});
    assert_eq!(run.interface, Interface::Perf);
    assert_rows_match(&run.rows_up_to(1), &expected_rows("intel_2socket_2die"));
}

#[test]
fn a_perf_count_that_steps_back_is_not_a_64_bit_wrap() {
    // The kernel computes the delta of the 32-bit register as a signed
    // value: a late overflow update makes the 64-bit count step back a
    // little. wrapping_sub would turn that into ~4.3 GJ.
    let tree = SysfsCopy::of("intel_2socket");
    let start = 100 * PER_J;
    let replay = Arc::new(ReplayPerf::new(&[
        (
            "energy-pkg",
            0,
            &[start, start - 1000, start - 1000 + 2 * PER_J],
        ),
        ("energy-pkg", 28, &[0, PER_J, 2 * PER_J]),
        ("energy-cores", 0, &[0, 0, 0]),
        ("energy-cores", 28, &[0, 0, 0]),
        ("energy-gpu", 0, &[0, 0, 0]),
        ("energy-gpu", 28, &[0, 0, 0]),
        ("energy-ram", 0, &[0, 0, 0]),
        ("energy-ram", 28, &[0, 0, 0]),
        ("energy-psys", 0, &[0, PER_J, 2 * PER_J]),
        ("energy-psys", 28, &[0, 0, 0]),
    ]));
    let config = RaplConfig {
        interface: InterfaceChoice::Perf,
        ..manual_config(tree.root())
    };
    let run = run_plugin(config, backends(replay, Arc::new(StdFileOpener)), 2, |_| {
        std::thread::sleep(std::time::Duration::from_millis(10))
    });
    let package0 = |poll: usize| -> Vec<f64> {
        run.polls[poll]
            .iter()
            .filter(|r| r.domain == "package" && r.resource_id == "0")
            .map(|r| r.energy_j)
            .collect()
    };
    assert_eq!(package0(0), Vec::<f64>::new(), "the step back re-primes");
    assert_eq!(package0(1), vec![2.0]);
}

#[test]
fn a_relative_sysfs_root_is_made_absolute() {
    // perf-event2 joins a relative PMU path under /sys/bus/event_source/devices.
    let relative = std::path::PathBuf::from("tests/fixtures/amd_1socket/sys0");
    assert!(relative.is_relative());
    let replay = Arc::new(ReplayPerf::new(&[("energy-pkg", 0, &[0, PER_J])]));
    let config = RaplConfig {
        interface: InterfaceChoice::Perf,
        ..manual_config(&relative)
    };
    let run = run_plugin(
        config,
        backends(replay.clone(), Arc::new(StdFileOpener)),
        1,
        |_| {},
    );
    assert_eq!(run.interface, Interface::Perf);
    let dirs = replay.pmu_dirs();
    assert!(!dirs.is_empty());
    for dir in dirs {
        assert!(dir.is_absolute(), "{}", dir.display());
        assert!(dir.ends_with("tests/fixtures/amd_1socket/sys0/bus/event_source/devices/power"));
    }
}

#[test]
fn perf_counts_have_a_wrap_period_too() {
    // 2^64 counts of 2^-32 J = 2^32 J: about 99 days at the 500 W bound.
    let tree = SysfsCopy::of("amd_1socket");
    let replay = Arc::new(ReplayPerf::new(&[("energy-pkg", 0, &[0])]));
    let config = RaplConfig {
        interface: InterfaceChoice::Perf,
        ..manual_config(tree.root())
    };
    let probed = plugin_rapl::probe(&config, &backends(replay, Arc::new(StdFileOpener))).unwrap();
    let wrap = probed.shortest_wrap.unwrap();
    assert_eq!(wrap.as_secs(), (1u64 << 32) / 500);
    let warnings =
        plugin_rapl::timing_warnings(std::time::Duration::from_secs(100 * 24 * 3600), Some(wrap));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}
