//! The data model: what a measurement point is and what it is about.
//!
//! A [`MeasurementPoint`] says that `consumer` used `value` of `metric` on
//! `resource` at `timestamp`. Points travel in a [`MeasurementBuffer`], never
//! alone, so that every stage of the pipeline pays its fixed costs per batch.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics::MetricId;

mod attributes;
pub use attributes::{Attribute, Attributes};

/// Wall-clock time of a measurement, in nanoseconds since the Unix epoch.
///
/// Wall clock (not monotonic) because outputs and databases store it and
/// measurements from different machines are compared on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// A timestamp from nanoseconds since the Unix epoch.
    pub const fn from_unix_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> u64 {
        self.0
    }

    /// Seconds since the Unix epoch, as a float (for models and summaries).
    pub fn unix_seconds_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// The time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        // A clock set before 1970 is a misconfigured machine; clamp rather than panic.
        let nanos = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Self(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// The value of a point: an integer or a float, as declared by its metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeasurementValue {
    /// Unsigned integer (counts, bytes, raw counters).
    U64(u64),
    /// Floating point (joules, watts, percentages).
    F64(f64),
}

impl MeasurementValue {
    /// The value as f64, whatever its type (for models and summaries).
    pub fn as_f64(self) -> f64 {
        match self {
            MeasurementValue::U64(v) => v as f64,
            MeasurementValue::F64(v) => v,
        }
    }
}

impl From<u64> for MeasurementValue {
    fn from(v: u64) -> Self {
        MeasurementValue::U64(v)
    }
}

impl From<f64> for MeasurementValue {
    fn from(v: f64) -> Self {
        MeasurementValue::F64(v)
    }
}

impl fmt::Display for MeasurementValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeasurementValue::U64(v) => write!(f, "{v}"),
            MeasurementValue::F64(v) => write!(f, "{v}"),
        }
    }
}

/// The value of an attribute attached to a point.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// A string; `Cow` so that constant strings cost no allocation.
    Str(Cow<'static, str>),
    /// An unsigned integer.
    U64(u64),
    /// A signed integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeValue::Str(s) => f.write_str(s),
            AttributeValue::U64(v) => write!(f, "{v}"),
            AttributeValue::I64(v) => write!(f, "{v}"),
            AttributeValue::F64(v) => write!(f, "{v}"),
            AttributeValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

impl From<&'static str> for AttributeValue {
    fn from(v: &'static str) -> Self {
        AttributeValue::Str(Cow::Borrowed(v))
    }
}
impl From<String> for AttributeValue {
    fn from(v: String) -> Self {
        AttributeValue::Str(Cow::Owned(v))
    }
}
impl From<Cow<'static, str>> for AttributeValue {
    fn from(v: Cow<'static, str>) -> Self {
        AttributeValue::Str(v)
    }
}
impl From<u64> for AttributeValue {
    fn from(v: u64) -> Self {
        AttributeValue::U64(v)
    }
}
impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        AttributeValue::I64(v)
    }
}
impl From<f64> for AttributeValue {
    fn from(v: f64) -> Self {
        AttributeValue::F64(v)
    }
}
impl From<bool> for AttributeValue {
    fn from(v: bool) -> Self {
        AttributeValue::Bool(v)
    }
}

/// What is measured: a piece of hardware or the whole machine.
///
/// `kind()` and `id()` are the stable string forms written by outputs
/// (`cpu_package` / `"0"`); they must never change between versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// The whole machine.
    LocalMachine,
    /// A CPU package (socket), by its package id.
    CpuPackage {
        /// Physical package id, as in `/sys/devices/system/cpu/cpuN/topology/physical_package_id`.
        id: u32,
    },
    /// One logical CPU core, by its CPU number.
    CpuCore {
        /// Logical CPU number.
        id: u32,
    },
    /// The memory attached to a CPU package.
    Dram {
        /// Package id the memory is attached to.
        pkg_id: u32,
    },
    /// A GPU, by its PCI bus id (e.g. `0000:3b:00.0`).
    Gpu {
        /// PCI bus id.
        bus_id: Cow<'static, str>,
    },
    /// Anything else; `kind` must be a stable lowercase identifier.
    Custom {
        /// Stable kind, e.g. `disk`.
        kind: Cow<'static, str>,
        /// Identifier within the kind.
        id: Cow<'static, str>,
    },
}

impl Resource {
    /// Stable kind string for outputs.
    pub fn kind(&self) -> &str {
        match self {
            Resource::LocalMachine => "local_machine",
            Resource::CpuPackage { .. } => "cpu_package",
            Resource::CpuCore { .. } => "cpu_core",
            Resource::Dram { .. } => "dram",
            Resource::Gpu { .. } => "gpu",
            Resource::Custom { kind, .. } => kind,
        }
    }

