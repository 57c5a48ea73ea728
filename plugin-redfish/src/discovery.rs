//! Which chassis to measure and where each one's figures are, found once
//! at start (off the poll path) with a bounded number of requests.
//!
//! For each chassis, the best source, in this order:
//! 1. a cumulative energy counter: `EnvironmentMetrics.EnergyJoules`, else
//!    `EnvironmentMetrics.EnergykWh`, else a member of the `Sensors`
//!    collection with `ReadingType` `EnergyJoules`, `EnergyWh` or
//!    `EnergykWh` whose `PhysicalContext` is the chassis (or absent);
//! 2. else power, integrated over the polls' timestamps:
//!    `EnvironmentMetrics.PowerWatts`, else the older
//!    `Power.PowerControl[0].PowerConsumedWatts`.
//!
//! Chosen automatically (no `chassis` configured), only chassis whose
//! `ChassisType` is a whole node or enclosure are measured, and a chassis
//! contained (`Links.ContainedBy`, at any depth) in another measured one is
//! skipped: its power is already in its parent's, and counting both would
//! count it twice.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::Value;

use crate::client::{Client, FetchError, SERVICE_ROOT};

/// The unit of a cumulative energy reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnergyUnit {
    /// Joules.
    Joules,
    /// Watt-hours.
    WattHours,
    /// Kilowatt-hours (the coarsest: see the README on resolution).
    KilowattHours,
}

impl EnergyUnit {
    /// Joules in one unit.
    pub fn joules(self) -> f64 {
        match self {
            EnergyUnit::Joules => 1.0,
            EnergyUnit::WattHours => 3600.0,
            EnergyUnit::KilowattHours => 3.6e6,
        }
    }

    /// The coarsest step a BMC's reading in this unit is seen to take, J:
    /// 0.01 kWh, 1 Wh, 1 J. Even a short interval may see one such step
    /// (the counter ticks whenever it crosses it).
    pub fn coarsest_step_j(self) -> f64 {
        match self {
            EnergyUnit::Joules => 1.0,
            EnergyUnit::WattHours => 3600.0,
            EnergyUnit::KilowattHours => 36_000.0,
        }
    }
}

/// One number inside one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The resource's path.
    pub path: String,
    /// A JSON pointer to the number inside it (`/EnergykWh/Reading`).
    pub pointer: String,
    /// What the points' `sensor` attribute says (`EnvironmentMetrics.EnergykWh`).
    pub sensor: String,
}

impl Field {
    /// The number in `resource`, if it is one.
    pub fn read(&self, resource: &Value) -> Option<f64> {
        resource.pointer(&self.pointer).and_then(Value::as_f64)
    }
}

/// Where one chassis's figures are.
#[derive(Debug, Clone, PartialEq)]
pub struct ChassisPlan {
    /// The chassis's `Id`.
    pub id: String,
    /// Its `ChassisType` (for the inventory).
    pub chassis_type: String,
    /// A cumulative energy counter, if the BMC has one.
    pub energy: Option<(Field, EnergyUnit)>,
    /// Power: read at each poll when there is no counter (and integrated),
    /// or when it sits in the counter's resource (one request gives both).
    pub power: Option<Field>,
}

impl ChassisPlan {
    /// The resources a poll reads (one or two).
    pub fn paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.energy.iter().map(|(f, _)| f.path.as_str()).collect();
        if let Some(p) = &self.power {
            if !paths.contains(&p.path.as_str()) {
                paths.push(&p.path);
            }
        }
        paths
    }

    /// One line for `doctor`: the source and how it is reported.
    pub fn describe(&self) -> String {
        match (&self.energy, &self.power) {
            (Some((e, _)), _) => format!(
                "chassis {}: {} (cumulative) -> {} domain=node",
                self.id,
                e.sensor,
                crate::ENERGY_METRIC
            ),
            (None, Some(p)) => format!(
                "chassis {}: {} (power, integrated) -> {} domain=node integrated=true",
                self.id,
                p.sensor,
                crate::ENERGY_METRIC
            ),
            (None, None) => format!("chassis {}: no power or energy reading", self.id),
        }
    }
}

/// The `ChassisType`s whose power is a whole node's (or a whole
/// enclosure's): the others are parts (Card, Module, PowerSupply...) or
/// groups of nodes (Rack, Row...).
pub const NODE_CHASSIS_TYPES: &[&str] = &[
    "RackMount",
    "StandAlone",
    "Blade",
    "Sled",
    "Enclosure",
    "Cartridge",
];

