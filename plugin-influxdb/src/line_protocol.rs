//! InfluxDB line protocol encoder: measurement points → text lines.
//!
//! This is the output's hot path (millions of points per second), so it
//! appends into a caller-owned `Vec<u8>`, computes once everything that does
//! not depend on the point (the escaped measurement name of each metric, the
//! sorted order of the tag keys, the role and escaped key of each attribute
//! seen) and never allocates per point.
//!
//! One point becomes one line:
//!
//! ```text
//! <metric>,<tags sorted by key> value=<v>[,<attribute fields>] <timestamp ns>
//! ```
//!
//! Tags: `resource_kind`, `resource_id`, `consumer_kind`, `consumer_id`
//! (empty ids, like the local machine's, are omitted: InfluxDB refuses empty
//! tag values), the constant tags (e.g. `host`), and the attributes whose
//! role is [`AttributeRole::Tag`]. Escaping rules are in [`crate::text`].

use alumet::measurement::{
    AttributeValue, MeasurementPoint, MeasurementValue, Resource, ResourceConsumer,
};
use alumet::metrics::MetricRegistry;

use crate::text::{
    escape_key, escape_measurement, escape_string_field, write_f64, write_i64, write_u64,
    write_unsigned_field,
};

/// Where attributes go in the line: the tag set (indexed, for `GROUP BY`)
/// or the field set (not indexed, any type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributeRole {
    /// Written as a tag, its value as text.
    Tag,
    /// Written as a field, keeping its type (string, integer, float, bool).
    Field,
}

/// The tag keys every line may carry; attributes with these names are
/// renamed with the [`RENAMED_ATTRIBUTE_PREFIX`] so that they cannot
/// overwrite them.
pub const BUILTIN_TAGS: [&str; 4] = [
    "resource_kind",
    "resource_id",
    "consumer_kind",
    "consumer_id",
];

/// The field key of the measured value.
pub const VALUE_FIELD: &str = "value";

/// Prefix given to an attribute whose key collides with a built-in or
/// constant tag or with the `value` field.
pub const RENAMED_ATTRIBUTE_PREFIX: &str = "attr_";

/// How the encoder maps points to lines.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    /// Role of attributes not named in `tag_attributes` or `field_attributes`.
    pub attributes_as: AttributeRole,
    /// Attributes always written as tags.
    pub tag_attributes: Vec<String>,
    /// Attributes always written as fields.
    pub field_attributes: Vec<String>,
    /// Tags added to every line (e.g. `host`), raw (unescaped) key and value.
    pub constant_tags: Vec<(String, String)>,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            attributes_as: AttributeRole::Tag,
            tag_attributes: Vec::new(),
            field_attributes: Vec::new(),
            constant_tags: Vec::new(),
        }
    }
}

/// Why a point was not encoded (the line protocol cannot carry it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The point's metric id is not in the registry (a bug upstream).
    #[error("its metric is not registered")]
    UnknownMetric,
    /// NaN or infinite values have no line protocol spelling.
    #[error("its value is NaN or infinite, which line protocol cannot carry")]
    NonFiniteValue,
}

/// A tag every line may carry, in key order.
#[derive(Debug)]
enum FixedTag {
    ResourceKind,
    ResourceId,
    ConsumerKind,
    ConsumerId,
    /// A constant tag; its escaped value.
    Constant(Box<[u8]>),
}

#[derive(Debug)]
struct Fixed {
    /// Escaped key, for ordering.
    key: Box<[u8]>,
    /// `,<escaped key>=`.
    prefix: Box<[u8]>,
    tag: FixedTag,
}

/// The cached decision for one attribute key.
#[derive(Debug)]
struct AttributePlan {
    key: String,
    /// Address and length of the key when it was a `&'static str`: the
    /// same address then means the same text, found without comparing bytes.
    static_key: Option<(usize, usize)>,
    /// Escaped key (renamed if it collides), for ordering.
    escaped_key: Box<[u8]>,
    /// `,<escaped key>=`.
    prefix: Box<[u8]>,
    role: AttributeRole,
    /// How many fixed tags sort before this key (tag role only).
    position: usize,
}

/// Tag attributes of one point kept on the stack; more fall back to the heap.
const INLINE_ATTRIBUTE_TAGS: usize = 8;

/// Encodes points into line protocol. Create one per output and reuse it.
#[derive(Debug)]
pub struct LineProtocolEncoder {
    /// Escaped measurement name per metric index, filled on first use.
    measurements: Vec<Option<Box<[u8]>>>,
    /// The built-in and constant tags, sorted by escaped key.
    fixed: Vec<Fixed>,
    options: EncoderOptions,
    plans: Vec<AttributePlan>,
    /// Scratch: the plan index of each attribute of the current point.
    plan_of_attribute: Vec<usize>,
}