    /// Stable id string for outputs (empty for the local machine).
    pub fn id(&self) -> Cow<'_, str> {
        match self {
            Resource::LocalMachine => Cow::Borrowed(""),
            Resource::CpuPackage { id } | Resource::CpuCore { id } => Cow::Owned(id.to_string()),
            Resource::Dram { pkg_id } => Cow::Owned(pkg_id.to_string()),
            Resource::Gpu { bus_id } => Cow::Borrowed(bus_id),
            Resource::Custom { id, .. } => Cow::Borrowed(id),
        }
    }

    /// Writes the id without allocating (hot path of outputs).
    pub fn write_id(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            Resource::LocalMachine => Ok(()),
            Resource::CpuPackage { id } | Resource::CpuCore { id } => write!(out, "{id}"),
            Resource::Dram { pkg_id } => write!(out, "{pkg_id}"),
            Resource::Gpu { bus_id } => out.write_str(bus_id),
            Resource::Custom { id, .. } => out.write_str(id),
        }
    }
}

impl fmt::Display for Resource {
    /// Human form for summaries: "CPU package 0", "DRAM 0", "GPU 0000:3b:00.0".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::LocalMachine => f.write_str("machine"),
            Resource::CpuPackage { id } => write!(f, "CPU package {id}"),
            Resource::CpuCore { id } => write!(f, "CPU core {id}"),
            Resource::Dram { pkg_id } => write!(f, "DRAM {pkg_id}"),
            Resource::Gpu { bus_id } => write!(f, "GPU {bus_id}"),
            Resource::Custom { kind, id } => write!(f, "{kind} {id}"),
        }
    }
}

/// Who used the resource: the whole machine, a process, a cgroup...
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceConsumer {
    /// Everything running on the machine.
    LocalMachine,
    /// One process.
    Process {
        /// Process id.
        pid: u32,
    },
    /// A control group, by its path relative to the cgroup root.
    ControlGroup {
        /// Path such as `/system.slice/alumet.service`; shared, so that the
        /// many points of one cgroup do not copy it (`String::into()`).
        path: std::sync::Arc<str>,
    },
    /// Anything else; `kind` must be a stable lowercase identifier.
    Custom {
        /// Stable kind.
        kind: Cow<'static, str>,
        /// Identifier within the kind.
        id: Cow<'static, str>,
    },
}

impl ResourceConsumer {
    /// Stable kind string for outputs.
    pub fn kind(&self) -> &str {
        match self {
            ResourceConsumer::LocalMachine => "local_machine",
            ResourceConsumer::Process { .. } => "process",
            ResourceConsumer::ControlGroup { .. } => "cgroup",
            ResourceConsumer::Custom { kind, .. } => kind,
        }
    }

    /// Stable id string for outputs (empty for the local machine).
    pub fn id(&self) -> Cow<'_, str> {
        match self {
            ResourceConsumer::LocalMachine => Cow::Borrowed(""),
            ResourceConsumer::Process { pid } => Cow::Owned(pid.to_string()),
            ResourceConsumer::ControlGroup { path } => Cow::Borrowed(&**path),
            ResourceConsumer::Custom { id, .. } => Cow::Borrowed(id),
        }
    }

    /// Writes the id without allocating (hot path of outputs).
    pub fn write_id(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            ResourceConsumer::LocalMachine => Ok(()),
            ResourceConsumer::Process { pid } => write!(out, "{pid}"),
            ResourceConsumer::ControlGroup { path } => out.write_str(path),
            ResourceConsumer::Custom { id, .. } => out.write_str(id),
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementPoint {
    /// When it was measured (end of the interval for deltas).
    pub timestamp: Timestamp,
    /// Which registered metric this is a value of.
    pub metric: MetricId,
    /// What was measured.
    pub resource: Resource,
    /// Who used it.
    pub consumer: ResourceConsumer,
    /// The value, of the metric's value type.
    pub value: MeasurementValue,
    /// Extra key/value context (e.g. `domain=package`): empty costs nothing,
    /// and points built with the same list share it ([`Attributes`]).
    pub attributes: Attributes,
}

impl MeasurementPoint {
    /// A point without attributes.
    pub fn new(
        timestamp: Timestamp,
        metric: MetricId,
        resource: Resource,
        consumer: ResourceConsumer,
        value: impl Into<MeasurementValue>,
    ) -> Self {
        Self {
            timestamp,
            metric,
            resource,
            consumer,
            value: value.into(),
            attributes: Attributes::new(),
        }
    }

    /// Adds an attribute (builder style).
    pub fn with_attr(
        mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<AttributeValue>,
    ) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// Sets the attributes to `attributes`, a list shared with other points
    /// (builder style): no allocation. Attributes added later with
    /// [`MeasurementPoint::with_attr`] go after them, on a copy.
    pub fn with_attributes(mut self, attributes: &Attributes) -> Self {
        self.attributes = attributes.clone();
        self
    }

    /// The value of attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&AttributeValue> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// A batch of points, the unit that moves through the pipeline.
pub type MeasurementBuffer = Vec<MeasurementPoint>;
