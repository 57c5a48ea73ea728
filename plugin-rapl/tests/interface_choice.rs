//! Choosing the interface, and what the user is told when RAPL cannot be
//! read: perf unavailable → powercap; a zone that cannot be read → skipped
//! with the file and the fix; nothing readable → one line with the reason
//! and the fix, so the agent can go on without RAPL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io;
use std::sync::Arc;

use alumet::plugin::{PluginError, PluginMetadata};
use common::*;
use plugin_rapl::powercap::StdFileOpener;
use plugin_rapl::{probe, Backends, Interface, InterfaceChoice, RaplConfig, RaplPlugin};

fn unavailable(result: Result<plugin_rapl::Probe, PluginError>) -> (String, String) {
    match result {
        Err(PluginError::Unavailable { reason, fix, .. }) => (reason, fix.unwrap_or_default()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn perf_permission_denied_falls_back_to_powercap() {
    let tree = SysfsCopy::of("intel_2socket");
    let denied = Arc::new(ReplayPerf::failing(io::ErrorKind::PermissionDenied));
    let config = manual_config(tree.root());
    let probed = probe(&config, &backends(denied.clone(), Arc::new(StdFileOpener))).unwrap();
    assert_eq!(probed.interface, Interface::Powercap);
    assert!(
        probed.warnings[0].contains("perf_event not used")
            && probed.warnings[0].contains("Permission denied"),
        "{:?}",
        probed.warnings
    );

    let run = run_plugin(config, backends(denied, Arc::new(StdFileOpener)), 1, |i| {
        tree.advance_to(i)
    });
    assert_eq!(run.interface, Interface::Powercap);
    assert_rows_match(&run.rows_up_to(1), &expected_rows("intel_2socket"));
}

#[test]
fn missing_power_pmu_falls_back_to_powercap_with_the_real_backends() {
    let tree = SysfsCopy::of("amd_1socket");
    std::fs::remove_dir_all(tree.root().join("bus")).unwrap();
    let run = run_plugin(manual_config(tree.root()), Backends::real(), 1, |i| {
        tree.advance_to(i)
    });
    assert_eq!(run.interface, Interface::Powercap);
    assert_rows_match(&run.rows_up_to(1), &expected_rows("amd_1socket"));
}

#[test]
fn unreadable_zone_is_skipped_with_the_file_and_the_fix() {
    let tree = SysfsCopy::of("intel_2socket");
    let dram0 = tree.root().join("class/powercap/intel-rapl:0:2/energy_uj");
    let files = Arc::new(DenyFiles {
        denied: vec![dram0.clone()],
    });
    let denied_perf = Arc::new(ReplayPerf::failing(io::ErrorKind::PermissionDenied));
    let config = RaplConfig {
        interface: InterfaceChoice::Powercap,
        ..manual_config(tree.root())
    };
    let probed = probe(&config, &backends(denied_perf.clone(), files.clone())).unwrap();
    assert_eq!(probed.readers.len(), 8);
    let warning = probed
        .warnings
        .iter()
        .find(|w| w.contains(&dram0.display().to_string()))
        .unwrap_or_else(|| {
            panic!(
                "no warning names {}: {:?}",
                dram0.display(),
                probed.warnings
            )
        });
    assert!(warning.contains("Permission denied"), "{warning}");
    assert!(warning.contains("chmod a+r"), "{warning}");

    // The other zones are measured as usual.
    let run = run_plugin(config, backends(denied_perf, files), 1, |i| {
        tree.advance_to(i)
    });
    let expected: Vec<Row> = expected_rows("intel_2socket")
        .into_iter()
        .filter(|r| !(r.resource_kind == "dram" && r.resource_id == "0"))
        .collect();
    assert_rows_match(&run.rows_up_to(1), &expected);
}

#[test]
fn energy_file_that_cannot_be_read_is_skipped() {
    // A real file-system failure: energy_uj is a directory (open works, read
    // fails with EISDIR), as a broken sysfs or a bad bind mount would give.
    let tree = SysfsCopy::of("amd_1socket");
    let core = tree.root().join("class/powercap/intel-rapl:0:0/energy_uj");
    std::fs::remove_file(&core).unwrap();
    std::fs::create_dir(&core).unwrap();
    let config = RaplConfig {
        interface: InterfaceChoice::Powercap,
        ..manual_config(tree.root())
    };
    let probed = probe(&config, &Backends::real()).unwrap();
    assert_eq!(probed.readers.len(), 1);
    assert!(
        probed
            .warnings
            .iter()
            .any(|w| w.contains(&core.display().to_string()) && w.contains("Is a directory")),
        "{:?}",
        probed.warnings
    );
}

#[test]
fn nothing_readable_is_one_line_with_the_file_and_every_fix() {
    let tree = SysfsCopy::of("intel_2socket");
    let zones = tree.root().join("class/powercap");
    let denied: Vec<_> = std::fs::read_dir(&zones)
        .unwrap()
        .map(|e| e.unwrap().path().join("energy_uj"))
        .collect();
    let files = Arc::new(DenyFiles { denied });
    let perf = Arc::new(ReplayPerf::failing(io::ErrorKind::PermissionDenied));
    let config = manual_config(tree.root());
    let (reason, fix) = unavailable(probe(&config, &backends(perf, files)));
    let first = zones.join("intel-rapl:0/energy_uj");
    assert!(
        reason.contains(&format!("permission denied reading {}", first.display())),
        "{reason}"
    );
    assert!(reason.contains("power/energy-pkg/"), "{reason}");
    for needed in [
        "alumet-agent doctor",
        "run as root",
        "chmod a+r",
        "udev",
        "cap_perfmon",
        "perf_event_paranoid",
    ] {
        assert!(fix.contains(needed), "fix lacks {needed:?}: {fix}");
    }
    assert!(!reason.contains('\n') && !fix.contains('\n'));
}

#[test]
fn unreadable_powercap_but_working_perf_uses_perf() {
    let tree = SysfsCopy::of("amd_1socket");
    let zones = tree.root().join("class/powercap");
    let files = Arc::new(DenyFiles {
        denied: vec![
            zones.join("intel-rapl:0/energy_uj"),
            zones.join("intel-rapl:0:0/energy_uj"),
        ],
    });
    let perf = Arc::new(ReplayPerf::new(&[("energy-pkg", 0, &[0, 1 << 32])]));
    let probed = probe(&manual_config(tree.root()), &backends(perf, files)).unwrap();
    assert_eq!(probed.interface, Interface::Perf);
}

#[test]
fn no_rapl_at_all_says_so_in_one_line() {
    let empty = tempfile::tempdir().unwrap();
    let (reason, fix) = unavailable(probe(&manual_config(empty.path()), &Backends::real()));
    let pmu = empty.path().join("bus/event_source/devices/power");
    let zones = empty.path().join("class/powercap");
    assert_eq!(
        reason,
        format!(
            "no RAPL interface found (no power PMU at {}, no powercap zones at {})",
            pmu.display(),
            zones.display()
        )
    );
    assert!(fix.contains("virtual machine"), "{fix}");

    // The plugin's start fails with the same error, and nothing is added.
    let mut plugin =
        RaplPlugin::with_backends(manual_config(empty.path()), Backends::real()).unwrap();
    let mut t = alumet::testing::TestPipeline::builder();
    let err = t.start_plugin("rapl", &mut plugin).unwrap_err();
    assert!(
        err.to_string().starts_with("no RAPL interface found"),
        "{err}"
    );
    assert_eq!(t.pipeline_builder().source_count(), 0);
}

#[test]
fn forced_interfaces_report_their_own_problem() {
    let tree = SysfsCopy::of("amd_1socket");
    std::fs::remove_dir_all(tree.root().join("bus")).unwrap();
    let perf_only = RaplConfig {
        interface: InterfaceChoice::Perf,
        ..manual_config(tree.root())
    };
    let (reason, fix) = unavailable(probe(&perf_only, &Backends::real()));
    assert!(reason.starts_with("no power PMU at"), "{reason}");
    assert!(fix.contains("interface = \"powercap\""), "{fix}");

    let empty = tempfile::tempdir().unwrap();
    let powercap_only = RaplConfig {
        interface: InterfaceChoice::Powercap,
        ..manual_config(empty.path())
    };
    let (reason, _) = unavailable(probe(&powercap_only, &Backends::real()));
    assert!(reason.starts_with("no powercap zones at"), "{reason}");
}

#[test]
fn check_availability_probes_the_configured_root() {
    let meta = PluginMetadata::of::<RaplPlugin>();
    let tree = SysfsCopy::of("amd_1socket");
    let table = |root: &std::path::Path| {
        let mut t = toml::Table::new();
        t.insert("sysfs_root".into(), root.display().to_string().into());
        t.insert("interface".into(), "powercap".into());
        // a static fixture: its counters never move
        t.insert("counting_check".into(), "0s".into());
        t
    };
    (meta.check_availability)(table(tree.root())).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let err = (meta.check_availability)(table(empty.path())).unwrap_err();
    assert!(err.to_string().contains("no powercap zones"), "{err}");
}
