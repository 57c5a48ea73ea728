//! Plugin `energy-attribution`: a transform that splits the energy measured by
//! RAPL (and NVML, where present) into a static (idle) and a dynamic part, and
//! attributes the dynamic part to processes in proportion to their activity
//! over the same time span. The model is described in this crate's README.

pub mod activity;
mod cgroups;
pub mod domain;
pub mod idle;
mod inputs;
mod node;
pub mod outputs;
mod processes;
mod stats;
pub mod transform;

use std::collections::BTreeMap;
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::metrics::{Metric, MetricKind, MetricRegistry, Unit, ValueType};
use alumet::pipeline::builder::PluginStartContext;
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

pub use transform::{AttributionStats, AttributionTransform, OutputMetrics};

/// Name of the output metric: energy attributed to a process.
pub const ATTRIBUTED_ENERGY_METRIC: &str = "attributed_energy";
/// Name of the output metric: idle power of a domain.
pub const IDLE_POWER_METRIC: &str = "idle_power";
/// Name of the output metric: energy that could not be attributed to any process.
pub const UNATTRIBUTED_ENERGY_METRIC: &str = "unattributed_energy";

/// Level `process`: energy shared among processes by their CPU time / GPU use.
pub const LEVEL_PROCESS: &str = "process";
/// Level `cgroup`: energy shared among the innermost measured cgroups.
pub const LEVEL_CGROUP: &str = "cgroup";
/// The levels `levels` accepts.
pub const KNOWN_LEVELS: [&str; 2] = [LEVEL_PROCESS, LEVEL_CGROUP];

/// Domain names accepted as keys of `idle_power_w`: the RAPL domains, `gpu`,
/// and the whole-node domains (`node`, `module`: see `attribute_node`).
pub const KNOWN_DOMAINS: [&str; 8] = [
    "package", "core", "uncore", "dram", "psys", "gpu", "node", "module",
];

/// Configuration of `[plugins.energy-attribution]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Percentile (0–100) of the observed power taken as the idle power of a
    /// domain whose idle power is not configured. Default 5.
    pub idle_percentile: f64,
    /// Sliding window over which the idle power is estimated. Default 10 min.
    #[serde(with = "alumet::config::duration")]
    pub idle_window: Duration,
    /// How long an energy interval waits for the process activity that covers
    /// it before it is attributed with what is known. Default 10 s (procfs
    /// flushes its points every 5 s by default; keep this above that).
    #[serde(with = "alumet::config::duration")]
    pub max_delay: Duration,
    /// Also share the static (idle) energy among processes, by the same
    /// shares as the dynamic energy. Default false: idle energy belongs to
    /// nobody.
    pub share_static: bool,
    /// Idle power in watts per domain name (`package`, `core`, `uncore`,
    /// `dram`, `psys`, `gpu`, `node`, `module`), applied to every resource of that domain (each
    /// package). Domains not listed are estimated. Default: none listed.
    pub idle_power_w: BTreeMap<String, f64>,
    /// Also attribute whole-node energy: `hwmon_consumed_energy` and
    /// `redfish_consumed_energy` of domain `node` or `module`. Default false:
    /// that energy contains the package, DRAM and GPU energy the other
    /// domains already attribute, so its `attributed_energy` must never be
    /// added to theirs.
    pub attribute_node: bool,
    /// Levels attributed to: `process` (by process CPU time / GPU use) and
    /// `cgroup` (by cgroup CPU time; GPU use grouped by cgroup). Default both;
    /// a level whose input is not measured emits nothing.
    pub levels: Vec<String>,
    /// Where procfs is mounted (`/proc/PID/cgroup` of GPU processes).
    pub proc_root: std::path::PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_percentile: 5.0,
            idle_window: Duration::from_secs(600),
            // procfs flushes every 5 s by default: a CPU-time poll can reach
            // the transform up to ~6 s after the energy it covers.
            max_delay: Duration::from_secs(10),
            share_static: false,
            idle_power_w: BTreeMap::new(),
            attribute_node: false,
            levels: KNOWN_LEVELS.iter().map(|l| (*l).to_owned()).collect(),
            proc_root: std::path::PathBuf::from("/proc"),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

impl Config {
    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), PluginError> {
        if !(self.idle_percentile.is_finite() && (0.0..=100.0).contains(&self.idle_percentile)) {
            return Err(invalid(
                "idle_percentile",
                format!("{} is not between 0 and 100", self.idle_percentile),
            ));
        }
        alumet::limits::WINDOW.check("idle_window", self.idle_window)?;
        alumet::limits::MAX_AGE.check("max_delay", self.max_delay)?;
        if let Some(bad) = self
            .levels
            .iter()
            .find(|l| !KNOWN_LEVELS.contains(&l.as_str()))
        {
            return Err(invalid(
                "levels",
                format!(
                    "unknown level \"{bad}\"; valid levels: {}",
                    KNOWN_LEVELS.join(", ")
                ),
            ));
        }
        if self.levels.is_empty() {
            return Err(invalid(
                "levels",
                "no level to attribute to; give [\"process\"], [\"cgroup\"] or both, or disable the plugin",
            ));
        }
        for (domain, &watts) in &self.idle_power_w {
            if !KNOWN_DOMAINS.contains(&domain.as_str()) {
                return Err(invalid(
                    &format!("idle_power_w.{domain}"),
                    format!(
                        "unknown domain; valid domains: {}",
                        KNOWN_DOMAINS.join(", ")
                    ),
                ));
            }
            if !(watts.is_finite() && watts >= 0.0) {
                return Err(invalid(
                    &format!("idle_power_w.{domain}"),
                    format!("{watts} is not a power in watts (≥ 0)"),
                ));
            }
        }
        Ok(())
    }
}

