//! The OTLP encoder: Alumet points grouped by metric into one
//! `ExportMetricsServiceRequest` per batch, with the data model mapping the
//! README documents:
//!
//! - gauge → `Gauge`;
//! - counter → cumulative monotonic `Sum` (the raw value; start = agent start);
//! - delta → monotonic `Sum` (a consumption is never negative), either
//!   cumulative (the running total per series since the agent started) or
//!   delta (each value over (previous point of the series, this point]);
//! - u64 values stay `as_int` (beyond i64, `as_double`), f64 are `as_double`;
//! - point attributes: `resource_kind`, `resource_id`, `consumer_kind`,
//!   `consumer_id`, then every measurement attribute (one named like those
//!   four becomes `attr_<name>`).

use std::collections::HashMap;

use alumet::measurement::{AttributeValue, MeasurementPoint, MeasurementValue};
use alumet::metrics::{MetricKind, MetricRegistry};
use alumet_delivery::BatchEncoder;
use prost::Message;

use crate::json;
use crate::proto::{
    AggregationTemporality, AnyValue, ExportMetricsServiceRequest, Gauge, InstrumentationScope,
    KeyValue, Metric, MetricData, NumberDataPoint, NumberValue, Resource, ResourceMetrics,
    ScopeMetrics, Sum, Value,
};

/// The temporality of the sums made from delta metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Running totals since the agent started (what Prometheus-backed stores expect).
    Cumulative,
    /// Each point is what was consumed since the previous point of its series.
    Delta,
}

/// How bodies are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BodyFormat {
    /// `application/x-protobuf`.
    #[serde(rename = "http/protobuf")]
    Protobuf,
    /// `application/json` (OTLP/JSON).
    #[serde(rename = "http/json")]
    Json,
}

impl BodyFormat {
    /// The `Content-Type` of the bodies.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Protobuf => "application/x-protobuf",
            BodyFormat::Json => "application/json",
        }
    }
}

/// What the encoder needs to know beyond the points.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    /// Temporality of the sums made from delta metrics.
    pub temporality: Temporality,
    /// Protobuf or JSON.
    pub format: BodyFormat,
    /// `service.name`, `service.version`, `host.name` and any others.
    pub resource_attributes: Vec<(String, String)>,
    /// Start of cumulative sums: when the agent started, ns since the epoch.
    pub start_time_unix_nano: u64,
}

/// Why a point was not encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The point's metric id is not in the registry (a bug upstream).
    #[error("its metric is not registered")]
    UnknownMetric,
    /// A NaN or infinite delta would poison every later running total.
    #[error("its value is NaN or infinite, which cannot be added to a sum")]
    NonFiniteSum,
}

/// The four point attributes every point carries, in this order.
pub const BUILTIN_ATTRIBUTES: [&str; 4] = [
    "resource_kind",
    "resource_id",
    "consumer_kind",
    "consumer_id",
];

/// Prefix of a measurement attribute named like a built-in one.
pub const RENAMED_ATTRIBUTE_PREFIX: &str = "attr_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Gauge,
    /// A counter's raw value.
    CounterSum,
    /// A delta metric: running total or per-interval value.
    DeltaSum(Temporality),
}

#[derive(Debug)]
struct Plan {
    name: String,
    description: String,
    unit: String,
    shape: Shape,
}

/// What is remembered per series (metric + attributes) of a sum.
#[derive(Debug, Clone, Copy)]
struct Series {
    start: u64,
    last_time: u64,
    int_total: u64,
    double_total: f64,
}

/// Encodes points into OTLP request bodies. Create one per output.
#[derive(Debug)]
pub struct OtlpEncoder {
    options: EncoderOptions,
    plans: Vec<Option<Plan>>,
    pending: Vec<Vec<NumberDataPoint>>,
    /// Metric indices with pending points, in the order first seen.
    touched: Vec<usize>,
    points: usize,
    series: HashMap<Box<[u8]>, Series>,
    key: Vec<u8>,
}

