//! The `exec` report: what it holds, and how it is shown (text on stderr,
//! like `perf stat`, and JSON).

use std::path::PathBuf;

use serde::Serialize;

/// One energy line of the report.
#[derive(Debug, Serialize)]
pub struct EnergyLine {
    /// e.g. "CPU package 0", "DRAM 0", "GPU 0000:3b:00.0".
    pub label: String,
    /// Resource kind and id.
    pub resource_kind: String,
    /// Resource id.
    pub resource_id: String,
    /// RAPL domain or "gpu".
    pub domain: String,
    /// Energy over the command's run.
    pub energy_j: f64,
    /// Average power over the run.
    pub average_power_w: f64,
    /// Dynamic energy attributed to the command's processes, if the model ran.
    pub command_dynamic_energy_j: Option<f64>,
    /// Static energy attributed to the command (when `share_static` is on).
    pub command_static_energy_j: Option<f64>,
    /// The metric of the line (`rapl_consumed_energy`, `gpu_consumed_energy`, `estimated_cpu_energy`).
    pub metric: String,
    /// Whether the figure is a model's estimate, not a measurement (false: measured).
    pub estimated: bool,
    /// Whether a measured figure was integrated from power readings (a
    /// sensor without an energy counter: hwmon power channels, Redfish power).
    pub integrated: bool,
    /// The model that estimated it.
    pub model: Option<String>,
    /// Why it is estimated (the sensor's absence or fault, in one line).
    pub estimated_because: Option<String>,
    /// The hypervisor, when a measured counter was read inside a virtual
    /// machine (it then shows the host's package, shared with other guests).
    pub seen_from_vm: Option<String>,
    /// Seconds of the run its sensor did not measure (a frozen counter):
    /// not counted as 0 J; an estimate covers them where one runs.
    pub unmeasured_s: f64,
    /// Its carbon, when energy-to-carbon ran.
    pub carbon: Option<CarbonLine>,
}

/// The carbon of one energy line.
#[derive(Debug, Serialize, Clone)]
pub struct CarbonLine {
    /// Carbon of the line's energy, g CO2e.
    pub carbon_g: f64,
    /// Carbon of the energy attributed to the command (dynamic + static), g CO2e.
    pub command_carbon_g: Option<f64>,
    /// Data-centre overhead applied: carbon is computed from energy × pue.
    pub pue: f64,
    /// Whether the intensity is a stand-in (the world average where none is configured).
    pub intensity_estimated: bool,
    /// g CO2e/kWh of facility energy over the run (the mean for a time series).
    pub intensity_g_per_kwh: f64,
    /// Where the intensity comes from.
    pub intensity_source: String,
}

/// One part of the node.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct NodePart {
    /// `cpu`, `memory`, `gpu` or `rest_of_node`.
    pub part: String,
    /// Energy over the run, J.
    pub energy_j: f64,
    /// The command's share, J, when known.
    pub command_energy_j: Option<f64>,
    /// Whether a part's figure is estimated (a CPU power model).
    pub estimated: bool,
}

/// The node's energy, its parts and the command's share of each.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct NodeBreakdown {
    /// The node meter's lines, e.g. "Whole node (hwmon acpi_power_meter/power1)".
    pub source: String,
    /// The metric of the node figure (`hwmon_consumed_energy`, `redfish_consumed_energy`).
    pub metric: String,
    /// Node energy over the run, J.
    pub energy_j: f64,
    /// Average power over the run, W.
    pub average_power_w: f64,
    /// CPU, memory, GPU (those measured or estimated), then the rest of the node.
    pub parts: Vec<NodePart>,
    /// J by which the components exceeded the node meter (the rest is then 0).
    pub components_exceed_node_j: Option<f64>,
    /// The command's share of the machine's CPU time (what its share of the rest of the node is).
    pub command_cpu_share: Option<f64>,
    /// The command's share of the node: the sum of its shares of the parts.
    pub command_energy_j: Option<f64>,
}

/// One other metric of the report.
#[derive(Debug, Serialize)]
pub struct MetricLine {
    /// Metric name.
    pub metric: String,
    /// Unit symbol.
    pub unit: String,
    /// counter / delta / gauge.
    pub kind: String,
    /// Resource.
    pub resource: String,
    /// Attributes `k=v,...`.
    pub attributes: String,
    /// "machine" or "command".
    pub scope: String,
    /// Total (delta), increase (counter); absent for gauges.
    pub total: Option<f64>,
    /// Mean (gauge).
    pub mean: Option<f64>,
    /// Max (gauge).
    pub max: Option<f64>,
}

