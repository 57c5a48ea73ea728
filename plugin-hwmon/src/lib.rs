//! Plugin `hwmon`: power and energy of every hwmon device — ACPI power
//! meters (the BMC's whole-server reading, NVIDIA Grace's socket and module
//! meters), AMD and Intel GPUs, Jetson INA3221 rails, and any other driver
//! with power or energy channels.
//!
//! This file holds the configuration, the metrics and which channels start;
//! [`discovery`] finds the channels under the sysfs root, [`domain`] says
//! what each measures, [`source`] reads them.

pub mod discovery;
pub mod domain;
pub mod source;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::pipeline::{PluginStartContext, SourceTrigger};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use alumet_kernelfs::host::{Clock, MonotonicClock};
use serde::{Deserialize, Serialize};

use crate::discovery::{discover, Channel, DriverFilter, Role};
use crate::source::{ChannelReader, HwmonSource, SourceMetrics};

/// Name of the energy metric.
pub const ENERGY_METRIC_NAME: &str = "hwmon_consumed_energy";

/// Name of the power metric.
pub const POWER_METRIC_NAME: &str = "hwmon_power";

/// The definition of [`ENERGY_METRIC_NAME`].
pub fn energy_metric() -> Metric {
    Metric::new(
        ENERGY_METRIC_NAME,
        Unit::Joule,
        ValueType::F64,
        MetricKind::Delta,
        "Energy consumed by the hwmon channel's domain during the interval ending at the timestamp (from an energy counter, or integrated from power: integrated=true); no point at a channel's first reading. Domains nest (part_of): module contains grace, grace contains cpu and soc; never sum a domain with the one it is part of.",
    )
}

/// The definition of [`POWER_METRIC_NAME`].
pub fn power_metric() -> Metric {
    Metric::new(
        POWER_METRIC_NAME,
        Unit::Watt,
        ValueType::F64,
        MetricKind::Gauge,
        "Power read from the hwmon channel at the timestamp (power*_input or power*_average, or in*_input × curr*_input).",
    )
}

/// Configuration of `[plugins.hwmon]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HwmonConfig {
    /// Where sysfs is mounted (default `/sys`); the host's sysfs in a container.
    pub sysfs_root: PathBuf,
    /// Time between two reads of the channels (default 1s).
    #[serde(with = "alumet::config::duration")]
    pub poll_interval: Duration,
    /// Time between two hand-overs of the points to the outputs (default 5s).
    #[serde(with = "alumet::config::duration")]
    pub flush_interval: Duration,
    /// Drivers read (globs on the hwmon `name`, or `acpi_power_meter`).
    pub drivers: Vec<String>,
    /// Drivers not read, even when `drivers` includes them.
    pub exclude_drivers: Vec<String>,
    /// Highest power a channel can draw, W: a power above it, or an energy
    /// advance above twice it over the interval, is skipped.
    pub max_power_w: f64,
}

impl Default for HwmonConfig {
    fn default() -> Self {
        Self {
            sysfs_root: PathBuf::from("/sys"),
            poll_interval: Duration::from_secs(1),
            flush_interval: Duration::from_secs(5),
            drivers: vec!["*".to_owned()],
            exclude_drivers: Vec::new(),
            max_power_w: DEFAULT_MAX_POWER_W,
        }
    }
}

/// The default `max_power_w`: above a whole 8-GPU server's reading
/// through its BMC, far below the garbage a broken register gives.
pub const DEFAULT_MAX_POWER_W: f64 = 20_000.0;

impl HwmonConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        use alumet::limits::{RealRange, FLUSH_INTERVAL, POLL_INTERVAL};
        POLL_INTERVAL.check("poll_interval", self.poll_interval)?;
        FLUSH_INTERVAL.check("flush_interval", self.flush_interval)?;
        // A milliwatt to a megawatt: what a sensor channel can mean.
        RealRange::new(0.001, 1_000_000.0).check("max_power_w", self.max_power_w)?;
        Ok(())
    }

    fn filter(&self) -> DriverFilter {
        DriverFilter::new(&self.drivers, &self.exclude_drivers)
    }
}

const DISABLE_FIX: &str = "nothing to measure here (no ACPI power meter, GPU or power monitor exposes power through hwmon); to silence this, set `enabled = false` in [plugins.hwmon]";

