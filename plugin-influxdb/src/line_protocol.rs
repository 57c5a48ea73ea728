//! InfluxDB line protocol encoder: measurement points → text lines.
//!
//! This is the output's hot path (millions of points per second), so it
//! appends into a caller-owned `Vec<u8>`, caches the escaped measurement
//! name of every metric and the role of every attribute key, formats
//! integers by hand and never allocates per point.
//!
//! One point becomes one line:
//!
//! ```text
//! <metric>,<tags sorted by key> value=<v>[,<attribute fields>] <timestamp ns>
//! ```
//!
//! Escaping follows the line protocol reference: measurement names escape
//! commas and spaces; tag keys, tag values and field keys escape commas,
//! equals signs and spaces; string field values escape double quotes and
//! backslashes. Two cases the reference leaves to the writer are made safe
//! here so that a hostile name (a process can call itself anything) can
//! never break the parsing of a whole batch:
//! - newline, carriage return and tab become the two-character texts `\n`,
//!   `\r`, `\t` (the protocol cannot carry them);
//! - a backslash at the end of a name, key or tag value, or directly before
//!   a character this encoder escapes, is dropped: InfluxDB 1.x reads it as
//!   an escape of the separator that follows and 2.x reads it differently, so
//!   no spelling of it is safe for both.

use std::io::Write as _;

use alumet::measurement::{
    AttributeValue, MeasurementPoint, MeasurementValue, Resource, ResourceConsumer,
};
use alumet::metrics::MetricRegistry;

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

/// The cached decision for one attribute key.
#[derive(Debug)]
struct AttributePlan {
    key: String,
    escaped_key: Box<[u8]>,
    role: AttributeRole,
}

/// A tag value, in the form that is cheapest to write.
#[derive(Clone, Copy)]
enum TagValue<'a> {
    /// Already escaped (constant tags, kind names).
    Escaped(&'a [u8]),
    /// Needs escaping.
    Raw(&'a str),
    /// A number (CPU or package ids, pids).
    Number(u32),
    /// An attribute value rendered as text.
    Attribute(&'a AttributeValue),
}

#[derive(Clone, Copy)]
struct TagRef<'a> {
    /// Escaped key.
    key: &'a [u8],
    value: TagValue<'a>,
}

const EMPTY_TAG: TagRef<'static> = TagRef {
    key: b"",
    value: TagValue::Escaped(b""),
};

/// An escaped tag key and value.
type EscapedTag = (Box<[u8]>, Box<[u8]>);

/// Tags of one point that fit on the stack; more go to a heap fallback.
const INLINE_TAGS: usize = 16;

/// Encodes points into line protocol. Create one per output and reuse it.
#[derive(Debug)]
pub struct LineProtocolEncoder {
    /// Escaped measurement name per metric index, filled on first use.
    measurements: Vec<Option<Box<[u8]>>>,
    /// Escaped constant tags.
    constant_tags: Vec<EscapedTag>,
    options: EncoderOptions,
    plans: Vec<AttributePlan>,
    /// Scratch: the plan index of each attribute of the current point.
    plan_of_attribute: Vec<usize>,
}

