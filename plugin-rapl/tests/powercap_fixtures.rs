//! Fixture cases read through powercap: each `tests/fixtures/<case>/` holds a
//! sysfs tree (`sys0`), the counters of the following polls (`sys1`, ...)
//! and `expected.csv`, the energy each poll must report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use plugin_rapl::domain::Domain;
use plugin_rapl::powercap;
use plugin_rapl::{probe, Backends, Interface, InterfaceChoice, RaplConfig};

#[test]
fn intel_two_sockets_report_every_domain_on_its_resource() {
    // psys is intel-rapl:1 and package-1 is intel-rapl:2 in this tree, and
    // intel-rapl-mmio:0 repeats package-0: zones are mapped by name.
    check_powercap_case("intel_2socket");
}

#[test]
fn amd_single_socket_reports_package_and_core() {
    check_powercap_case("amd_1socket");
}

#[test]
fn counter_wrap_in_the_middle_of_a_run_is_corrected_exactly() {
    check_powercap_case("counter_wrap");
    // And the totals, in whole microjoules, are what the counters advanced.
    let tree = SysfsCopy::of("counter_wrap");
    let config = RaplConfig {
        interface: InterfaceChoice::Powercap,
        ..manual_config(tree.root())
    };
    let run = run_plugin(config, Backends::real(), 2, |i| {
        // 10 ms at 500 W: a wrap may imply up to 5 J
        std::thread::sleep(Duration::from_millis(10));
        tree.advance_to(i)
    });
    let mut totals_uj: BTreeMap<String, f64> = BTreeMap::new();
    for row in run.polls.iter().flatten() {
        *totals_uj.entry(row.domain.clone()).or_default() += row.energy_j * 1e6;
    }
    // package: 262143000000 -> (wrap at 262143328850) 1000000 -> 3000000
    let package = (262_143_328_850u64 - 262_143_000_000 + 3_000_000) as f64;
    // dram: 65712000000 -> 65712999000 -> (wrap at 65712999613) 500
    let dram = (65_712_999_613u64 - 65_712_000_000 + 500) as f64;
    assert!(
        (totals_uj["package"] - package).abs() < 1.0,
        "{totals_uj:?}"
    );
    assert!((totals_uj["dram"] - dram).abs() < 1.0, "{totals_uj:?}");
}

#[test]
fn discovery_maps_zones_by_name_and_skips_the_mmio_window() {
    let root = fixture("intel_2socket").join("sys0");
    let found = powercap::discover(&root).unwrap();
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    let summary: Vec<(String, Domain, u32)> = found
        .zones
        .iter()
        .map(|z| {
            let dir = z.dir.file_name().unwrap().to_string_lossy().into_owned();
            (dir, z.domain, z.package_id)
        })
        .collect();
    let expect = |d: &str, domain, id| (d.to_owned(), domain, id);
    assert_eq!(
        summary,
        vec![
            expect("intel-rapl:0", Domain::Package, 0),
            expect("intel-rapl:0:0", Domain::Core, 0),
            expect("intel-rapl:0:1", Domain::Uncore, 0),
            expect("intel-rapl:0:2", Domain::Dram, 0),
            expect("intel-rapl:1", Domain::Psys, 0),
            expect("intel-rapl:2", Domain::Package, 1),
            expect("intel-rapl:2:0", Domain::Core, 1),
            expect("intel-rapl:2:1", Domain::Uncore, 1),
            expect("intel-rapl:2:2", Domain::Dram, 1),
        ]
    );
    // Subzones without constraints inherit their package's maximum power.
    let dram = &found.zones[3];
    assert_eq!(dram.max_power_uw, Some(165_000_000));
    assert_eq!(found.zones[4].max_power_uw, None);
}