/// What the kernel's `wait4` said of the command when it was reaped: the
/// CPU time of the command and of every descendant it (or they) waited for.
#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct Wait4Usage {
    /// User CPU time.
    pub user_cpu_s: f64,
    /// System CPU time.
    pub system_cpu_s: f64,
}

/// How the command's own figures were measured, and what that cannot see.
#[derive(Debug, Serialize, Clone, Default)]
pub struct MeasuredAs {
    /// `cgroup` or `process tree`.
    pub method: String,
    /// The cgroup's path, for `cgroup`.
    pub cgroup: Option<String>,
    /// What the cgroup is, in its manager's words (`workload`, `container_name`,
    /// `job_name`, `pod`...): its points' attributes, names looked up included.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub workload: std::collections::BTreeMap<String, String>,
    /// What the method misses, in one line.
    pub cannot_see: String,
}

/// CPU, memory and I/O of the command, as its method measured them.
#[derive(Debug, Serialize, Clone, Copy, Default)]
pub struct CommandUsage {
    /// CPU time in user mode.
    pub user_cpu_s: f64,
    /// CPU time in system mode.
    pub system_cpu_s: f64,
    /// CPU time of reaped children not seen alive (process tree only; user + system).
    pub children_cpu_s: f64,
    /// Highest memory of the whole command: the cgroup's peak where the
    /// kernel keeps one, else the largest sum of the tree's resident sets
    /// at a procfs poll.
    pub memory_peak_bytes: Option<u64>,
    /// Whether `memory_peak_bytes` is the kernel's exact peak (false: sampled).
    pub memory_peak_exact: bool,
    /// Bytes read from block devices (cgroup only).
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices (cgroup only).
    pub io_write_bytes: Option<u64>,
}

impl CommandUsage {
    /// Total CPU time.
    pub fn cpu_s(&self) -> f64 {
        self.user_cpu_s + self.system_cpu_s + self.children_cpu_s
    }
}

/// The summary of one `exec`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line.
    pub command: Vec<String>,
    /// Exit code the agent returns (128+signal when killed).
    pub exit_code: i32,
    /// Wall time of the command.
    pub wall_s: f64,
    /// `bare metal`, or `virtual machine (KVM)`.
    pub machine: String,
    /// Energy per resource and domain.
    pub energy: Vec<EnergyLine>,
    /// Why energy is missing, when it is.
    pub energy_unavailable: Vec<String>,
    /// The whole node split into CPU, memory, GPU and the rest of the node,
    /// when a node meter (hwmon, Redfish) measured.
    pub node: Option<NodeBreakdown>,
    /// Carbon of the machine's energy over the run, g CO2e: the node
    /// meter's where one measured, else top-level domains only (psys, else
    /// packages and DRAM; GPUs), an estimate only where nothing measured
    /// the same resource.
    pub carbon_total_g: Option<f64>,
    /// Carbon of the command's attributed energy, g CO2e, same domains.
    pub command_carbon_total_g: Option<f64>,
    /// Whether the totals include estimated energy.
    pub carbon_total_estimated: bool,
    /// Why carbon is missing, when it is.
    pub carbon_unavailable: Option<String>,
    /// How the command was measured.
    pub measured_as: MeasuredAs,
    /// CPU time, memory and I/O of the command.
    pub command_usage: CommandUsage,
    /// The kernel's figures at reaping (absent for `watch` and `exec --cgroup`).
    pub wait4: Option<Wait4Usage>,
    /// Processes that outlived the command: counted while it ran, then moved
    /// out of its cgroup.
    pub outlived: Vec<u32>,
    /// Every other metric.
    pub metrics: Vec<MetricLine>,
}

fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Grams with a unit that keeps three significant figures readable.
fn format_grams(g: f64) -> String {
    if g >= 1000.0 {
        format!("{:.3} kg", g / 1000.0)
    } else if g >= 1.0 || g == 0.0 {
        format!("{g:.3} g")
    } else {
        format!("{:.3} mg", g * 1000.0)
    }
}

