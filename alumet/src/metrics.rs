//! Metric definitions and the registry that gives them ids.
//!
//! Metrics are registered once, while plugins start; points then carry only
//! the numeric [`MetricId`]. The registry is shared read-only in an `Arc`
//! once the pipeline starts, so outputs look names up without locks; a
//! plugin started later (a reload) publishes an extended copy, never an
//! edited one (`pipeline/registry.rs`).

use std::collections::HashMap;
use std::fmt;

/// Numeric id of a registered metric: an index into the [`MetricRegistry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricId(pub(crate) u32);

impl MetricId {
    /// The id as an index (for dense per-metric tables in outputs and transforms).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How values of a metric combine over time, so that outputs and summaries
/// know whether summing them is meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// A monotonically increasing total (e.g. a raw hardware counter); the
    /// difference of two values is what was consumed between them.
    Counter,
    /// What was consumed during the interval ending at the point's timestamp;
    /// values can be summed over time (energy in joules, CPU time).
    Delta,
    /// An instantaneous level (power, temperature, memory in use); average it,
    /// never sum it.
    Gauge,
}

impl MetricKind {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Delta => "delta",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// Type of the values of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `MeasurementValue::U64`.
    U64,
    /// `MeasurementValue::F64`.
    F64,
}

/// A base unit, SI where one exists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Unit {
    /// No unit (counts, ratios).
    Unity,
    /// Second.
    Second,
    /// Watt.
    Watt,
    /// Joule.
    Joule,
    /// Volt.
    Volt,
    /// Ampere.
    Ampere,
    /// Hertz.
    Hertz,
    /// Degree Celsius.
    DegreeCelsius,
    /// Byte.
    Byte,
    /// Percent (0–100, or 0–100 × cores where documented).
    Percent,
    /// Anything else: UCUM code and display symbol.
    Custom {
        /// UCUM code, e.g. `{packet}`.
        ucum: String,
        /// Display symbol, e.g. `packets`.
        symbol: String,
    },
}

impl Unit {
    /// Stable UCUM code (<https://ucum.org>), used by exports.
    pub fn ucum_code(&self) -> &str {
        match self {
            Unit::Unity => "1",
            Unit::Second => "s",
            Unit::Watt => "W",
            Unit::Joule => "J",
            Unit::Volt => "V",
            Unit::Ampere => "A",
            Unit::Hertz => "Hz",
            Unit::DegreeCelsius => "Cel",
            Unit::Byte => "By",
            Unit::Percent => "%",
            Unit::Custom { ucum, .. } => ucum,
        }
    }

    /// Symbol for people.
    pub fn symbol(&self) -> &str {
        match self {
            Unit::Unity => "",
            Unit::Second => "s",
            Unit::Watt => "W",
            Unit::Joule => "J",
            Unit::Volt => "V",
            Unit::Ampere => "A",
            Unit::Hertz => "Hz",
            Unit::DegreeCelsius => "°C",
            Unit::Byte => "B",
            Unit::Percent => "%",
            Unit::Custom { symbol, .. } => symbol,
        }
    }
}

/// A decimal SI prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnitPrefix {
    /// 10^-9.
    Nano,
    /// 10^-6.
    Micro,
    /// 10^-3.
    Milli,
    /// 10^0.
    Plain,
    /// 10^3.
    Kilo,
    /// 10^6.
    Mega,
    /// 10^9.
    Giga,
}

impl UnitPrefix {
    fn code(self) -> &'static str {
        match self {
            UnitPrefix::Nano => "n",
            UnitPrefix::Micro => "u",
            UnitPrefix::Milli => "m",
            UnitPrefix::Plain => "",
            UnitPrefix::Kilo => "k",
            UnitPrefix::Mega => "M",
            UnitPrefix::Giga => "G",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            UnitPrefix::Micro => "µ",
            other => other.code(),
        }
    }

    /// The factor this prefix stands for.
    pub fn factor(self) -> f64 {
        match self {
            UnitPrefix::Nano => 1e-9,
            UnitPrefix::Micro => 1e-6,
            UnitPrefix::Milli => 1e-3,
            UnitPrefix::Plain => 1.0,
            UnitPrefix::Kilo => 1e3,
            UnitPrefix::Mega => 1e6,
            UnitPrefix::Giga => 1e9,
        }
    }
}

/// A unit with its prefix, e.g. mJ.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrefixedUnit {
    /// The prefix.
    pub prefix: UnitPrefix,
    /// The base unit.
    pub base: Unit,
}

impl PrefixedUnit {
    /// UCUM code with prefix (`mJ`, `us`, `By`).
    pub fn ucum_code(&self) -> String {
        format!("{}{}", self.prefix.code(), self.base.ucum_code())
    }

    /// Display symbol with prefix (`mJ`, `µs`, `B`).
    pub fn symbol(&self) -> String {
        format!("{}{}", self.prefix.symbol(), self.base.symbol())
    }
}

impl From<Unit> for PrefixedUnit {
    fn from(base: Unit) -> Self {
        PrefixedUnit {
            prefix: UnitPrefix::Plain,
            base,
        }
    }
}

impl fmt::Display for PrefixedUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.symbol())
    }
}

/// The definition of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Unique name, lowercase with underscores (`rapl_consumed_energy`).
    pub name: String,
    /// Unit of the values.
    pub unit: PrefixedUnit,
    /// Type of the values.
    pub value_type: ValueType,
    /// How values combine over time.
    pub kind: MetricKind,
    /// One sentence for people.
    pub description: String,
    /// Whether outputs that store rows may leave out points that add nothing
    /// (see [`Thinning`]); `None`: every point is written.
    pub thinning: Option<Thinning>,
}