fn prefix_of(escaped_key: &[u8]) -> Box<[u8]> {
    let mut prefix = Vec::with_capacity(escaped_key.len() + 2);
    prefix.push(b',');
    prefix.extend_from_slice(escaped_key);
    prefix.push(b'=');
    prefix.into_boxed_slice()
}

impl LineProtocolEncoder {
    /// An encoder with these options.
    pub fn new(options: EncoderOptions) -> Self {
        let mut fixed: Vec<Fixed> = [
            ("resource_kind", FixedTag::ResourceKind),
            ("resource_id", FixedTag::ResourceId),
            ("consumer_kind", FixedTag::ConsumerKind),
            ("consumer_id", FixedTag::ConsumerId),
        ]
        .into_iter()
        .map(|(k, tag)| Fixed {
            key: k.as_bytes().into(),
            prefix: prefix_of(k.as_bytes()),
            tag,
        })
        .collect();
        for (k, v) in &options.constant_tags {
            if k.is_empty() || v.is_empty() {
                continue;
            }
            let mut key = Vec::new();
            escape_key(k, &mut key);
            let mut value = Vec::new();
            escape_key(v, &mut value);
            fixed.push(Fixed {
                prefix: prefix_of(&key),
                key: key.into_boxed_slice(),
                tag: FixedTag::Constant(value.into_boxed_slice()),
            });
        }
        // The reference asks for tags sorted by key (as Go's bytes.Compare):
        // the server then skips its own sort.
        fixed.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            measurements: Vec::new(),
            fixed,
            options,
            plans: Vec::new(),
            plan_of_attribute: Vec::new(),
        }
    }

    /// Appends the line of `point` (with its trailing newline) to `out`.
    /// On error nothing is appended.
    pub fn encode(
        &mut self,
        point: &MeasurementPoint,
        metrics: &MetricRegistry,
        out: &mut Vec<u8>,
    ) -> Result<(), SkipReason> {
        if let MeasurementValue::F64(v) = point.value {
            if !v.is_finite() {
                return Err(SkipReason::NonFiniteValue);
            }
        }
        self.prepare_measurement(point, metrics)?;
        let mut plan_of_attribute = std::mem::take(&mut self.plan_of_attribute);
        plan_of_attribute.clear();
        for (key, _) in &point.attributes {
            plan_of_attribute.push(self.plan_index(key));
        }
        self.write_line(point, &plan_of_attribute, out);
        self.plan_of_attribute = plan_of_attribute;
        Ok(())
    }

    fn prepare_measurement(
        &mut self,
        point: &MeasurementPoint,
        metrics: &MetricRegistry,
    ) -> Result<(), SkipReason> {
        let index = point.metric.index();
        if matches!(self.measurements.get(index), Some(Some(_))) {
            return Ok(());
        }
        let metric = metrics.get(point.metric).ok_or(SkipReason::UnknownMetric)?;
        if self.measurements.len() <= index {
            self.measurements.resize(index + 1, None);
        }
        let mut name = Vec::with_capacity(metric.name.len());
        escape_measurement(&metric.name, &mut name);
        self.measurements[index] = Some(name.into_boxed_slice());
        Ok(())
    }

    /// The index of the plan for attribute `key`, created on first sight.
    // The `Cow` itself is needed: only a borrowed `'static` key may be found by address.
    #[allow(clippy::ptr_arg)]
    fn plan_index(&mut self, key: &std::borrow::Cow<'static, str>) -> usize {
        let static_key = match key {
            std::borrow::Cow::Borrowed(s) => Some((s.as_ptr() as usize, s.len())),
            std::borrow::Cow::Owned(_) => None,
        };
        if static_key.is_some() {
            if let Some(i) = self.plans.iter().position(|p| p.static_key == static_key) {
                return i;
            }
        }
        if let Some(i) = self.plans.iter().position(|p| p.key == **key) {
            if self.plans[i].static_key.is_none() {
                self.plans[i].static_key = static_key;
            }
            return i;
        }
        let key: &str = key;
        let role = if self.options.tag_attributes.iter().any(|k| k == key) {
            AttributeRole::Tag
        } else if self.options.field_attributes.iter().any(|k| k == key) {
            AttributeRole::Field
        } else {
            self.options.attributes_as
        };
        let collides = BUILTIN_TAGS.contains(&key)
            || key == VALUE_FIELD
            || self.options.constant_tags.iter().any(|(k, _)| k == key);
        let mut escaped_key = Vec::new();
        if collides {
            escaped_key.extend_from_slice(RENAMED_ATTRIBUTE_PREFIX.as_bytes());
        }
        escape_key(key, &mut escaped_key);
        let position = self
            .fixed
            .iter()
            .take_while(|f| *f.key < *escaped_key)
            .count();
        self.plans.push(AttributePlan {
            key: key.to_owned(),
            static_key,
            prefix: prefix_of(&escaped_key),
            escaped_key: escaped_key.into_boxed_slice(),
            role,
            position,
        });
        self.plans.len() - 1
    }

    fn write_line(&self, point: &MeasurementPoint, plan_of_attribute: &[usize], out: &mut Vec<u8>) {
        if let Some(Some(name)) = self.measurements.get(point.metric.index()) {
            out.extend_from_slice(name);
        }

        // The attributes written as tags, sorted like the fixed tags.
        let mut inline = [(0usize, 0usize); INLINE_ATTRIBUTE_TAGS];
        let mut spilled = Vec::new();
        let mut count = 0;
        for (i, ((key, value), &plan)) in point.attributes.iter().zip(plan_of_attribute).enumerate()
        {
            let empty = matches!(value, AttributeValue::Str(s) if s.is_empty());
            if self.plans[plan].role != AttributeRole::Tag || empty || key.is_empty() {
                continue;
            }
            if count < INLINE_ATTRIBUTE_TAGS {
                inline[count] = (plan, i);
            } else {
                if spilled.is_empty() {
                    spilled.extend_from_slice(&inline);
                }
                spilled.push((plan, i));
            }
            count += 1;
        }
        let attribute_tags: &mut [(usize, usize)] = if spilled.is_empty() {
            &mut inline[..count]
        } else {
            &mut spilled
        };
        if attribute_tags.len() > 1 {
            attribute_tags.sort_unstable_by(|a, b| {
                let (pa, pb) = (&self.plans[a.0], &self.plans[b.0]);
                (pa.position, &pa.escaped_key).cmp(&(pb.position, &pb.escaped_key))
            });
        }

        let mut next_attribute = 0;
        for (position, fixed) in self.fixed.iter().enumerate() {
            while let Some(&(plan, i)) = attribute_tags.get(next_attribute) {
                if self.plans[plan].position != position {
                    break;
                }
                self.write_attribute_tag(plan, &point.attributes[i].1, out);
                next_attribute += 1;
            }
            write_fixed(fixed, point, out);
        }
        for &(plan, i) in &attribute_tags[next_attribute..] {
            self.write_attribute_tag(plan, &point.attributes[i].1, out);
        }

        out.extend_from_slice(b" value=");
        match point.value {
            MeasurementValue::U64(v) => write_unsigned_field(v, out),
            MeasurementValue::F64(v) => write_f64(v, out),
        }
        for ((key, value), &plan) in point.attributes.iter().zip(plan_of_attribute) {
            let plan = &self.plans[plan];
            if plan.role != AttributeRole::Field || key.is_empty() {
                continue;
            }
            if let AttributeValue::F64(v) = value {
                if !v.is_finite() {
                    continue;
                }
            }
            out.extend_from_slice(&plan.prefix);
            write_attribute_as_field(value, out);
        }
        out.push(b' ');
        write_u64(point.timestamp.unix_nanos(), out);
        out.push(b'\n');
    }

    fn write_attribute_tag(&self, plan: usize, value: &AttributeValue, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.plans[plan].prefix);
        match value {
            AttributeValue::Str(s) => escape_key(s, out),
            AttributeValue::U64(v) => write_u64(*v, out),
            AttributeValue::I64(v) => write_i64(*v, out),
            AttributeValue::F64(v) => write_f64(*v, out),
            AttributeValue::Bool(true) => out.extend_from_slice(b"true"),
            AttributeValue::Bool(false) => out.extend_from_slice(b"false"),
        }
    }
}

