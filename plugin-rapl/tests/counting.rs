//! Counting, not opening, decides: the start-up check that every counter
//! advances, and while running, frozen counters and implausible advances.
//!
//! The counters here are doubles driven by real time (`TimedPerf`): a
//! counting one advances as a real package does (about every millisecond),
//! a dead one stays where it opened, as the `energy-psys` counter of a
//! cloud VM does. The machine is a fixture too (`proc/cpuinfo` with or
//! without the `hypervisor` flag), so no test depends on the host's RAPL.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alumet::plugin::PluginError;
use alumet::testing::TestPipeline;
use common::write_in_place;
use plugin_rapl::perf::{PerfCounterOpener, PerfEnergyEvent, POWER_PMU_DIR};
use plugin_rapl::powercap::StdFileOpener;
use plugin_rapl::source::RawEnergyReader;
use plugin_rapl::{
    probe, Backends, Interface, InterfaceChoice, RaplConfig, RaplPlugin, METRIC_NAME,
    UNMEASURED_METRIC_NAME,
};

/// Counts per joule with the kernel's scale of 2^-32 J.
const PER_J: f64 = 4_294_967_296.0;

/// A counter's raw value as a function of the time since it was opened.
type Curve = Arc<dyn Fn(Duration) -> u64 + Send + Sync>;

/// A perf double whose counters follow curves of real time, by event name.
struct TimedPerf {
    curves: Vec<(&'static str, Curve)>,
}

struct TimedCounter {
    opened: Instant,
    curve: Curve,
}

impl RawEnergyReader for TimedCounter {
    fn read_raw(&mut self) -> io::Result<u64> {
        Ok((self.curve)(self.opened.elapsed()))
    }
}

impl PerfCounterOpener for TimedPerf {
    fn open(&self, event: &PerfEnergyEvent, _cpu: u32) -> io::Result<Box<dyn RawEnergyReader>> {
        let curve = self
            .curves
            .iter()
            .find(|(name, _)| *name == event.name)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no curve for {}", event.name));
        Ok(Box::new(TimedCounter {
            opened: Instant::now(),
            curve,
        }))
    }
}

/// `watts` W, updated every millisecond as RAPL does.
fn steady(watts: f64) -> Curve {
    Arc::new(move |t| (t.as_millis() as f64 * watts / 1000.0 * PER_J) as u64)
}

/// A counter that opens and reads 0 forever.
fn dead() -> Curve {
    Arc::new(|_| 0)
}

/// A power PMU with these events (scale 2^-32 J), one socket (CPU 0).
fn power_pmu(root: &Path, events: &[&str]) {
    let pmu = root.join(POWER_PMU_DIR);
    fs::create_dir_all(pmu.join("events")).unwrap();
    fs::write(pmu.join("type"), "9\n").unwrap();
    fs::write(pmu.join("cpumask"), "0\n").unwrap();
    for e in events {
        fs::write(pmu.join("events").join(e), "event=0x05\n").unwrap();
        fs::write(
            pmu.join("events").join(format!("{e}.scale")),
            "2.3283064365386962890625e-10\n",
        )
        .unwrap();
        fs::write(pmu.join("events").join(format!("{e}.unit")), "Joules\n").unwrap();
    }
    let topo = root.join("devices/system/cpu/cpu0/topology");
    fs::create_dir_all(&topo).unwrap();
    fs::write(topo.join("physical_package_id"), "0\n").unwrap();
}

/// A `proc` root whose cpuinfo has the `hypervisor` flag, and the KVM
/// clock source under `sys`: a KVM guest, as this project's CI machines are.
fn kvm_guest(proc_root: &Path, sys_root: &Path) {
    alumet_kernelfs::virt::write_kvm_guest_fixture(proc_root, sys_root).unwrap();
}

fn bare_metal(proc_root: &Path) {
    fs::create_dir_all(proc_root).unwrap();
    fs::write(
        proc_root.join("cpuinfo"),
        "processor\t: 0\nflags\t\t: fpu sse2 avx2\n",
    )
    .unwrap();
}

fn config(root: &Path, interface: InterfaceChoice) -> RaplConfig {
    RaplConfig {
        interface,
        sysfs_root: root.join("sys"),
        proc_root: root.join("proc"),
        poll_interval: Duration::from_secs(24 * 3600),
        flush_interval: Duration::from_secs(24 * 3600),
        ..RaplConfig::default()
    }
}

fn perf_backends(curves: Vec<(&'static str, Curve)>) -> Backends {
    Backends {
        perf: Arc::new(TimedPerf { curves }),
        files: Arc::new(StdFileOpener),
    }
}

fn unavailable(result: Result<plugin_rapl::Probe, PluginError>) -> (String, bool) {
    match result {
        Err(e @ PluginError::Unavailable { .. }) => (e.to_string(), e.is_absent()),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(p) => panic!("expected an error, got {:?}", p.readers),
    }
}

#[test]
fn a_vm_psys_counter_that_opens_and_reads_zero_is_absent_not_measured() {
    // This project's CI machines: a KVM guest whose power PMU has only
    // energy-psys, which opens and reads 0 forever; no powercap.
    let dir = tempfile::tempdir().unwrap();
    power_pmu(&dir.path().join("sys"), &["energy-psys"]);
    kvm_guest(&dir.path().join("proc"), &dir.path().join("sys"));
    let started = Instant::now();
    let (reason, absent) = unavailable(probe(
        &config(dir.path(), InterfaceChoice::Auto),
        &perf_backends(vec![("energy-psys", dead())]),
    ));
    // The whole window was watched, not much more.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        reason.starts_with(
            "RAPL counters do not count on this virtual machine (KVM): perf event power/energy-psys/ on CPU 0 (stayed at 0) did not advance in 100ms"
        ),
        "{reason}"
    );
    assert!(reason.contains("no powercap zones at"), "{reason}");
    assert!(reason.contains("cpu-power-model estimates"), "{reason}");
    assert!(absent, "nothing to fix on a VM: {reason}");
}