impl NodeBreakdown {
    /// The breakdown's lines in the text report.
    pub fn write_text(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "   node: {:.2} J, {:.2} W average, measured by {}",
            self.energy_j, self.average_power_w, self.source
        );
        for p in &self.parts {
            let name = match p.part.as_str() {
                "cpu" => "CPU",
                "memory" => "memory",
                "gpu" => "GPU",
                _ => "rest of node",
            };
            let mut line = format!(
                "     {:<13} {:>10.2} J{}",
                name,
                p.energy_j,
                if p.estimated { " (estimated)" } else { "" }
            );
            if let Some(c) = p.command_energy_j {
                let _ = write!(line, "   (command: {c:.2} J");
                if p.part == "rest_of_node" {
                    if let Some(s) = self.command_cpu_share {
                        let _ = write!(line, ", its {:.1} % of the machine's CPU time", 100.0 * s);
                    }
                }
                line.push(')');
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some(over) = self.components_exceed_node_j {
            let _ = writeln!(
                out,
                "     the components measured {over:.2} J more than the node meter (its averaging or a lag): the rest of the node is shown as 0, not negative"
            );
        }
        if let Some(c) = self.command_energy_j {
            let share = if self.energy_j > 0.0 {
                100.0 * c / self.energy_j
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "     command's share of the node: {c:.2} J ({share:.0} %)"
            );
        }
    }
}

fn format_value(v: f64, unit: &str) -> String {
    let number = if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    };
    match unit {
        "B" => human_bytes(v),
        "" => number,
        u => format!("{number} {u}"),
    }
}

