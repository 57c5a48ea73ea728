//! OTLP/JSON bodies (`protocol = "http/json"`): the same messages as the
//! protobuf ones, written with the protobuf JSON mapping that OTLP
//! specifies: lowerCamelCase field names, 64-bit integers as decimal
//! strings, enums as numbers, non-finite doubles as `"NaN"`/`"Infinity"`.
//! Also reads a JSON `partialSuccess` response.

use serde_json::{json, Map, Value as Json};

use crate::proto::{
    ExportMetricsServiceRequest, KeyValue, MetricData, NumberDataPoint, NumberValue, Value,
};

fn double(v: f64) -> Json {
    if v.is_nan() {
        Json::from("NaN")
    } else if v == f64::INFINITY {
        Json::from("Infinity")
    } else if v == f64::NEG_INFINITY {
        Json::from("-Infinity")
    } else {
        Json::from(v)
    }
}

fn attributes(kvs: &[KeyValue]) -> Json {
    Json::Array(
        kvs.iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => json!({ "stringValue": s }),
                    Some(Value::BoolValue(b)) => json!({ "boolValue": b }),
                    Some(Value::IntValue(i)) => json!({ "intValue": i.to_string() }),
                    Some(Value::DoubleValue(d)) => json!({ "doubleValue": double(*d) }),
                    None => json!({}),
                };
                json!({ "key": kv.key, "value": value })
            })
            .collect(),
    )
}

fn data_points(points: &[NumberDataPoint]) -> Json {
    Json::Array(
        points
            .iter()
            .map(|p| {
                let mut o = Map::new();
                o.insert("attributes".into(), attributes(&p.attributes));
                if p.start_time_unix_nano != 0 {
                    o.insert(
                        "startTimeUnixNano".into(),
                        p.start_time_unix_nano.to_string().into(),
                    );
                }
                o.insert("timeUnixNano".into(), p.time_unix_nano.to_string().into());
                match p.value {
                    Some(NumberValue::AsInt(i)) => o.insert("asInt".into(), i.to_string().into()),
                    Some(NumberValue::AsDouble(d)) => o.insert("asDouble".into(), double(d)),
                    None => None,
                };
                Json::Object(o)
            })
            .collect(),
    )
}

/// Appends `request` as OTLP/JSON to `out`.
pub fn write_request(request: &ExportMetricsServiceRequest, out: &mut Vec<u8>) {
    let resource_metrics: Vec<Json> = request
        .resource_metrics
        .iter()
        .map(|rm| {
            let scope_metrics: Vec<Json> = rm
                .scope_metrics
                .iter()
                .map(|sm| {
                    let metrics: Vec<Json> = sm
                        .metrics
                        .iter()
                        .map(|m| {
                            let mut o = Map::new();
                            o.insert("name".into(), m.name.clone().into());
                            o.insert("description".into(), m.description.clone().into());
                            o.insert("unit".into(), m.unit.clone().into());
                            match &m.data {
                                Some(MetricData::Gauge(g)) => {
                                    o.insert(
                                        "gauge".into(),
                                        json!({ "dataPoints": data_points(&g.data_points) }),
                                    );
                                }
                                Some(MetricData::Sum(s)) => {
                                    o.insert(
                                        "sum".into(),
                                        json!({
                                            "dataPoints": data_points(&s.data_points),
                                            "aggregationTemporality": s.aggregation_temporality,
                                            "isMonotonic": s.is_monotonic,
                                        }),
                                    );
                                }
                                None => {}
                            }
                            Json::Object(o)
                        })
                        .collect();
                    let scope = sm
                        .scope
                        .as_ref()
                        .map(|s| json!({ "name": s.name, "version": s.version }));
                    json!({ "scope": scope, "metrics": metrics })
                })
                .collect();
            let resource = rm
                .resource
                .as_ref()
                .map(|r| json!({ "attributes": attributes(&r.attributes) }));
            json!({ "resource": resource, "scopeMetrics": scope_metrics })
        })
        .collect();
    let body = json!({ "resourceMetrics": resource_metrics });
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &body);
}

/// The `partialSuccess` of a JSON response: (rejected points, message).
pub fn read_partial_success(body: &[u8]) -> Option<(i64, String)> {
    let response: Json = serde_json::from_slice(body).ok()?;
    let partial = response.get("partialSuccess")?;
    let rejected = match partial.get("rejectedDataPoints") {
        Some(Json::String(s)) => s.parse().ok()?,
        Some(n) => n.as_i64()?,
        None => 0,
    };
    let message = partial
        .get("errorMessage")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    Some((rejected, message))
}