#[test]
fn the_same_dead_counter_on_bare_metal_is_a_fault_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    power_pmu(&dir.path().join("sys"), &["energy-pkg"]);
    bare_metal(&dir.path().join("proc"));
    let (reason, absent) = unavailable(probe(
        &config(dir.path(), InterfaceChoice::Perf),
        &perf_backends(vec![("energy-pkg", dead())]),
    ));
    assert!(
        reason.starts_with("RAPL counters do not count: perf event power/energy-pkg/ on CPU 0 (stayed at 0) did not advance in 100ms"),
        "{reason}"
    );
    assert!(reason.contains("on bare metal this is a fault"), "{reason}");
    assert!(!absent);
}

#[test]
fn counting_counters_pass_in_a_few_milliseconds_and_silent_optional_ones_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    power_pmu(
        &dir.path().join("sys"),
        &["energy-pkg", "energy-ram", "energy-gpu"],
    );
    bare_metal(&dir.path().join("proc"));
    let backends = perf_backends(vec![
        ("energy-pkg", steady(40.0)),
        ("energy-ram", steady(4.0)),
        // no integrated GPU: pp1 stays at 0, as on most servers
        ("energy-gpu", dead()),
    ]);
    let p = probe(&config(dir.path(), InterfaceChoice::Perf), &backends).unwrap();
    assert_eq!(p.interface, Interface::Perf);
    let kept: Vec<String> = p.readers.iter().map(|r| r.domain().to_string()).collect();
    assert_eq!(kept, ["package", "dram"]);
    assert_eq!(p.silent.len(), 1);
    assert_eq!(
        p.silent[0].to_string(),
        "perf event power/energy-gpu/ on CPU 0 (stayed at 0)"
    );
    let line = plugin_rapl::silent_domains_line(&p.silent, Duration::from_millis(100)).unwrap();
    assert!(
        line.starts_with("not reading uncore of CPU package 0: "),
        "{line}"
    );
    assert!(!p.machine.is_virtual());

    // Everything counts: the check ends as soon as it has seen it.
    let backends = perf_backends(vec![
        ("energy-pkg", steady(40.0)),
        ("energy-ram", steady(4.0)),
        ("energy-gpu", steady(1.0)),
    ]);
    let started = Instant::now();
    let p = probe(&config(dir.path(), InterfaceChoice::Perf), &backends).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(p.readers.len(), 3);
    assert!(p.silent.is_empty());
}

