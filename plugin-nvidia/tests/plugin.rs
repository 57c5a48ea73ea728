//! The plugin as the agent runs it: started in a real pipeline
//! (`alumet::testing::TestPipeline`) over the fake driver, and once over the
//! real NVML of this machine.
#![allow(clippy::unwrap_used)]

use alumet::measurement::{AttributeValue, MeasurementPoint, Resource, ResourceConsumer};
use alumet::plugin::{PluginDefinition, PluginError};
use alumet::testing::{TestPipeline, TestResult};
use plugin_nvidia::nvml::{GpuError, GpuProcess, NvmlBackend, OpenError, ProcessSample};
use plugin_nvidia::testing::{FakeBackend, FakeGpu};
use plugin_nvidia::{NvidiaConfig, NvidiaPlugin};

const BUS_A: &str = "00000000:3B:00.0";
const BUS_B: &str = "00000000:AF:00.0";

fn gpu_resource(bus_id: &str) -> Resource {
    Resource::Gpu {
        bus_id: bus_id.to_owned().into(),
    }
}

/// Runs the plugin over `backend` for `steps.len()` polls (at least 2: the
/// pipeline polls at start and at shutdown, and at each trigger in between).
/// `steps[i]` sets the dials before poll `i`; the first runs before the
/// plugin starts, so the start-up probe sees it too.
fn run(
    config: NvidiaConfig,
    backend: FakeBackend,
    steps: &[&dyn Fn()],
) -> Result<TestResult, PluginError> {
    let mut plugin = NvidiaPlugin::with_backend(config, Box::new(backend))?;
    let mut t = TestPipeline::builder();
    if let Some(first) = steps.first() {
        first();
    }
    t.start_plugin("nvidia", &mut plugin)?;
    let running = t.start();
    wait_for_first_polls(&running);
    let later = steps.len().saturating_sub(1);
    for (i, step) in steps.iter().skip(1).enumerate() {
        step();
        if i + 1 < later {
            running.trigger_all();
        }
    }
    Ok(running.finish())
}