/// How the outputs that store rows (CSV, InfluxDB, OTLP) thin a metric's
/// series: per-process and per-cgroup deltas are mostly zeros, and memory
/// gauges of idle processes repeat one value. A thinned series keeps its
/// first point and its last one (written when the series ends: its consumer
/// is gone), so it has a start and an end, and every sum over it is the
/// same as without thinning. Outputs that keep current values (Prometheus)
/// or need every point (the `exec` report) receive every point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Thinning {
    /// A delta (or a rate derived from one) whose zero points are left out.
    SkipZero,
    /// A gauge written when it moved by more than `min_relative_change`
    /// (0.01: 1 %) from the last value written, or when that one is
    /// `max_age` old.
    Gauge {
        /// How long a value may stand for the series without being written again.
        max_age: std::time::Duration,
        /// The smallest change, relative to the last value written, that is written at once.
        min_relative_change: f64,
    },
}

impl Metric {
    /// A metric definition.
    pub fn new(
        name: impl Into<String>,
        unit: impl Into<PrefixedUnit>,
        value_type: ValueType,
        kind: MetricKind,
        description: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
            value_type,
            kind,
            description: description.into(),
            thinning: None,
        }
    }

    /// The same metric, thinned by the outputs that store rows ([`Thinning`]).
    pub fn thinned(mut self, thinning: Thinning) -> Self {
        self.thinning = Some(thinning);
        self
    }
}

/// Why a metric could not be registered.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricError {
    /// Same name, different definition.
    #[error("metric `{name}` is already registered with another definition ({existing}); cannot register it as {requested}")]
    Conflict {
        /// The metric name.
        name: String,
        /// The existing definition, summarised.
        existing: String,
        /// The requested definition, summarised.
        requested: String,
    },
    /// The name is empty or has characters outputs cannot carry.
    #[error("invalid metric name `{0}`: use lowercase letters, digits and `_`")]
    InvalidName(String),
}

/// All registered metrics, indexed by [`MetricId`].
#[derive(Debug, Default, Clone)]
pub struct MetricRegistry {
    metrics: Vec<Metric>,
    by_name: HashMap<String, MetricId>,
}

fn summarise(m: &Metric) -> String {
    format!(
        "{} {} {:?}",
        m.kind.as_str(),
        m.unit.ucum_code(),
        m.value_type
    )
}

impl MetricRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a metric. Registering an identical definition again returns
    /// the same id (two plugins may share a metric); a different definition
    /// under the same name is an error.
    pub fn register(&mut self, metric: Metric) -> Result<MetricId, MetricError> {
        let valid = !metric.name.is_empty()
            && metric
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(MetricError::InvalidName(metric.name));
        }
        if let Some(&id) = self.by_name.get(&metric.name) {
            let existing = &self.metrics[id.index()];
            let same = existing.unit == metric.unit
                && existing.value_type == metric.value_type
                && existing.kind == metric.kind;
            return if same {
                Ok(id)
            } else {
                Err(MetricError::Conflict {
                    name: metric.name.clone(),
                    existing: summarise(existing),
                    requested: summarise(&metric),
                })
            };
        }
        let id = MetricId(self.metrics.len() as u32);
        self.by_name.insert(metric.name.clone(), id);
        self.metrics.push(metric);
        Ok(id)
    }

    /// The definition of `id`. Ids come only from this registry, so a
    /// foreign id is a programming error and yields `None`.
    pub fn get(&self, id: MetricId) -> Option<&Metric> {
        self.metrics.get(id.index())
    }

    /// The id of a metric by name.
    pub fn by_name(&self, name: &str) -> Option<MetricId> {
        self.by_name.get(name).copied()
    }

    /// Number of metrics.
    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    /// True if no metric is registered.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// All metrics with their ids, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = (MetricId, &Metric)> {
        self.metrics
            .iter()
            .enumerate()
            .map(|(i, m)| (MetricId(i as u32), m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn energy() -> Metric {
        Metric::new(
            "energy",
            Unit::Joule,
            ValueType::F64,
            MetricKind::Delta,
            "energy",
        )
    }

    #[test]
    fn identical_registration_returns_same_id() {
        let mut r = MetricRegistry::new();
        let a = r.register(energy()).unwrap();
        let b = r.register(energy()).unwrap();
        assert_eq!(a, b);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn conflicting_registration_is_an_error() {
        let mut r = MetricRegistry::new();
        r.register(energy()).unwrap();
        let mut other = energy();
        other.kind = MetricKind::Gauge;
        assert!(matches!(
            r.register(other),
            Err(MetricError::Conflict { .. })
        ));
    }

    #[test]
    fn invalid_names_are_rejected() {
        let mut r = MetricRegistry::new();
        let mut m = energy();
        m.name = "Energy Total".into();
        assert!(matches!(r.register(m), Err(MetricError::InvalidName(_))));
    }

    #[test]
    fn units_have_ucum_codes() {
        let mj = PrefixedUnit {
            prefix: UnitPrefix::Milli,
            base: Unit::Joule,
        };
        assert_eq!(mj.ucum_code(), "mJ");
        assert_eq!(PrefixedUnit::from(Unit::Byte).ucum_code(), "By");
        let us = PrefixedUnit {
            prefix: UnitPrefix::Micro,
            base: Unit::Second,
        };
        assert_eq!(us.ucum_code(), "us");
        assert_eq!(us.symbol(), "µs");
    }
}