impl LineProtocolEncoder {
    /// An encoder with these options.
    pub fn new(options: EncoderOptions) -> Self {
        let mut constant_tags: Vec<EscapedTag> = options
            .constant_tags
            .iter()
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .map(|(k, v)| {
                let mut key = Vec::new();
                escape_key(k, &mut key);
                let mut value = Vec::new();
                escape_key(v, &mut value);
                (key.into_boxed_slice(), value.into_boxed_slice())
            })
            .collect();
        constant_tags.sort();
        Self {
            measurements: Vec::new(),
            constant_tags,
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
        let needed = BUILTIN_TAGS.len() + self.constant_tags.len() + point.attributes.len();
        if needed <= INLINE_TAGS {
            let mut tags = [EMPTY_TAG; INLINE_TAGS];
            self.write_line(point, &plan_of_attribute, &mut tags, out);
        } else {
            let mut tags = vec![EMPTY_TAG; needed];
            self.write_line(point, &plan_of_attribute, &mut tags, out);
        }
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
    fn plan_index(&mut self, key: &str) -> usize {
        if let Some(i) = self.plans.iter().position(|p| p.key == key) {
            return i;
        }
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
        self.plans.push(AttributePlan {
            key: key.to_owned(),
            escaped_key: escaped_key.into_boxed_slice(),
            role,
        });
        self.plans.len() - 1
    }

    fn write_line<'a>(
        &'a self,
        point: &'a MeasurementPoint,
        plan_of_attribute: &[usize],
        tags: &mut [TagRef<'a>],
        out: &mut Vec<u8>,
    ) {
        let mut n = 0;
        let mut push = |tag: TagRef<'a>| {
            tags[n] = tag;
            n += 1;
        };
        push(TagRef {
            key: b"resource_kind",
            value: TagValue::Raw(point.resource.kind()),
        });
        match &point.resource {
            Resource::LocalMachine => {}
            Resource::CpuPackage { id } | Resource::CpuCore { id } => push(TagRef {
                key: b"resource_id",
                value: TagValue::Number(*id),
            }),
            Resource::Dram { pkg_id } => push(TagRef {
                key: b"resource_id",
                value: TagValue::Number(*pkg_id),
            }),
            Resource::Gpu { bus_id: id } | Resource::Custom { id, .. } => {
                if !id.is_empty() {
                    push(TagRef {
                        key: b"resource_id",
                        value: TagValue::Raw(id),
                    })
                }
            }
        }
        push(TagRef {
            key: b"consumer_kind",
            value: TagValue::Raw(point.consumer.kind()),
        });
        match &point.consumer {
            ResourceConsumer::LocalMachine => {}
            ResourceConsumer::Process { pid } => push(TagRef {
                key: b"consumer_id",
                value: TagValue::Number(*pid),
            }),
            ResourceConsumer::ControlGroup { path: id } | ResourceConsumer::Custom { id, .. } => {
                if !id.is_empty() {
                    push(TagRef {
                        key: b"consumer_id",
                        value: TagValue::Raw(id),
                    })
                }
            }
        }
        for (key, value) in &self.constant_tags {
            push(TagRef {
                key,
                value: TagValue::Escaped(value),
            });
        }
        for ((key, value), &plan) in point.attributes.iter().zip(plan_of_attribute) {
            let plan = &self.plans[plan];
            let empty = matches!(value, AttributeValue::Str(s) if s.is_empty());
            if plan.role == AttributeRole::Tag && !empty && !key.is_empty() {
                push(TagRef {
                    key: &plan.escaped_key,
                    value: TagValue::Attribute(value),
                });
            }
        }
        let tags = &mut tags[..n];
        // The reference asks for tags sorted by key (as Go's bytes.Compare):
        // the server then skips its own sort. A handful of keys: insertion sort.
        tags.sort_unstable_by(|a, b| a.key.cmp(b.key));

        if let Some(Some(name)) = self.measurements.get(point.metric.index()) {
            out.extend_from_slice(name);
        }
        for tag in tags.iter() {
            out.push(b',');
            out.extend_from_slice(tag.key);
            out.push(b'=');
            match tag.value {
                TagValue::Escaped(v) => out.extend_from_slice(v),
                TagValue::Raw(v) => escape_key(v, out),
                TagValue::Number(v) => write_u64(v as u64, out),
                TagValue::Attribute(v) => write_attribute_as_tag(v, out),
            }
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
            out.push(b',');
            out.extend_from_slice(&plan.escaped_key);
            out.push(b'=');
            write_attribute_as_field(value, out);
        }
        out.push(b' ');
        write_u64(point.timestamp.unix_nanos(), out);
        out.push(b'\n');
    }
}

fn write_attribute_as_tag(value: &AttributeValue, out: &mut Vec<u8>) {
    match value {
        AttributeValue::Str(s) => escape_key(s, out),
        AttributeValue::U64(v) => write_u64(*v, out),
        AttributeValue::I64(v) => write_i64(*v, out),
        AttributeValue::F64(v) => write_f64(*v, out),
        AttributeValue::Bool(true) => out.extend_from_slice(b"true"),
        AttributeValue::Bool(false) => out.extend_from_slice(b"false"),
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

/// An unsigned value as a field: an integer (`i` suffix) when it fits in
/// i64, else a float. The `u` suffix would keep it exact, but InfluxDB 1.x
/// rejects it unless built with unsigned support.
pub fn write_unsigned_field(v: u64, out: &mut Vec<u8>) {
    if v <= i64::MAX as u64 {
        write_u64(v, out);
        out.push(b'i');
    } else {
        write_f64(v as f64, out);
    }
}

/// Writes `v` in the shortest form that parses back to the same f64.
/// Plain decimals for ordinary magnitudes, scientific notation (`1.5e-7`,
/// `2e300`, which every server parses) for the others so that a line never
/// holds hundreds of digits. Callers skip NaN and infinities.
pub fn write_f64(v: f64, out: &mut Vec<u8>) {
    let magnitude = v.abs();
    // Writing into a Vec cannot fail.
    let _ = if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        write!(out, "{v:e}")
    } else {
        write!(out, "{v}")
    };
}

const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes the decimal digits of `v`, two at a time from a table.
pub fn write_u64(mut v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        pos -= 1;
        buf[pos] = b'0' + v as u8;
    }
    out.extend_from_slice(&buf[pos..]);
}

/// Writes the decimal digits of `v` with its sign.
pub fn write_i64(v: i64, out: &mut Vec<u8>) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(v.unsigned_abs(), out);
}

