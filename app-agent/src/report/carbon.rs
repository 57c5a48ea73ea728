//! The carbon lines of the `exec` report: the carbon of each energy line
//! (from energy-to-carbon's `carbon_emission` points) and the totals.

use std::collections::HashMap;

use crate::report::document::{CarbonLine, EnergyLine, NodeBreakdown};
use crate::report::series::{attribute, Aggregate, SeriesKey, CARBON_METRIC, NODE_DOMAINS};

/// Domains whose energy is inside another line's (cores and uncore inside
/// the package): left out of the carbon total.
fn is_subdomain(domain: &str) -> bool {
    matches!(domain, "core" | "uncore")
}

/// The carbon of the energy line `key`: the machine's carbon points derived
/// from the line's metric, and the command's derived from its attributed energy.
pub(crate) fn carbon_of(
    machine: &[(&SeriesKey, &Aggregate)],
    command: &HashMap<SeriesKey, Aggregate>,
    key: &SeriesKey,
    same_domain: &dyn Fn(&SeriesKey) -> bool,
) -> Option<CarbonLine> {
    let of_metric = |k: &SeriesKey, metric: &str| {
        k.metric == CARBON_METRIC
            && attribute(&k.attributes, "energy_metric").as_deref() == Some(metric)
            && same_domain(k)
    };
    let series: Vec<&(&SeriesKey, &Aggregate)> = machine
        .iter()
        .filter(|(k, _)| of_metric(k, &key.metric))
        .collect();
    let (first, _) = series.first()?;
    let carbon_g: f64 = series.iter().map(|(_, a)| a.sum).sum();
    let pue: f64 = attribute(&first.attributes, "pue")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1.0);
    let energy_j: f64 = machine
        .iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, a)| a.sum)
        .sum();
    let facility_kwh = energy_j * pue / 3.6e6;
    let command_series: Vec<f64> = command
        .iter()
        .filter(|(k, _)| of_metric(k, "attributed_energy"))
        .map(|(_, a)| a.sum)
        .collect();
    Some(CarbonLine {
        carbon_g,
        command_carbon_g: (!command_series.is_empty()).then(|| command_series.iter().sum()),
        pue,
        intensity_g_per_kwh: if facility_kwh > 0.0 {
            carbon_g / facility_kwh
        } else {
            0.0
        },
        intensity_source: attribute(&first.attributes, "intensity_source").unwrap_or_default(),
        intensity_estimated: attribute(&first.attributes, "intensity_estimated").as_deref()
            == Some("true"),
    })
}

/// The carbon totals of the machine and the command: the node meter's
/// where one measured (it includes every component; the command's is then
/// its components' carbon plus its share of the rest of the node at the
/// node's intensity); else psys where measured (it includes the packages),
/// else every top-level CPU domain, plus GPUs; an estimated line counts
/// only where no measured line covers its resource.
pub(crate) fn carbon_totals(
    energy: &[EnergyLine],
    node: Option<&NodeBreakdown>,
) -> (Option<f64>, Option<f64>, bool) {
    if let Some(totals) = node.and_then(|n| node_carbon(energy, n)) {
        return totals;
    }
    let psys = energy
        .iter()
        .any(|e| e.domain == "psys" && e.carbon.is_some());
    let counted: Vec<&EnergyLine> = energy
        .iter()
        .filter(|e| e.carbon.is_some() && !is_subdomain(&e.domain))
        .filter(|e| !psys || e.domain == "psys" || e.domain == "gpu")
        .filter(|e| {
            !e.estimated
                || !energy.iter().any(|m| {
                    !m.estimated
                        && m.resource_kind == e.resource_kind
                        && m.resource_id == e.resource_id
                })
        })
        .collect();
    if counted.is_empty() {
        return (None, None, false);
    }
    let total = counted
        .iter()
        .filter_map(|e| e.carbon.as_ref())
        .map(|c| c.carbon_g)
        .sum();
    let command: Vec<f64> = counted
        .iter()
        .filter_map(|e| e.carbon.as_ref()?.command_carbon_g)
        .collect();
    let command = (!command.is_empty()).then(|| command.iter().sum());
    let estimated = counted
        .iter()
        .any(|e| e.estimated || e.carbon.as_ref().is_some_and(|c| c.intensity_estimated));
    (Some(total), command, estimated)
}

/// The totals from the node meter's lines, when they carry carbon.
fn node_carbon(
    energy: &[EnergyLine],
    node: &NodeBreakdown,
) -> Option<(Option<f64>, Option<f64>, bool)> {
    let lines: Vec<&EnergyLine> = energy
        .iter()
        .filter(|e| e.metric == node.metric && NODE_DOMAINS.contains(&e.domain.as_str()))
        .collect();
    let carbons: Vec<&CarbonLine> = lines.iter().filter_map(|e| e.carbon.as_ref()).collect();
    if carbons.is_empty() {
        return None;
    }
    let total: f64 = carbons.iter().map(|c| c.carbon_g).sum();
    let per_joule = if node.energy_j > 0.0 {
        total / node.energy_j
    } else {
        0.0
    };
    let command = node.command_energy_j.map(|j| j * per_joule);
    let estimated = carbons.iter().any(|c| c.intensity_estimated);
    Some((Some(total), command, estimated))
}