/// The channels found under the configured root, or why there is nothing
/// to read: an absent plugin, in one line.
pub fn channels(config: &HwmonConfig) -> Result<Vec<Channel>, PluginError> {
    let found = discover(&config.sysfs_root, &config.filter())
        .map_err(|e| PluginError::absent(format!("no hwmon devices: {e}"), DISABLE_FIX))?;
    if !found.iter().any(Channel::is_read) {
        let skipped = found.len();
        let reason = if skipped == 0 {
            format!(
                "no hwmon power or energy channel under {}",
                config.sysfs_root.join(discovery::HWMON_CLASS).display()
            )
        } else {
            format!(
                "the {skipped} hwmon power or energy channels under {} are all excluded by `drivers` and `exclude_drivers`",
                config.sysfs_root.join(discovery::HWMON_CLASS).display()
            )
        };
        return Err(PluginError::absent(reason, DISABLE_FIX));
    }
    Ok(found)
}

/// The `hwmon` plugin.
pub struct HwmonPlugin {
    config: HwmonConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for HwmonPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HwmonPlugin")
            .field("config", &self.config)
            .finish()
    }
}

impl HwmonPlugin {
    /// The same plugin, timing its intervals with `clock` (tests drive time by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl PluginDefinition for HwmonPlugin {
    const NAME: &'static str = "hwmon";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Power and energy of hwmon devices: ACPI power meters (BMC, NVIDIA Grace), AMD and Intel GPUs, Jetson INA3221 rails";
    type Config = HwmonConfig;

    fn init(config: HwmonConfig) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self {
            config,
            clock: Arc::new(MonotonicClock::new()),
        })
    }

    fn check_availability(config: &HwmonConfig) -> Result<(), PluginError> {
        config.validate()?;
        channels(config).map(|_| ())
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            (
                "sysfs_root",
                "Where sysfs is mounted (the host's /sys when the agent runs in a container).",
            ),
            ("poll_interval", "Time between two reads of the channels."),
            (
                "flush_interval",
                "Time between two hand-overs of the points to the outputs.",
            ),
            (
                "drivers",
                "Drivers read: globs on the hwmon name (amdgpu, i915, xe, ina3221, acpi_power_meter...); [\"*\"]: every driver.",
            ),
            (
                "exclude_drivers",
                "Drivers not read, even when `drivers` includes them (globs).",
            ),
            (
                "max_power_w",
                "Highest power one channel can draw (W): a power above it, or an energy advance above twice it over the interval, is skipped and its interval reported as energy_unmeasured_time.",
            ),
        ]
    }

    fn inventory(config: &HwmonConfig) -> Vec<String> {
        if config.validate().is_err() {
            return Vec::new();
        }
        discover(&config.sysfs_root, &config.filter())
            .map(|found| found.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }
}

impl Plugin for HwmonPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let found = channels(&self.config)?;
        let readers: Vec<ChannelReader> = found.iter().filter_map(ChannelReader::new).collect();
        log::info!(
            "hwmon: reading {} channels: {}",
            readers.len(),
            found
                .iter()
                .filter(|c| c.is_read())
                .map(|c| match c.role {
                    Role::Reported => format!(
                        "{} ({} of {})",
                        c.sensor(),
                        c.placement.domain,
                        c.placement.resource
                    ),
                    _ => format!("{} (power only)", c.sensor()),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let metrics = SourceMetrics {
            energy: ctx.create_metric(energy_metric())?,
            power: ctx.create_metric(power_metric())?,
            unmeasured: ctx.create_metric(alumet_energy::unmeasured_metric())?,
        };
        let source = HwmonSource::new(
            metrics,
            readers,
            self.clock.clone(),
            self.config.max_power_w,
        );
        ctx.add_source(
            "channels",
            Box::new(source),
            SourceTrigger::every(self.config.poll_interval).flush_every(self.config.flush_interval),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let mut c = HwmonConfig::default();
        assert!(c.validate().is_ok());
        c.max_power_w = f64::NAN;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_power_w"));
        c.max_power_w = 100.0;
        c.poll_interval = Duration::from_nanos(1);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("poll_interval"));
    }

    #[test]
    fn nothing_under_the_root_is_absent_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let config = HwmonConfig {
            sysfs_root: dir.path().to_path_buf(),
            ..HwmonConfig::default()
        };
        let e = HwmonPlugin::check_availability(&config).unwrap_err();
        assert!(e.is_absent(), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        std::fs::create_dir_all(dir.path().join("class/hwmon/hwmon0")).unwrap();
        std::fs::write(dir.path().join("class/hwmon/hwmon0/name"), "nct6775\n").unwrap();
        let e = HwmonPlugin::check_availability(&config).unwrap_err();
        assert!(
            e.to_string().contains("no hwmon power or energy channel"),
            "{e}"
        );
        assert!(HwmonPlugin::inventory(&config).is_empty());
    }
}