impl Report {
    /// The text printed on stderr, like `perf stat`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let cmd = self.command.join(" ");
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            " Energy and activity summary for '{cmd}' (wall {:.2} s, exit {}, {}):",
            self.wall_s, self.exit_code, self.machine
        );
        let _ = writeln!(out);
        let width = self
            .energy
            .iter()
            .map(|e| e.label.chars().count())
            .max()
            .unwrap_or(0)
            .max(16);
        for e in &self.energy {
            let mut line = format!(
                "   {:<width$} {:>10.2} J {:>9.2} W",
                e.label, e.energy_j, e.average_power_w
            );
            if let Some(d) = e.command_dynamic_energy_j {
                let share = if e.energy_j > 0.0 {
                    100.0 * d / e.energy_j
                } else {
                    0.0
                };
                let _ = write!(line, "   (command: {d:.2} J dynamic, {share:.0} %");
                if let Some(s) = e.command_static_energy_j {
                    let _ = write!(line, ", {s:.2} J static");
                }
                line.push(')');
            }
            let _ = writeln!(out, "{line}");
            if e.estimated {
                let _ = writeln!(
                    out,
                    "     ^ ESTIMATED, not measured: model {}",
                    e.model.as_deref().unwrap_or("unknown")
                );
                if let Some(why) = &e.estimated_because {
                    let _ = writeln!(out, "       because {why}");
                }
            } else {
                let mut how = "     ^ measured".to_owned();
                if let Some(vm) = &e.seen_from_vm {
                    let _ = write!(
                        how,
                        ", from inside a virtual machine ({vm}): the host's counter, shared with other guests"
                    );
                }
                if e.integrated {
                    how.push_str(", integrated from power readings");
                }
                if e.unmeasured_s > 0.0 {
                    let _ = write!(
                        how,
                        "; NOT measured for {:.2} s of the run (counter frozen or implausible: not counted as 0 J)",
                        e.unmeasured_s
                    );
                }
                if how.len() > "     ^ measured".len() {
                    let _ = writeln!(out, "{how}");
                }
            }
            if let Some(c) = &e.carbon {
                let mut line = format!(
                    "     carbon {} CO2e{}",
                    format_grams(c.carbon_g),
                    if e.estimated || c.intensity_estimated {
                        " (estimated)"
                    } else {
                        ""
                    }
                );
                if let Some(cmd) = c.command_carbon_g {
                    let _ = write!(line, ", command {}", format_grams(cmd));
                }
                let _ = write!(
                    line,
                    " at {:.1} g/kWh ({}), PUE {}",
                    c.intensity_g_per_kwh, c.intensity_source, c.pue
                );
                let _ = writeln!(out, "{line}");
            }
        }
        if let Some(node) = &self.node {
            node.write_text(&mut out);
        }
        for reason in &self.energy_unavailable {
            let _ = writeln!(out, "   energy not measured: {reason}");
        }
        if let Some(total) = self.carbon_total_g {
            let mut line = format!("   carbon total {} CO2e", format_grams(total));
            if let Some(cmd) = self.command_carbon_total_g {
                let _ = write!(line, " (command: {})", format_grams(cmd));
            }
            if self.carbon_total_estimated {
                line.push_str(", ESTIMATED (estimated energy or the world-average intensity)");
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some(reason) = &self.carbon_unavailable {
            let _ = writeln!(out, "   carbon not computed: {reason}");
        }
        let m = &self.measured_as;
        let mut what = match &m.cgroup {
            Some(path) => format!("{} {path}", m.method),
            None => m.method.clone(),
        };
        // A cgroup of the agent's own (exec) is no workload: nothing to say.
        let is_other =
            m.workload.get("workload").is_none_or(|w| w == "other") && m.workload.len() <= 1;
        if !m.workload.is_empty() && !is_other {
            let said: Vec<String> = m.workload.iter().map(|(k, v)| format!("{k}={v}")).collect();
            what.push_str(&format!(" ({})", said.join(", ")));
        }
        let _ = writeln!(out, "   measured as {what}; {}", m.cannot_see);
        let u = &self.command_usage;
        let mut usage = format!(
            "   command CPU time {:.2} s ({:.2} s user, {:.2} s sys",
            u.cpu_s(),
            u.user_cpu_s,
            u.system_cpu_s
        );
        if u.children_cpu_s > 0.0 {
            let _ = write!(usage, ", {:.2} s of reaped children", u.children_cpu_s);
        }
        usage.push(')');
        if let Some(w) = &self.wait4 {
            let _ = write!(
                usage,
                "; wait4: {:.2} s user, {:.2} s sys",
                w.user_cpu_s, w.system_cpu_s
            );
        }
        let _ = writeln!(out, "{usage}");
        let memory = match (u.memory_peak_bytes, u.memory_peak_exact) {
            (Some(b), true) => format!("memory peak {}", human_bytes(b as f64)),
            (Some(b), false) => format!(
                "memory peak {} (sum of the tree's resident sets, sampled at polls)",
                human_bytes(b as f64)
            ),
            (None, _) => "memory peak not measured".to_owned(),
        };
        let io = match (u.io_read_bytes, u.io_write_bytes) {
            (Some(r), Some(w)) => format!(
                "I/O {} read, {} written",
                human_bytes(r as f64),
                human_bytes(w as f64)
            ),
            _ => "I/O not measured (no cgroup io/blkio figures)".to_owned(),
        };
        let _ = writeln!(out, "   {memory}; {io}");
        if !self.outlived.is_empty() {
            let pids: Vec<String> = self.outlived.iter().map(u32::to_string).collect();
            let _ = writeln!(
                out,
                "   {} process(es) outlived the command (pid {}): counted until it ended, left running",
                pids.len(),
                pids.join(", ")
            );
        }
        // The command's own series first, then the machine's; series that
        // stayed at zero are left out of the text (the JSON has them all).
        let shown: Vec<&MetricLine> = self
            .metrics
            .iter()
            .filter(|m| m.scope == "command")
            .chain(self.metrics.iter().filter(|m| m.scope != "command"))
            .filter(|m| !(m.total == Some(0.0) || (m.mean == Some(0.0) && m.max == Some(0.0))))
            .collect();
        if !shown.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "   measurements (delta: total over the run; gauge: mean / max):"
            );
            for m in shown {
                let name = if m.attributes.is_empty() {
                    m.metric.clone()
                } else {
                    format!("{}{{{}}}", m.metric, m.attributes)
                };
                let scope = if m.scope == "command" {
                    "command".to_owned()
                } else {
                    m.resource.clone()
                };
                let value = match (m.total, m.mean, m.max) {
                    (Some(t), _, _) => format_value(t, &m.unit),
                    (_, Some(mean), Some(max)) => {
                        format!(
                            "{} / {}",
                            format_value(mean, &m.unit),
                            format_value(max, &m.unit)
                        )
                    }
                    _ => String::new(),
                };
                let _ = writeln!(out, "     {name:<44} {scope:<22} {value}");
            }
        }
        out
    }

    /// Writes the JSON form.
    pub fn write_json(&self, path: &PathBuf) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}
