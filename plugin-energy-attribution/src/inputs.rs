//! The inputs of the attribution: the names of the metrics it reads (energy,
//! process and cgroup activity, poll markers, unmeasured intervals), the
//! attributes it reads on their points, and how they are looked up in the
//! metric registry once the pipeline runs.
//!
//! Kept apart from the transform so that what the attribution depends on
//! from other plugins is in one place; `transform` re-exports the public
//! names under their old paths.

use alumet::measurement::{AttributeValue, MeasurementPoint};
use alumet::metrics::{MetricId, MetricRegistry, Unit};

/// Input metric: RAPL energy per domain.
pub const RAPL_ENERGY_METRIC: &str = "rapl_consumed_energy";
/// Input metric: GPU energy.
pub const GPU_ENERGY_METRIC: &str = "gpu_consumed_energy";
/// Input metric: CPU package energy estimated by a power model (cpu-power-model)
/// where RAPL is absent. Attributed like RAPL's; every point derived from it
/// carries `estimated=true`.
pub const ESTIMATED_CPU_ENERGY_METRIC: &str = "estimated_cpu_energy";
/// Input metric (with `attribute_node`): hwmon energy; its `node` and `module`
/// domains are whole-node energy.
pub const HWMON_ENERGY_METRIC: &str = "hwmon_consumed_energy";
/// Input metric (with `attribute_node`): the node's energy from its BMC (Redfish).
pub const REDFISH_ENERGY_METRIC: &str = "redfish_consumed_energy";
/// The domains of the whole-node inputs that are attributed: the whole
/// server (`node`) and a module (a Grace Hopper socket's, a Jetson's
/// `VDD_IN`). The other domains of hwmon are parts of these or components
/// that other inputs measure.
pub const NODE_DOMAINS: [&str; 2] = ["node", "module"];
/// Attributes that tell whole-node series apart (besides resource and domain).
pub(crate) const NODE_SERIES_KEYS: [&str; 3] = ["chassis", "sensor", "device"];
/// Input metric: intervals a sensor did not measure (a frozen counter),
/// with the energy metric they stand in for (`energy_metric`). Nothing is
/// attributed over them from that sensor: an estimate covers them.
pub const UNMEASURED_METRIC: &str = "energy_unmeasured_time";
/// Input metric: process CPU time per mode.
pub const PROCESS_CPU_TIME_METRIC: &str = "process_cpu_time";
/// Input metric: process SM utilisation per GPU.
pub const GPU_PROCESS_UTILISATION_METRIC: &str = "gpu_process_sm_utilization";
/// Input metric: cgroup CPU time per mode.
pub const CGROUP_CPU_TIME_METRIC: &str = "cgroup_cpu_time";
/// Metric emitted by the cgroups source at every poll, the first one
/// included: it marks cgroup polls, so the first CPU-time delta gets a known start.
pub const CGROUP_POLL_MARKER_METRIC: &str = "cgroups_measured";

/// Metrics emitted by procfs's process source at every poll, including the
/// first one (where `process_cpu_time` has no delta yet): their timestamps
/// mark procfs polls, so the first CPU-time delta gets a known start.
pub const PROCESS_POLL_MARKER_METRICS: [&str; 2] =
    ["process_memory_resident", "process_memory_virtual"];

/// Attribute of estimated energy points: the model's idle power of the
/// resource, W (cpu-power-model sets it).
pub const MODEL_IDLE_POWER_ATTRIBUTE: &str = "idle_power_w";

/// One energy metric found in the registry, and how its points are read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnergyInput {
    pub(crate) name: &'static str,
    pub(crate) id: MetricId,
    pub(crate) scale: f64,
    pub(crate) gpu: bool,
    /// The input is a model's estimate, not a measurement.
    pub(crate) estimated: bool,
    /// Whole-node energy (only its `NODE_DOMAINS` are read).
    pub(crate) node: bool,
}

