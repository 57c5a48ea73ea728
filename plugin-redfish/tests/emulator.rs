//! The plugin against a real Redfish service on 127.0.0.1: sushy-tools'
//! static emulator serving tests/mockups/rackmount over HTTPS, with
//! bmc_front.py in front for sessions, credentials and faults (see
//! tests/common). Readings are rewritten between polls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use alumet::measurement::{MeasurementPoint, Resource, ResourceConsumer};
use alumet::pipeline::SourceTrigger;
use alumet::plugin::{Plugin, PluginDefinition};
use alumet::testing::{test_gauge, FnSource, RunningTest, TestPipeline};
use plugin_redfish::{RedfishPlugin, ENERGY_METRIC, POWER_METRIC};

use common::{attr, logs, seconds, value, Emulator, Front};

const UNMEASURED: &str = "energy_unmeasured_time";
const WAIT: Duration = Duration::from_secs(20);

fn of_chassis<'a>(points: Vec<&'a MeasurementPoint>, id: &str) -> Vec<&'a MeasurementPoint> {
    points
        .into_iter()
        .filter(|p| attr(p, "chassis").as_deref() == Some(id))
        .collect()
}

/// The plugin logging in to `front` for `chassis`, polled by hand (at
/// start, at each trigger and at shutdown), its first poll done.
fn start_by_hand(front: &Front, password: &str, chassis: &str) -> (RedfishPlugin, RunningTest) {
    let mut config = front.config(password, &[chassis]);
    config.poll_interval = Duration::from_secs(3600);
    let mut plugin = RedfishPlugin::init(config).unwrap();
    let mut pipeline = TestPipeline::builder();
    pipeline.start_plugin("redfish", &mut plugin).unwrap();
    let running = pipeline.start();
    assert!(running.wait_for_polls("redfish/bmc", 1, WAIT));
    (plugin, running)
}

#[test]
fn energy_comes_from_the_cumulative_counter_and_the_session_is_reused() {
    let emulator = Emulator::get();
    emulator.set_environment("1U", 100.0, 300.0);
    let front = Front::start("admin", "pw-1");
    let (mut plugin, running) = start_by_hand(&front, "pw-1", "1U");
    // Two 0.001 kWh steps: 7200 J.
    emulator.set_environment("1U", 100.002, 310.0);
    running.trigger_all();
    // Not advanced: no energy point (no false 0 J).
    running.trigger_all();
    // The BMC expires the session: one new login, nothing lost.
    front.control(serde_json::json!({"generation": 1}));
    emulator.set_environment("1U", 100.005, 320.0);
    running.trigger_all();
    let result = running.finish();
    plugin.stop().unwrap();

    let energy = of_chassis(result.points_of(ENERGY_METRIC), "1U");
    let joules: Vec<f64> = energy.iter().map(|p| value(p)).collect();
    assert_eq!(joules, [0.0, 7200.0, 10800.0]);
    for p in &energy {
        assert_eq!(p.resource, Resource::LocalMachine);
        assert_eq!(p.consumer, ResourceConsumer::LocalMachine);
        assert_eq!(attr(p, "domain").as_deref(), Some("node"));
        assert_eq!(
            attr(p, "sensor").as_deref(),
            Some("EnvironmentMetrics.EnergykWh")
        );
        assert_eq!(attr(p, "integrated"), None);
    }
    let power: Vec<f64> = of_chassis(result.points_of(POWER_METRIC), "1U")
        .iter()
        .map(|p| value(p))
        .collect();
    // at start, 3 triggers, and the last poll at shutdown
    assert_eq!(power, [300.0, 310.0, 310.0, 320.0, 320.0]);
    assert!(result.points_of(UNMEASURED).is_empty());
    let stats = front.stats();
    assert_eq!(
        stats["logins"], 2,
        "one login, one after the expiry: {stats}"
    );
    assert_eq!(
        stats["deleted"], 1,
        "the session is deleted at stop: {stats}"
    );
}

