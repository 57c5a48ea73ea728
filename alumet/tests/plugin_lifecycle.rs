//! The plugin contract: config round-trip, lifecycle order, and a plugin
//! that fails to start leaving nothing behind.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use alumet::measurement::MeasurementBuffer;
use alumet::pipeline::*;
use alumet::plugin::{Plugin, PluginDefinition, PluginError, PluginMetadata};
use alumet::testing::FnSource;
use serde::{Deserialize, Serialize};

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record(e: &str) {
    EVENTS.lock().unwrap().push(e.to_owned());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DemoConfig {
    #[serde(with = "alumet::config::duration")]
    poll_interval: Duration,
    label: String,
    fail_start: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            label: "a \"quoted\" label".into(),
            fail_start: false,
        }
    }
}

struct Demo(DemoConfig);

struct RecordingOutput;
impl Output for RecordingOutput {
    fn write(&mut self, _b: &MeasurementBuffer, _c: &ElementContext) -> Result<(), WriteError> {
        Ok(())
    }
    fn close(&mut self, _c: &ElementContext) -> Result<(), WriteError> {
        record("output closed");
        Ok(())
    }
}

impl Plugin for Demo {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        record("start");
        ctx.add_source(
            "s",
            Box::new(FnSource::new(|_: &mut MeasurementBuffer, _| Ok(()))),
            SourceTrigger::every(self.0.poll_interval),
        );
        ctx.add_output("o", Box::new(RecordingOutput), OutputOptions::default());
        if self.0.fail_start {
            return Err(PluginError::unavailable("no such hardware", "buy some"));
        }
        Ok(())
    }
    fn post_pipeline_start(&mut self, pipeline: &PipelineHandle) -> Result<(), PluginError> {
        record("post_pipeline_start");
        pipeline
            .trigger_now(
                SourceSelector::Plugin("demo".into()),
                Duration::from_secs(5),
            )
            .map_err(PluginError::other)
    }
    fn stop(&mut self) -> Result<(), PluginError> {
        record("stop");
        Ok(())
    }
}

impl PluginDefinition for Demo {
    const NAME: &'static str = "demo";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "test plugin";
    type Config = DemoConfig;
    fn init(config: DemoConfig) -> Result<Self, PluginError> {
        record("init");
        Ok(Demo(config))
    }
}

#[test]
fn default_config_round_trips_through_toml_text() {
    let meta = PluginMetadata::of::<Demo>();
    let table = (meta.default_config)().unwrap();
    let text = toml::to_string(&table).unwrap();
    assert!(text.contains("poll_interval = \"250ms\""), "{text}");
    let back: DemoConfig =
        alumet::config::deserialize_config(toml::from_str(&text).unwrap()).unwrap();
    assert_eq!(back, DemoConfig::default());
    // Inside a whole document too, with the agent's `enabled` key.
    let doc = format!("[plugins.demo]\nenabled = true\n{text}");
    (meta.check_config_in_document)(&alumet::plugin::ParsedDocument::parse(&doc).unwrap()).unwrap();
}

#[test]
fn lifecycle_runs_in_order_and_a_failed_start_leaves_nothing() {
    let meta = PluginMetadata::of::<Demo>();
    let mut builder = PipelineBuilder::new(PipelineConfig::default());

    let failing = DemoConfig {
        fail_start: true,
        ..DemoConfig::default()
    };
    let mut broken = (meta.init)(alumet::config::serialize_config(&failing).unwrap()).unwrap();
    let err = builder.start_plugin("demo", broken.as_mut()).unwrap_err();
    assert_eq!(err.to_string(), "no such hardware (buy some)");
    assert_eq!(
        builder.source_count(),
        0,
        "the failed plugin's source was discarded"
    );
    assert_eq!(builder.output_count(), 0);
    EVENTS.lock().unwrap().clear();

    let mut plugin = (meta.init)((meta.default_config)().unwrap()).unwrap();
    builder.start_plugin("demo", plugin.as_mut()).unwrap();
    let running = builder.start().unwrap();
    plugin.post_pipeline_start(&running.handle()).unwrap();
    let stats = running.shutdown_and_wait();
    plugin.stop().unwrap();
    assert_eq!(
        *EVENTS.lock().unwrap(),
        [
            "init",
            "start",
            "post_pipeline_start",
            "output closed",
            "stop"
        ]
    );
    // Polled at start, by the trigger, and at shutdown.
    assert!(stats.source("demo/s").unwrap().polls >= 3);
}
