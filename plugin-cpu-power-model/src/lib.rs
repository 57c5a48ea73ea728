//! Plugin `cpu-power-model`: where no CPU energy sensor counts (most cloud
//! VMs), a transform that estimates CPU package energy from the machine's
//! CPU utilisation (procfs's `cpu_time`) with a documented power model, and
//! emits it as `estimated_cpu_energy`, tagged `estimated=true` and `model`.
//!
//! The model ([`choose_model`]): the CPU's TDP and threads from a bundled
//! table ([`cpus`]) with the TEADS utilisation curve where cpuinfo names a
//! known CPU, else per-vCPU averages; the estimate runs interval by
//! interval where no sensor measured ([`transform`]).

pub mod cpus;
pub mod model;
pub mod topology;
pub mod transform;

use std::path::PathBuf;
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::pipeline::builder::PluginStartContext;
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

pub use model::{PowerCurve, PowerModel};
pub use topology::Topology;
pub use transform::{ModelStats, PowerModelTransform};

/// What the watts of `idle_w`, `max_w` and `curve` are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// The curve gives the watts of one vCPU (logical CPU); × vCPUs.
    Vcpu,
    /// The curve gives the watts of one socket; × sockets.
    Socket,
}

/// Which model estimates the power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelChoice {
    /// The TDP model where the CPU is known (table or `tdp_w`), else linear.
    Auto,
    /// The CPU's TDP with the TEADS curve; fails where the CPU is unknown.
    Tdp,
    /// `idle_w`/`max_w` (or `curve`) per `per`.
    Linear,
}

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
    /// `"auto"`, `"tdp"` or `"linear"` (see [`ModelChoice`]).
    pub model: String,
    /// TDP of one socket, W, for a CPU the table does not know (with
    /// `threads_per_socket`); 0: from the table.
    pub tdp_w: f64,
    /// Hardware threads of one socket, with `tdp_w`; 0: from the table.
    pub threads_per_socket: u32,
    /// How long an estimate waits for a sensor's points that may say they
    /// measured its interval (data time); then it is emitted.
    #[serde(with = "alumet::config::duration")]
    pub max_delay: Duration,
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
            model: "auto".into(),
            tdp_w: 0.0,
            threads_per_socket: 0,
            max_delay: Duration::from_secs(10),
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
    /// The model asked for.
    pub fn model_choice(&self) -> Result<ModelChoice, PluginError> {
        match self.model.as_str() {
            "auto" => Ok(ModelChoice::Auto),
            "tdp" => Ok(ModelChoice::Tdp),
            "linear" => Ok(ModelChoice::Linear),
            other => Err(invalid(
                "model",
                match alumet::suggest::closest(other, ["auto", "tdp", "linear"]) {
                    Some(s) => format!(
                        "unknown model \"{other}\"; did you mean `{s}`? (valid: auto, tdp, linear)"
                    ),
                    None => format!("unknown model \"{other}\" (valid: auto, tdp, linear)"),
                },
            )),
        }
    }

    /// `tdp_w` and `threads_per_socket`, when both are set.
    fn configured_tdp(&self) -> Result<Option<(f64, u32)>, PluginError> {
        match (self.tdp_w, self.threads_per_socket) {
            (0.0, 0) => Ok(None),
            (w, t) if w.is_finite() && w > 0.0 && w <= 2000.0 && t > 0 => Ok(Some((w, t))),
            (w, _) if !(w.is_finite() && (0.0..=2000.0).contains(&w)) => Err(invalid(
                "tdp_w",
                format!("{w} is not a socket's TDP in watts (0 for the table's, else up to 2000)"),
            )),
            (w, 0) => Err(invalid(
                "threads_per_socket",
                format!("tdp_w = {w} needs threads_per_socket too (the socket's hardware threads), e.g. threads_per_socket = 64"),
            )),
            _ => Err(invalid(
                "tdp_w",
                "threads_per_socket needs tdp_w too (the socket's TDP in watts), e.g. tdp_w = 205.0",
            )),
        }
    }

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

