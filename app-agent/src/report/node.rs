//! The whole node in the `exec` report: where a node meter measured (hwmon's
//! ACPI power meter, a Redfish BMC, or module meters: Grace Hopper sockets,
//! a Jetson's `VDD_IN`), its energy is split into what the components'
//! sensors measured (CPU, memory, GPU) and the rest of the node (node minus
//! components: power supplies, fans, disks, network cards...), each with
//! the command's share.
//!
//! The command's share of a component is what energy-attribution gave it
//! on that component's lines; of the rest of the node, the rest times the
//! command's share of the machine's CPU time (the rest of the node has no
//! sensor of its own, and what the command makes it do (fans, power
//! supply losses) follows its load). The rest is never negative: when the
//! components add up to more than the node meter (a BMC's averaging window,
//! a power-integrated meter lagging a counter), it is 0 and the report says
//! by how much the components exceeded it.

use crate::report::document::{EnergyLine, NodeBreakdown, NodePart};
use crate::report::series::NODE_DOMAINS;

/// Which part of the node an energy line is, if it is a component.
fn component_of(e: &EnergyLine) -> Option<&'static str> {
    match (e.metric.as_str(), e.domain.as_str()) {
        ("rapl_consumed_energy", "package") | ("estimated_cpu_energy", _) => Some("cpu"),
        // Grace: `grace` is the CPU and its SoC rails (the module holds it).
        ("hwmon_consumed_energy", "grace") => Some("cpu"),
        ("rapl_consumed_energy", "dram") | ("hwmon_consumed_energy", "memory") => Some("memory"),
        ("gpu_consumed_energy", _) | ("hwmon_consumed_energy", "gpu") => Some("gpu"),
        _ => None,
    }
}

/// The node meter the breakdown uses, among possibly several (an ACPI
/// power meter and a BMC read over Redfish see the same power): a cumulative
/// counter over a power integration, then `node` over per-socket `module`
/// meters, then by metric name.
fn node_lines(energy: &[EnergyLine]) -> Vec<&EnergyLine> {
    let candidates = |domain: &str| -> Vec<&EnergyLine> {
        energy
            .iter()
            .filter(|e| e.domain == domain && !e.estimated)
            .filter(|e| NODE_DOMAINS.contains(&e.domain.as_str()))
            .collect()
    };
    for domain in NODE_DOMAINS {
        let lines = candidates(domain);
        let Some(best) = lines
            .iter()
            .min_by_key(|e| (e.integrated, e.metric.clone()))
        else {
            continue;
        };
        // Every line of the chosen meter (one per socket for modules).
        return lines
            .iter()
            .filter(|e| e.metric == best.metric && e.integrated == best.integrated)
            .copied()
            .collect();
    }
    Vec::new()
}

