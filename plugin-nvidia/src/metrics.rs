//! The metrics this plugin reports, registered once at start.

use alumet::metrics::{Metric, MetricError, MetricId, MetricKind, PrefixedUnit, Unit, ValueType};

/// Name of the energy metric (other plugins depend on it).
pub const GPU_CONSUMED_ENERGY: &str = "gpu_consumed_energy";
/// Name of the power metric (other plugins depend on it).
pub const GPU_POWER: &str = "gpu_power";
/// Name of the per-process SM utilisation metric (other plugins depend on it).
pub const GPU_PROCESS_SM_UTILIZATION: &str = "gpu_process_sm_utilization";

/// The ids of every metric of the plugin.
#[derive(Debug, Clone, Copy)]
pub struct GpuMetrics {
    /// `gpu_consumed_energy`: J since the previous poll (delta).
    pub consumed_energy: MetricId,
    /// `gpu_power`: W (gauge).
    pub power: MetricId,
    /// `gpu_temperature`: °C (gauge).
    pub temperature: MetricId,
    /// `gpu_utilization`: % of time a kernel ran (gauge).
    pub utilization: MetricId,
    /// `gpu_memory_utilization`: % of time device memory was accessed (gauge).
    pub memory_utilization: MetricId,
    /// `gpu_memory_used`: bytes (gauge).
    pub memory_used: MetricId,
    /// `gpu_memory_total`: bytes (gauge).
    pub memory_total: MetricId,
    /// `gpu_sm_clock`: Hz (gauge).
    pub sm_clock: MetricId,
    /// `gpu_memory_clock`: Hz (gauge).
    pub memory_clock: MetricId,
    /// `gpu_throttle_reasons`: NVML bitmask (gauge).
    pub throttle_reasons: MetricId,
    /// `gpu_process_memory_used`: bytes per process (gauge).
    pub process_memory_used: MetricId,
    /// `gpu_process_sm_utilization`: % per process (gauge).
    pub process_sm_utilization: MetricId,
}

impl GpuMetrics {
    /// Registers every metric with `register` (the plugin passes
    /// `PluginStartContext::create_metric`; tests a bare registry).
    pub fn register(
        mut register: impl FnMut(Metric) -> Result<MetricId, MetricError>,
    ) -> Result<Self, MetricError> {
        use MetricKind::{Delta, Gauge};
        use ValueType::{F64, U64};
        let mut m = |name: &str, unit: Unit, ty, kind, description: &str| {
            register(Metric::new(
                name,
                PrefixedUnit::from(unit),
                ty,
                kind,
                description,
            ))
        };
        Ok(Self {
            consumed_energy: m(
                GPU_CONSUMED_ENERGY,
                Unit::Joule,
                F64,
                Delta,
                "Energy the GPU consumed since the previous poll; attribute estimated=true when integrated from power.",
            )?,
            power: m(GPU_POWER, Unit::Watt, F64, Gauge, "Power draw of the GPU.")?,
            temperature: m(
                "gpu_temperature",
                Unit::DegreeCelsius,
                F64,
                Gauge,
                "Temperature of the GPU die.",
            )?,
            utilization: m(
                "gpu_utilization",
                Unit::Percent,
                F64,
                Gauge,
                "Percent of the driver's last sample period during which a kernel ran on the GPU.",
            )?,
            memory_utilization: m(
                "gpu_memory_utilization",
                Unit::Percent,
                F64,
                Gauge,
                "Percent of the driver's last sample period during which device memory was read or written.",
            )?,
            memory_used: m(
                "gpu_memory_used",
                Unit::Byte,
                U64,
                Gauge,
                "Device memory allocated.",
            )?,
            memory_total: m(
                "gpu_memory_total",
                Unit::Byte,
                U64,
                Gauge,
                "Device memory installed.",
            )?,
            sm_clock: m(
                "gpu_sm_clock",
                Unit::Hertz,
                U64,
                Gauge,
                "Current frequency of the streaming multiprocessors.",
            )?,
            memory_clock: m(
                "gpu_memory_clock",
                Unit::Hertz,
                U64,
                Gauge,
                "Current frequency of the device memory.",
            )?,
            throttle_reasons: m(
                "gpu_throttle_reasons",
                Unit::Unity,
                U64,
                Gauge,
                "Why the clocks are held down, as NVML's nvmlClocksEventReason bitmask (0: not throttled).",
            )?,
            process_memory_used: m(
                "gpu_process_memory_used",
                Unit::Byte,
                U64,
                Gauge,
                "Device memory allocated by the process.",
            )?,
            process_sm_utilization: m(
                GPU_PROCESS_SM_UTILIZATION,
                Unit::Percent,
                F64,
                Gauge,
                "Percent of time the process used the streaming multiprocessors since the previous poll.",
            )?,
        })
    }
}