/// The definitions of the metrics this plugin produces, in registration order:
/// `attributed_energy`, `idle_power`, `unattributed_energy`.
pub fn output_metric_definitions() -> [Metric; 3] {
    [
        Metric::new(
            ATTRIBUTED_ENERGY_METRIC,
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "Energy of a domain attributed to a process over the interval (part = dynamic or static).",
        ),
        Metric::new(
            IDLE_POWER_METRIC,
            Unit::Watt,
            ValueType::F64,
            MetricKind::Gauge,
            "Idle (static) power of an energy domain, configured or estimated.",
        ),
        Metric::new(
            UNATTRIBUTED_ENERGY_METRIC,
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "Energy of a domain that could not be attributed to any process (no process data, no activity).",
        ),
    ]
}

/// Registers the output metrics in a bare registry (tests, benchmarks).
pub fn register_output_metrics(
    registry: &mut MetricRegistry,
) -> Result<OutputMetrics, alumet::metrics::MetricError> {
    let [a, i, u] = output_metric_definitions();
    Ok(OutputMetrics {
        attributed_energy: registry.register(a)?,
        idle_power: registry.register(i)?,
        unattributed_energy: registry.register(u)?,
    })
}

/// The `energy-attribution` plugin.
#[derive(Debug)]
pub struct EnergyAttributionPlugin {
    config: Config,
}

impl PluginDefinition for EnergyAttributionPlugin {
    const NAME: &'static str = "energy-attribution";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Splits RAPL/GPU energy into idle and dynamic parts and attributes the dynamic part to processes and cgroups by CPU time / GPU utilisation.";
    type Config = Config;

    fn init(config: Config) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self { config })
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("idle_percentile", "percentile (0-100) of the observed power taken as idle power where idle_power_w does not set it"),
            ("idle_window", "sliding window over which the idle power is estimated"),
            ("max_delay", "how long energy waits for the process CPU time covering it; raise it above the procfs flush interval"),
            ("share_static", "also share the idle (static) energy among processes, by the same shares as the dynamic energy"),
            ("idle_power_w", "idle power in watts per domain (package, core, uncore, dram, psys, gpu, node, module), e.g. { package = 8.0 }; domains not listed are estimated"),
            ("attribute_node", "also attribute whole-node energy (hwmon/redfish domain node or module); it contains the package, DRAM and GPU energy: sum the components or the node, never both"),
            ("levels", "who energy is attributed to: \"process\" (by CPU time / GPU use) and \"cgroup\" (the innermost measured cgroups, by cgroup CPU time); points of the cgroup level carry level=cgroup"),
            ("proc_root", "where procfs is mounted, to find the cgroup of each GPU process"),
        ]
    }
}

impl Plugin for EnergyAttributionPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        // The input metrics belong to plugins that may start after this one,
        // so they are looked up by the transform once the pipeline runs.
        let [a, i, u] = output_metric_definitions();
        let outputs = OutputMetrics {
            attributed_energy: ctx.create_metric(a)?,
            idle_power: ctx.create_metric(i)?,
            unattributed_energy: ctx.create_metric(u)?,
        };
        ctx.add_transform(
            "attribution",
            Box::new(AttributionTransform::new(self.config.clone(), outputs)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_round_trips() {
        let table = alumet::config::serialize_config(&Config::default()).unwrap();
        let text = toml::to_string(&table).unwrap();
        assert!(text.contains("max_delay = \"10s\""), "{text}");
        let back: Config = alumet::config::deserialize_config(table).unwrap();
        assert_eq!(back, Config::default());
        assert!(EnergyAttributionPlugin::init(back).is_ok());
    }

    #[test]
    fn idle_power_table_is_read_and_checked() {
        let table: toml::Table = toml::from_str("idle_power_w = { package = 8.0 }").unwrap();
        let c: Config = alumet::config::deserialize_config(table).unwrap();
        assert_eq!(c.idle_power_w.get("package"), Some(&8.0));
        assert!(c.validate().is_ok());

        let table: toml::Table = toml::from_str("idle_power_w = { pakage = 8.0 }").unwrap();
        let c: Config = alumet::config::deserialize_config(table).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("valid domains: package"), "{err}");

        let table: toml::Table = toml::from_str("idle_power_w = { dram = -1.0 }").unwrap();
        let c: Config = alumet::config::deserialize_config(table).unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn bad_percentile_and_unknown_keys_are_rejected() {
        let c = Config {
            idle_percentile: 120.0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let table: toml::Table = toml::from_str("max_dalay = \"1s\"").unwrap();
        assert!(alumet::config::deserialize_config::<Config>(table).is_err());
    }
}
