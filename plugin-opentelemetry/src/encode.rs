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
//!   four becomes `attr_<name>`);
//! - a point about a named workload (a container, a pod) goes in a resource
//!   of its own: the agent's resource attributes and the workload's, per the
//!   semantic conventions (`container.name`, `k8s.pod.name`...; see
//!   [`crate::attributes::WORKLOAD_RESOURCE_ATTRIBUTES`]). Its series is the
//!   same before and after its names are known.

use alumet::measurement::{MeasurementPoint, MeasurementValue};
use alumet::metrics::{MetricKind, MetricRegistry};
use alumet_delivery::BatchEncoder;
use prost::Message;

use crate::attributes::{fill_attributes, workload_resource};
use crate::json;
use crate::proto::{
    AggregationTemporality, ExportMetricsServiceRequest, Gauge, InstrumentationScope, KeyValue,
    Metric, MetricData, NumberDataPoint, NumberValue, Resource, ResourceMetrics, ScopeMetrics, Sum,
};
use crate::series::SeriesTable;

pub use crate::attributes::{BUILTIN_ATTRIBUTES, RENAMED_ATTRIBUTE_PREFIX};
pub use crate::series::SERIES_IDLE_NS;

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

/// The points of one resource waiting for the next request.
#[derive(Debug, Default)]
struct ResourceBatch {
    /// The workload's resource attributes (none for the agent's own resource).
    attributes: Vec<(&'static str, String)>,
    /// Per metric index, its points.
    pending: Vec<Vec<NumberDataPoint>>,
    /// Metric indices with pending points, in the order first seen.
    touched: Vec<usize>,
}

impl ResourceBatch {
    /// Whether the next request carries it: the agent's resource always
    /// (as before workloads had resources), a workload's when it has points.
    fn is_sent(&self) -> bool {
        !self.touched.is_empty() || self.attributes.is_empty()
    }
}

/// Encodes points into OTLP request bodies. Create one per output.
#[derive(Debug)]
pub struct OtlpEncoder {
    options: EncoderOptions,
    plans: Vec<Option<Plan>>,
    /// The agent's own resource first, then one per workload seen in the batch.
    batches: Vec<ResourceBatch>,
    points: usize,
    series: SeriesTable,
    /// Sent data points, whose strings the next points reuse.
    pool: Vec<NumberDataPoint>,
}

/// The most recycled data points kept (about one default batch).
const POOL_MAX_POINTS: usize = 8192;

/// `as_int` when it fits in i64, else `as_double`.
pub(crate) fn int_or_double(v: u64) -> NumberValue {
    match i64::try_from(v) {
        Ok(i) => NumberValue::AsInt(i),
        Err(_) => NumberValue::AsDouble(v as f64),
    }
}

impl OtlpEncoder {
    /// An encoder with these options.
    pub fn new(options: EncoderOptions) -> Self {
        Self {
            options,
            plans: Vec::new(),
            batches: vec![ResourceBatch::default()],
            points: 0,
            series: SeriesTable::default(),
            pool: Vec::new(),
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

    /// Builds the request of the points added since the last call: one
    /// resource for the agent's own points, one per named workload.
    pub fn take_request(&mut self) -> ExportMetricsServiceRequest {
        let mut resource_metrics = Vec::with_capacity(self.batches.len());
        for batch in &mut self.batches {
            if !batch.is_sent() {
                continue;
            }
            let mut metrics = Vec::with_capacity(batch.touched.len());
            for index in batch.touched.drain(..) {
                let Some(plan) = self.plans.get(index).and_then(Option::as_ref) else {
                    continue;
                };
                let data_points = std::mem::take(&mut batch.pending[index]);
                metrics.push(Metric {
                    name: plan.name.clone(),
                    description: plan.description.clone(),
                    unit: plan.unit.clone(),
                    data: Some(data_of(plan.shape, data_points)),
                });
            }
            let attributes = self
                .options
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::string(k.as_str(), v.as_str()))
                .chain(
                    batch
                        .attributes
                        .iter()
                        .map(|(k, v)| KeyValue::string(*k, v.as_str())),
                )
                .collect();
            resource_metrics.push(ResourceMetrics {
                resource: Some(Resource { attributes }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "alumet".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    metrics,
                }],
            });
        }
        // Workloads come and go: their resources are made again per batch.
        self.batches.truncate(1);
        self.points = 0;
        ExportMetricsServiceRequest { resource_metrics }
    }

