//! The plugin in a real pipeline (started before the plugins whose metrics it
//! reads), and the cases where some or all of its inputs are missing.
#![allow(clippy::unwrap_used)]

mod common;

use alumet::measurement::{Resource, ResourceConsumer};
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::pipeline::{ElementContext, Transform};
use alumet::plugin::PluginDefinition;
use alumet::testing::{FnSource, TestPipeline};
use plugin_energy_attribution::{AttributionTransform, Config, EnergyAttributionPlugin};

use common::{cpu, rapl, registry, run};

#[test]
fn in_a_pipeline_energy_is_shared_3_to_1_whatever_the_start_order() {
    let mut t = TestPipeline::builder();
    let config = Config {
        idle_power_w: [("package".to_owned(), 0.0)].into(),
        ..Config::default()
    };
    let mut plugin = EnergyAttributionPlugin::init(config).unwrap();
    // Started first: the metrics it reads do not exist yet.
    t.start_plugin("energy-attribution", &mut plugin).unwrap();
    t.plugin("fake-rapl", |ctx| {
        let id = ctx.create_metric(Metric::new(
            "rapl_consumed_energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "e",
        ))?;
        let mut first = true;
        let source = FnSource::new(move |into, ts| {
            // Like rapl: the first poll only reads the counter.
            if !std::mem::take(&mut first) {
                into.push(
                    alumet::measurement::MeasurementPoint::new(
                        ts,
                        id,
                        Resource::CpuPackage { id: 0 },
                        ResourceConsumer::LocalMachine,
                        2.0,
                    )
                    .with_attr("domain", "package"),
                );
            }
            Ok(())
        });
        ctx.add_source("energy", Box::new(source), TestPipeline::manual_trigger());
        Ok(())
    })
    .unwrap();
    t.plugin("fake-procfs", |ctx| {
        let id = ctx.create_metric(Metric::new(
            "process_cpu_time",
            Unit::Second,
            ValueType::F64,
            MetricKind::Delta,
            "c",
        ))?;
        let source = FnSource::new(move |into, ts| {
            for (pid, exe, seconds) in [(11, "three", 0.3), (12, "one", 0.1)] {
                into.push(
                    alumet::measurement::MeasurementPoint::new(
                        ts,
                        id,
                        Resource::LocalMachine,
                        ResourceConsumer::Process { pid },
                        seconds,
                    )
                    .with_attr("mode", "user")
                    .with_attr("exe", exe),
                );
            }
            Ok(())
        });
        ctx.add_source(
            "processes",
            Box::new(source),
            TestPipeline::manual_trigger(),
        );
        Ok(())
    })
    .unwrap();
    let running = t.start();
    for _ in 0..5 {
        running.trigger_all();
    }
    let result = running.finish();
    // Every joule, the first point's included: its start is unknown, so it
    // comes back as unattributed (interval_start_unknown), not dropped.
    let energy: f64 = result
        .points_of("rapl_consumed_energy")
        .iter()
        .map(|p| p.value.as_f64())
        .sum();
    assert!(
        energy >= 10.0,
        "the fake rapl source was polled: {energy} J"
    );
    let attributed = result.points_of("attributed_energy");
    let share = |pid: u32| -> f64 {
        attributed
            .iter()
            .filter(|p| p.consumer == ResourceConsumer::Process { pid })
            .map(|p| p.value.as_f64())
            .sum()
    };
    let unattributed: f64 = result
        .points_of("unattributed_energy")
        .iter()
        .map(|p| p.value.as_f64())
        .sum();
    let (three, one) = (share(11), share(12));
    assert!(three > 0.0 && one > 0.0, "{three} {one}");
    assert!((three / one - 3.0).abs() < 1e-9, "{three} : {one}");
    // Idle power 0 W: all energy is dynamic, and all of it is accounted for.
    assert!(
        (three + one + unattributed - energy).abs() < 1e-9 * energy,
        "{three} + {one} + {unattributed} != {energy}"
    );
    for p in &attributed {
        let exe = p.attr("exe").unwrap().to_string();
        assert!(exe == "three" || exe == "one");
        assert_eq!(p.attr("part").unwrap().to_string(), "dynamic");
    }
}

#[test]
fn without_any_input_buffers_pass_through_untouched() {
    let (r, outputs) = registry(Some(&["gpu_process_sm_utilization"]));
    let other = r.by_name("gpu_process_sm_utilization").unwrap();
    let buffer = vec![alumet::measurement::MeasurementPoint::new(
        common::ts(5.0),
        other,
        Resource::Gpu { bus_id: "0".into() },
        ResourceConsumer::Process { pid: 3 },
        50.0,
    )];
    let result = run(Config::default(), r, outputs, vec![buffer.clone(), buffer]);
    assert!(result.added.is_empty());
    assert_eq!(result.points.len(), 2);
}

#[test]
fn without_process_data_energy_is_reported_unattributed_at_once() {
    let (r, outputs) = registry(Some(&["rapl_consumed_energy"]));
    let config = Config {
        idle_power_w: [("package".to_owned(), 4.0)].into(),
        ..Config::default()
    };
    let mut t = AttributionTransform::new(config, outputs);
    let ctx = ElementContext { metrics: &r };
    let mut b0 = vec![rapl(&r, 0.0, 0, 1.0)];
    t.apply(&mut b0, &ctx).unwrap();
    let mut b1 = vec![rapl(&r, 1000.0, 0, 10.0)];
    t.apply(&mut b1, &ctx).unwrap();
    // Not held back: there is nothing to wait for.
    let lost: Vec<_> = b1
        .iter()
        .filter(|p| p.metric == outputs.unattributed_energy)
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].value.as_f64(), 6.0);
    assert_eq!(
        lost[0].attr("reason").unwrap().to_string(),
        "no_process_data"
    );
}

#[test]
fn a_pid_reported_twice_in_one_poll_adds_up() {
    // user and system points of one process in one poll are one sample.
    let (r, outputs) = registry(None);
    let config = Config {
        idle_power_w: [("package".to_owned(), 0.0)].into(),
        ..Config::default()
    };
    let buffers = vec![
        vec![
            cpu(&r, 0.0, 1, "a", 0.0),
            cpu(&r, 0.0, 2, "b", 0.0),
            rapl(&r, 0.0, 0, 0.0),
        ],
        vec![
            cpu(&r, 1000.0, 1, "a", 0.1),
            cpu(&r, 1000.0, 1, "a", 0.1),
            cpu(&r, 1000.0, 2, "b", 0.2),
            rapl(&r, 1000.0, 0, 8.0),
        ],
    ];
    let result = run(config, r, outputs, buffers);
    let values: Vec<f64> = result
        .of("attributed_energy")
        .iter()
        .map(|p| p.value.as_f64())
        .collect();
    assert_eq!(values, vec![4.0, 4.0]);
}
