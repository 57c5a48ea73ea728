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

    // Each event on one CPU of each socket (cpumask 0,28), psys only once.
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
                package_id: 0
            },
            perf::SocketCpu {
                cpu: 28,
                package_id: 1
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