    /// The batch of the resource `attributes` name, made if new.
    fn batch_of(&mut self, attributes: Vec<(&'static str, String)>) -> &mut ResourceBatch {
        let i = match self.batches.iter().position(|b| b.attributes == attributes) {
            Some(i) => i,
            None => {
                self.batches.push(ResourceBatch {
                    attributes,
                    ..ResourceBatch::default()
                });
                self.batches.len() - 1
            }
        };
        &mut self.batches[i]
    }
}

/// The OTLP data of a metric of `shape` with `data_points`.
fn data_of(shape: Shape, data_points: Vec<NumberDataPoint>) -> MetricData {
    match shape {
        Shape::Gauge => MetricData::Gauge(Gauge { data_points }),
        Shape::CounterSum | Shape::DeltaSum(Temporality::Cumulative) => MetricData::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Shape::DeltaSum(Temporality::Delta) => MetricData::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
        }),
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
        let mut dp = self.pool.pop().unwrap_or_default();
        fill_attributes(point, &mut dp.attributes);
        let attributes = std::mem::take(&mut dp.attributes);
        let result = self.encode_value(index, shape, point, time, &attributes);
        dp.attributes = attributes;
        let (start, value) = match result {
            Ok(v) => v,
            Err(e) => {
                self.pool.push(dp);
                return Err(e);
            }
        };
        dp.start_time_unix_nano = start;
        dp.time_unix_nano = time;
        dp.value = Some(value);
        let batch = self.batch_of(workload_resource(point));
        if index >= batch.pending.len() {
            batch.pending.resize_with(index + 1, Vec::new);
        }
        if batch.pending[index].is_empty() {
            batch.touched.push(index);
        }
        batch.pending[index].push(dp);
        self.points += 1;
        Ok(())
    }

    fn points(&self) -> usize {
        self.points
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        let order: Vec<Vec<usize>> = self
            .batches
            .iter()
            .filter(|b| b.is_sent())
            .map(|b| b.touched.clone())
            .collect();
        let mut request = self.take_request();
        match self.options.format {
            BodyFormat::Protobuf => {
                // A Vec grows as needed: encoding into it cannot run out of room.
                let _ = request.encode(out);
            }
            BodyFormat::Json => json::write_request(&request, out),
        }
        self.recycle(&mut request, &order);
        self.series.prune_idle();
    }

    fn format(&self) -> &'static str {
        match self.options.format {
            BodyFormat::Protobuf => "otlp-protobuf",
            BodyFormat::Json => "otlp-json",
        }
    }

    fn concatenable(&self) -> bool {
        // Two protobuf messages one after the other parse as one whose
        // repeated fields are concatenated; two JSON documents do not.
        self.options.format == BodyFormat::Protobuf
    }
}