fn int_or_double(v: u64) -> NumberValue {
    match i64::try_from(v) {
        Ok(i) => NumberValue::AsInt(i),
        Err(_) => NumberValue::AsDouble(v as f64),
    }
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

/// Appends an unambiguous spelling of an attribute to a series key.
fn push_key(key: &mut Vec<u8>, kv: &KeyValue) {
    key.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
    key.extend_from_slice(kv.key.as_bytes());
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => {
            key.push(1);
            key.extend_from_slice(&(s.len() as u32).to_le_bytes());
            key.extend_from_slice(s.as_bytes());
        }
        Some(Value::BoolValue(b)) => key.extend_from_slice(&[2, u8::from(*b)]),
        Some(Value::IntValue(i)) => {
            key.push(3);
            key.extend_from_slice(&i.to_le_bytes());
        }
        Some(Value::DoubleValue(d)) => {
            key.push(4);
            key.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        None => key.push(0),
    }
}

impl OtlpEncoder {
    /// An encoder with these options.
    pub fn new(options: EncoderOptions) -> Self {
        Self {
            options,
            plans: Vec::new(),
            pending: Vec::new(),
            touched: Vec::new(),
            points: 0,
            series: HashMap::new(),
            key: Vec::new(),
        }
    }

    fn plan(
        &mut self,
        index: usize,
        metrics: &MetricRegistry,
        point: &MeasurementPoint,
    ) -> Result<Shape, SkipReason> {
        if index >= self.plans.len() {
            self.plans.resize_with(index + 1, || None);
            self.pending.resize_with(index + 1, Vec::new);
        }
        if let Some(plan) = &self.plans[index] {
            return Ok(plan.shape);
        }
        let metric = metrics.get(point.metric).ok_or(SkipReason::UnknownMetric)?;
        let shape = match metric.kind {
            MetricKind::Gauge => Shape::Gauge,
            MetricKind::Counter => Shape::CounterSum,
            MetricKind::Delta => Shape::DeltaSum(self.options.temporality),
        };
        self.plans[index] = Some(Plan {
            name: metric.name.clone(),
            description: metric.description.clone(),
            unit: metric.unit.ucum_code(),
            shape,
        });
        Ok(shape)
    }

    fn attributes(point: &MeasurementPoint) -> Vec<KeyValue> {
        let mut out = Vec::with_capacity(4 + point.attributes.len());
        out.push(KeyValue::string(
            BUILTIN_ATTRIBUTES[0],
            point.resource.kind(),
        ));
        out.push(KeyValue::string(BUILTIN_ATTRIBUTES[1], point.resource.id()));
        out.push(KeyValue::string(
            BUILTIN_ATTRIBUTES[2],
            point.consumer.kind(),
        ));
        out.push(KeyValue::string(BUILTIN_ATTRIBUTES[3], point.consumer.id()));
        for (key, value) in &point.attributes {
            let key = if BUILTIN_ATTRIBUTES.contains(&key.as_ref()) {
                format!("{RENAMED_ATTRIBUTE_PREFIX}{key}")
            } else {
                key.to_string()
            };
            out.push(KeyValue {
                key,
                value: any(attribute_value(value)),
            });
        }
        out
    }

    /// The state of the series of a sum point (fresh on first sight);
    /// leaves its key in `self.key` for [`Self::store_series`].
    fn load_series(&mut self, index: usize, attributes: &[KeyValue], time: u64) -> Series {
        self.key.clear();
        self.key.extend_from_slice(&(index as u32).to_le_bytes());
        for kv in attributes {
            push_key(&mut self.key, kv);
        }
        self.series
            .get(self.key.as_slice())
            .copied()
            .unwrap_or_else(|| {
                let start = self.options.start_time_unix_nano.min(time);
                Series {
                    start,
                    last_time: start,
                    int_total: 0,
                    double_total: 0.0,
                }
            })
    }

    fn store_series(&mut self, series: Series) {
        match self.series.get_mut(self.key.as_slice()) {
            Some(s) => *s = series,
            None => {
                self.series
                    .insert(self.key.clone().into_boxed_slice(), series);
            }
        }
    }

    /// Builds the request of the points added since the last call.
    pub fn take_request(&mut self) -> ExportMetricsServiceRequest {
        let mut metrics = Vec::with_capacity(self.touched.len());
        for index in self.touched.drain(..) {
            let Some(plan) = self.plans.get(index).and_then(Option::as_ref) else {
                continue;
            };
            let data_points = std::mem::take(&mut self.pending[index]);
            let data = match plan.shape {
                Shape::Gauge => MetricData::Gauge(Gauge { data_points }),
                Shape::CounterSum | Shape::DeltaSum(Temporality::Cumulative) => {
                    MetricData::Sum(Sum {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })
                }
                Shape::DeltaSum(Temporality::Delta) => MetricData::Sum(Sum {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                    is_monotonic: true,
                }),
            };
            metrics.push(Metric {
                name: plan.name.clone(),
                description: plan.description.clone(),
                unit: plan.unit.clone(),
                data: Some(data),
            });
        }
        self.points = 0;
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: self
                        .options
                        .resource_attributes
                        .iter()
                        .map(|(k, v)| KeyValue::string(k.as_str(), v.as_str()))
                        .collect(),
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "alumet".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    metrics,
                }],
            }],
        }
    }
}