#[test]
fn power_is_integrated_over_the_polls_timestamps() {
    let emulator = Emulator::get();
    let written = [100.0, 250.0, 250.0, 40.0, 475.5];
    emulator.set_power_control("2U", written[0]);
    let front = Front::start("admin", "pw-2");
    let (mut plugin, running) = start_by_hand(&front, "pw-2", "2U");
    for w in &written[1..] {
        std::thread::sleep(Duration::from_millis(150));
        emulator.set_power_control("2U", *w);
        running.trigger_all();
    }
    std::thread::sleep(Duration::from_millis(150));
    let result = running.finish();
    plugin.stop().unwrap();

    let power = of_chassis(result.points_of(POWER_METRIC), "2U");
    let energy = of_chassis(result.points_of(ENERGY_METRIC), "2U");
    let watts: Vec<f64> = power.iter().map(|p| value(p)).collect();
    assert_eq!(watts[..written.len()], written);
    assert_eq!(power.len(), energy.len());
    assert_eq!(value(energy[0]), 0.0, "the first reading starts the series");
    let mut total = 0.0;
    for i in 1..power.len() {
        assert_eq!(energy[i].timestamp, power[i].timestamp);
        let dt = seconds(power[i - 1], power[i]);
        assert!(dt > 0.1, "{dt}");
        let expected = (value(power[i - 1]) + value(power[i])) / 2.0 * dt;
        let got = value(energy[i]);
        assert!(
            (got - expected).abs() <= expected * 1e-3,
            "interval {i}: {got} J, expected {expected} J"
        );
        total += got;
        assert_eq!(attr(energy[i], "integrated").as_deref(), Some("true"));
        assert_eq!(
            attr(energy[i], "sensor").as_deref(),
            Some("Power.PowerConsumedWatts")
        );
    }
    eprintln!("integrated {total:.3} J over {} polls", power.len());
}

#[test]
fn a_slow_then_failing_bmc_is_one_line_a_gap_and_other_sources_keep_time() {
    logs::init();
    let emulator = Emulator::get();
    emulator.set_power_control("3U", 200.0);
    let front = Front::start("admin", "pw-3");
    let mut config = front.config("pw-3", &["3U"]);
    config.poll_interval = Duration::from_millis(200);
    config.timeout = Duration::from_millis(300);
    let mut plugin = RedfishPlugin::init(config).unwrap();
    let mut pipeline = TestPipeline::builder();
    pipeline.start_plugin("redfish", &mut plugin).unwrap();
    // Another source, on the shared poller, every 50 ms.
    pipeline
        .plugin("probe", |ctx| {
            let metric = test_gauge(ctx, "probe_tick")?;
            let source = FnSource::new(move |into: &mut Vec<MeasurementPoint>, t| {
                into.push(MeasurementPoint::new(
                    t,
                    metric,
                    Resource::LocalMachine,
                    ResourceConsumer::LocalMachine,
                    1u64,
                ));
                Ok(())
            });
            ctx.add_source(
                "tick",
                Box::new(source),
                SourceTrigger::every(Duration::from_millis(50)),
            );
            Ok(())
        })
        .unwrap();
    let running = pipeline.start();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    // Answers after 1 s: every request times out at 300 ms.
    front.control(serde_json::json!({"delay_s": 1.0}));
    std::thread::sleep(Duration::from_millis(1200));
    front.control(serde_json::json!({"status": 503}));
    std::thread::sleep(Duration::from_millis(800));
    front.control(serde_json::json!({}));
    std::thread::sleep(Duration::from_millis(1200));
    let result = running.finish();
    let ran = started.elapsed().as_secs_f64();
    plugin.stop().unwrap();

    let endpoint = front.endpoint();
    let down = logs::matching(&["redfish:", &endpoint, "polls are skipped"]);
    let up = logs::matching(&["redfish:", &endpoint, "answers again, after"]);
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(up.len(), 1, "{up:?}");

    // The gap is one unmeasured interval, exactly from the last measured
    // point to the first after it; everything else is energy.
    let mut events = of_chassis(result.points_of(ENERGY_METRIC), "3U");
    let unmeasured = of_chassis(result.points_of(UNMEASURED), "3U");
    assert_eq!(unmeasured.len(), 1, "{unmeasured:?}");
    let gap = unmeasured[0];
    assert_eq!(attr(gap, "reason").as_deref(), Some("unreadable"));
    assert_eq!(attr(gap, "energy_metric").as_deref(), Some(ENERGY_METRIC));
    assert!(value(gap) >= 1.5, "gap of {} s", value(gap));
    events.push(gap);
    events.sort_by_key(|p| p.timestamp);
    let at = events.iter().position(|p| std::ptr::eq(*p, gap)).unwrap();
    assert!((seconds(events[at - 1], gap) - value(gap)).abs() < 1e-6);
    assert!(at + 1 < events.len(), "measured again after the gap");

    // The probe was polled on time throughout.
    let ticks = result.points_of("probe_tick");
    let longest = ticks
        .windows(2)
        .map(|w| seconds(w[0], w[1]))
        .fold(0.0, f64::max);
    assert!(
        longest < 0.25,
        "the shared poller stalled for {longest:.3} s"
    );
    assert!(
        ticks.len() as f64 >= 0.8 * ran / 0.05,
        "{} ticks in {ran:.1} s",
        ticks.len()
    );
}

