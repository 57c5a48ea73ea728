//! The `exec` summary: an output that aggregates what was measured while the
//! command ran, and the report printed from it (text on stderr, JSON file).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use alumet::exec::ExecTarget;
use alumet::measurement::{MeasurementBuffer, MeasurementPoint, ResourceConsumer, Timestamp};
use alumet::metrics::{MetricKind, MetricRegistry, Unit};
use alumet::pipeline::{ElementContext, Output, WriteError};

use crate::report::carbon::{carbon_of, carbon_totals};
use crate::report::plot::data::{Consumer, PlotData, Sample};
pub(crate) use crate::report::series::{
    attribute, energy_label, is_estimated, Aggregate, SeriesKey, CARBON_METRIC, ENERGY_METRICS,
    NODE_DOMAINS, UNMEASURED_METRIC,
};

pub use crate::report::document::{
    CommandUsage, EnergyLine, MeasuredAs, MetricLine, Report, Wait4Usage,
};

/// How the command's own figures are measured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Method {
    /// Its cgroup (path in the CPU hierarchy): every process, however short-lived.
    Cgroup(String),
    /// Its process tree (procfs): its processes and the children they reaped.
    #[default]
    ProcessTree,
}

#[derive(Default)]
struct Collected {
    window_start: Option<Timestamp>,
    window_end: Option<Timestamp>,
    /// Machine-wide series.
    machine: HashMap<SeriesKey, Aggregate>,
    /// Series of the measured command (its cgroup, or its process tree).
    command: HashMap<SeriesKey, Aggregate>,
    method: Method,
    /// Who belongs to the process tree, decided by procfs when it measured them.
    exec_target: Option<ExecTarget>,
    /// Resident memory of the whole process tree at each procfs poll.
    tree_rss: BTreeMap<Timestamp, u64>,
    /// What `exec --plot` draws, when asked for.
    plot: Option<PlotData>,
    /// The measured cgroup's workload attributes (kind, ids, names), as its
    /// latest points carry them.
    workload: BTreeMap<String, String>,
}

/// Collects points for the summary. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct SummaryCollector {
    inner: Arc<Mutex<Collected>>,
}