impl BatchEncoder for OtlpEncoder {
    type Skip = SkipReason;

    fn add(
        &mut self,
        point: &MeasurementPoint,
        metrics: &MetricRegistry,
    ) -> Result<(), SkipReason> {
        let index = point.metric.index();
        let shape = self.plan(index, metrics, point)?;
        let time = point.timestamp.unix_nanos();
        let attributes = Self::attributes(point);
        let (start, value) = match shape {
            Shape::Gauge => (
                0,
                match point.value {
                    MeasurementValue::U64(v) => int_or_double(v),
                    MeasurementValue::F64(v) => NumberValue::AsDouble(v),
                },
            ),
            Shape::CounterSum => (
                self.options.start_time_unix_nano.min(time),
                match point.value {
                    MeasurementValue::U64(v) => int_or_double(v),
                    MeasurementValue::F64(v) if v.is_finite() => NumberValue::AsDouble(v),
                    MeasurementValue::F64(_) => return Err(SkipReason::NonFiniteSum),
                },
            ),
            Shape::DeltaSum(temporality) => {
                if let MeasurementValue::F64(v) = point.value {
                    if !v.is_finite() {
                        return Err(SkipReason::NonFiniteSum);
                    }
                }
                let mut series = self.load_series(index, &attributes, time);
                let encoded = match temporality {
                    Temporality::Cumulative => {
                        let value = match point.value {
                            MeasurementValue::U64(v) => {
                                series.int_total = series.int_total.saturating_add(v);
                                int_or_double(series.int_total)
                            }
                            MeasurementValue::F64(v) => {
                                series.double_total += v;
                                NumberValue::AsDouble(series.double_total)
                            }
                        };
                        (series.start, value)
                    }
                    Temporality::Delta => {
                        let start = series.last_time.min(time);
                        series.last_time = time;
                        let value = match point.value {
                            MeasurementValue::U64(v) => int_or_double(v),
                            MeasurementValue::F64(v) => NumberValue::AsDouble(v),
                        };
                        (start, value)
                    }
                };
                self.store_series(series);
                encoded
            }
        };
        if self.pending[index].is_empty() {
            self.touched.push(index);
        }
        self.pending[index].push(NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(value),
        });
        self.points += 1;
        Ok(())
    }

    fn points(&self) -> usize {
        self.points
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        let request = self.take_request();
        match self.options.format {
            BodyFormat::Protobuf => {
                out.reserve(request.encoded_len());
                // A Vec grows as needed: encoding into it cannot run out of room.
                let _ = request.encode(out);
            }
            BodyFormat::Json => json::write_request(&request, out),
        }
    }

    fn concatenable(&self) -> bool {
        // Two protobuf messages one after the other parse as one whose
        // repeated fields are concatenated; two JSON documents do not.
        self.options.format == BodyFormat::Protobuf
    }
}