impl OtlpEncoder {
    /// The (start, value) of a point, updating its series for sums.
    fn encode_value(
        &mut self,
        index: usize,
        shape: Shape,
        point: &MeasurementPoint,
        time: u64,
        attributes: &[KeyValue],
    ) -> Result<(u64, NumberValue), SkipReason> {
        Ok(match shape {
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
                let value = point.value;
                let agent_start = self.options.start_time_unix_nano;
                self.series.update(
                    index,
                    attributes,
                    time,
                    agent_start,
                    |series| match temporality {
                        Temporality::Cumulative => {
                            let value = match value {
                                MeasurementValue::U64(v) => {
                                    series.int_total = series.int_total.saturating_add(v);
                                    int_or_double(series.int_total)
                                }
                                MeasurementValue::F64(v) => {
                                    series.double_total += v;
                                    NumberValue::AsDouble(series.double_total)
                                }
                            };
                            series.last_time = series.last_time.max(time);
                            (series.start, value)
                        }
                        Temporality::Delta => {
                            let start = series.last_time.min(time);
                            series.last_time = time;
                            let value = match value {
                                MeasurementValue::U64(v) => int_or_double(v),
                                MeasurementValue::F64(v) => NumberValue::AsDouble(v),
                            };
                            (start, value)
                        }
                    },
                )
            }
        })
    }

    /// Gives the sent data points back to the pool and the agent's
    /// resource its vectors, so that the next batch reuses their memory.
    fn recycle(&mut self, request: &mut ExportMetricsServiceRequest, order: &[Vec<usize>]) {
        for (r, (resource, indices)) in request.resource_metrics.iter_mut().zip(order).enumerate() {
            let metrics = resource
                .scope_metrics
                .iter_mut()
                .flat_map(|sm| sm.metrics.iter_mut());
            for (metric, &index) in metrics.zip(indices) {
                let points = match &mut metric.data {
                    Some(MetricData::Gauge(g)) => &mut g.data_points,
                    Some(MetricData::Sum(s)) => &mut s.data_points,
                    None => continue,
                };
                if self.pool.len() < POOL_MAX_POINTS {
                    self.pool.append(points);
                }
                points.clear();
                if r == 0 {
                    if let Some(pending) = self.batches[0].pending.get_mut(index) {
                        if pending.capacity() < points.capacity() {
                            std::mem::swap(pending, points);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Value;
    use alumet::measurement::{Resource, ResourceConsumer, Timestamp};
    use alumet::metrics::{Metric as AlumetMetric, Unit, ValueType};

    fn encoder(temporality: Temporality) -> OtlpEncoder {
        OtlpEncoder::new(EncoderOptions {
            temporality,
            format: BodyFormat::Protobuf,
            resource_attributes: vec![("service.name".into(), "alumet".into())],
            start_time_unix_nano: 1_000,
        })
    }

    fn decode(encoder: &mut OtlpEncoder) -> Vec<Metric> {
        let mut body = Vec::new();
        encoder.finish(&mut body);
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        request.resource_metrics[0].scope_metrics[0].metrics.clone()
    }

    fn attrs(dp: &NumberDataPoint) -> Vec<(String, Option<Value>)> {
        dp.attributes
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().and_then(|v| v.value)))
            .collect()
    }

    #[test]
    fn recycled_points_carry_only_their_own_attributes() {
        let mut registry = MetricRegistry::new();
        let gauge = registry
            .register(AlumetMetric::new(
                "g",
                Unit::Byte,
                ValueType::U64,
                MetricKind::Gauge,
                "",
            ))
            .unwrap();
        let mut e = encoder(Temporality::Cumulative);
        let first = MeasurementPoint::new(
            Timestamp::from_unix_nanos(5_000),
            gauge,
            Resource::CpuPackage { id: 12 },
            ResourceConsumer::Process { pid: 42 },
            7u64,
        )
        .with_attr("n", 3u64)
        .with_attr("exe", "long-process-name")
        .with_attr("resource_id", "clash");
        e.add(&first, &registry).unwrap();
        let m = decode(&mut e);
        let Some(MetricData::Gauge(g)) = &m[0].data else {
            panic!("{m:?}")
        };
        assert_eq!(attrs(&g.data_points[0]).len(), 7);
        assert_eq!(g.data_points[0].attributes[6].key, "attr_resource_id");

        let second = MeasurementPoint::new(
            Timestamp::from_unix_nanos(6_000),
            gauge,
            Resource::LocalMachine,
            ResourceConsumer::LocalMachine,
            u64::MAX,
        )
        .with_attr("n", "now a string");
        e.add(&second, &registry).unwrap();
        let m = decode(&mut e);
        let Some(MetricData::Gauge(g)) = &m[0].data else {
            panic!("{m:?}")
        };
        let s = |v: &str| Some(Value::StringValue(v.into()));
        assert_eq!(
            attrs(&g.data_points[0]),
            vec![
                ("resource_kind".into(), s("local_machine")),
                ("resource_id".into(), s("")),
                ("consumer_kind".into(), s("local_machine")),
                ("consumer_id".into(), s("")),
                ("n".into(), s("now a string")),
            ]
        );
        // Beyond i64, an integer goes as a double rather than wrapping.
        assert_eq!(
            g.data_points[0].value,
            Some(NumberValue::AsDouble(u64::MAX as f64))
        );
    }

    #[test]
    fn idle_series_are_forgotten_and_start_again_later() {
        let mut registry = MetricRegistry::new();
        let cpu = registry
            .register(AlumetMetric::new(
                "c",
                Unit::Second,
                ValueType::F64,
                MetricKind::Delta,
                "",
            ))
            .unwrap();
        let point = |t: u64, pid: u32| {
            MeasurementPoint::new(
                Timestamp::from_unix_nanos(t),
                cpu,
                Resource::LocalMachine,
                ResourceConsumer::Process { pid },
                1.0,
            )
        };
        let mut e = encoder(Temporality::Cumulative);
        e.add(&point(2_000, 1), &registry).unwrap();
        e.add(&point(2_000, 2), &registry).unwrap();
        let _ = decode(&mut e);
        assert_eq!(e.series.len(), 2);
        // Process 2 ended; process 1 goes on past the idle horizon.
        let later = 2_000 + SERIES_IDLE_NS + 1;
        e.add(&point(later, 1), &registry).unwrap();
        let _ = decode(&mut e);
        assert_eq!(e.series.len(), 1, "the ended process is forgotten");
        // Its pid comes back: a new total, with a start after its old points.
        e.add(&point(later + 10, 2), &registry).unwrap();
        e.add(&point(later + 10, 1), &registry).unwrap();
        let m = decode(&mut e);
        let Some(MetricData::Sum(sum)) = &m[0].data else {
            panic!("{m:?}")
        };
        let (back, kept) = (&sum.data_points[0], &sum.data_points[1]);
        assert_eq!(back.value, Some(NumberValue::AsDouble(1.0)));
        assert!(back.start_time_unix_nano > 2_000);
        assert_eq!(kept.value, Some(NumberValue::AsDouble(3.0)));
        assert_eq!(kept.start_time_unix_nano, 1_000);
    }

    #[test]
    fn delta_metrics_become_running_totals_per_series_or_delta_sums() {
        let mut registry = MetricRegistry::new();
        let energy = registry
            .register(AlumetMetric::new(
                "e",
                Unit::Joule,
                ValueType::F64,
                MetricKind::Delta,
                "",
            ))
            .unwrap();
        let point = |t: u64, pkg: u32, v: f64| {
            MeasurementPoint::new(
                Timestamp::from_unix_nanos(t),
                energy,
                Resource::CpuPackage { id: pkg },
                ResourceConsumer::LocalMachine,
                v,
            )
        };
        // (start, value) of package 0's second point.
        for (temporality, expected) in [
            (Temporality::Cumulative, (1_000, 4.0)),
            (Temporality::Delta, (2_000, 2.5)),
        ] {
            let mut e = encoder(temporality);
            e.add(&point(2_000, 0, 1.5), &registry).unwrap();
            e.add(&point(2_000, 1, 10.0), &registry).unwrap();
            let _ = decode(&mut e);
            e.add(&point(3_000, 0, 2.5), &registry).unwrap();
            assert_eq!(
                e.add(&point(3_000, 1, f64::NAN), &registry),
                Err(SkipReason::NonFiniteSum)
            );
            let m = decode(&mut e);
            let Some(MetricData::Sum(sum)) = &m[0].data else {
                panic!("{m:?}")
            };
            assert!(sum.is_monotonic);
            let dp = &sum.data_points[0];
            let (start, value) = expected;
            assert_eq!(dp.start_time_unix_nano, start, "{temporality:?}");
            assert_eq!(
                dp.value,
                Some(NumberValue::AsDouble(value)),
                "{temporality:?}"
            );
            assert_eq!(sum.data_points.len(), 1);
        }
    }

    #[test]
    fn a_named_workload_is_a_resource_of_its_own_and_its_sum_goes_on_when_names_come() {
        let mut registry = MetricRegistry::new();
        let cpu = registry
            .register(AlumetMetric::new(
                "cgroup_cpu_time",
                Unit::Second,
                ValueType::F64,
                MetricKind::Delta,
                "",
            ))
            .unwrap();
        let id = "a".repeat(64);
        let point = |t: u64, names: bool| {
            let mut p = MeasurementPoint::new(
                Timestamp::from_unix_nanos(t),
                cpu,
                Resource::LocalMachine,
                ResourceConsumer::ControlGroup {
                    path: format!("/docker/{id}").into(),
                },
                1.5,
            )
            .with_attr("container_id", id.clone())
            .with_attr("workload", "container");
            if names {
                p = p
                    .with_attr("container_name", "web")
                    .with_attr("image", "nginx:1.27");
            }
            p
        };
        let machine = MeasurementPoint::new(
            Timestamp::from_unix_nanos(2_000),
            cpu,
            Resource::LocalMachine,
            ResourceConsumer::LocalMachine,
            9.0,
        );
        let mut e = encoder(Temporality::Cumulative);
        e.add(&point(2_000, false), &registry).unwrap();
        e.add(&machine, &registry).unwrap();
        e.add(&point(3_000, true), &registry).unwrap();
        let mut body = Vec::new();
        e.finish(&mut body);
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        let resources: Vec<Vec<(String, String)>> = request
            .resource_metrics
            .iter()
            .map(|rm| {
                rm.resource
                    .as_ref()
                    .unwrap()
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = match kv.value.clone().and_then(|v| v.value) {
                            Some(Value::StringValue(s)) => s,
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), v)
                    })
                    .collect()
            })
            .collect();
        let s = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            resources,
            vec![
                vec![s("service.name", "alumet")],
                vec![s("service.name", "alumet"), s("container.id", &id)],
                vec![
                    s("service.name", "alumet"),
                    s("container.id", &id),
                    s("container.name", "web"),
                    s("container.image.name", "nginx:1.27")
                ],
            ]
        );
        let sum_of = |r: usize| {
            let m = &request.resource_metrics[r].scope_metrics[0].metrics[0];
            let Some(MetricData::Sum(sum)) = &m.data else {
                panic!("{m:?}")
            };
            sum.data_points[0].clone()
        };
        let (before, after) = (sum_of(1), sum_of(2));
        // Same series (same point attributes, no names among them): the
        // running total goes on from 1.5 to 3.0, from the same start.
        assert_eq!(attrs(&before), attrs(&after));
        assert!(!attrs(&after)
            .iter()
            .any(|(k, _)| k == "container_name" || k == "container_id"));
        assert_eq!(before.value, Some(NumberValue::AsDouble(1.5)));
        assert_eq!(after.value, Some(NumberValue::AsDouble(3.0)));
        assert_eq!(before.start_time_unix_nano, after.start_time_unix_nano);
        // The next batch starts again with the agent's resource alone.
        e.add(&machine, &registry).unwrap();
        let mut body = Vec::new();
        e.finish(&mut body);
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(request.resource_metrics.len(), 1);
    }
}