/// Escapes a measurement name (commas and spaces).
pub fn escape_measurement(s: &str, out: &mut Vec<u8>) {
    escape_with(s, |b| b == b',' || b == b' ', out);
}

/// Escapes a tag key, tag value or field key (commas, equals signs, spaces).
pub fn escape_key(s: &str, out: &mut Vec<u8>) {
    escape_with(s, |b| b == b',' || b == b'=' || b == b' ', out);
}

fn is_control(b: u8) -> bool {
    b == b'\n' || b == b'\r' || b == b'\t'
}

fn control_text(b: u8) -> &'static [u8] {
    match b {
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        _ => b"\\t",
    }
}

fn escape_with(s: &str, special: impl Fn(u8) -> bool, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    // Fast path: nearly every name is plain.
    if !bytes
        .iter()
        .any(|&b| special(b) || b == b'\\' || is_control(b))
    {
        out.extend_from_slice(bytes);
        return;
    }
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\\' {
            // A backslash that a parser would take as escaping the next
            // separator is dropped (see the module documentation).
            let unsafe_position = match bytes.get(i + 1) {
                None => true,
                Some(&next) => {
                    special(next) || next == b'\\' && ends_backslash_run(bytes, i, &special)
                }
            };
            if !unsafe_position {
                out.push(b'\\');
            }
        } else if special(b) {
            out.push(b'\\');
            out.push(b);
        } else if is_control(b) {
            out.extend_from_slice(control_text(b));
        } else {
            out.push(b);
        }
    }
}

/// Whether the run of backslashes starting at `i` is followed by a special
/// byte or the end (then every backslash of the run is dropped).
fn ends_backslash_run(bytes: &[u8], i: usize, special: &impl Fn(u8) -> bool) -> bool {
    match bytes[i..].iter().find(|&&b| b != b'\\') {
        None => true,
        Some(&b) => special(b),
    }
}

