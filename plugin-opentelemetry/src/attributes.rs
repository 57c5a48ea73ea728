//! The point attributes of a data point: the resource and consumer, then
//! every measurement attribute with its type, written into the strings of a
//! recycled data point so that steady-state encoding allocates nothing.

use alumet::measurement::{AttributeValue, MeasurementPoint};

use crate::proto::{AnyValue, KeyValue, Value};

/// The four point attributes every point carries, in this order.
pub const BUILTIN_ATTRIBUTES: [&str; 4] = [
    "resource_kind",
    "resource_id",
    "consumer_kind",
    "consumer_id",
];

/// Prefix of a measurement attribute named like a built-in one.
pub const RENAMED_ATTRIBUTE_PREFIX: &str = "attr_";

/// Measurement attributes that name the workload a point is about, and the
/// OpenTelemetry resource attribute each becomes (semantic conventions,
/// "container" and "k8s" resource attributes,
/// <https://opentelemetry.io/docs/specs/semconv/resource/k8s/>): such a
/// point goes in a resource of its workload's, not in its own attributes.
pub const WORKLOAD_RESOURCE_ATTRIBUTES: [(&str, &str); 8] = [
    ("container_id", "container.id"),
    ("container_name", "container.name"),
    ("image", "container.image.name"),
    ("pod_uid", "k8s.pod.uid"),
    ("pod", "k8s.pod.name"),
    ("namespace", "k8s.namespace.name"),
    ("container", "k8s.container.name"),
    ("node", "k8s.node.name"),
];

/// The resource attribute that measurement attribute `key` becomes, if any.
pub fn workload_resource_key(key: &str) -> Option<&'static str> {
    WORKLOAD_RESOURCE_ATTRIBUTES
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, r)| *r)
}

/// The workload resource attributes of `point`, in its attributes' order
/// (empty for a point about no named workload).
pub fn workload_resource(point: &MeasurementPoint) -> Vec<(&'static str, String)> {
    point
        .attributes
        .iter()
        .filter_map(|(k, v)| workload_resource_key(k).map(|r| (r, v.to_string())))
        .collect()
}

fn any(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn attribute_value(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::Str(s) => Value::StringValue(s.to_string()),
        AttributeValue::U64(v) => match i64::try_from(*v) {
            Ok(i) => Value::IntValue(i),
            Err(_) => Value::StringValue(v.to_string()),
        },
        AttributeValue::I64(v) => Value::IntValue(*v),
        AttributeValue::F64(v) => Value::DoubleValue(*v),
        AttributeValue::Bool(v) => Value::BoolValue(*v),
    }
}

/// Writes an attribute's string value into a reused buffer.
type WriteValue<'a> = &'a dyn Fn(&mut String);

/// The string buffer of `kv`'s value, emptied (a new one if it held none).
fn take_string(kv: &mut KeyValue) -> String {
    match kv.value.take() {
        Some(AnyValue {
            value: Some(Value::StringValue(mut s)),
        }) => {
            s.clear();
            s
        }
        _ => String::new(),
    }
}

/// Sets `kv`'s value to the string `s`.
fn put_string(kv: &mut KeyValue, s: String) {
    kv.value = any(Value::StringValue(s));
}

/// Fills `out` with the point attributes, reusing the strings already
/// there (recycled data points): in steady state this allocates nothing.
pub fn fill_attributes(point: &MeasurementPoint, out: &mut Vec<KeyValue>) {
    let mut n = 0;
    let mut slot = |out: &mut Vec<KeyValue>| -> usize {
        if n == out.len() {
            out.push(KeyValue::default());
        }
        n += 1;
        n - 1
    };
    let builtin: [(&str, WriteValue<'_>); 4] = [
        (BUILTIN_ATTRIBUTES[0], &|s| {
            s.push_str(point.resource.kind())
        }),
        (BUILTIN_ATTRIBUTES[1], &|s| {
            // Writing into a String cannot fail.
            let _ = point.resource.write_id(s);
        }),
        (BUILTIN_ATTRIBUTES[2], &|s| {
            s.push_str(point.consumer.kind())
        }),
        (BUILTIN_ATTRIBUTES[3], &|s| {
            let _ = point.consumer.write_id(s);
        }),
    ];
    for (key, write) in builtin {
        let i = slot(out);
        let kv = &mut out[i];
        kv.key.clear();
        kv.key.push_str(key);
        let mut value = take_string(kv);
        write(&mut value);
        put_string(kv, value);
    }
    for (key, value) in &point.attributes {
        // The workload's names are its resource's (see `workload_resource`).
        if workload_resource_key(key).is_some() {
            continue;
        }
        let i = slot(out);
        let kv = &mut out[i];
        kv.key.clear();
        if BUILTIN_ATTRIBUTES.contains(&key.as_ref()) {
            kv.key.push_str(RENAMED_ATTRIBUTE_PREFIX);
        }
        kv.key.push_str(key);
        match value {
            AttributeValue::Str(v) => {
                let mut value = take_string(kv);
                value.push_str(v);
                put_string(kv, value);
            }
            other => kv.value = any(attribute_value(other)),
        }
    }
    out.truncate(n);
}
