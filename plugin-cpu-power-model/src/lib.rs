//! Plugin `cpu-power-model`: where no RAPL sensor exists (most cloud VMs),
//! a transform that estimates CPU package energy from the machine's CPU
//! utilisation (procfs's `cpu_time`) with a documented power model, and
//! emits it as `estimated_cpu_energy`, tagged `estimated=true` and `model`.

pub mod model;
pub mod topology;
pub mod transform;

use std::path::PathBuf;

use alumet::config::ConfigError;
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::pipeline::builder::PluginStartContext;
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

pub use model::PowerCurve;
pub use topology::Topology;
pub use transform::{ModelStats, Per, PowerModelTransform};

/// Name of the output metric.
pub const ESTIMATED_ENERGY_METRIC: &str = "estimated_cpu_energy";

/// Default idle watts per vCPU: Cloud Carbon Footprint's AWS average (methodology, Appendix I).
pub const DEFAULT_IDLE_W: f64 = 0.74;
/// Default max watts per vCPU: Cloud Carbon Footprint's AWS average (methodology, Appendix I).
pub const DEFAULT_MAX_W: f64 = 3.5;

/// Configuration of `[plugins.cpu-power-model]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Estimate even when RAPL energy is measured. Default false.
    pub force: bool,
    /// What the watts are for: `"vcpu"` (× logical CPUs, as cloud carbon
    /// calculators do) or `"socket"` (× CPU packages).
    pub per: String,
    /// Watts of one unit at 0 % utilisation.
    pub idle_w: f64,
    /// Watts of one unit at 100 % utilisation.
    pub max_w: f64,
    /// Piecewise-linear curve instead of idle_w/max_w: `[utilisation %, watts]`
    /// points from 0 to 100, e.g. a SPECpower result. Default: none.
    pub curve: Vec<[f64; 2]>,
    /// Where procfs is mounted (`stat`, to count vCPUs).
    pub proc_root: PathBuf,
    /// Where sysfs is mounted (`devices/system/cpu/*/topology`, to count sockets).
    pub sys_root: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            force: false,
            per: "vcpu".into(),
            idle_w: DEFAULT_IDLE_W,
            max_w: DEFAULT_MAX_W,
            curve: Vec::new(),
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
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
    /// The unit the watts are for.
    pub fn per(&self) -> Result<Per, PluginError> {
        match self.per.as_str() {
            "vcpu" => Ok(Per::Vcpu),
            "socket" => Ok(Per::Socket),
            other => Err(invalid(
                "per",
                match alumet::suggest::closest(other, ["vcpu", "socket"]) {
                    Some(s) => format!(
                        "unknown unit \"{other}\"; did you mean `{s}`? (valid: vcpu, socket)"
                    ),
                    None => format!("unknown unit \"{other}\" (valid: vcpu, socket)"),
                },
            )),
        }
    }

    /// The power curve, checked.
    pub fn curve(&self) -> Result<PowerCurve, PluginError> {
        let watts_ok = |w: f64| w.is_finite() && w >= 0.0;
        if self.curve.is_empty() {
            if !watts_ok(self.idle_w) {
                return Err(invalid(
                    "idle_w",
                    format!("{} is not a power in watts (≥ 0)", self.idle_w),
                ));
            }
            if !(watts_ok(self.max_w) && self.max_w >= self.idle_w) {
                return Err(invalid(
                    "max_w",
                    format!(
                        "{} W is not a power in watts at or above idle_w ({} W)",
                        self.max_w, self.idle_w
                    ),
                ));
            }
            return Ok(PowerCurve::Linear {
                idle_w: self.idle_w,
                max_w: self.max_w,
            });
        }
        let example = "e.g. curve = [[0.0, 0.74], [50.0, 2.4], [100.0, 3.5]]";
        if self.curve.len() < 2 {
            return Err(invalid(
                "curve",
                format!("needs at least two points, 0 % and 100 %; {example}"),
            ));
        }
        let first = self.curve.first().map_or(f64::NAN, |p| p[0]);
        let last = self.curve.last().map_or(f64::NAN, |p| p[0]);
        if first != 0.0 || last != 100.0 {
            return Err(invalid(
                "curve",
                format!("must start at 0 % and end at 100 %; {example}"),
            ));
        }
        let mut points = Vec::with_capacity(self.curve.len());
        for (i, [u, w]) in self.curve.iter().copied().enumerate() {
            if !watts_ok(w) {
                return Err(invalid(
                    "curve",
                    format!("point {}: {w} is not a power in watts (≥ 0)", i + 1),
                ));
            }
            if points.last().is_some_and(|&(prev, _)| u <= prev * 100.0) {
                return Err(invalid(
                    "curve",
                    format!("point {}: utilisations must increase; {example}", i + 1),
                ));
            }
            points.push((u / 100.0, w));
        }
        Ok(PowerCurve::Points(points))
    }
}

