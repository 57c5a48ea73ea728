//! Points fixtures for the tests of outputs (feature `fixtures`): the
//! metrics and points of a `points.json` file, as output plugins keep them
//! under `tests/fixtures/<case>/`.
//!
//! ```json
//! {
//!   "metrics": [{"name": "energy", "type": "f64", "unit": "J", "kind": "delta"}],
//!   "points": [{"t": 1700000000000000000, "metric": "energy",
//!               "resource": ["cpu_package", "0"], "consumer": ["local_machine", ""],
//!               "value": {"f64": 1.5}, "attributes": [["domain", {"str": "package"}]]}]
//! }
//! ```
//!
//! `unit` (a UCUM code with an optional prefix: `J`, `uJ`, `ms`, `By`, `%`,
//! `{packet}`; default `1`), `kind` (`counter`, `delta`, `gauge`; default
//! `gauge`) and `description` are optional. A float may be written as a
//! string (`"NaN"`, `"inf"`). Attribute values are `{"str"|"u64"|"i64"|"f64"|"bool": v}`.
//! Errors say which entry is wrong; tests unwrap them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::measurement::{
    AttributeValue, MeasurementPoint, MeasurementValue, Resource, ResourceConsumer, Timestamp,
};
use crate::metrics::{
    Metric, MetricId, MetricKind, MetricRegistry, PrefixedUnit, Unit, UnitPrefix, ValueType,
};

/// One point of a fixture, its metric by name.
#[derive(Debug, Clone)]
pub struct FixturePoint {
    /// The metric's name.
    pub metric: String,
    /// The point, whose `metric` id is filled in by [`PointsFixture::points_with`].
    point: MeasurementPoint,
}

/// The metrics and points of a fixture file.
#[derive(Debug, Clone)]
pub struct PointsFixture {
    /// Metric definitions, in file order.
    pub metrics: Vec<Metric>,
    /// Points, in file order.
    pub points: Vec<FixturePoint>,
}

type Error = String;

fn field<'v>(v: &'v Value, key: &str, what: &str) -> Result<&'v Value, Error> {
    v.get(key)
        .ok_or_else(|| format!("{what}: `{key}` is missing"))
}

fn text<'v>(v: &'v Value, what: &str) -> Result<&'v str, Error> {
    v.as_str()
        .ok_or_else(|| format!("{what}: expected a string, found {v}"))
}

fn float(v: &Value, what: &str) -> Result<f64, Error> {
    match v {
        Value::String(s) => s
            .parse()
            .map_err(|_| format!("{what}: `{s}` is not a number")),
        other => other
            .as_f64()
            .ok_or_else(|| format!("{what}: `{other}` is not a number")),
    }
}

fn owned(v: &Value, what: &str) -> Result<Cow<'static, str>, Error> {
    Ok(Cow::Owned(text(v, what)?.to_owned()))
}

fn number<T: std::str::FromStr>(v: &Value, what: &str) -> Result<T, Error> {
    let s = text(v, what)?;
    s.parse()
        .map_err(|_| format!("{what}: `{s}` is not a number"))
}

fn unit(code: &str) -> Result<PrefixedUnit, Error> {
    const BASES: [(&str, Unit); 10] = [
        ("1", Unit::Unity),
        ("s", Unit::Second),
        ("W", Unit::Watt),
        ("J", Unit::Joule),
        ("V", Unit::Volt),
        ("A", Unit::Ampere),
        ("Hz", Unit::Hertz),
        ("Cel", Unit::DegreeCelsius),
        ("By", Unit::Byte),
        ("%", Unit::Percent),
    ];
    if let Some(name) = code.strip_prefix('{').and_then(|c| c.strip_suffix('}')) {
        return Ok(PrefixedUnit::from(Unit::Custom {
            ucum: code.to_owned(),
            symbol: format!("{name}s"),
        }));
    }
    let prefixes = [
        ("", UnitPrefix::Plain),
        ("n", UnitPrefix::Nano),
        ("u", UnitPrefix::Micro),
        ("m", UnitPrefix::Milli),
        ("k", UnitPrefix::Kilo),
        ("M", UnitPrefix::Mega),
        ("G", UnitPrefix::Giga),
    ];
    for (p, prefix) in prefixes {
        if let Some(rest) = code.strip_prefix(p) {
            if let Some((_, base)) = BASES.iter().find(|(c, _)| *c == rest) {
                return Ok(PrefixedUnit {
                    prefix,
                    base: base.clone(),
                });
            }
        }
    }
    Err(format!("unknown unit `{code}`"))
}