/// Writes one built-in or constant tag, or nothing when its value is empty.
fn write_fixed(fixed: &Fixed, point: &MeasurementPoint, out: &mut Vec<u8>) {
    match &fixed.tag {
        FixedTag::Constant(value) => {
            out.extend_from_slice(&fixed.prefix);
            out.extend_from_slice(value);
        }
        FixedTag::ResourceKind => {
            out.extend_from_slice(&fixed.prefix);
            match &point.resource {
                Resource::Custom { kind, .. } => escape_key(kind, out),
                // The built-in kinds are plain identifiers.
                other => out.extend_from_slice(other.kind().as_bytes()),
            }
        }
        FixedTag::ConsumerKind => {
            out.extend_from_slice(&fixed.prefix);
            match &point.consumer {
                ResourceConsumer::Custom { kind, .. } => escape_key(kind, out),
                other => out.extend_from_slice(other.kind().as_bytes()),
            }
        }
        FixedTag::ResourceId => match &point.resource {
            Resource::LocalMachine => {}
            Resource::CpuPackage { id } | Resource::CpuCore { id } => {
                out.extend_from_slice(&fixed.prefix);
                write_u64(u64::from(*id), out);
            }
            Resource::Dram { pkg_id } => {
                out.extend_from_slice(&fixed.prefix);
                write_u64(u64::from(*pkg_id), out);
            }
            Resource::Gpu { bus_id: id } | Resource::Custom { id, .. } => {
                if !id.is_empty() {
                    out.extend_from_slice(&fixed.prefix);
                    escape_key(id, out);
                }
            }
        },
        FixedTag::ConsumerId => match &point.consumer {
            ResourceConsumer::LocalMachine => {}
            ResourceConsumer::Process { pid } => {
                out.extend_from_slice(&fixed.prefix);
                write_u64(u64::from(*pid), out);
            }
            ResourceConsumer::ControlGroup { path } => write_consumer_id(path, &fixed.prefix, out),
            ResourceConsumer::Custom { id, .. } => write_consumer_id(id, &fixed.prefix, out),
        },
    }
}