#[test]
fn auto_falls_back_to_powercap_when_perf_does_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    power_pmu(&sys, &["energy-psys"]);
    bare_metal(&dir.path().join("proc"));
    let zone = sys.join("class/powercap/intel-rapl:0");
    fs::create_dir_all(&zone).unwrap();
    fs::write(zone.join("name"), "package-0\n").unwrap();
    fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
    fs::write(zone.join("energy_uj"), "1000\n").unwrap();
    let energy = zone.join("energy_uj");
    let stop = Arc::new(Mutex::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut uj = 1000u64;
            while !*stop.lock().unwrap() {
                std::thread::sleep(Duration::from_millis(2));
                uj += 20_000;
                write_in_place(&energy, &format!("{uj}\n"));
            }
        })
    };
    let p = probe(
        &config(dir.path(), InterfaceChoice::Auto),
        &perf_backends(vec![("energy-psys", dead())]),
    );
    *stop.lock().unwrap() = true;
    writer.join().unwrap();
    let p = p.unwrap();
    assert_eq!(p.interface, Interface::Powercap);
    assert!(
        p.warnings.iter().any(|w| w.starts_with(
            "perf_event not used (its counters do not count: perf event power/energy-psys/ on CPU 0 (stayed at 0)); reading powercap"
        )),
        "{:?}",
        p.warnings
    );
}

#[test]
fn powercap_zones_that_never_move_are_no_measurement_either() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    kvm_guest(&dir.path().join("proc"), &sys);
    let zone = sys.join("class/powercap/intel-rapl:0");
    fs::create_dir_all(&zone).unwrap();
    fs::write(zone.join("name"), "package-0\n").unwrap();
    fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
    fs::write(zone.join("energy_uj"), "123456\n").unwrap();
    let (reason, absent) = unavailable(probe(
        &config(dir.path(), InterfaceChoice::Auto),
        &Backends::real(),
    ));
    assert!(
        reason.starts_with("RAPL counters do not count on this virtual machine (KVM): "),
        "{reason}"
    );
    assert!(
        reason.contains("intel-rapl:0/energy_uj (stayed at 123456) did not advance in 100ms"),
        "{reason}"
    );
    assert!(absent);
    // The check can be turned off: then the zone is read (and its points say 0 J).
    let off = RaplConfig {
        counting_check: Duration::ZERO,
        ..config(dir.path(), InterfaceChoice::Auto)
    };
    let p = probe(&off, &Backends::real()).unwrap();
    assert_eq!(p.readers.len(), 1);
    assert!(p.machine.is_virtual());
}

/// What a run of the plugin gave, by poll: (metric, value, reason).
fn run(
    config: RaplConfig,
    backends: Backends,
    polls: &[Duration],
) -> Vec<Vec<(String, f64, String)>> {
    let mut plugin = RaplPlugin::with_backends(config, backends).unwrap();
    let mut t = TestPipeline::builder();
    t.start_plugin("rapl", &mut plugin).unwrap();
    let running = t.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running
        .handle()
        .stats()
        .source("rapl/energy")
        .unwrap()
        .polls
        < 1
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    for wait in polls {
        std::thread::sleep(*wait);
        running.trigger_all();
    }
    let result = running.finish();
    let mut points: Vec<_> = result
        .points
        .iter()
        .filter_map(|p| {
            let name = &result.metrics.get(p.metric)?.name;
            (name == METRIC_NAME || name == UNMEASURED_METRIC_NAME).then(|| {
                (
                    p.timestamp,
                    name.clone(),
                    p.value.as_f64(),
                    p.attr("reason").map(|r| r.to_string()).unwrap_or_default(),
                )
            })
        })
        .collect();
    points.sort_by_key(|p| p.0);
    let mut by_poll: Vec<Vec<(String, f64, String)>> = Vec::new();
    let mut last = None;
    for (t, name, v, reason) in points {
        if last != Some(t) {
            by_poll.push(Vec::new());
            last = Some(t);
        }
        by_poll.last_mut().unwrap().push((name, v, reason));
    }
    by_poll
}