#[test]
fn bad_credentials_are_one_clear_line_without_the_password() {
    let front = Front::start("admin", "right-password");
    let mut plugin = RedfishPlugin::init(front.config("wrong-password", &[])).unwrap();
    let mut pipeline = TestPipeline::builder();
    let err = pipeline
        .start_plugin("redfish", &mut plugin)
        .expect_err("refused")
        .to_string();
    assert!(err.contains(&front.endpoint()), "{err}");
    assert!(
        err.contains("\"admin\"") && err.contains("refused"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-password") && !err.contains('\n'),
        "{err}"
    );
    assert_eq!(front.stats()["refused"], 1);
}

#[test]
fn tls_needs_the_sites_ca_and_says_so_in_one_line() {
    let emulator = Emulator::get();
    // sushy-static itself: no SessionService, so basic authentication.
    let password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password.path(), "any\n").unwrap();
    let config = |ca_file: String| plugin_redfish::RedfishConfig {
        endpoint: emulator.endpoint(),
        username: "admin".into(),
        password_file: password.path().display().to_string(),
        ca_file,
        chassis: vec!["2U".into()],
        poll_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let mut plugin = RedfishPlugin::init(config(emulator.ca.display().to_string())).unwrap();
    let mut pipeline = TestPipeline::builder();
    pipeline.start_plugin("redfish", &mut plugin).unwrap();
    let result = pipeline.start().finish();
    assert!(!of_chassis(result.points_of(POWER_METRIC), "2U").is_empty());

    let mut plugin = RedfishPlugin::init(config(String::new())).unwrap();
    let err = TestPipeline::builder()
        .start_plugin("redfish", &mut plugin)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("TLS") && err.contains("ca_file"), "{err}");
    assert!(
        err.contains(&emulator.endpoint()) && !err.contains('\n'),
        "{err}"
    );
}

#[test]
fn inventory_lists_each_chassis_and_its_source() {
    let front = Front::start("admin", "pw-6");
    let lines = RedfishPlugin::inventory(&front.config("pw-6", &[]));
    let ep = front.endpoint();
    assert_eq!(
        lines,
        [
            format!("{ep} chassis 1U: EnvironmentMetrics.EnergykWh (cumulative) -> redfish_consumed_energy domain=node"),
            format!("{ep} chassis 2U: Power.PowerConsumedWatts (power, integrated) -> redfish_consumed_energy domain=node integrated=true"),
            format!("{ep} chassis 3U: Power.PowerConsumedWatts (power, integrated) -> redfish_consumed_energy domain=node integrated=true"),
            format!("{ep} chassis 1U-Board: ChassisType Card is not a whole node (set chassis = [\"1U-Board\"] to measure it), skipped"),
        ]
    );
    assert_eq!(front.stats()["deleted"], 1, "inventory logs out");

    let mut config = front.config("pw-6", &[]);
    config.endpoint = format!("https://127.0.0.1:{}", alumet::testing::peer::free_port());
    config.timeout = Duration::from_secs(1);
    let lines = RedfishPlugin::inventory(&config);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("cannot connect") && lines[0].contains(&config.endpoint),
        "{lines:?}"
    );
}