/// The pipeline polls every source once as it starts, on the poller's thread:
/// wait for it so that the dials do not change under it.
fn wait_for_first_polls(running: &alumet::testing::RunningTest) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running
        .handle()
        .stats()
        .sources
        .iter()
        .any(|s| s.polls == 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first poll never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Config with a poll interval so long that only start, triggers and shutdown poll.
fn manual() -> NvidiaConfig {
    NvidiaConfig {
        poll_interval: std::time::Duration::from_secs(24 * 3600),
        flush_interval: std::time::Duration::from_secs(24 * 3600),
        ..NvidiaConfig::default()
    }
}

fn values(points: &[&MeasurementPoint]) -> Vec<f64> {
    points.iter().map(|p| p.value.as_f64()).collect()
}

#[test]
fn energy_is_the_exact_delta_of_the_counter() {
    let gpu = FakeGpu::new(BUS_A);
    let backend = FakeBackend::new().with_gpu(gpu.clone());
    let set = |mj: u64| {
        let gpu = gpu.clone();
        move || gpu.update(|s| s.total_energy_mj = Ok(mj))
    };
    let steps: [&dyn Fn(); 4] = [&set(1_000), &set(3_500), &set(3_000), &set(4_250)];
    let result = run(manual(), backend, &steps).unwrap();
    // poll 1 primes (0 J: the start of the first interval), poll 2: +2.5 J,
    // poll 3: the counter went back (driver reload): re-primes, poll 4: +1.25 J
    let energy = result.points_of("gpu_consumed_energy");
    assert_eq!(values(&energy), vec![0.0, 2.5, 1.25]);
    for p in &energy {
        assert_eq!(p.resource, gpu_resource("0000:3b:00.0"));
        assert_eq!(p.consumer, ResourceConsumer::LocalMachine);
        assert_eq!(p.attr("estimated"), None);
    }
    assert_eq!(result.points_of("gpu_power").len(), 4);
}

#[test]
fn without_the_counter_energy_is_integrated_from_power_over_the_poll_timestamps() {
    let gpu = FakeGpu::new(BUS_A);
    gpu.update(|s| s.total_energy_mj = Err(GpuError::NotSupported));
    let backend = FakeBackend::new().with_gpu(gpu.clone());
    let set = |mw: u32| {
        let gpu = gpu.clone();
        move || gpu.update(|s| s.power_mw = Ok(mw))
    };
    let steps: [&dyn Fn(); 3] = [&set(100_000), &set(300_000), &set(200_000)];
    let result = run(manual(), backend, &steps).unwrap();

    let power = result.points_of("gpu_power");
    assert_eq!(values(&power), vec![100.0, 300.0, 200.0]);
    let energy = result.points_of("gpu_consumed_energy");
    assert_eq!(energy.len(), 3);
    // The first reading: 0 J at the start of the first interval.
    assert_eq!(energy[0].timestamp, power[0].timestamp);
    assert_eq!(energy[0].value.as_f64(), 0.0);
    for (i, e) in energy.iter().skip(1).enumerate() {
        // The trapezoid over the timestamps the points carry, computed the same way.
        let (before, after) = (power[i], power[i + 1]);
        assert_eq!(e.timestamp, after.timestamp);
        let dt_ns = after.timestamp.unix_nanos() - before.timestamp.unix_nanos();
        let sum_mw = (before.value.as_f64() + after.value.as_f64()) * 1000.0;
        assert_eq!(e.value.as_f64(), sum_mw * dt_ns as f64 / 2e12);
        assert_eq!(e.attr("estimated"), Some(&AttributeValue::Bool(true)));
    }
    // NotSupported at the probe: never asked again.
    assert_eq!(gpu.calls("total_energy_mj"), 1);
}

#[test]
fn a_metric_the_device_does_not_support_is_skipped_and_not_asked_again() {
    let gpu = FakeGpu::new(BUS_A);
    gpu.update(|s| {
        s.temperature_c = Err(GpuError::NotSupported);
        s.throttle_reasons = Err(GpuError::NotSupported);
    });
    let backend = FakeBackend::new().with_gpu(gpu.clone());
    let noop = || {};
    let result = run(manual(), backend, &[&noop, &noop, &noop]).unwrap();
    assert!(result.points_of("gpu_temperature").is_empty());
    assert!(result.points_of("gpu_throttle_reasons").is_empty());
    assert_eq!(gpu.calls("temperature_c"), 1);
    assert_eq!(gpu.calls("throttle_reasons"), 1);
    // Everything else is there, at each of the 3 polls.
    assert_eq!(result.points_of("gpu_power").len(), 3);
    assert_eq!(result.points_of("gpu_memory_used").len(), 3);
    assert_eq!(result.points_of("gpu_sm_clock").len(), 3);
    assert_eq!(gpu.calls("power_mw"), 4, "the probe and 3 polls");
    assert_eq!(result.stats.sources[0].errors, 0);
}

#[test]
fn a_device_that_fails_at_start_is_skipped_by_default() {
    let good = FakeGpu::new(BUS_B);
    // Only a failing handle, bus id or a lost GPU fails a device (an
    // optional value that fails at start is retried at each poll).
    let bad_probe = FakeGpu::new(BUS_A);
    bad_probe.update(|s| s.power_mw = Err(GpuError::GpuLost));
    let backend = FakeBackend::new()
        .with_failing_device(GpuError::Failed("insufficient power".into()))
        .with_gpu(bad_probe)
        .with_gpu(good);
    let result = run(manual(), backend, &[]).unwrap();
    let resources: std::collections::BTreeSet<_> =
        result.points.iter().map(|p| p.resource.clone()).collect();
    assert_eq!(
        resources.into_iter().collect::<Vec<_>>(),
        vec![gpu_resource("0000:af:00.0")]
    );
    assert_eq!(result.stats.sources.len(), 1);
}

#[test]
fn a_device_that_fails_at_start_fails_the_plugin_when_not_skipped() {
    let backend = FakeBackend::new()
        .with_gpu(FakeGpu::new(BUS_B))
        .with_failing_device(GpuError::Failed("insufficient power".into()));
    let config = NvidiaConfig {
        skip_failed_devices: false,
        ..manual()
    };
    let err = match run(config, backend, &[]) {
        Err(e) => e,
        Ok(_) => panic!("the plugin started"),
    };
    assert!(matches!(err, PluginError::Unavailable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("GPU 1 failed at start: insufficient power"),
        "{message}"
    );
    assert!(message.contains("skip_failed_devices = true"), "{message}");
}

#[test]
fn no_usable_gpu_makes_the_plugin_unavailable() {
    let lost = FakeGpu::new(BUS_A);
    lost.update(|s| s.bus_id = Err(GpuError::GpuLost));
    let backend = FakeBackend::new().with_gpu(lost);
    let err = run(manual(), backend, &[]).err().unwrap();
    assert!(matches!(err, PluginError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("no usable NVIDIA GPU (GPU 0: the GPU is lost"),
        "{err}"
    );

    let err = run(manual(), FakeBackend::new(), &[]).err().unwrap();
    assert!(
        err.to_string()
            .starts_with("the NVIDIA driver is loaded but reports no GPU"),
        "{err}"
    );
}

#[test]
fn devices_selects_gpus_by_index_or_bus_id() {
    let backend = || {
        FakeBackend::new()
            .with_gpu(FakeGpu::new(BUS_A))
            .with_gpu(FakeGpu::new(BUS_B))
    };
    for selector in ["1", "af:00.0", "0000:AF:00.0", BUS_B] {
        let config = NvidiaConfig {
            devices: vec![selector.to_owned()],
            ..manual()
        };
        let result = run(config, backend(), &[]).unwrap();
        assert!(!result.points.is_empty());
        assert!(
            result
                .points
                .iter()
                .all(|p| p.resource == gpu_resource("0000:af:00.0")),
            "selector {selector}"
        );
    }
    let config = NvidiaConfig {
        devices: vec!["5".to_owned()],
        ..manual()
    };
    let err = run(config, backend(), &[]).err().unwrap();
    assert!(
        err.to_string().contains("none of the 2 GPUs matches"),
        "{err}"
    );
}

#[test]
fn a_process_that_appears_and_vanishes_is_reported_while_it_runs() {
    let gpu = FakeGpu::new(BUS_A);
    let backend = FakeBackend::new().with_gpu(gpu.clone());
    let none = {
        let gpu = gpu.clone();
        move || gpu.update(|s| s.processes = Ok(Vec::new()))
    };
    let running = {
        let gpu = gpu.clone();
        move || {
            gpu.update(|s| {
                s.processes = Ok(vec![GpuProcess {
                    pid: 4242,
                    used_memory_bytes: Some(3 << 30),
                }]);
                s.process_samples = Ok(vec![ProcessSample {
                    pid: 4242,
                    // after the agent started (the driver's clock is the CPU's)
                    timestamp_us: now_us() + 1_000,
                    sm_percent: 88,
                }]);
            })
        }
    };
    let result = run(manual(), backend, &[&none, &running, &none]).unwrap();
    let memory = result.points_of("gpu_process_memory_used");
    let sm = result.points_of("gpu_process_sm_utilization");
    assert_eq!(values(&memory), vec![(3u64 << 30) as f64]);
    assert_eq!(values(&sm), vec![88.0]);
    for p in memory.iter().chain(&sm) {
        assert_eq!(p.consumer, ResourceConsumer::Process { pid: 4242 });
        assert_eq!(p.resource, gpu_resource("0000:3b:00.0"));
    }
    // Reported at the second poll only (the one between `running` and `none`).
    let second_poll = result.points_of("gpu_power")[1].timestamp;
    assert_eq!(memory[0].timestamp, second_poll);
}

#[test]
fn per_process_off_makes_no_process_call() {
    let gpu = FakeGpu::new(BUS_A);
    let backend = FakeBackend::new().with_gpu(gpu.clone());
    let config = NvidiaConfig {
        per_process: false,
        ..manual()
    };
    run(config, backend, &[]).unwrap();
    assert_eq!(gpu.calls("processes"), 0);
    assert_eq!(gpu.calls("process_samples"), 0);
}

#[test]
fn mig_instances_report_memory_and_processes_by_uuid_and_a_failing_slot_skips_only_itself() {
    let parent = FakeGpu::new(BUS_A);
    // Like real MIG device handles, the instances answer energy and power
    // too (the parent's): counting them would count the GPU three times.
    let instance = |uuid: &str, pid: u32| {
        let g = FakeGpu::mig_instance(BUS_A, uuid);
        g.update(|s| {
            s.total_energy_mj = Ok(1_000_000);
            s.processes = Ok(vec![GpuProcess {
                pid,
                used_memory_bytes: Some(1 << 20),
            }]);
        });
        g
    };
    let a = instance("MIG-5c2f0c2e-7b1a-5d0e-9b1e-2a8f7c9d0e11", 11);
    let b = instance("MIG-9a1b2c3d-4e5f-5a6b-8c7d-0e1f2a3b4c5d", 22);
    parent.update(|s| {
        s.mig_slots = vec![
            // a container that sees only some instances
            Err(GpuError::NoPermission),
            Ok(Some(a.clone())),
            Ok(None),
            Ok(Some(b.clone())),
        ];
        s.processes = Ok(vec![GpuProcess {
            pid: 11,
            used_memory_bytes: Some(1 << 20),
        }]);
    });
    let set_energy = |mj: u64| {
        let parent = parent.clone();
        move || parent.update(|s| s.total_energy_mj = Ok(mj))
    };
    let steps: [&dyn Fn(); 2] = [&set_energy(1_000), &set_energy(3_000)];
    let result = run(
        manual(),
        FakeBackend::new().with_gpu(parent.clone()),
        &steps,
    )
    .unwrap();
    assert_eq!(
        parent.calls("processes"),
        0,
        "the parent's list would repeat the instances'"
    );
    let a_id = "0000:3b:00.0/MIG-5c2f0c2e-7b1a-5d0e-9b1e-2a8f7c9d0e11";
    let b_id = "0000:3b:00.0/MIG-9a1b2c3d-4e5f-5a6b-8c7d-0e1f2a3b4c5d";
    let memory: Vec<(Resource, ResourceConsumer)> = result
        .points_of("gpu_process_memory_used")
        .iter()
        .map(|p| (p.resource.clone(), p.consumer.clone()))
        .collect();
    assert_eq!(
        memory[..2],
        [
            (gpu_resource(a_id), ResourceConsumer::Process { pid: 11 }),
            (gpu_resource(b_id), ResourceConsumer::Process { pid: 22 }),
        ]
    );
    let instance_memory: Vec<Resource> = result
        .points_of("gpu_memory_used")
        .iter()
        .map(|p| p.resource.clone())
        .collect();
    assert!(instance_memory.contains(&gpu_resource(a_id)));
    assert!(instance_memory.contains(&gpu_resource(b_id)));
    for metric in [
        "gpu_power",
        "gpu_consumed_energy",
        "gpu_temperature",
        "gpu_sm_clock",
        "gpu_utilization",
    ] {
        let points = result.points_of(metric);
        assert!(!points.is_empty(), "{metric}");
        assert!(
            points
                .iter()
                .all(|p| p.resource == gpu_resource("0000:3b:00.0")),
            "{metric} only for the whole GPU"
        );
    }
    assert_eq!(
        values(&result.points_of("gpu_consumed_energy")),
        vec![0.0, 2.0]
    );
    for g in [&a, &b] {
        assert_eq!(g.calls("total_energy_mj"), 0);
        assert_eq!(g.calls("power_mw"), 0);
    }
    assert_eq!(result.stats.sources.len(), 1, "one source per physical GPU");
}

#[test]
fn a_mig_instance_without_uuid_is_skipped_not_named_by_its_slot() {
    let parent = FakeGpu::new(BUS_A);
    let nameless = FakeGpu::mig_instance(BUS_A, "unused");
    nameless.update(|s| s.uuid = Err(GpuError::Failed("Unknown Error".into())));
    let named = FakeGpu::mig_instance(BUS_A, "MIG-0001");
    parent.update(|s| s.mig_slots = vec![Ok(Some(nameless)), Ok(Some(named))]);
    let gpus = plugin_nvidia::open_gpus(&FakeBackend::new().with_gpu(parent), &manual()).unwrap();
    assert_eq!(gpus[0].mig_instance_ids(), vec!["0000:3b:00.0/MIG-0001"]);
}

#[test]
fn a_gpu_lost_while_running_stops_its_source_only() {
    let lost = FakeGpu::new(BUS_A);
    let fine = FakeGpu::new(BUS_B);
    let backend = FakeBackend::new().with_gpu(lost.clone()).with_gpu(fine);
    let noop = || {};
    let lose = {
        let lost = lost.clone();
        move || lost.update(|s| s.temperature_c = Err(GpuError::GpuLost))
    };
    let result = run(manual(), backend, &[&noop, &lose, &noop]).unwrap();
    let power_of = |bus: &str| {
        result
            .points_of("gpu_power")
            .iter()
            .filter(|p| p.resource == gpu_resource(bus))
            .count()
    };
    // Lost at the second poll (its power was read before the temperature failed): no third.
    assert_eq!(power_of("0000:3b:00.0"), 2);
    assert_eq!(power_of("0000:af:00.0"), 3);
    let lost_stats = &result.stats.sources[0];
    assert_eq!(
        (lost_stats.polls, lost_stats.errors),
        (2, 1),
        "{lost_stats:?}"
    );
}

#[test]
fn the_real_nvml_on_this_machine_gives_one_clean_line_or_works() {
    let mut plugin = NvidiaPlugin::init(NvidiaConfig::default()).unwrap();
    let mut t = TestPipeline::builder();
    let started = t.start_plugin("nvidia", &mut plugin);
    let available = NvidiaPlugin::check_availability(&NvidiaConfig::default());
    let nvml = NvmlBackend::open();
    eprintln!("NVML on this machine: {:?}", nvml.as_ref().err());
    match nvml {
        Err(OpenError::LibraryNotFound) => {
            // The machine this project is developed on: no libnvidia-ml.so.
            let expected = "no NVIDIA driver found (libnvidia-ml.so could not be loaded) \
                 (install the NVIDIA driver, or disable the plugin: [plugins.nvidia] enabled = false)";
            let err = started.expect_err("start must fail without the driver");
            assert!(matches!(err, PluginError::Unavailable { .. }), "{err:?}");
            assert_eq!(err.to_string(), expected);
            assert_eq!(available.err().unwrap().to_string(), expected);
        }
        Err(other) => {
            // Library present but unusable (no kernel driver, in a container...).
            let err = started.expect_err("start must fail when NVML cannot start");
            let message = err.to_string();
            assert!(matches!(err, PluginError::Unavailable { .. }), "{err:?}");
            assert!(message.starts_with(&other.to_string()), "{message}");
            assert!(!message.contains('\n'), "{message}");
            assert!(available.is_err());
        }
        Ok(_) => {
            // A machine with a GPU: the real path starts and measures.
            started.unwrap();
            available.unwrap();
            let result = t.start().finish();
            assert!(!result.points_of("gpu_power").is_empty() || !result.points.is_empty());
        }
    }
}

#[test]
fn an_unreadable_gpu_that_devices_may_not_select_does_not_stop_the_plugin() {
    let backend = FakeBackend::new()
        .with_failing_device(GpuError::Failed("insufficient power".into()))
        .with_gpu(FakeGpu::new(BUS_B));
    let config = NvidiaConfig {
        devices: vec!["af:00.0".to_owned()],
        skip_failed_devices: false,
        ..manual()
    };
    let result = run(config, backend, &[]).unwrap();
    assert!(!result.points.is_empty());
}

/// The driver's µs clock now (NVML process samples carry CPU timestamps).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn an_optional_read_failing_at_start_is_retried_at_each_poll_and_keeps_the_gpu() {
    // The sample count changed between NVML's two calls (InsufficientSize),
    // throttle reasons answered Unknown: the GPU stays, both are asked again.
    let gpu = FakeGpu::new(BUS_A);
    let start = now_us();
    gpu.update(|s| {
        s.process_samples = Err(GpuError::Failed("Insufficient Size".into()));
        s.throttle_reasons = Err(GpuError::Failed("Unknown Error".into()));
        s.processes = Ok(vec![GpuProcess {
            pid: 7,
            used_memory_bytes: Some(1 << 20),
        }]);
    });
    let backend = FakeBackend::new().with_gpu(gpu.clone());
    let recover = {
        let gpu = gpu.clone();
        move || {
            gpu.update(|s| {
                s.throttle_reasons = Ok(4);
                s.process_samples = Ok(vec![
                    // from the driver's buffer, before the agent started
                    ProcessSample {
                        pid: 7,
                        timestamp_us: start - 5_000_000,
                        sm_percent: 99,
                    },
                    ProcessSample {
                        pid: 7,
                        timestamp_us: start + 60_000_000,
                        sm_percent: 42,
                    },
                ]);
            })
        }
    };
    let noop = || {};
    let result = run(manual(), backend, &[&noop, &recover, &noop]).unwrap();
    assert_eq!(
        values(&result.points_of("gpu_throttle_reasons")),
        vec![4.0, 4.0]
    );
    // Only the sample newer than the agent's start.
    assert_eq!(
        values(&result.points_of("gpu_process_sm_utilization")),
        vec![42.0]
    );
    assert!(gpu.calls("throttle_reasons") >= 3);
}

#[test]
fn a_gpu_lost_at_start_is_a_failed_device() {
    let lost = FakeGpu::new(BUS_A);
    lost.update(|s| s.temperature_c = Err(GpuError::GpuLost));
    let backend = FakeBackend::new()
        .with_gpu(lost)
        .with_gpu(FakeGpu::new(BUS_B));
    let result = run(manual(), backend, &[]).unwrap();
    assert!(result
        .points_of("gpu_power")
        .iter()
        .all(|p| p.resource == gpu_resource("0000:af:00.0")));
    assert_eq!(result.stats.sources.len(), 1);
}