#[test]
fn a_counter_that_freezes_while_running_is_unmeasured_not_zero_then_counts_again() {
    let dir = tempfile::tempdir().unwrap();
    power_pmu(&dir.path().join("sys"), &["energy-pkg"]);
    bare_metal(&dir.path().join("proc"));
    // 50 W, frozen (a migration) from 300 ms to 900 ms after it was opened,
    // then 50 W again from where it stopped.
    let frozen_from = 300u64;
    let frozen_until = 900u64;
    let curve: Curve = Arc::new(move |t| {
        let ms = t.as_millis() as u64;
        let counted = if ms < frozen_from {
            ms
        } else if ms < frozen_until {
            frozen_from
        } else {
            frozen_from + (ms - frozen_until)
        };
        (counted as f64 * 0.05 * PER_J) as u64
    });
    let polls = [200, 200, 200, 200, 200, 200].map(Duration::from_millis);
    let by_poll = run(
        config(dir.path(), InterfaceChoice::Perf),
        perf_backends(vec![("energy-pkg", curve)]),
        &polls,
    );
    // the priming poll (0 J), six polls and the shutdown's
    assert_eq!(by_poll.len(), 8, "{by_poll:#?}");
    assert_eq!(by_poll[0], [(METRIC_NAME.to_owned(), 0.0, String::new())]);
    let unmeasured: Vec<usize> = by_poll
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.iter()
                .any(|(m, _, r)| m == UNMEASURED_METRIC_NAME && r == "frozen")
        })
        .map(|(i, _)| i)
        .collect();
    // The polls at about 400, 600 and 800 ms saw no advance for over 100 ms.
    assert!(
        unmeasured.len() >= 2 && unmeasured.len() <= 3,
        "{unmeasured:?} {by_poll:#?}"
    );
    for i in &unmeasured {
        // no energy point for a frozen interval: not 0 J
        assert!(
            by_poll[*i].iter().all(|(m, _, _)| m != METRIC_NAME),
            "{by_poll:#?}"
        );
        let (_, seconds, _) = &by_poll[*i][0];
        assert!((0.1..0.5).contains(seconds), "{seconds}");
    }
    // Once it counts again, its energy is plausible (50 W) and measured.
    let after: f64 = by_poll[unmeasured[unmeasured.len() - 1] + 1..]
        .iter()
        .flatten()
        .filter(|(m, _, _)| m == METRIC_NAME)
        .map(|(_, v, _)| v)
        .sum();
    assert!(after > 0.0, "{by_poll:#?}");
}

#[test]
fn an_advance_beyond_what_the_domain_can_draw_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    power_pmu(&dir.path().join("sys"), &["energy-pkg"]);
    bare_metal(&dir.path().join("proc"));
    // 20 W, and a stale counter catching up by 50 kJ at 250 ms.
    let curve: Curve = Arc::new(|t| {
        let ms = t.as_millis() as f64;
        let jump = if ms >= 250.0 { 50_000.0 } else { 0.0 };
        ((ms * 0.02 + jump) * PER_J) as u64
    });
    let by_poll = run(
        config(dir.path(), InterfaceChoice::Perf),
        perf_backends(vec![("energy-pkg", curve)]),
        &[
            Duration::from_millis(150),
            Duration::from_millis(150),
            Duration::from_millis(150),
        ],
    );
    let flat: Vec<&(String, f64, String)> = by_poll.iter().flatten().collect();
    let implausible: Vec<_> = flat
        .iter()
        .filter(|(m, _, r)| m == UNMEASURED_METRIC_NAME && r == "implausible")
        .collect();
    assert_eq!(implausible.len(), 1, "{by_poll:#?}");
    let total: f64 = flat
        .iter()
        .filter(|(m, _, _)| m == METRIC_NAME)
        .map(|(_, v, _)| v)
        .sum();
    assert!(total < 100.0, "the jump is not counted: {total} J");
}