/// The attributes that tell series apart: for the command's series only
/// those that split a figure (`mode`, `domain`, `part`, `estimated`,
/// `energy_metric`); for the machine's
/// every attribute but the process name.
fn attributes_key(p: &MeasurementPoint, command: bool) -> String {
    let mut attrs: Vec<String> = p
        .attributes
        .iter()
        .filter(|(k, _)| {
            if command {
                matches!(
                    k.as_ref(),
                    "mode" | "domain" | "part" | "estimated" | "energy_metric"
                )
            } else {
                k != "exe"
            }
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    attrs.sort();
    attrs.join(",")
}

impl SummaryCollector {
    /// A collector with no window yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the window (right before the command starts) and sets its root pid.
    pub fn start_window(&self, at: Timestamp) {
        let mut c = self.lock();
        c.window_start = Some(at);
        if let Some(plot) = &mut c.plot {
            plot.window_ns.0 = Some(at.unix_nanos());
        }
    }

    /// Also gathers what a plot of the run needs, under this title.
    pub fn enable_plot(&self, title: String) {
        self.lock().plot = Some(PlotData::titled(title));
    }

    /// The plot gathered, if enabled.
    pub fn take_plot(&self) -> Option<PlotData> {
        self.lock().plot.take()
    }

    /// Measures the command by `method`; `exec_target` says which
    /// processes belong to its tree.
    pub fn set_method(&self, method: Method, exec_target: ExecTarget) {
        let mut c = self.lock();
        c.method = method;
        c.exec_target = Some(exec_target);
    }

    /// Ends the window (right after the command's end was measured).
    pub fn end_window(&self, at: Timestamp) {
        let mut c = self.lock();
        c.window_end = Some(at);
        if let Some(plot) = &mut c.plot {
            plot.window_ns.1 = Some(at.unix_nanos());
        }
    }
}

impl Output for SummaryCollector {
    fn write(
        &mut self,
        buffer: &MeasurementBuffer,
        ctx: &ElementContext,
    ) -> Result<(), WriteError> {
        let mut c = self.lock();
        if c.plot.is_some() {
            plot_points(&mut c, buffer, ctx);
        }
        let Some(start) = c.window_start else {
            return Ok(());
        };
        let end = c.window_end.unwrap_or(Timestamp::from_unix_nanos(u64::MAX));
        for p in buffer {
            // A delta point covers the interval ending at its timestamp: points
            // stamped before the command started measure the time before it.
            if p.timestamp <= start || p.timestamp > end {
                continue;
            }
            let Some(metric) = ctx.metrics.get(p.metric) else {
                continue;
            };
            let value = p.value.as_f64();
            let key = |command: bool| SeriesKey {
                metric: metric.name.clone(),
                resource: p.resource.clone(),
                attributes: attributes_key(p, command),
            };
            match &p.consumer {
                ResourceConsumer::Process { pid } => {
                    let member = c
                        .exec_target
                        .as_ref()
                        .is_some_and(|t| t.is_tree_member(*pid));
                    if !member {
                        continue;
                    }
                    if metric.name == "process_memory_resident" {
                        *c.tree_rss.entry(p.timestamp).or_insert(0) += p.value.as_f64() as u64;
                    }
                    // Only cgroup-level points measure the command when it has a cgroup.
                    if c.method == Method::ProcessTree {
                        c.command.entry(key(true)).or_default().add(value);
                    }
                }
                ResourceConsumer::ControlGroup { path } => {
                    if matches!(&c.method, Method::Cgroup(own) if **own == **path) {
                        c.command.entry(key(true)).or_default().add(value);
                        // The cgroups source's own points say what the cgroup
                        // is; names come with later points than the first.
                        if metric.name == "cgroup_cpu_time" && p.attributes.len() > c.workload.len()
                        {
                            c.workload = p
                                .attributes
                                .iter()
                                .filter(|(k, _)| k != "mode")
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect();
                        }
                    }
                }
                _ => c.machine.entry(key(false)).or_default().add(value),
            }
        }
        Ok(())
    }
}

/// What the report says beside the measurements: the run and the machine.
pub struct RunFacts<'a> {
    /// The command line, or what was watched.
    pub command: Vec<String>,
    /// The exit code the agent returns.
    pub exit_code: i32,
    /// Wall time of the window, s.
    pub wall_s: f64,
    /// The kernel's figures at reaping, for a spawned command.
    pub wait4: Option<Wait4Usage>,
    /// Plugins that could not start, and why.
    pub unavailable: &'a [crate::agent::UnavailablePlugin],
    /// Bare metal, or a virtual machine.
    pub machine: &'a alumet_kernelfs::virt::MachineKind,
}

impl SummaryCollector {
    /// Builds the report once the pipeline has stopped.
    pub fn report(&self, metrics: &MetricRegistry, facts: RunFacts<'_>) -> Report {
        let RunFacts {
            command,
            exit_code,
            wall_s,
            wait4,
            unavailable,
            machine: machine_kind,
        } = facts;
        let c = self.lock();
        let kinds: HashMap<&str, (MetricKind, &Unit, String)> = metrics
            .iter()
            .map(|(_, m)| (m.name.as_str(), (m.kind, &m.unit.base, m.unit.symbol())))
            .collect();
        let wall = wall_s.max(1e-9);
        let mut energy = Vec::new();
        let mut machine: Vec<(&SeriesKey, &Aggregate)> = c.machine.iter().collect();
        machine.sort_by(|a, b| a.0.cmp(b.0));
        for (key, agg) in &machine {
            if !ENERGY_METRICS.contains(&key.metric.as_str()) {
                continue;
            }
            let domain = attribute(&key.attributes, "domain").unwrap_or_else(|| "gpu".into());
            let estimated = is_estimated(&key.attributes);
            let die = attribute(&key.attributes, "die");
            let same_domain = |k: &SeriesKey| {
                k.resource == key.resource
                    && attribute(&k.attributes, "domain").unwrap_or_else(|| "gpu".into()) == domain
                    && attribute(&k.attributes, "die") == die
                    && is_estimated(&k.attributes) == estimated
            };
            let attributed = |part: &str| -> Option<f64> {
                let found: Vec<f64> = c
                    .command
                    .iter()
                    .filter(|(k, _)| {
                        k.metric == "attributed_energy"
                            && same_domain(k)
                            && attribute(&k.attributes, "part").as_deref() == Some(part)
                            // A node's attribution names its meter (hwmon or Redfish).
                            && attribute(&k.attributes, "energy_metric")
                                .is_none_or(|m| m == key.metric)
                    })
                    .map(|(_, a)| a.sum)
                    .collect();
                (!found.is_empty()).then(|| found.iter().sum())
            };
            let any_attribution = metrics.by_name("attributed_energy").is_some();
            let carbon = carbon_of(&machine, &c.command, key, &same_domain);
            let label = match (key.metric.as_str(), attribute(&key.attributes, "sensor")) {
                ("hwmon_consumed_energy", Some(sensor)) => {
                    format!("{} (hwmon {sensor})", energy_label(&key.resource, &domain))
                }
                ("redfish_consumed_energy", _) => format!(
                    "{} (Redfish chassis {})",
                    energy_label(&key.resource, &domain),
                    attribute(&key.attributes, "chassis").unwrap_or_default()
                ),
                _ => energy_label(&key.resource, &domain),
            };
            // The time the sensor of this line did not measure (frozen...).
            let unmeasured_s: f64 = machine
                .iter()
                .filter(|(k, _)| {
                    k.metric == UNMEASURED_METRIC
                        && attribute(&k.attributes, "energy_metric").as_deref()
                            == Some(key.metric.as_str())
                        && k.resource == key.resource
                        && attribute(&k.attributes, "domain").as_deref() == Some(domain.as_str())
                        && attribute(&k.attributes, "die") == die
                })
                .map(|(_, a)| a.sum)
                .sum::<f64>()
                + 0.0;
            energy.push(EnergyLine {
                label: if estimated {
                    format!("{label} (estimated)")
                } else {
                    label
                },
                seen_from_vm: attribute(&key.attributes, "virtual_machine"),
                unmeasured_s,
                estimated_because: None,
                resource_kind: key.resource.kind().to_owned(),
                resource_id: key.resource.id().into_owned(),
                domain: domain.clone(),
                energy_j: agg.sum,
                average_power_w: agg.sum / wall,
                // A node meter's line has a share only where energy-attribution
                // splits the node (its `node` option); else the breakdown gives it.
                command_dynamic_energy_j: attributed("dynamic").or((any_attribution
                    && !NODE_DOMAINS.contains(&domain.as_str()))
                .then_some(0.0)),
                command_static_energy_j: attributed("static"),
                metric: key.metric.clone(),
                estimated,
                integrated: attribute(&key.attributes, "integrated").as_deref() == Some("true"),
                model: attribute(&key.attributes, "model"),
                carbon,
            });
        }
        let usage = command_usage(&c);
        let node = crate::report::node::breakdown(
            &energy,
            wall_s,
            machine_cpu_share(&machine, usage.cpu_s()),
        );
        let (carbon_total_g, command_carbon_total_g, carbon_total_estimated) =
            carbon_totals(&energy, node.as_ref());
        let carbon_unavailable =
            if let Some(u) = unavailable.iter().find(|u| u.name == "energy-to-carbon") {
                Some(u.report_line())
            } else if metrics.by_name(CARBON_METRIC).is_none() {
                Some("energy-to-carbon: the plugin is disabled".into())
            } else if energy.is_empty() {
                Some("no energy was measured or estimated".into())
            } else {
                None
            };
        let mut energy_unavailable = Vec::new();
        for plugin in ["rapl", "nvidia"] {
            if let Some(u) = unavailable.iter().find(|u| u.name == plugin) {
                energy_unavailable.push(u.report_line());
            }
        }
        // Why each estimate was made: the CPU's sensor is absent or broken,
        // disabled, or did not measure part of the run.
        let rapl_reason = unavailable
            .iter()
            .find(|u| u.name == "rapl")
            .map(|u| format!("rapl: {}", u.why))
            .or_else(|| {
                metrics
                    .by_name("rapl_consumed_energy")
                    .is_none()
                    .then(|| "rapl: the plugin is disabled".to_owned())
            });
        let measured_gaps: Vec<(String, String, f64)> = energy
            .iter()
            .filter(|e| !e.estimated && e.unmeasured_s > 0.0)
            .map(|e| {
                (
                    e.resource_kind.clone(),
                    e.resource_id.clone(),
                    e.unmeasured_s,
                )
            })
            .collect();
        if energy.iter().any(|e| e.estimated) {
            // The estimate's line says why rapl did not measure: once is enough.
            energy_unavailable.retain(|line| !line.starts_with("rapl: "));
        }
        for e in energy.iter_mut().filter(|e| e.estimated) {
            let gap = measured_gaps
                .iter()
                .find(|(k, id, _)| *k == e.resource_kind && *id == e.resource_id)
                .or(measured_gaps.first());
            e.estimated_because = Some(match (&rapl_reason, gap) {
                (Some(reason), _) => reason.clone(),
                (None, Some((_, _, s))) => format!(
                    "the RAPL counter did not measure {s:.2} s of the run (see energy_unmeasured_time); the estimate covers that time"
                ),
                (None, None) => "forced (force = true): beside the measurement".to_owned(),
            });
        }
        if !energy.iter().any(|e| e.domain != "gpu")
            && !unavailable.iter().any(|u| u.name == "rapl")
        {
            if metrics.by_name("rapl_consumed_energy").is_none() {
                energy_unavailable.push("rapl: the plugin is disabled".into());
            } else if energy.is_empty() {
                energy_unavailable.push("rapl: no energy interval ended while the command ran (it was shorter than the poll interval)".into());
            }
        }
        let mut lines = Vec::new();
        let mut command_series: Vec<(&SeriesKey, &Aggregate)> = c.command.iter().collect();
        command_series.sort_by(|a, b| a.0.cmp(b.0));
        for (scope, series) in [("machine", &machine), ("command", &command_series)] {
            for (key, agg) in series.iter() {
                if (scope == "machine" && ENERGY_METRICS.contains(&key.metric.as_str()))
                    || key.metric == CARBON_METRIC
                {
                    continue;
                }
                let Some((kind, _, symbol)) = kinds.get(key.metric.as_str()) else {
                    continue;
                };
                let (total, mean, max) = match kind {
                    MetricKind::Delta => (Some(agg.sum), None, None),
                    MetricKind::Counter => (Some(agg.last - agg.first), None, None),
                    MetricKind::Gauge => {
                        (None, Some(agg.sum / agg.count.max(1) as f64), Some(agg.max))
                    }
                };
                lines.push(MetricLine {
                    metric: key.metric.clone(),
                    unit: symbol.clone(),
                    kind: kind.as_str().to_owned(),
                    resource: key.resource.to_string(),
                    attributes: key.attributes.clone(),
                    scope: scope.to_owned(),
                    total,
                    mean,
                    max,
                });
            }
        }
        Report {
            command,
            exit_code,
            wall_s,
            machine: machine_kind.to_string(),
            energy,
            energy_unavailable,
            node,
            carbon_total_g,
            command_carbon_total_g,
            carbon_total_estimated,
            carbon_unavailable,
            measured_as: MeasuredAs {
                workload: c.workload.clone(),
                ..measured_as(&c.method)
            },
            command_usage: usage,
            wait4,
            outlived: Vec::new(),
            metrics: lines,
        }
    }
}

/// The command's share of the machine's busy CPU time over the run: its
/// CPU seconds over the machine's (procfs `cpu_time`, every state but idle,
/// iowait, steal and guest time, which user time already counts).
fn machine_cpu_share(machine: &[(&SeriesKey, &Aggregate)], command_cpu_s: f64) -> Option<f64> {
    let busy_s: f64 = machine
        .iter()
        .filter(|(k, _)| {
            k.metric == "cpu_time"
                && k.resource == alumet::measurement::Resource::LocalMachine
                && !matches!(
                    attribute(&k.attributes, "state").as_deref(),
                    Some("idle" | "iowait" | "steal" | "guest" | "guest_nice") | None
                )
        })
        .map(|(_, a)| a.sum)
        .sum();
    (busy_s > 0.0).then(|| (command_cpu_s / busy_s).min(1.0))
}

fn measured_as(method: &Method) -> MeasuredAs {
    match method {
        Method::Cgroup(path) => MeasuredAs {
            method: "cgroup".into(),
            cgroup: Some(path.clone()),
            workload: BTreeMap::new(),
            cannot_see: "every process of the command is counted, however short-lived; work it asks of other services (daemons, the kernel's threads) is not".into(),
        },
        Method::ProcessTree => MeasuredAs {
            method: "process tree".into(),
            cgroup: None,
            workload: BTreeMap::new(),
            cannot_see: "its processes and the children they reaped are counted; descendants that left the tree (re-parented daemons reaped by init) are not, and I/O is not measured".into(),
        },
    }
}

fn command_usage(c: &Collected) -> CommandUsage {
    let sum = |metric: &str, mode: Option<&str>| -> f64 {
        c.command
            .iter()
            .filter(|(k, _)| {
                k.metric == metric
                    && mode.is_none_or(|m| attribute(&k.attributes, "mode").as_deref() == Some(m))
            })
            .map(|(_, a)| a.sum)
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    };
    let max_of = |metric: &str| -> Option<u64> {
        c.command
            .iter()
            .filter(|(k, _)| k.metric == metric)
            .map(|(_, a)| a.max as u64)
            .max()
    };
    let has = |metric: &str| c.command.keys().any(|k| k.metric == metric);
    let cpu = match c.method {
        Method::Cgroup(_) => "cgroup_cpu_time",
        Method::ProcessTree => "process_cpu_time",
    };
    let peak_kernel = max_of("cgroup_memory_peak").or_else(|| max_of("cgroup_memory_current"));
    let peak_sampled = c.tree_rss.values().copied().max().filter(|&b| b > 0);
    CommandUsage {
        user_cpu_s: sum(cpu, Some("user")),
        system_cpu_s: sum(cpu, Some("system")),
        children_cpu_s: sum(cpu, Some("children")),
        memory_peak_bytes: peak_kernel.or(peak_sampled),
        memory_peak_exact: peak_kernel.is_some(),
        io_read_bytes: has("cgroup_io_read").then(|| sum("cgroup_io_read", None) as u64),
        io_write_bytes: has("cgroup_io_write").then(|| sum("cgroup_io_write", None) as u64),
    }
}

/// Feeds the plot: every point, before and after the window too, the
/// command's found as the report finds them.
fn plot_points(c: &mut Collected, buffer: &MeasurementBuffer, ctx: &ElementContext) {
    let Collected {
        plot: Some(plot),
        method,
        exec_target,
        ..
    } = c
    else {
        return;
    };
    for p in buffer {
        let Some(metric) = ctx.metrics.get(p.metric) else {
            continue;
        };
        let consumer = match &p.consumer {
            ResourceConsumer::LocalMachine => Consumer::Machine,
            ResourceConsumer::Process { pid }
                if *method == Method::ProcessTree
                    && exec_target.as_ref().is_some_and(|t| t.is_tree_member(*pid)) =>
            {
                Consumer::Command
            }
            ResourceConsumer::ControlGroup { path } if matches!(&*method, Method::Cgroup(own) if **own == **path) => {
                Consumer::Command
            }
            _ => Consumer::Other,
        };
        let text = |key: &str| p.attr(key).map(ToString::to_string);
        let domain = text("domain");
        let state = text("state");
        plot.add(&Sample {
            t_ns: p.timestamp.unix_nanos(),
            metric: &metric.name,
            value: p.value.as_f64() * metric.unit.prefix.factor(),
            resource: &p.resource,
            consumer,
            domain: domain.as_deref(),
            estimated: text("estimated").as_deref() == Some("true"),
            state: state.as_deref(),
        });
    }
}

/// Builds a `BTreeMap` view for tests.
#[cfg(test)]
fn sorted<K: Ord + Clone, V: Clone>(m: &HashMap<K, V>) -> std::collections::BTreeMap<K, V> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alumet::measurement::Resource;
    use alumet::metrics::{Metric, ValueType};

    /// A one-second run of `x` that exited 0.
    fn facts(machine: &alumet_kernelfs::virt::MachineKind) -> RunFacts<'_> {
        RunFacts {
            command: vec!["x".into()],
            exit_code: 0,
            wall_s: 1.0,
            wait4: None,
            unavailable: &[],
            machine,
        }
    }

    #[test]
    fn window_and_tree_filter_points() {
        let mut reg = MetricRegistry::new();
        let energy = reg
            .register(Metric::new(
                "rapl_consumed_energy",
                Unit::Joule,
                ValueType::F64,
                MetricKind::Delta,
                "e",
            ))
            .unwrap();
        let cpu = reg
            .register(Metric::new(
                "process_cpu_time",
                Unit::Second,
                ValueType::F64,
                MetricKind::Delta,
                "c",
            ))
            .unwrap();
        let mut c = SummaryCollector::new();
        c.start_window(Timestamp::from_unix_nanos(100));
        let target = ExecTarget::new();
        target.set(std::process::id());
        c.set_method(Method::ProcessTree, target);
        let pkg = Resource::CpuPackage { id: 0 };
        let ctx = ElementContext { metrics: &reg };
        let at = Timestamp::from_unix_nanos;
        let buffer = vec![
            MeasurementPoint::new(
                at(50),
                energy,
                pkg.clone(),
                ResourceConsumer::LocalMachine,
                7.0,
            )
            .with_attr("domain", "package"),
            MeasurementPoint::new(
                at(150),
                energy,
                pkg.clone(),
                ResourceConsumer::LocalMachine,
                2.0,
            )
            .with_attr("domain", "package"),
            MeasurementPoint::new(
                at(150),
                cpu,
                Resource::LocalMachine,
                ResourceConsumer::Process {
                    pid: std::process::id(),
                },
                0.5,
            ),
            MeasurementPoint::new(
                at(150),
                cpu,
                Resource::LocalMachine,
                ResourceConsumer::Process { pid: 1 },
                9.0,
            ),
        ];
        c.write(&buffer, &ctx).unwrap();
        c.end_window(at(200));
        c.write(
            &vec![
                MeasurementPoint::new(at(250), energy, pkg, ResourceConsumer::LocalMachine, 5.0)
                    .with_attr("domain", "package"),
            ],
            &ctx,
        )
        .unwrap();
        let report = c.report(&reg, facts(&alumet_kernelfs::virt::MachineKind::BareMetal));
        assert_eq!(report.energy.len(), 1);
        assert_eq!(report.energy[0].energy_j, 2.0);
        assert_eq!(report.energy[0].label, "CPU package 0");
        let cmd_cpu: Vec<_> = report
            .metrics
            .iter()
            .filter(|m| m.scope == "command")
            .collect();
        assert_eq!(cmd_cpu.len(), 1);
        assert_eq!(cmd_cpu[0].total, Some(0.5));
        assert_eq!(sorted(&c.lock().command).len(), 1);
        assert!(report.to_text().contains("CPU package 0"));
    }

    #[test]
    fn a_measured_cgroup_is_named_as_its_latest_points_say() {
        let mut reg = MetricRegistry::new();
        let cpu = reg
            .register(Metric::new(
                "cgroup_cpu_time",
                Unit::Second,
                ValueType::F64,
                MetricKind::Delta,
                "c",
            ))
            .unwrap();
        let c = SummaryCollector::new();
        c.start_window(Timestamp::from_unix_nanos(100));
        let path = "/docker/abc".to_owned();
        c.set_method(Method::Cgroup(path.clone()), ExecTarget::new());
        let point = |t: u64, names: bool| {
            let mut p = MeasurementPoint::new(
                Timestamp::from_unix_nanos(t),
                cpu,
                Resource::LocalMachine,
                ResourceConsumer::ControlGroup {
                    path: path.clone().into(),
                },
                0.5,
            )
            .with_attr("mode", "user")
            .with_attr("workload", "container");
            if names {
                p = p.with_attr("container_name", "web");
            }
            p
        };
        let ctx = ElementContext { metrics: &reg };
        let mut c2 = c.clone();
        c2.write(&vec![point(150, false), point(250, true)], &ctx)
            .unwrap();
        c.end_window(Timestamp::from_unix_nanos(300));
        let report = c.report(&reg, facts(&alumet_kernelfs::virt::MachineKind::BareMetal));
        let w = &report.measured_as.workload;
        assert_eq!(w.get("container_name").map(String::as_str), Some("web"));
        assert_eq!(w.get("workload").map(String::as_str), Some("container"));
        assert!(!w.contains_key("mode"));
        let text = report.to_text();
        assert!(
            text.contains(
                "measured as cgroup /docker/abc (container_name=web, workload=container)"
            ),
            "{text}"
        );
    }
}