/// A consumer id tag, left out when empty.
fn write_consumer_id(id: &str, prefix: &[u8], out: &mut Vec<u8>) {
    if !id.is_empty() {
        out.extend_from_slice(prefix);
        escape_key(id, out);
    }
}

fn write_attribute_as_field(value: &AttributeValue, out: &mut Vec<u8>) {
    match value {
        AttributeValue::Str(s) => {
            out.push(b'"');
            escape_string_field(s, out);
            out.push(b'"');
        }
        AttributeValue::U64(v) => write_unsigned_field(*v, out),
        AttributeValue::I64(v) => {
            write_i64(*v, out);
            out.push(b'i');
        }
        AttributeValue::F64(v) => write_f64(*v, out),
        AttributeValue::Bool(true) => out.extend_from_slice(b"true"),
        AttributeValue::Bool(false) => out.extend_from_slice(b"false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alumet::measurement::Timestamp;
    use alumet::metrics::{Metric, MetricKind, Unit, ValueType};

    fn encode(
        options: EncoderOptions,
        point: impl Fn(alumet::metrics::MetricId) -> MeasurementPoint,
    ) -> String {
        let mut registry = MetricRegistry::new();
        let id = registry
            .register(Metric::new(
                "m",
                Unit::Unity,
                ValueType::U64,
                MetricKind::Gauge,
                "",
            ))
            .unwrap();
        let mut encoder = LineProtocolEncoder::new(options);
        let mut out = Vec::new();
        // Twice: the second line comes from the cached plans.
        encoder.encode(&point(id), &registry, &mut out).unwrap();
        encoder.encode(&point(id), &registry, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (first, second) = text.split_once('\n').unwrap();
        assert_eq!(format!("{first}\n"), second);
        second.to_owned()
    }

    #[test]
    fn tags_of_every_origin_are_merged_in_key_order() {
        let keys = [
            "zeta",
            "b",
            "host_group",
            "a",
            "j",
            "i",
            "h",
            "g",
            "f",
            "e",
            "d",
            "c",
        ];
        let line = encode(
            EncoderOptions {
                constant_tags: vec![("host".into(), "n1".into()), ("rack".into(), "r2".into())],
                ..EncoderOptions::default()
            },
            |id| {
                let mut p = MeasurementPoint::new(
                    Timestamp::from_unix_nanos(5),
                    id,
                    Resource::CpuCore { id: 3 },
                    ResourceConsumer::Process { pid: 9 },
                    7u64,
                );
                for k in keys {
                    p = p.with_attr(k, k.to_uppercase());
                }
                p
            },
        );
        let (series, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, "value=7i 5\n");
        let tags: Vec<&str> = series.split(',').skip(1).collect();
        let mut sorted = tags.clone();
        sorted.sort();
        assert_eq!(tags, sorted, "tags in key order");
        let mut expected: Vec<String> = keys
            .iter()
            .map(|k| format!("{k}={}", k.to_uppercase()))
            .chain(
                [
                    "consumer_id=9",
                    "consumer_kind=process",
                    "host=n1",
                    "rack=r2",
                    "resource_id=3",
                    "resource_kind=cpu_core",
                ]
                .map(String::from),
            )
            .collect();
        expected.sort();
        assert_eq!(tags, expected);
    }

    #[test]
    fn owned_and_static_attribute_keys_share_a_plan() {
        let line = encode(EncoderOptions::default(), |id| {
            MeasurementPoint::new(
                Timestamp::from_unix_nanos(1),
                id,
                Resource::LocalMachine,
                ResourceConsumer::LocalMachine,
                1u64,
            )
            .with_attr("domain", "package")
            .with_attr(String::from("exe"), "x")
        });
        assert_eq!(
            line,
            "m,consumer_kind=local_machine,domain=package,exe=x,resource_kind=local_machine value=1i 1\n"
        );
    }
}