/// The definition of `estimated_cpu_energy`.
pub fn estimated_energy_metric() -> Metric {
    Metric::new(
        ESTIMATED_ENERGY_METRIC,
        Unit::Joule,
        ValueType::F64,
        MetricKind::Delta,
        "CPU package energy estimated from CPU utilisation by a power model (attributes estimated=true, model); not a measurement.",
    )
}

/// The `cpu-power-model` plugin.
#[derive(Debug)]
pub struct CpuPowerModelPlugin {
    config: Config,
    curve: PowerCurve,
    per: Per,
}

impl PluginDefinition for CpuPowerModelPlugin {
    const NAME: &'static str = "cpu-power-model";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Estimated CPU package energy from CPU utilisation (linear or piecewise-linear power model) where RAPL is not measured.";
    type Config = Config;

    fn init(config: Config) -> Result<Self, PluginError> {
        let per = config.per()?;
        let curve = config.curve()?;
        Ok(Self { config, curve, per })
    }

    fn check_availability(config: &Config) -> Result<(), PluginError> {
        topology::read(&config.proc_root, &config.sys_root)
            .map(|_| ())
            .map_err(|e| {
                PluginError::unavailable(
                    e,
                    "set plugins.cpu-power-model.proc_root to where procfs is mounted",
                )
            })
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("force", "estimate even when RAPL energy is measured (the estimate is then reported beside the measurement)"),
            ("per", "what idle_w, max_w and curve are for: \"vcpu\" (x logical CPUs, as cloud carbon calculators do) or \"socket\" (x CPU packages)"),
            ("idle_w", "watts of one unit at 0 % CPU utilisation (default: Cloud Carbon Footprint's AWS average per vCPU)"),
            ("max_w", "watts of one unit at 100 % CPU utilisation (default: Cloud Carbon Footprint's AWS average per vCPU)"),
            ("curve", "piecewise-linear curve replacing idle_w/max_w: [utilisation %, watts] points from 0 to 100, e.g. [[0.0, 0.74], [50.0, 2.4], [100.0, 3.5]]"),
            ("proc_root", "where procfs is mounted (stat, to count vCPUs)"),
            ("sys_root", "where sysfs is mounted (devices/system/cpu, to count sockets)"),
        ]
    }
}

impl Plugin for CpuPowerModelPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let topology =
            topology::read(&self.config.proc_root, &self.config.sys_root).map_err(|e| {
                PluginError::unavailable(
                    e,
                    "set plugins.cpu-power-model.proc_root to where procfs is mounted",
                )
            })?;
        let output = ctx.create_metric(estimated_energy_metric())?;
        ctx.add_transform(
            "estimate",
            Box::new(PowerModelTransform::new(
                self.curve.clone(),
                self.per,
                topology,
                self.config.force,
                output,
            )),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        alumet::config::deserialize_config(toml::from_str::<toml::Table>(text).unwrap()).unwrap()
    }

    #[test]
    fn default_round_trips() {
        let table = alumet::config::serialize_config(&Config::default()).unwrap();
        let back: Config = alumet::config::deserialize_config(table).unwrap();
        assert_eq!(back, Config::default());
        let p = CpuPowerModelPlugin::init(back).unwrap();
        assert_eq!(
            p.curve,
            PowerCurve::Linear {
                idle_w: 0.74,
                max_w: 3.5
            }
        );
        assert_eq!(p.per, Per::Vcpu);
    }

    #[test]
    fn curves_and_units_are_checked() {
        let c = parse("curve = [[0.0, 10.0], [50.0, 30.0], [100.0, 40.0]]\nper = \"socket\"");
        let p = CpuPowerModelPlugin::init(c).unwrap();
        assert_eq!(
            p.curve,
            PowerCurve::Points(vec![(0.0, 10.0), (0.5, 30.0), (1.0, 40.0)])
        );
        assert_eq!(p.per, Per::Socket);
        for bad in [
            "curve = [[0.0, 10.0]]",
            "curve = [[10.0, 10.0], [100.0, 20.0]]",
            "curve = [[0.0, 10.0], [60.0, 20.0], [50.0, 25.0], [100.0, 30.0]]",
            "curve = [[0.0, -1.0], [100.0, 20.0]]",
            "idle_w = 5.0\nmax_w = 2.0",
        ] {
            assert!(
                matches!(
                    CpuPowerModelPlugin::init(parse(bad)),
                    Err(PluginError::Config(_))
                ),
                "{bad}"
            );
        }
        let e = CpuPowerModelPlugin::init(parse("per = \"vpcu\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `vcpu`"), "{e}");
    }
}