/// The input metrics found in the registry (ids, and the factor to the base
/// unit where the unit may carry a prefix).
#[derive(Debug, Clone, Default)]
pub(crate) struct Inputs {
    pub(crate) energy: Vec<EnergyInput>,
    pub(crate) cpu_time: Option<(MetricId, f64)>,
    pub(crate) cpu_poll_markers: Vec<MetricId>,
    pub(crate) gpu_utilisation: Option<MetricId>,
    pub(crate) cgroup_cpu_time: Option<(MetricId, f64)>,
    pub(crate) cgroup_poll_marker: Option<MetricId>,
    pub(crate) unmeasured: Option<MetricId>,
}

impl Inputs {
    /// Looks the inputs up in the registry. `None` when there is nothing to
    /// attribute (no energy and no CPU time): buffers then pass through.
    pub(crate) fn resolve(metrics: &MetricRegistry, attribute_node: bool) -> Option<Inputs> {
        let lookup = |name: &str, unit: Unit| -> Option<(MetricId, f64)> {
            let id = metrics.by_name(name)?;
            let metric = metrics.get(id)?;
            if metric.unit.base != unit {
                log::warn!(
                    "energy-attribution: metric {name} has unit {} instead of {}; it is not used",
                    metric.unit,
                    unit.symbol()
                );
                return None;
            }
            Some((id, metric.unit.prefix.factor()))
        };
        let mut inputs = Inputs::default();
        for (name, gpu, estimated, node) in [
            (RAPL_ENERGY_METRIC, false, false, false),
            (GPU_ENERGY_METRIC, true, false, false),
            (ESTIMATED_CPU_ENERGY_METRIC, false, true, false),
            (HWMON_ENERGY_METRIC, false, false, true),
            (REDFISH_ENERGY_METRIC, false, false, true),
        ] {
            if node && !attribute_node {
                continue;
            }
            if let Some((id, scale)) = lookup(name, Unit::Joule) {
                inputs.energy.push(EnergyInput {
                    name,
                    id,
                    scale,
                    gpu,
                    estimated,
                    node,
                });
            }
        }
        inputs.cpu_time = lookup(PROCESS_CPU_TIME_METRIC, Unit::Second);
        if inputs.cpu_time.is_some() {
            inputs.cpu_poll_markers = PROCESS_POLL_MARKER_METRICS
                .iter()
                .filter_map(|name| metrics.by_name(name))
                .collect();
        }
        inputs.gpu_utilisation = metrics.by_name(GPU_PROCESS_UTILISATION_METRIC);
        inputs.cgroup_cpu_time = lookup(CGROUP_CPU_TIME_METRIC, Unit::Second);
        inputs.cgroup_poll_marker = metrics.by_name(CGROUP_POLL_MARKER_METRIC);
        inputs.unmeasured = metrics.by_name(UNMEASURED_METRIC);
        if inputs.energy.is_empty() && inputs.cpu_time.is_none() {
            log::info!(
                "energy-attribution: none of {RAPL_ENERGY_METRIC}, {GPU_ENERGY_METRIC}, {PROCESS_CPU_TIME_METRIC} is measured; nothing to attribute"
            );
            return None;
        }
        if inputs.cpu_time.is_none() && inputs.cgroup_cpu_time.is_none() {
            log::warn!("energy-attribution: {PROCESS_CPU_TIME_METRIC} is not measured (enable the procfs plugin); CPU energy is reported as unattributed");
        }
        Some(inputs)
    }
}

/// Whether a point of a whole-node input is of a domain attributed here.
pub(crate) fn is_node_domain(p: &MeasurementPoint) -> bool {
    matches!(p.attr("domain"), Some(AttributeValue::Str(d)) if NODE_DOMAINS.contains(&d.as_ref()))
}

/// The model's idle power carried by an energy point, if valid.
pub(crate) fn model_idle_power(p: &MeasurementPoint) -> Option<f64> {
    let w = match p.attr(MODEL_IDLE_POWER_ATTRIBUTE)? {
        AttributeValue::F64(w) => *w,
        AttributeValue::U64(w) => *w as f64,
        AttributeValue::Str(s) => s.parse().ok()?,
        _ => return None,
    };
    (w.is_finite() && w >= 0.0).then_some(w)
}
