//! Whole-node energy (`attribute_node`): long, irregular intervals such as a
//! BMC's kWh counter, and the sum of what is attributed and unattributed.
#![allow(clippy::unwrap_used)]

mod common;

use alumet::measurement::{MeasurementBuffer, MeasurementPoint, Resource, ResourceConsumer};
use alumet::metrics::MetricRegistry;
use common::{cpu, load_fixture, point, registry, run, Run, BASE_NS};
use plugin_energy_attribution::Config;

fn redfish(r: &MetricRegistry, time_ms: f64, energy_j: f64) -> MeasurementPoint {
    point(
        r,
        time_ms,
        "redfish_consumed_energy",
        Resource::LocalMachine,
        ResourceConsumer::LocalMachine,
        energy_j,
    )
    .with_attr("domain", "node")
    .with_attr("chassis", "1U")
    .with_attr("sensor", "EnvironmentMetrics.EnergykWh")
}

fn node_config(idle_w: f64) -> Config {
    Config {
        attribute_node: true,
        share_static: true,
        idle_power_w: [("node".to_owned(), idle_w)].into(),
        ..Config::default()
    }
}

/// Sum of the `attributed_energy` + `unattributed_energy` of domain `node`
/// that each process or reason got, by interval end (ms).
fn node_sums(run: &Run) -> Vec<(f64, f64)> {
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for p in run
        .of("attributed_energy")
        .into_iter()
        .chain(run.of("unattributed_energy"))
    {
        if p.attr("domain").map(ToString::to_string).as_deref() != Some("node") {
            continue;
        }
        let t = (p.timestamp.unix_nanos() - BASE_NS) as f64 / 1e6;
        match sums.iter_mut().find(|(at, _)| *at == t) {
            Some(s) => s.1 += p.value.as_f64(),
            None => sums.push((t, p.value.as_f64())),
        }
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    sums
}

fn attributed_to(run: &Run, pid: u32) -> f64 {
    run.of("attributed_energy")
        .into_iter()
        .filter(|p| p.consumer == ResourceConsumer::Process { pid })
        .map(|p| p.value.as_f64())
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// procfs every `poll_s` seconds until `end_s`: pid 1 uses `pid1` CPU
/// seconds per second until `pid1_until_s`, pid 2 `pid2` throughout; the
/// points are flushed every `flush_s`, and the node's kWh counter gives
/// one point at 0 (0 J) and one at `end_s`.
fn kwh_counter_run(
    poll_s: u64,
    end_s: u64,
    flush_s: u64,
    (pid1, pid1_until_s): (f64, u64),
    pid2: f64,
    node_j: f64,
    idle_w: f64,
) -> Run {
    let (r, outputs) = registry(None);
    let mut buffers: Vec<MeasurementBuffer> = Vec::new();
    let mut buffer: MeasurementBuffer = vec![
        point(
            &r,
            0.0,
            "process_memory_resident",
            Resource::LocalMachine,
            ResourceConsumer::Process { pid: 1 },
            1.0,
        ),
        redfish(&r, 0.0, 0.0),
    ];
    let mut t = poll_s;
    while t <= end_s {
        let ms = (t * 1000) as f64;
        if t <= pid1_until_s {
            buffer.push(cpu(&r, ms, 1, "early", pid1 * poll_s as f64));
        }
        buffer.push(cpu(&r, ms, 2, "steady", pid2 * poll_s as f64));
        if t % flush_s == 0 {
            buffers.push(std::mem::take(&mut buffer));
        }
        t += poll_s;
    }
    buffers.push(std::mem::take(&mut buffer));
    // The BMC's point arrives after the CPU time that covers it.
    buffers.push(vec![redfish(&r, (end_s * 1000) as f64, node_j)]);
    run(node_config(idle_w), r, outputs, buffers)
}

#[test]
fn a_kwh_counter_point_covering_five_polls_is_attributed_over_its_whole_interval() {
    // A BMC polled every 60 s whose 0.01 kWh counter advanced once in 5
    // polls: one point at 300 s for [0, 300 s], far longer than max_delay
    // (10 s). pid 1 ran 100 s at 1 CPU, pid 2 300 s at 0.5 CPU: 100 : 150.
    let run = kwh_counter_run(1, 300, 5, (1.0, 100), 0.5, 36_000.0, 100.0);
    // 36 000 J - 100 W x 300 s = 6 000 J dynamic -> 2 400 / 3 600; static 30 000 J -> 12 000 / 18 000.
    assert!(
        close(attributed_to(&run, 1), 14_400.0),
        "{}",
        attributed_to(&run, 1)
    );
    assert!(
        close(attributed_to(&run, 2), 21_600.0),
        "{}",
        attributed_to(&run, 2)
    );
    assert_eq!(node_sums(&run), vec![(300_000.0, node_sums(&run)[0].1)]);
    assert!(close(node_sums(&run)[0].1, 36_000.0));
    assert_eq!(run.stats.intervals_attributed, 1);
    assert_eq!(run.stats.intervals_partially_covered, 0);
    assert!(run.of("unattributed_energy").is_empty());
}

#[test]
fn an_interval_longer_than_the_activity_held_is_attributed_by_its_last_hours_not_dropped() {
    // 4 h between two points of the node (polls every 10 s): the activity
    // of the first hour is no longer held; pid 1, active only then, gets
    // nothing, and the energy is all attributed to pid 2, never dropped.
    let run = kwh_counter_run(10, 4 * 3600, 10, (1.0, 3600), 0.5, 1_440_000.0, 50.0);
    assert_eq!(run.stats.node_intervals_beyond_hold, 1);
    assert_eq!(run.stats.intervals_partially_covered, 1);
    assert_eq!(attributed_to(&run, 1), 0.0);
    let sums = node_sums(&run);
    assert_eq!(sums.len(), 1);
    assert!(close(sums[0].1, 1_440_000.0), "{sums:?}");
}

#[test]
fn attributed_plus_unattributed_node_energy_is_the_node_energy_of_each_interval() {
    for (case, energy) in [
        (
            "node_two_processes_3_to_1",
            vec![(0.0, 250.0), (1000.0, 300.0), (2000.0, 200.0)],
        ),
        (
            "node_with_gpu",
            vec![(1000.0, 500.0), (2000.0, 400.0), (3000.0, 200.0)],
        ),
    ] {
        let (mut config, registry, outputs, buffers, _) = load_fixture(case);
        config.share_static = true;
        let run = run(config, registry, outputs, buffers);
        let sums = node_sums(&run);
        assert_eq!(sums.len(), energy.len(), "{case}: {sums:?}");
        for ((t, got), (want_t, want)) in sums.iter().zip(&energy) {
            assert_eq!(t, want_t, "{case}");
            assert!(
                close(*got, *want),
                "{case} at {t} ms: {got} J instead of {want} J"
            );
        }
    }
}

#[test]
fn idle_power_of_the_node_is_read_from_the_domain_key_node() {
    let table: toml::Table =
        toml::from_str("attribute_node = true\nidle_power_w = { node = 180.0, module = 60.0 }")
            .unwrap();
    let c: Config = alumet::config::deserialize_config(table).unwrap();
    assert!(c.attribute_node);
    assert_eq!(c.idle_power_w.get("node"), Some(&180.0));
    assert!(c.validate().is_ok());
    assert!(!Config::default().attribute_node);
}