/// The breakdown, when a node meter measured; `cpu_share` is the command's
/// share of the machine's CPU time over the run (when both are known).
pub(crate) fn breakdown(
    energy: &[EnergyLine],
    wall_s: f64,
    cpu_share: Option<f64>,
) -> Option<NodeBreakdown> {
    let nodes = node_lines(energy);
    let first = nodes.first()?;
    let node_j: f64 = nodes.iter().map(|e| e.energy_j).sum();
    let mut parts: Vec<NodePart> = Vec::new();
    for part in ["cpu", "memory", "gpu"] {
        let lines: Vec<&EnergyLine> = energy
            .iter()
            .filter(|e| component_of(e) == Some(part))
            .collect();
        // A measured CPU line stands for the CPU; an estimate only where none measured.
        let measured: Vec<&EnergyLine> = lines.iter().filter(|e| !e.estimated).copied().collect();
        let lines = if measured.is_empty() { lines } else { measured };
        if lines.is_empty() {
            continue;
        }
        let command: Vec<f64> = lines
            .iter()
            .filter_map(|e| {
                let dynamic = e.command_dynamic_energy_j?;
                Some(dynamic + e.command_static_energy_j.unwrap_or(0.0))
            })
            .collect();
        parts.push(NodePart {
            part: part.to_owned(),
            energy_j: lines.iter().map(|e| e.energy_j).sum(),
            command_energy_j: (!command.is_empty()).then(|| command.iter().sum()),
            estimated: lines.iter().any(|e| e.estimated),
        });
    }
    let components_j: f64 = parts.iter().map(|p| p.energy_j).sum();
    let rest_j = node_j - components_j;
    let share = cpu_share.map(|s| s.clamp(0.0, 1.0));
    parts.push(NodePart {
        part: "rest_of_node".to_owned(),
        energy_j: rest_j.max(0.0),
        command_energy_j: share.map(|s| s * rest_j.max(0.0)),
        estimated: false,
    });
    let command: Option<f64> = if parts.iter().all(|p| p.command_energy_j.is_some()) {
        Some(parts.iter().filter_map(|p| p.command_energy_j).sum())
    } else {
        None
    };
    Some(NodeBreakdown {
        source: nodes
            .iter()
            .map(|e| e.label.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
        metric: first.metric.clone(),
        energy_j: node_j,
        average_power_w: node_j / wall_s.max(1e-9),
        parts,
        components_exceed_node_j: (rest_j < 0.0).then_some(-rest_j),
        command_cpu_share: share,
        command_energy_j: command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(metric: &str, domain: &str, j: f64, command: Option<f64>) -> EnergyLine {
        EnergyLine {
            label: format!("{metric} {domain}"),
            resource_kind: "local_machine".into(),
            resource_id: String::new(),
            domain: domain.into(),
            energy_j: j,
            average_power_w: j,
            command_dynamic_energy_j: command,
            command_static_energy_j: None,
            metric: metric.into(),
            estimated: metric == "estimated_cpu_energy",
            integrated: false,
            model: None,
            estimated_because: None,
            seen_from_vm: None,
            unmeasured_s: 0.0,
            carbon: None,
        }
    }

    #[test]
    fn node_splits_into_components_and_the_rest_with_the_commands_share() {
        let energy = [
            line("hwmon_consumed_energy", "node", 400.0, None),
            line("rapl_consumed_energy", "package", 120.0, Some(30.0)),
            line("rapl_consumed_energy", "dram", 20.0, Some(2.0)),
            line("rapl_consumed_energy", "core", 80.0, Some(25.0)),
        ];
        let b = breakdown(&energy, 2.0, Some(0.25)).unwrap();
        assert_eq!(b.energy_j, 400.0);
        assert_eq!(b.average_power_w, 200.0);
        let parts: Vec<(&str, f64, Option<f64>)> = b
            .parts
            .iter()
            .map(|p| (p.part.as_str(), p.energy_j, p.command_energy_j))
            .collect();
        assert_eq!(
            parts,
            [
                ("cpu", 120.0, Some(30.0)),
                ("memory", 20.0, Some(2.0)),
                ("rest_of_node", 260.0, Some(65.0)),
            ]
        );
        assert_eq!(b.command_energy_j, Some(97.0));
        assert_eq!(b.components_exceed_node_j, None);
    }

    #[test]
    fn the_rest_is_never_negative_and_says_so() {
        let energy = [
            line("redfish_consumed_energy", "node", 100.0, None),
            line("rapl_consumed_energy", "package", 120.0, Some(10.0)),
        ];
        let b = breakdown(&energy, 1.0, None).unwrap();
        assert_eq!(b.parts.last().map(|p| p.energy_j), Some(0.0));
        assert_eq!(b.components_exceed_node_j, Some(20.0));
        assert_eq!(
            b.command_energy_j, None,
            "no CPU share: the rest's share is unknown"
        );
    }

    #[test]
    fn a_counter_is_preferred_and_modules_add_up_when_no_node_meter() {
        let mut integrated = line("hwmon_consumed_energy", "node", 300.0, None);
        integrated.integrated = true;
        let energy = [
            integrated,
            line("redfish_consumed_energy", "node", 310.0, None),
        ];
        assert_eq!(
            breakdown(&energy, 1.0, None).map(|b| b.metric),
            Some("redfish_consumed_energy".into())
        );
        let modules = [
            line("hwmon_consumed_energy", "module", 500.0, None),
            line("hwmon_consumed_energy", "module", 450.0, None),
            line("hwmon_consumed_energy", "grace", 200.0, None),
            line("gpu_consumed_energy", "gpu", 600.0, Some(100.0)),
        ];
        let b = breakdown(&modules, 1.0, Some(0.5)).unwrap();
        assert_eq!(b.energy_j, 950.0);
        assert_eq!(b.parts.last().map(|p| p.energy_j), Some(150.0));
    }

    #[test]
    fn no_node_meter_no_breakdown() {
        let energy = [line("rapl_consumed_energy", "package", 1.0, None)];
        assert_eq!(breakdown(&energy, 1.0, None), None);
    }

    #[test]
    fn an_estimated_cpu_counts_only_where_nothing_measured_it() {
        let energy = [
            line("hwmon_consumed_energy", "node", 100.0, None),
            line("estimated_cpu_energy", "package", 40.0, Some(4.0)),
        ];
        let b = breakdown(&energy, 1.0, Some(0.1)).unwrap();
        assert!(b.parts[0].estimated);
        assert_eq!(b.parts[1].energy_j, 60.0);
    }
}