fn metric(m: &Value) -> Result<Metric, Error> {
    let name = text(field(m, "name", "metric")?, "metric name")?;
    let what = format!("metric {name}");
    let value_type = match m.get("type").and_then(Value::as_str) {
        Some("u64") => ValueType::U64,
        Some("f64") | None => ValueType::F64,
        Some(other) => return Err(format!("{what}: type `{other}` (u64 or f64)")),
    };
    let kind = match m.get("kind").and_then(Value::as_str) {
        Some("counter") => MetricKind::Counter,
        Some("delta") => MetricKind::Delta,
        Some("gauge") | None => MetricKind::Gauge,
        Some(other) => return Err(format!("{what}: kind `{other}` (counter, delta, gauge)")),
    };
    let unit = unit(m.get("unit").and_then(Value::as_str).unwrap_or("1"))
        .map_err(|e| format!("{what}: {e}"))?;
    let description = m
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("fixture");
    Ok(Metric::new(name, unit, value_type, kind, description))
}

fn resource(v: &Value) -> Result<Resource, Error> {
    let what = "resource";
    let (kind, id) = (text(&v[0], what)?, &v[1]);
    Ok(match kind {
        "local_machine" => Resource::LocalMachine,
        "cpu_package" => Resource::CpuPackage {
            id: number(id, what)?,
        },
        "cpu_core" => Resource::CpuCore {
            id: number(id, what)?,
        },
        "dram" => Resource::Dram {
            pkg_id: number(id, what)?,
        },
        "gpu" => Resource::Gpu {
            bus_id: owned(id, what)?,
        },
        _ => Resource::Custom {
            kind: owned(&v[0], what)?,
            id: owned(id, what)?,
        },
    })
}

fn consumer(v: &Value) -> Result<ResourceConsumer, Error> {
    let what = "consumer";
    let (kind, id) = (text(&v[0], what)?, &v[1]);
    Ok(match kind {
        "local_machine" => ResourceConsumer::LocalMachine,
        "process" => ResourceConsumer::Process {
            pid: number(id, what)?,
        },
        "cgroup" => ResourceConsumer::ControlGroup {
            path: owned(id, what)?.into(),
        },
        _ => ResourceConsumer::Custom {
            kind: owned(&v[0], what)?,
            id: owned(id, what)?,
        },
    })
}

fn value(v: &Value) -> Result<MeasurementValue, Error> {
    if let Some(u) = v.get("u64") {
        return u
            .as_u64()
            .map(MeasurementValue::U64)
            .ok_or_else(|| format!("value: `{u}` is not a u64"));
    }
    Ok(MeasurementValue::F64(float(
        field(v, "f64", "value")?,
        "value",
    )?))
}

fn attribute(v: &Value) -> Result<AttributeValue, Error> {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return Err(format!(
            "attribute value: expected {{\"str\": ...}}, found {v}"
        ));
    };
    let bad = || format!("attribute value: `{inner}` is not a {kind}");
    Ok(match kind.as_str() {
        "str" => AttributeValue::from(text(inner, "attribute value")?.to_owned()),
        "u64" => AttributeValue::U64(inner.as_u64().ok_or_else(bad)?),
        "i64" => AttributeValue::I64(inner.as_i64().ok_or_else(bad)?),
        "f64" => AttributeValue::F64(float(inner, "attribute value")?),
        "bool" => AttributeValue::Bool(inner.as_bool().ok_or_else(bad)?),
        other => return Err(format!("unknown attribute type `{other}`")),
    })
}