/// Escapes the content of a string field value (double quotes and
/// backslashes; control characters as `\n`, `\r`, `\t` texts).
pub fn escape_string_field(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || is_control(b))
    {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            b if is_control(b) => out.extend_from_slice(control_text(b)),
            b => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(f: fn(&str, &mut Vec<u8>), s: &str) -> String {
        let mut out = Vec::new();
        f(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_are_formatted_like_display() {
        for v in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            101,
            12345,
            999_999,
            1_000_000,
            u32::MAX as u64,
            i64::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
        for v in [0i64, -1, -100, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

    #[test]
    fn floats_round_trip() {
        for v in [
            0.0f64,
            -0.0,
            1.0,
            0.1,
            1.5,
            -2.75,
            123456.789,
            1e-4,
            1.5e-7,
            9.999e15,
            1e16,
            2e300,
            f64::MIN_POSITIVE,
            f64::MAX,
            std::f64::consts::PI,
        ] {
            let mut out = Vec::new();
            write_f64(v, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.len() < 30, "{text}");
            assert_eq!(text.parse::<f64>().unwrap(), v, "{text}");
        }
    }

    #[test]
    fn unsigned_fields_use_the_integer_suffix_or_a_float_beyond_i64() {
        let mut out = Vec::new();
        write_unsigned_field(42, &mut out);
        assert_eq!(out, b"42i");
        out.clear();
        write_unsigned_field(i64::MAX as u64, &mut out);
        assert_eq!(out, b"9223372036854775807i");
        out.clear();
        write_unsigned_field(u64::MAX, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.parse::<f64>().unwrap(), u64::MAX as f64);
        assert!(!text.ends_with('i') && !text.ends_with('u'));
    }

    // The escaping examples of the line protocol reference.
    #[test]
    fn measurement_escapes_commas_and_spaces_only() {
        assert_eq!(esc(escape_measurement, "wea ther"), "wea\\ ther");
        assert_eq!(esc(escape_measurement, "wea,ther"), "wea\\,ther");
        assert_eq!(
            esc(escape_measurement, "my Measurement"),
            "my\\ Measurement"
        );
        assert_eq!(esc(escape_measurement, "a=b"), "a=b");
        assert_eq!(esc(escape_measurement, "cpu"), "cpu");
    }

    #[test]
    fn keys_escape_commas_equals_and_spaces() {
        assert_eq!(esc(escape_key, "location place"), "location\\ place");
        assert_eq!(esc(escape_key, "us,midwest"), "us\\,midwest");
        assert_eq!(esc(escape_key, "temp=rature"), "temp\\=rature");
        assert_eq!(esc(escape_key, "tag Key1"), "tag\\ Key1");
        assert_eq!(esc(escape_key, "🍭"), "🍭");
    }

    #[test]
    fn string_fields_escape_quotes_and_backslashes() {
        assert_eq!(
            esc(escape_string_field, "\"string\" within a string"),
            "\\\"string\\\" within a string"
        );
        assert_eq!(esc(escape_string_field, "too\"hot\""), "too\\\"hot\\\"");
        assert_eq!(esc(escape_string_field, "C:\\dir"), "C:\\\\dir");
        assert_eq!(esc(escape_string_field, "a, b = c"), "a, b = c");
        assert_eq!(esc(escape_string_field, "Launch 🚀"), "Launch 🚀");
    }

    #[test]
    fn newlines_and_dangerous_backslashes_cannot_break_a_line() {
        assert_eq!(esc(escape_key, "a\nb"), "a\\nb");
        assert_eq!(esc(escape_string_field, "a\nb"), "a\\nb");
        assert_eq!(esc(escape_key, "a\\b"), "a\\b");
        assert_eq!(esc(escape_key, "end\\"), "end");
        assert_eq!(esc(escape_key, "end\\\\"), "end");
        assert_eq!(esc(escape_key, "a\\,b"), "a\\,b");
        assert_eq!(esc(escape_key, "a\\\\ b"), "a\\ b");
        assert_eq!(esc(escape_key, "a\\\\b"), "a\\\\b");
        assert_eq!(esc(escape_measurement, "m\\"), "m");
    }
}
