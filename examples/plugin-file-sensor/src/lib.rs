//! Plugin `file-sensor`, the tutorial's plugin (docs/tutorial.md): reads
//! power sensors exposed as files (an integer in microwatts, as hwmon's
//! `power1_input` files are), integrates their power into energy, and can
//! log that energy to a text file. One of each kind of element:
//!
//! - [`source`]: reads the files at each poll → `file_sensor_power` (W, gauge);
//! - [`transform`]: power → `file_sensor_energy` (J, delta), trapezoid rule;
//! - [`output`]: appends each energy point to `log_file` as a line of text.
//!
//! This file holds what every plugin crate's `lib.rs` holds: the
//! configuration with its defaults, the metrics, and which elements start.

pub mod output;
pub mod source;
pub mod transform;

use std::path::PathBuf;
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::pipeline::{OutputOptions, PluginStartContext, SourceTrigger};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

use crate::output::EnergyLog;
use crate::source::PowerFiles;
use crate::transform::PowerToEnergy;

/// Name of the power metric.
pub const POWER_METRIC: &str = "file_sensor_power";
/// Name of the energy metric.
pub const ENERGY_METRIC: &str = "file_sensor_energy";

/// Configuration of `[plugins.file-sensor]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the files are: `/` on a machine, a fixture in tests, the
    /// host's root mounted elsewhere in a container.
    pub root: PathBuf,
    /// The power files, relative to `root`, each an integer in µW.
    pub files: Vec<PathBuf>,
    /// Time between two reads of the files.
    #[serde(with = "alumet::config::duration")]
    pub poll_interval: Duration,
    /// Time between two hand-overs of the points to the transforms and outputs.
    #[serde(with = "alumet::config::duration")]
    pub flush_interval: Duration,
    /// A text file the energy is appended to, a line per point; empty: none.
    pub log_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            files: Vec::new(),
            poll_interval: Duration::from_secs(1),
            flush_interval: Duration::from_secs(5),
            log_file: PathBuf::new(),
        }
    }
}

/// The definition of [`POWER_METRIC`].
pub fn power_metric() -> Metric {
    Metric::new(
        POWER_METRIC,
        Unit::Watt,
        ValueType::F64,
        MetricKind::Gauge,
        "Power read from a sensor file (attribute sensor: the file).",
    )
}

/// The definition of [`ENERGY_METRIC`].
pub fn energy_metric() -> Metric {
    Metric::new(
        ENERGY_METRIC,
        Unit::Joule,
        ValueType::F64,
        MetricKind::Delta,
        "Energy of a file sensor over the interval ending at the timestamp, integrated from its power (0 J at its first reading).",
    )
}

/// The `file-sensor` plugin.
#[derive(Debug)]
pub struct FileSensorPlugin {
    config: Config,
}

impl PluginDefinition for FileSensorPlugin {
    const NAME: &'static str = "file-sensor";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Power from sensor files (µW), integrated into energy, optionally logged to a text file (the tutorial's plugin).";
    type Config = Config;

    fn init(config: Config) -> Result<Self, PluginError> {
        if config.poll_interval.is_zero() {
            return Err(ConfigError::Invalid {
                key: "poll_interval".into(),
                reason: "must be longer than zero, e.g. \"1s\"".into(),
            }
            .into());
        }
        Ok(Self { config })
    }

    fn check_availability(config: &Config) -> Result<(), PluginError> {
        source::check_files(&config.root, &config.files)
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("root", "where the files are (the host's root mounted elsewhere in a container)"),
            ("files", "power files relative to root, each an integer in microwatts, e.g. [\"sys/class/hwmon/hwmon3/power1_input\"]"),
            ("poll_interval", "time between two reads of the files"),
            ("flush_interval", "time between two hand-overs of the points to the outputs"),
            ("log_file", "a text file the energy is appended to, a line per point; \"\" for none"),
        ]
    }
}

impl Plugin for FileSensorPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        source::check_files(&self.config.root, &self.config.files)?;
        let power = ctx.create_metric(power_metric())?;
        let energy = ctx.create_metric(energy_metric())?;
        let files = PowerFiles::new(&self.config.root, &self.config.files, power);
        ctx.add_source(
            "power",
            Box::new(files),
            SourceTrigger::every(self.config.poll_interval).flush_every(self.config.flush_interval),
        );
        ctx.add_transform("energy", Box::new(PowerToEnergy::new(power, energy)));
        if !self.config.log_file.as_os_str().is_empty() {
            let log = EnergyLog::create(&self.config.log_file, energy).map_err(|e| {
                PluginError::unavailable(
                    format!("cannot open {}: {e}", self.config.log_file.display()),
                    "set plugins.file-sensor.log_file to a writable path, or \"\"",
                )
            })?;
            ctx.add_output("log", Box::new(log), OutputOptions::default());
        }
        Ok(())
    }
}