/// The model for this machine: `topology`, and cpuinfo's `model name`.
/// `Auto` and `Tdp` take the socket's TDP and threads from `tdp_w` and
/// `threads_per_socket`, else from the table, and apply the TEADS curve to
/// the fraction of the sockets the machine's vCPUs are (all of them on bare
/// metal, a few on a VM); `Auto` falls back to the linear model where the
/// CPU is unknown.
pub fn choose_model(
    config: &Config,
    topology: &Topology,
    cpu_model_name: Option<&str>,
) -> Result<PowerModel, PluginError> {
    let choice = config.model_choice()?;
    let linear = || -> Result<PowerModel, PluginError> {
        let curve = config.curve()?;
        let per = config.per()?;
        let units = match per {
            Per::Vcpu => f64::from(topology.vcpus),
            Per::Socket => topology.packages.len() as f64,
        };
        let name = model_name(&curve, per, topology);
        Ok(PowerModel { curve, units, name })
    };
    if choice == ModelChoice::Linear {
        return linear();
    }
    let known = match config.configured_tdp()? {
        Some((tdp_w, threads)) => Some((tdp_w, threads, "configured tdp_w".to_owned())),
        None => cpu_model_name.and_then(cpus::lookup).map(|m| {
            (
                m.tdp_w,
                m.threads,
                format!("{} {} from the table", m.vendor, m.model),
            )
        }),
    };
    match known {
        Some((tdp_w, threads, what)) => Ok(PowerModel {
            curve: model::teads_curve(tdp_w),
            units: f64::from(topology.vcpus) / f64::from(threads.max(1)),
            name: format!(
                "teads curve x TDP {tdp_w} W ({what}: {threads} threads) x {}/{threads} vCPUs",
                topology.vcpus
            ),
        }),
        None if choice == ModelChoice::Auto => linear(),
        None => Err(PluginError::Config(ConfigError::Invalid {
            key: "model".into(),
            reason: format!(
                "\"tdp\" needs the CPU's TDP, and {} is not in the bundled table: set tdp_w and threads_per_socket, or model = \"auto\"",
                cpu_model_name.map_or("this CPU (cpuinfo names none)".to_owned(), |n| format!("\"{n}\"")),
            ),
        })),
    }
}

/// The `model` attribute of the linear model: the curve, what it is per,
/// and how many (no commas).
pub fn model_name(curve: &PowerCurve, per: Per, topology: &Topology) -> String {
    match per {
        Per::Vcpu => format!("{} per vCPU x{}", curve.describe(), topology.vcpus),
        Per::Socket => format!(
            "{} per socket x{}",
            curve.describe(),
            topology.packages.len()
        ),
    }
}

/// The `cpu-power-model` plugin.
#[derive(Debug)]
pub struct CpuPowerModelPlugin {
    config: Config,
}

fn topology_of(config: &Config) -> Result<Topology, PluginError> {
    topology::read(&config.proc_root, &config.sys_root).map_err(|e| {
        PluginError::unavailable(
            e,
            "set plugins.cpu-power-model.proc_root to where procfs is mounted",
        )
    })
}

impl PluginDefinition for CpuPowerModelPlugin {
    const NAME: &'static str = "cpu-power-model";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Estimated CPU package energy from CPU utilisation (the CPU's TDP with the TEADS curve, or a linear or piecewise-linear model) over the intervals no sensor measured.";
    type Config = Config;

    fn init(config: Config) -> Result<Self, PluginError> {
        config.model_choice()?;
        config.configured_tdp()?;
        config.per()?;
        config.curve()?;
        alumet::limits::MAX_AGE.check("max_delay", config.max_delay)?;
        Ok(Self { config })
    }

    fn check_availability(config: &Config) -> Result<(), PluginError> {
        let topology = topology_of(config)?;
        choose_model(
            config,
            &topology,
            cpus::cpuinfo_model_name(&config.proc_root).as_deref(),
        )
        .map(|_| ())
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("force", "estimate even over intervals a sensor (RAPL) measured (the estimate is then reported beside the measurement)"),
            ("model", "\"auto\": the CPU's TDP and threads (tdp_w, else the bundled table by cpuinfo's model name) with the TEADS utilisation curve, else idle_w/max_w per vCPU; \"tdp\": the TDP model only; \"linear\": idle_w/max_w (or curve) per `per`"),
            ("tdp_w", "TDP of one socket in watts, for a CPU the bundled table does not know (with threads_per_socket); 0: the table's"),
            ("threads_per_socket", "hardware threads of one socket, with tdp_w; 0: the table's"),
            ("max_delay", "how long an estimate waits for RAPL's points that may say they measured its interval (raise it above the rapl flush interval); then it is emitted"),
            ("per", "what idle_w, max_w and curve are for: \"vcpu\" (x logical CPUs, as cloud carbon calculators do) or \"socket\" (x CPU packages)"),
            ("idle_w", "watts of one unit at 0 % CPU utilisation (default: Cloud Carbon Footprint's AWS average per vCPU)"),
            ("max_w", "watts of one unit at 100 % CPU utilisation (default: Cloud Carbon Footprint's AWS average per vCPU)"),
            ("curve", "piecewise-linear curve replacing idle_w/max_w: [utilisation %, watts] points from 0 to 100, e.g. [[0.0, 0.74], [50.0, 2.4], [100.0, 3.5]]"),
            ("proc_root", "where procfs is mounted (stat to count vCPUs, cpuinfo for the CPU model)"),
            ("sys_root", "where sysfs is mounted (devices/system/cpu, to count sockets)"),
        ]
    }
}