/// The most chassis, and sensors per chassis, looked at.
pub const MAX_MEMBERS: usize = 64;

/// What discovery found.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// The chassis to measure.
    pub plans: Vec<ChassisPlan>,
    /// One line per chassis not measured, and why.
    pub skipped: Vec<String>,
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A request failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// It took longer than allowed.
    #[error("discovery took longer than {0} s (a slow BMC?)")]
    TooLong(u64),
    /// A configured chassis is not there.
    #[error("the BMC has no chassis {missing:?} (it has {available:?})")]
    NoSuchChassis {
        /// The ids not found.
        missing: Vec<String>,
        /// The ids it has.
        available: Vec<String>,
    },
}

struct Walker<'a> {
    client: &'a Client,
    deadline: Instant,
    budget_s: u64,
}

impl Walker<'_> {
    fn get(&self, path: &str) -> Result<Value, DiscoveryError> {
        if Instant::now() >= self.deadline {
            return Err(DiscoveryError::TooLong(self.budget_s));
        }
        Ok(self.client.get(path)?)
    }

    /// The `@odata.id` of each member of the collection at `path`.
    fn members(&self, path: &str) -> Result<Vec<String>, DiscoveryError> {
        let collection = self.get(path)?;
        Ok(collection
            .get("Members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
            .take(MAX_MEMBERS)
            .map(str::to_owned)
            .collect())
    }
}

fn link<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn number_at(value: &Value, pointer: &str) -> bool {
    value.pointer(pointer).is_some_and(Value::is_number)
}

/// The energy reading types of the Sensor schema, and their units.
fn sensor_energy_unit(sensor: &Value) -> Option<EnergyUnit> {
    match sensor.get("ReadingType").and_then(Value::as_str)? {
        "EnergyJoules" => Some(EnergyUnit::Joules),
        "EnergyWh" => Some(EnergyUnit::WattHours),
        "EnergykWh" => Some(EnergyUnit::KilowattHours),
        _ => None,
    }
}

fn plan_chassis(
    w: &Walker<'_>,
    chassis: &Value,
    id: &str,
    chassis_type: &str,
) -> Result<ChassisPlan, DiscoveryError> {
    let mut plan = ChassisPlan {
        id: id.to_owned(),
        chassis_type: chassis_type.to_owned(),
        energy: None,
        power: None,
    };
    if let Some(path) = link(chassis, "/EnvironmentMetrics/@odata.id") {
        let env = w.get(path)?;
        let field = |name: &str| Field {
            path: path.to_owned(),
            pointer: format!("/{name}/Reading"),
            sensor: format!("EnvironmentMetrics.{name}"),
        };
        if number_at(&env, "/EnergyJoules/Reading") {
            plan.energy = Some((field("EnergyJoules"), EnergyUnit::Joules));
        } else if number_at(&env, "/EnergykWh/Reading") {
            plan.energy = Some((field("EnergykWh"), EnergyUnit::KilowattHours));
        }
        if number_at(&env, "/PowerWatts/Reading") {
            plan.power = Some(field("PowerWatts"));
        }
    }
    if plan.energy.is_none() {
        if let Some(path) = link(chassis, "/Sensors/@odata.id") {
            for member in w.members(path)? {
                let sensor = w.get(&member)?;
                let whole_chassis = matches!(
                    sensor.get("PhysicalContext").and_then(Value::as_str),
                    None | Some("Chassis")
                );
                if let (Some(unit), true, true) = (
                    sensor_energy_unit(&sensor),
                    whole_chassis,
                    number_at(&sensor, "/Reading"),
                ) {
                    let sensor_id = sensor
                        .get("Id")
                        .and_then(Value::as_str)
                        .unwrap_or_else(|| last_segment(&member));
                    plan.energy = Some((
                        Field {
                            path: member.clone(),
                            pointer: "/Reading".into(),
                            sensor: format!("Sensors/{sensor_id}"),
                        },
                        unit,
                    ));
                    break;
                }
            }
        }
    }
    if plan.energy.is_none() && plan.power.is_none() {
        if let Some(path) = link(chassis, "/Power/@odata.id") {
            let power = w.get(path)?;
            if number_at(&power, "/PowerControl/0/PowerConsumedWatts") {
                plan.power = Some(Field {
                    path: path.to_owned(),
                    pointer: "/PowerControl/0/PowerConsumedWatts".into(),
                    sensor: "Power.PowerConsumedWatts".into(),
                });
            }
        }
    }
    // Power read from another resource than the counter would cost a
    // second request per poll for a gauge only: not read.
    if let (Some((e, _)), Some(p)) = (&plan.energy, &plan.power) {
        if e.path != p.path {
            plan.power = None;
        }
    }
    Ok(plan)
}