#[test]
fn shortest_wrap_time_uses_constraints_else_the_configured_bound() {
    let root = fixture("intel_2socket").join("sys0");
    let config = RaplConfig {
        interface: InterfaceChoice::Powercap,
        sysfs_root: root,
        // a static fixture: its counters never move
        counting_check: Duration::ZERO,
        ..RaplConfig::default()
    };
    let probe = probe(&config, &Backends::real()).unwrap();
    assert_eq!(probe.interface, Interface::Powercap);
    assert_eq!(probe.readers.len(), 9);
    // dram: 65712999613 µJ at package-0's 165 W is the shortest, 398 s;
    // psys has no constraint: 262143328850 µJ at 500 W would be 524 s.
    let wrap = probe.shortest_wrap.unwrap();
    assert_eq!(wrap.as_secs(), 398, "{wrap:?}");

    let config = RaplConfig {
        max_power_w_bound: 5000.0,
        ..config
    };
    let wrap = plugin_rapl::probe(&config, &Backends::real())
        .unwrap()
        .shortest_wrap
        .unwrap();
    // now psys at 5 kW wraps first: 52.4 s
    assert_eq!(wrap.as_secs(), 52, "{wrap:?}");
    assert!(wrap < Duration::from_secs(60));
}

#[test]
fn energy_files_stay_open_and_see_in_place_updates() {
    let tree = SysfsCopy::of("amd_1socket");
    let zone = tree.root().join("class/powercap/intel-rapl:0/energy_uj");
    let file = powercap::EnergyFile::new(std::fs::File::open(&zone).unwrap());
    assert_eq!(file.read_energy_uj().unwrap(), 1000);
    write_in_place(&zone, "123456789\n");
    assert_eq!(file.read_energy_uj().unwrap(), 123_456_789);
    write_in_place(&zone, "7\n");
    assert_eq!(file.read_energy_uj().unwrap(), 7);
}

#[test]
fn zone_numbers_are_hexadecimal_as_the_powercap_core_writes_them() {
    // 2 sockets x 6 CCD zones: intel-rapl:0 .. intel-rapl:b.
    let found = powercap::discover(&fixture("amd_2socket_12ccd").join("sys0")).unwrap();
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    let dirs: Vec<String> = found
        .zones
        .iter()
        .map(|z| z.dir.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: Vec<String> = (0..12).map(|i| format!("intel-rapl:{i:x}")).collect();
    assert_eq!(dirs, expected);
    let last = found.zones.last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.package_id),
        ("package-1-die-5", 1)
    );
    assert_eq!(last.die_id, Some(5));
}

#[test]
fn amd_ccd_zones_sharing_the_package_counter_are_reported_once_per_package() {
    // Every CCD zone of a package reads the same package counter: one point
    // per package, not six (summing them would give 6x the energy).
    check_powercap_case("amd_2socket_12ccd");
}

#[test]
fn dies_with_their_own_counters_are_told_apart_by_a_die_attribute() {
    check_powercap_case("intel_2socket_2die");
}

#[test]
fn multi_socket_psys_reports_the_one_counter_that_advances() {
    // psys (package 0) stays at 0, psys-1 advances: psys-N is accepted and
    // the platform is reported once, from the counter that moves.
    check_powercap_case("intel_2socket_psys");
}

#[test]
fn a_counter_reset_is_not_taken_for_a_wrap() {
    // package-0 goes from 150 kJ to 2 mJ (driver reload): a wrap would mean
    // 112 kJ within 10 ms. No point for that poll, then deltas from the
    // new value; dram is unaffected.
    check_powercap_case("counter_reset");
}

#[test]
fn amd_core_zone_is_the_core_of_the_lowest_online_cpu_of_its_package() {
    let tree = SysfsCopy::of("amd_1socket");
    // CPU 0 offline: the driver reads the package on CPU 1.
    std::fs::write(tree.root().join("devices/system/cpu/online"), "1-7\n").unwrap();
    let found = powercap::discover(tree.root()).unwrap();
    let core = found
        .zones
        .iter()
        .find(|z| z.domain == Domain::Core)
        .unwrap();
    assert_eq!(
        core.resource,
        alumet::measurement::Resource::CpuCore { id: 1 }
    );
    // Without the vendor the zone is taken for Intel's, with a warning.
    std::fs::remove_file(tree.root().join("devices/system/cpu/modalias")).unwrap();
    let found = powercap::discover(tree.root()).unwrap();
    let core = found
        .zones
        .iter()
        .find(|z| z.domain == Domain::Core)
        .unwrap();
    assert_eq!(
        core.resource,
        alumet::measurement::Resource::CpuPackage { id: 0 }
    );
    assert!(
        found.notes[0].contains("cannot tell the CPU vendor"),
        "{:?}",
        found.notes
    );
}