impl Plugin for CpuPowerModelPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let topology = topology_of(&self.config)?;
        let cpu_model_name = cpus::cpuinfo_model_name(&self.config.proc_root);
        let model = choose_model(&self.config, &topology, cpu_model_name.as_deref())?;
        log::debug!(
            "cpu-power-model: {} ({} vCPUs, CPU {:?}) when no sensor measures",
            model.name,
            topology.vcpus,
            cpu_model_name
        );
        let output = ctx.create_metric(estimated_energy_metric())?;
        let max_delay_ns = u64::try_from(self.config.max_delay.as_nanos()).unwrap_or(u64::MAX);
        ctx.add_transform(
            "estimate",
            Box::new(PowerModelTransform::new(
                model,
                topology,
                self.config.force,
                max_delay_ns,
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
            p.config.curve().unwrap(),
            PowerCurve::Linear {
                idle_w: 0.74,
                max_w: 3.5
            }
        );
        assert_eq!(p.config.per().unwrap(), Per::Vcpu);
        assert_eq!(p.config.model_choice().unwrap(), ModelChoice::Auto);
    }

    #[test]
    fn curves_and_units_are_checked() {
        let c = parse("curve = [[0.0, 10.0], [50.0, 30.0], [100.0, 40.0]]\nper = \"socket\"");
        let p = CpuPowerModelPlugin::init(c).unwrap();
        assert_eq!(
            p.config.curve().unwrap(),
            PowerCurve::Points(vec![(0.0, 10.0), (0.5, 30.0), (1.0, 40.0)])
        );
        assert_eq!(p.config.per().unwrap(), Per::Socket);
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

    fn topology(vcpus: u32, packages: &[u32]) -> Topology {
        Topology {
            vcpus,
            packages: packages.to_vec(),
        }
    }

    #[test]
    fn the_tdp_model_scales_by_the_share_of_the_sockets() {
        let c = Config::default();
        // A 2-socket bare-metal EPYC 7R13 (96 threads each): 2 sockets.
        let m = choose_model(&c, &topology(192, &[0, 1]), Some("AMD EPYC 7R13 Processor")).unwrap();
        assert_eq!(m.units, 2.0);
        assert!((m.power_w(1.0) - 2.0 * 1.02 * 225.0).abs() < 1e-9);
        assert!(
            m.name.starts_with(
                "teads curve x TDP 225 W (AMD EPYC 7R13 from the table: 96 threads) x 192/96 vCPUs"
            ),
            "{}",
            m.name
        );
        // A 2-vCPU VM on it: 2/96 of a socket.
        let m = choose_model(&c, &topology(2, &[0]), Some("AMD EPYC 7R13 Processor")).unwrap();
        assert!((m.power_w(0.0) - 0.12 * 225.0 * 2.0 / 96.0).abs() < 1e-9);
        // Unknown CPU: the per-vCPU averages.
        let m = choose_model(&c, &topology(2, &[0]), Some("Intel(R) Xeon(R) Processor")).unwrap();
        assert_eq!(m.name, "linear 0.74-3.5 W per vCPU x2");
        let m = choose_model(&c, &topology(2, &[0]), None).unwrap();
        assert_eq!(m.name, "linear 0.74-3.5 W per vCPU x2");
    }

    #[test]
    fn tdp_can_be_configured_and_is_required_by_the_tdp_model() {
        let c = parse("tdp_w = 100.0\nthreads_per_socket = 16");
        let m = choose_model(&c, &topology(4, &[0]), None).unwrap();
        assert!(
            m.name
                .contains("TDP 100 W (configured tdp_w: 16 threads) x 4/16"),
            "{}",
            m.name
        );
        let c = parse("model = \"tdp\"");
        let e = choose_model(&c, &topology(4, &[0]), Some("Intel(R) Xeon(R) Processor"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"Intel(R) Xeon(R) Processor\" is not in the bundled table: set tdp_w and threads_per_socket"), "{e}");
        let c = parse("model = \"linear\"");
        let m = choose_model(&c, &topology(4, &[0]), Some("AMD EPYC 7R13 Processor")).unwrap();
        assert_eq!(m.name, "linear 0.74-3.5 W per vCPU x4");
        for bad in [
            "tdp_w = 100.0",
            "threads_per_socket = 8",
            "tdp_w = -1.0\nthreads_per_socket = 8",
            "model = \"tpd\"",
        ] {
            assert!(
                matches!(
                    CpuPowerModelPlugin::init(parse(bad)),
                    Err(PluginError::Config(_))
                ),
                "{bad}"
            );
        }
        let e = CpuPowerModelPlugin::init(parse("model = \"tpd\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `tdp`"), "{e}");
    }
}