/// Why one chassis's discovery stopped: the BMC as a whole (no answer,
/// credentials refused, the time budget spent) stops the discovery; a
/// resource of that chassis that answers an error status or not JSON only
/// skips that chassis (one broken part of a BMC's tree must not cost the
/// node's power).
enum Skip {
    Fatal(DiscoveryError),
    Chassis(DiscoveryError),
}

fn skippable<T>(result: Result<T, DiscoveryError>) -> Result<T, Skip> {
    result.map_err(|e| match e {
        DiscoveryError::Fetch(FetchError::Status { .. } | FetchError::Json { .. }) => {
            Skip::Chassis(e)
        }
        e => Skip::Fatal(e),
    })
}

fn last_segment(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// Finds the chassis to measure: those of `wanted` (ids), or, when it is
/// empty, every node-level chassis not contained in another measured one.
/// Gives up after `budget` (the whole discovery, not each request).
pub fn discover(
    client: &Client,
    wanted: &[String],
    budget: std::time::Duration,
) -> Result<Discovery, DiscoveryError> {
    let w = Walker {
        client,
        deadline: Instant::now() + budget,
        budget_s: budget.as_secs(),
    };
    let root = w.get(SERVICE_ROOT)?;
    let collection = link(&root, "/Chassis/@odata.id").unwrap_or("/redfish/v1/Chassis");
    let mut found = Discovery::default();
    let mut available = Vec::new();
    // path -> (plan index, ContainedBy path)
    let mut measured: HashMap<String, usize> = HashMap::new();
    let mut parent_of: HashMap<String, String> = HashMap::new();
    for member in w.members(collection)? {
        let chassis = match skippable(w.get(&member)) {
            Ok(chassis) => chassis,
            Err(Skip::Fatal(e)) => return Err(e),
            Err(Skip::Chassis(e)) => {
                found.skipped.push(format!(
                    "chassis {member}: cannot be read ({e}); the others are measured"
                ));
                continue;
            }
        };
        let id = chassis
            .get("Id")
            .and_then(Value::as_str)
            .unwrap_or_else(|| last_segment(&member))
            .to_owned();
        available.push(id.clone());
        let path = member.trim_end_matches('/').to_owned();
        if let Some(parent) = link(&chassis, "/Links/ContainedBy/@odata.id") {
            parent_of.insert(path.clone(), parent.trim_end_matches('/').to_owned());
        }
        let chassis_type = chassis
            .get("ChassisType")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        if !wanted.is_empty() && !wanted.contains(&id) {
            continue;
        }
        if wanted.is_empty() && !NODE_CHASSIS_TYPES.contains(&chassis_type.as_str()) {
            found.skipped.push(format!(
                "chassis {id}: ChassisType {chassis_type} is not a whole node (set chassis = [\"{id}\"] to measure it)"
            ));
            continue;
        }
        let plan = match skippable(plan_chassis(&w, &chassis, &id, &chassis_type)) {
            Ok(plan) => plan,
            Err(Skip::Fatal(e)) => return Err(e),
            Err(Skip::Chassis(e)) => {
                found.skipped.push(format!(
                    "chassis {id}: a resource of it cannot be read ({e}); the others are measured"
                ));
                continue;
            }
        };
        if plan.energy.is_none() && plan.power.is_none() {
            found.skipped.push(format!(
                "chassis {id}: no EnvironmentMetrics, energy sensor or Power reading"
            ));
            continue;
        }
        measured.insert(path, found.plans.len());
        found.plans.push(plan);
    }
    if !wanted.is_empty() {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|id| !available.contains(id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(DiscoveryError::NoSuchChassis { missing, available });
        }
        return Ok(found);
    }
    // Automatic choice: drop a chassis inside another measured one.
    let mut inside: HashSet<usize> = HashSet::new();
    for (path, &index) in &measured {
        let mut seen = HashSet::new();
        let mut current = path.clone();
        while let Some(parent) = parent_of.get(&current) {
            if !seen.insert(parent.clone()) {
                break; // a loop in ContainedBy
            }
            if let Some(&outer) = measured.get(parent) {
                found.skipped.push(format!(
                    "chassis {}: inside chassis {}, already measured",
                    found.plans[index].id, found.plans[outer].id
                ));
                inside.insert(index);
                break;
            }
            current = parent.clone();
        }
    }
    let mut index = 0;
    found.plans.retain(|_| {
        let keep = !inside.contains(&index);
        index += 1;
        keep
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeBmc;
    use serde_json::json;
    use std::time::Duration;

    fn bmc_with(chassis: &[(&str, Value)]) -> FakeBmc {
        let bmc = FakeBmc::new("u", "p");
        let members: Vec<Value> = chassis
            .iter()
            .map(|(id, _)| json!({"@odata.id": format!("/redfish/v1/Chassis/{id}")}))
            .collect();
        bmc.put("/redfish/v1/Chassis", json!({ "Members": members }));
        for (id, value) in chassis {
            bmc.put(&format!("/redfish/v1/Chassis/{id}"), value.clone());
        }
        bmc
    }

    fn run(bmc: &FakeBmc, wanted: &[&str]) -> Result<Discovery, DiscoveryError> {
        let client = bmc.client("u", "p");
        client.login().unwrap();
        let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
        discover(&client, &wanted, Duration::from_secs(10))
    }

    #[test]
    fn a_broken_chassis_is_skipped_with_a_line_and_the_others_measured() {
        let bmc = bmc_with(&[
            (
                "1U",
                json!({"Id": "1U", "ChassisType": "RackMount",
                       "Power": {"@odata.id": "/redfish/v1/Chassis/1U/Power"}}),
            ),
            (
                "2U",
                json!({"Id": "2U", "ChassisType": "RackMount",
                       "EnvironmentMetrics": {"@odata.id": "/redfish/v1/Chassis/2U/EnvironmentMetrics"}}),
            ),
        ]);
        bmc.put(
            "/redfish/v1/Chassis/1U/Power",
            json!({"PowerControl": [{"PowerConsumedWatts": 250}]}),
        );
        // 2U's EnvironmentMetrics is not there (404), and a third member
        // of the collection has no document at all.
        bmc.put(
            "/redfish/v1/Chassis",
            json!({"Members": [
                {"@odata.id": "/redfish/v1/Chassis/1U"},
                {"@odata.id": "/redfish/v1/Chassis/2U"},
                {"@odata.id": "/redfish/v1/Chassis/Gone"}
            ]}),
        );
        let d = run(&bmc, &[]).unwrap();
        let ids: Vec<&str> = d.plans.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["1U"]);
        assert!(
            d.skipped
                .iter()
                .any(|l| l.starts_with("chassis 2U: a resource of it cannot be read (HTTP 404")),
            "{:?}",
            d.skipped
        );
        assert!(
            d.skipped
                .iter()
                .any(|l| l.starts_with("chassis /redfish/v1/Chassis/Gone: cannot be read")),
            "{:?}",
            d.skipped
        );
        // No answer at all stops the discovery: the BMC, not a chassis.
        bmc.fault(Some(Err(crate::client::TransportError::Io(
            "connection refused".into(),
        ))));
        let client = bmc.client("u", "p");
        assert!(discover(&client, &[], Duration::from_secs(10)).is_err());
    }

    #[test]
    fn energy_counter_first_then_power() {
        let bmc = bmc_with(&[(
            "1U",
            json!({"Id": "1U", "ChassisType": "RackMount",
                   "EnvironmentMetrics": {"@odata.id": "/redfish/v1/Chassis/1U/EnvironmentMetrics"},
                   "Power": {"@odata.id": "/redfish/v1/Chassis/1U/Power"}}),
        )]);
        bmc.put(
            "/redfish/v1/Chassis/1U/EnvironmentMetrics",
            json!({"EnergykWh": {"Reading": 12.5}, "PowerWatts": {"Reading": 300.0}}),
        );
        let d = run(&bmc, &[]).unwrap();
        assert_eq!(d.plans.len(), 1);
        let plan = &d.plans[0];
        assert_eq!(plan.energy.as_ref().unwrap().1, EnergyUnit::KilowattHours);
        assert_eq!(
            plan.energy.as_ref().unwrap().0.sensor,
            "EnvironmentMetrics.EnergykWh"
        );
        assert_eq!(
            plan.power.as_ref().unwrap().sensor,
            "EnvironmentMetrics.PowerWatts"
        );
        assert_eq!(
            plan.paths(),
            vec!["/redfish/v1/Chassis/1U/EnvironmentMetrics"]
        );
        assert_eq!(
            plan.describe(),
            "chassis 1U: EnvironmentMetrics.EnergykWh (cumulative) -> redfish_consumed_energy domain=node"
        );
        // Joules are preferred to kWh (finer).
        bmc.put(
            "/redfish/v1/Chassis/1U/EnvironmentMetrics",
            json!({"EnergyJoules": {"Reading": 5.0}, "EnergykWh": {"Reading": 12.5}}),
        );
        let d = run(&bmc, &[]).unwrap();
        assert_eq!(d.plans[0].energy.as_ref().unwrap().1, EnergyUnit::Joules);
        // Neither: the old Power resource, integrated.
        bmc.put("/redfish/v1/Chassis/1U/EnvironmentMetrics", json!({}));
        bmc.put(
            "/redfish/v1/Chassis/1U/Power",
            json!({"PowerControl": [{"PowerConsumedWatts": 250}]}),
        );
        let d = run(&bmc, &[]).unwrap();
        assert!(d.plans[0].energy.is_none());
        assert_eq!(
            d.plans[0].power.as_ref().unwrap().sensor,
            "Power.PowerConsumedWatts"
        );
        assert!(d.plans[0].describe().contains("integrated=true"));
    }

    #[test]
    fn an_energy_sensor_of_the_chassis_is_found_not_one_of_a_part() {
        let bmc = bmc_with(&[(
            "1",
            json!({"Id": "1", "ChassisType": "Blade",
                   "Sensors": {"@odata.id": "/redfish/v1/Chassis/1/Sensors"}}),
        )]);
        bmc.put(
            "/redfish/v1/Chassis/1/Sensors",
            json!({"Members": [
                {"@odata.id": "/redfish/v1/Chassis/1/Sensors/PS1Energy"},
                {"@odata.id": "/redfish/v1/Chassis/1/Sensors/Temp"},
                {"@odata.id": "/redfish/v1/Chassis/1/Sensors/Energy"}]}),
        );
        bmc.put(
            "/redfish/v1/Chassis/1/Sensors/PS1Energy",
            json!({"Id": "PS1Energy", "ReadingType": "EnergyJoules", "PhysicalContext": "PowerSupply", "Reading": 1.0}),
        );
        bmc.put(
            "/redfish/v1/Chassis/1/Sensors/Temp",
            json!({"Id": "Temp", "ReadingType": "Temperature", "Reading": 30.0}),
        );
        bmc.put(
            "/redfish/v1/Chassis/1/Sensors/Energy",
            json!({"Id": "Energy", "ReadingType": "EnergyWh", "PhysicalContext": "Chassis", "Reading": 100.0}),
        );
        let d = run(&bmc, &[]).unwrap();
        let (field, unit) = d.plans[0].energy.clone().unwrap();
        assert_eq!(field.sensor, "Sensors/Energy");
        assert_eq!(unit, EnergyUnit::WattHours);
    }

    #[test]
    fn parts_and_contained_chassis_are_not_counted_twice() {
        let env =
            |id: &str| json!({"@odata.id": format!("/redfish/v1/Chassis/{id}/EnvironmentMetrics")});
        let bmc = bmc_with(&[
            (
                "Enc",
                json!({"Id": "Enc", "ChassisType": "Enclosure", "EnvironmentMetrics": env("Enc")}),
            ),
            (
                "Blade1",
                json!({"Id": "Blade1", "ChassisType": "Blade", "EnvironmentMetrics": env("Blade1"),
                "Links": {"ContainedBy": {"@odata.id": "/redfish/v1/Chassis/Enc"}}}),
            ),
            (
                "Board",
                json!({"Id": "Board", "ChassisType": "Card", "EnvironmentMetrics": env("Board"),
                "Links": {"ContainedBy": {"@odata.id": "/redfish/v1/Chassis/Blade1"}}}),
            ),
        ]);
        for id in ["Enc", "Blade1", "Board"] {
            bmc.put(
                &format!("/redfish/v1/Chassis/{id}/EnvironmentMetrics"),
                json!({"PowerWatts": {"Reading": 100.0}}),
            );
        }
        let d = run(&bmc, &[]).unwrap();
        let ids: Vec<&str> = d.plans.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["Enc"]);
        assert_eq!(d.skipped.len(), 2, "{:?}", d.skipped);
        // Configured: exactly those.
        let d = run(&bmc, &["Blade1"]).unwrap();
        let ids: Vec<&str> = d.plans.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["Blade1"]);
        let err = run(&bmc, &["2U"]).unwrap_err().to_string();
        assert!(
            err.contains("no chassis [\"2U\"]") && err.contains("Blade1"),
            "{err}"
        );
    }
}