#[test]
fn points_read_inside_a_vm_say_so() {
    let dir = tempfile::tempdir().unwrap();
    power_pmu(&dir.path().join("sys"), &["energy-pkg"]);
    kvm_guest(&dir.path().join("proc"), &dir.path().join("sys"));
    let mut plugin = RaplPlugin::with_backends(
        config(dir.path(), InterfaceChoice::Perf),
        perf_backends(vec![("energy-pkg", steady(30.0))]),
    )
    .unwrap();
    let mut t = TestPipeline::builder();
    t.start_plugin("rapl", &mut plugin).unwrap();
    let running = t.start();
    std::thread::sleep(Duration::from_millis(50));
    running.trigger_all();
    let result = running.finish();
    let points = result.points_of(METRIC_NAME);
    assert!(!points.is_empty());
    for p in points {
        assert_eq!(
            p.attr("virtual_machine").map(|v| v.to_string()).as_deref(),
            Some("KVM"),
            "{p:?}"
        );
    }
}

#[test]
fn a_vms_verdict_is_kept_for_the_boot_and_reused_without_watching_again() {
    let dir = tempfile::tempdir().unwrap();
    power_pmu(&dir.path().join("sys"), &["energy-psys"]);
    kvm_guest(&dir.path().join("proc"), &dir.path().join("sys"));
    let boot = dir.path().join("proc/sys/kernel/random");
    fs::create_dir_all(&boot).unwrap();
    fs::write(boot.join("boot_id"), "4b2e-boot\n").unwrap();
    let kept = dir.path().join("run/alumet/rapl-not-counting");
    let keeping = plugin_rapl::VerdictKeeping {
        path: Some(kept.clone()),
        write: true,
        host_sysfs_only: false,
    };
    let config = config(dir.path(), InterfaceChoice::Perf);
    let backends = perf_backends(vec![("energy-psys", dead())]);
    let first = plugin_rapl::probe_keeping(&config, &backends, &keeping);
    let (reason, absent) = unavailable(first);
    assert!(
        absent && !reason.contains("this boot's first check"),
        "{reason}"
    );
    assert!(kept.exists());
    // The next start of the boot: no 100 ms watch, the same verdict.
    let started = Instant::now();
    let (again, absent) = unavailable(plugin_rapl::probe_keeping(&config, &backends, &keeping));
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert!(absent);
    assert!(
        again.contains("perf event power/energy-psys/ on CPU 0 (stayed at 0) did not advance in 100ms (at this boot's first check; the verdict is kept in"),
        "{again}"
    );
    // Another boot checks again.
    fs::write(boot.join("boot_id"), "another-boot\n").unwrap();
    let started = Instant::now();
    let (_, _) = unavailable(plugin_rapl::probe_keeping(&config, &backends, &keeping));
    assert!(started.elapsed() >= Duration::from_millis(100));
    // Bare metal never keeps a verdict: a dead counter there is a fault, checked each time.
    let metal = tempfile::tempdir().unwrap();
    power_pmu(&metal.path().join("sys"), &["energy-pkg"]);
    bare_metal(&metal.path().join("proc"));
    let kept = metal.path().join("kept");
    let keeping = plugin_rapl::VerdictKeeping {
        path: Some(kept.clone()),
        ..keeping
    };
    let (_, absent) = unavailable(plugin_rapl::probe_keeping(
        &self::config(metal.path(), InterfaceChoice::Perf),
        &perf_backends(vec![("energy-pkg", dead())]),
        &keeping,
    ));
    assert!(!absent);
    assert!(!kept.exists());
}