fn point(p: &Value, index: usize) -> Result<FixturePoint, Error> {
    let what = format!("point {index}");
    let at = |e: Error| format!("{what}: {e}");
    let metric = text(field(p, "metric", &what)?, &what)?.to_owned();
    let attributes = match p.get("attributes") {
        None => Vec::new(),
        Some(list) => list
            .as_array()
            .ok_or_else(|| at("attributes: expected a list".into()))?
            .iter()
            .map(|a| Ok((owned(&a[0], "attribute name")?, attribute(&a[1])?)))
            .collect::<Result<_, Error>>()
            .map_err(at)?,
    };
    let timestamp = field(p, "t", &what)?
        .as_u64()
        .ok_or_else(|| at("`t` must be nanoseconds since the epoch".into()))?;
    Ok(FixturePoint {
        metric,
        point: MeasurementPoint {
            timestamp: Timestamp::from_unix_nanos(timestamp),
            // Replaced by the registered id.
            metric: MetricId(u32::MAX),
            resource: resource(field(p, "resource", &what)?).map_err(at)?,
            consumer: consumer(field(p, "consumer", &what)?).map_err(at)?,
            value: value(field(p, "value", &what)?).map_err(at)?,
            attributes: attributes.into(),
        },
    })
}

impl PointsFixture {
    /// Parses a fixture document.
    pub fn parse(json: &str) -> Result<Self, Error> {
        let doc: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let list = |key: &str| {
            doc.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| format!("`{key}` must be a list"))
        };
        let metrics = list("metrics")?
            .iter()
            .map(metric)
            .collect::<Result<_, _>>()?;
        let points = list("points")?
            .iter()
            .enumerate()
            .map(|(i, p)| point(p, i))
            .collect::<Result<_, _>>()?;
        Ok(Self { metrics, points })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The points with the ids their metrics got when registered (`ids`
    /// by name, e.g. from `PluginStartContext::create_metric`).
    pub fn points_with(
        &self,
        ids: &HashMap<String, MetricId>,
    ) -> Result<Vec<MeasurementPoint>, Error> {
        self.points
            .iter()
            .map(|p| {
                let id = ids
                    .get(&p.metric)
                    .ok_or_else(|| format!("point of unknown metric `{}`", p.metric))?;
                Ok(MeasurementPoint {
                    metric: *id,
                    ..p.point.clone()
                })
            })
            .collect()
    }

    /// A registry of the fixture's metrics and the points with their ids.
    pub fn registry(&self) -> Result<(MetricRegistry, Vec<MeasurementPoint>), Error> {
        let mut registry = MetricRegistry::new();
        let mut ids = HashMap::new();
        for m in &self.metrics {
            let id = registry.register(m.clone()).map_err(|e| e.to_string())?;
            ids.insert(m.name.clone(), id);
        }
        let points = self.points_with(&ids)?;
        Ok((registry, points))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixture_reads_back_with_units_kinds_and_attributes() {
        let f = PointsFixture::parse(
            r#"{"metrics": [{"name": "e", "unit": "uJ", "kind": "delta"}, {"name": "n", "type": "u64", "unit": "{packet}"}],
                "points": [{"t": 5, "metric": "e", "resource": ["cpu_package", "1"], "consumer": ["process", "42"],
                            "value": {"f64": "NaN"}, "attributes": [["a", {"bool": true}]]},
                           {"t": 6, "metric": "n", "resource": ["disk", "sda"], "consumer": ["cgroup", "/x"], "value": {"u64": 7}}]}"#,
        )
        .unwrap();
        assert_eq!(f.metrics[0].unit.ucum_code(), "uJ");
        assert_eq!(f.metrics[0].kind, MetricKind::Delta);
        assert_eq!(f.metrics[1].unit.ucum_code(), "{packet}");
        let (registry, points) = f.registry().unwrap();
        assert_eq!(registry.len(), 2);
        assert_eq!(points[0].resource, Resource::CpuPackage { id: 1 });
        assert_eq!(points[0].consumer, ResourceConsumer::Process { pid: 42 });
        assert!(points[0].value.as_f64().is_nan());
        assert_eq!(points[0].attr("a"), Some(&AttributeValue::Bool(true)));
        assert_eq!(points[1].value, MeasurementValue::U64(7));
        let err = PointsFixture::parse(r#"{"metrics": [], "points": [{"t": 1}]}"#).unwrap_err();
        assert!(err.contains("point 0"), "{err}");
    }
}
