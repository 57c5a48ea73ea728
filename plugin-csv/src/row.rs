//! Turns measurement points into CSV rows.
//!
//! Everything that is the same for every point of a metric (its name and
//! unit, quoted as needed) is formatted once, in a table indexed by
//! `MetricId::index()`; the last timestamp is cached since the points of a
//! poll share it. A row is then a handful of byte copies and integer
//! formats into a reused buffer.

use alumet::measurement::{
    AttributeValue, MeasurementPoint, MeasurementValue, Resource, ResourceConsumer,
};
use alumet::metrics::MetricRegistry;
use serde::{Deserialize, Serialize};

use crate::format::{push_f64, push_i64, push_rfc3339_nanos, push_u64, QuoteTable};

/// The fixed columns, in order.
pub const COLUMNS: [&str; 9] = [
    "timestamp",
    "metric",
    "unit",
    "value",
    "resource_kind",
    "resource_id",
    "consumer_kind",
    "consumer_id",
    "attributes",
];

/// Separates the `k=v` pairs inside the `attributes` column.
pub const ATTRIBUTE_SEPARATOR: u8 = b';';

/// How timestamps are written.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// `2026-11-22T10:00:00.123456789Z`: RFC 3339, UTC, always 9 fraction digits.
    #[default]
    Rfc3339,
    /// Nanoseconds since the Unix epoch, e.g. `1795341600123456789`.
    UnixNs,
}

/// Formats rows; one per output.
pub struct RowFormatter {
    delimiter: u8,
    quotes: QuoteTable,
    timestamp_format: TimestampFormat,
    /// Attribute keys that get a column of their own, in column order.
    attribute_columns: Vec<String>,
    /// Per metric index: `<delim>name<delim>unit<delim>`, ready to copy.
    metric_columns: Vec<Vec<u8>>,
    last_timestamp: Option<u64>,
    timestamp_field: Vec<u8>,
    scratch: Vec<u8>,
    order: Vec<usize>,
}

impl RowFormatter {
    /// A formatter for `delimiter` (one ASCII byte other than `"`, CR, LF).
    pub fn new(
        delimiter: u8,
        timestamp_format: TimestampFormat,
        attribute_columns: Vec<String>,
    ) -> Self {
        Self {
            delimiter,
            quotes: QuoteTable::new(delimiter),
            timestamp_format,
            attribute_columns,
            metric_columns: Vec::new(),
            last_timestamp: None,
            timestamp_field: Vec::with_capacity(40),
            scratch: Vec::with_capacity(128),
            order: Vec::with_capacity(8),
        }
    }

    /// The header line, with its `\n`.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let names = COLUMNS
            .iter()
            .copied()
            .chain(self.attribute_columns.iter().map(String::as_str));
        for (i, name) in names.enumerate() {
            if i > 0 {
                out.push(self.delimiter);
            }
            self.quotes.push_field(&mut out, name.as_bytes());
        }
        out.push(b'\n');
        out
    }

    fn prepare_metrics(&mut self, metrics: &MetricRegistry) {
        self.metric_columns.clear();
        for (_, metric) in metrics.iter() {
            let mut cols = vec![self.delimiter];
            self.quotes.push_field(&mut cols, metric.name.as_bytes());
            cols.push(self.delimiter);
            self.quotes
                .push_field(&mut cols, metric.unit.ucum_code().as_bytes());
            cols.push(self.delimiter);
            self.metric_columns.push(cols);
        }
    }

    fn push_timestamp(&mut self, out: &mut Vec<u8>, unix_nanos: u64) {
        if self.last_timestamp != Some(unix_nanos) {
            self.scratch.clear();
            match self.timestamp_format {
                TimestampFormat::Rfc3339 => push_rfc3339_nanos(&mut self.scratch, unix_nanos),
                TimestampFormat::UnixNs => push_u64(&mut self.scratch, unix_nanos),
            }
            self.timestamp_field.clear();
            self.quotes
                .push_field(&mut self.timestamp_field, &self.scratch);
            self.last_timestamp = Some(unix_nanos);
        }
        out.extend_from_slice(&self.timestamp_field);
    }

    /// A number field, quoted only in the odd case of a delimiter that can
    /// appear in numbers (`.`, `-`, digits...).
    fn push_number(&mut self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        let start = out.len();
        write(out);
        if self.quotes.needs_quotes(&out[start..]) {
            self.scratch.clear();
            self.scratch.extend_from_slice(&out[start..]);
            out.truncate(start);
            self.quotes.push_field(out, &self.scratch);
        }
    }

    /// Appends the row of `point`, with its `\n`, to `out`.
    pub fn push_row(
        &mut self,
        out: &mut Vec<u8>,
        point: &MeasurementPoint,
        metrics: &MetricRegistry,
    ) {
        let index = point.metric.index();
        if index >= self.metric_columns.len() {
            // The registry is frozen before outputs run: this happens once.
            self.prepare_metrics(metrics);
        }
        let d = self.delimiter;
        self.push_timestamp(out, point.timestamp.unix_nanos());
        match self.metric_columns.get(index) {
            Some(cols) => out.extend_from_slice(cols),
            None => {
                // An id from another registry: keep the row, flag the metric.
                out.push(d);
                self.quotes
                    .push_field(out, format!("unknown_metric_{index}").as_bytes());
                out.push(d);
                out.push(d);
            }
        }
        match point.value {
            MeasurementValue::U64(v) => self.push_number(out, |o| push_u64(o, v)),
            MeasurementValue::F64(v) => self.push_number(out, |o| push_f64(o, v)),
        }
        out.push(d);
        self.quotes
            .push_field(out, point.resource.kind().as_bytes());
        out.push(d);
        match &point.resource {
            Resource::CpuPackage { id }
            | Resource::CpuCore { id }
            | Resource::Dram { pkg_id: id } => {
                let id = u64::from(*id);
                self.push_number(out, |o| push_u64(o, id));
            }
            other => self.quotes.push_field(out, other.id().as_bytes()),
        }
        out.push(d);
        self.quotes
            .push_field(out, point.consumer.kind().as_bytes());
        out.push(d);
        match &point.consumer {
            ResourceConsumer::Process { pid } => {
                let pid = u64::from(*pid);
                self.push_number(out, |o| push_u64(o, pid));
            }
            other => self.quotes.push_field(out, other.id().as_bytes()),
        }
        out.push(d);
        self.push_attributes(out, point);
        out.push(b'\n');
    }

    /// The `attributes` column, then the configured attribute columns.
    fn push_attributes(&mut self, out: &mut Vec<u8>, point: &MeasurementPoint) {
        let attrs = &point.attributes;
        self.order.clear();
        self.order.extend(
            (0..attrs.len()).filter(|&i| !self.attribute_columns.iter().any(|c| *c == attrs[i].0)),
        );
        // Most sources build their lists in key order already: checking is
        // cheaper than sorting (the sort was 2 % of the agent's samples).
        if self.order.len() > 1 && !self.order.is_sorted_by(|&a, &b| attrs[a].0 <= attrs[b].0) {
            self.order
                .sort_unstable_by(|&a, &b| attrs[a].0.cmp(&attrs[b].0));
        }
        self.scratch.clear();
        for (n, &i) in self.order.iter().enumerate() {
            if n > 0 {
                self.scratch.push(ATTRIBUTE_SEPARATOR);
            }
            let (key, value) = &attrs[i];
            push_escaped(&mut self.scratch, key.as_bytes());
            self.scratch.push(b'=');
            push_attribute_value(&mut self.scratch, value, true);
        }
        self.quotes.push_field(out, &self.scratch);

        for c in 0..self.attribute_columns.len() {
            out.push(self.delimiter);
            let key = &self.attribute_columns[c];
            if let Some((_, value)) = attrs.iter().find(|(k, _)| k == key) {
                self.scratch.clear();
                push_attribute_value(&mut self.scratch, value, false);
                self.quotes.push_field(out, &self.scratch);
            }
        }
    }
}

/// Appends `text` with `\`, `;` and `=` escaped by a backslash, so that the
/// pairs of the `attributes` column split without ambiguity.
fn push_escaped(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        if b == b'\\' || b == ATTRIBUTE_SEPARATOR || b == b'=' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

fn push_attribute_value(out: &mut Vec<u8>, value: &AttributeValue, escape: bool) {
    match value {
        AttributeValue::Str(s) if escape => push_escaped(out, s.as_bytes()),
        AttributeValue::Str(s) => out.extend_from_slice(s.as_bytes()),
        AttributeValue::U64(v) => push_u64(out, *v),
        AttributeValue::I64(v) => push_i64(out, *v),
        AttributeValue::F64(v) => push_f64(out, *v),
        AttributeValue::Bool(true) => out.extend_from_slice(b"true"),
        AttributeValue::Bool(false) => out.extend_from_slice(b"false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alumet::measurement::Timestamp;
    use alumet::metrics::{Metric, MetricKind, Unit, ValueType};

    fn registry() -> (MetricRegistry, alumet::metrics::MetricId) {
        let mut r = MetricRegistry::new();
        let id = r
            .register(Metric::new(
                "rapl_consumed_energy",
                Unit::Joule,
                ValueType::F64,
                MetricKind::Delta,
                "e",
            ))
            .unwrap();
        (r, id)
    }

    fn row(f: &mut RowFormatter, p: &MeasurementPoint, r: &MetricRegistry) -> String {
        let mut out = Vec::new();
        f.push_row(&mut out, p, r);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_plain_row() {
        let (r, id) = registry();
        let p = MeasurementPoint::new(
            Timestamp::from_unix_nanos(1_795_341_600_123_456_789),
            id,
            Resource::CpuPackage { id: 0 },
            ResourceConsumer::LocalMachine,
            12.5,
        )
        .with_attr("domain", "package");
        let mut f = RowFormatter::new(b',', TimestampFormat::Rfc3339, vec![]);
        assert_eq!(
            row(&mut f, &p, &r),
            "2026-11-22T10:00:00.123456789Z,rapl_consumed_energy,J,12.5,cpu_package,0,local_machine,,domain=package\n"
        );
        let mut f = RowFormatter::new(b'\t', TimestampFormat::UnixNs, vec![]);
        assert_eq!(
            row(&mut f, &p, &r),
            "1795341600123456789\trapl_consumed_energy\tJ\t12.5\tcpu_package\t0\tlocal_machine\t\tdomain=package\n"
        );
    }

    #[test]
    fn attributes_are_sorted_escaped_and_split_into_columns() {
        let (r, id) = registry();
        let p = MeasurementPoint::new(
            Timestamp::from_unix_nanos(0),
            id,
            Resource::LocalMachine,
            ResourceConsumer::Process { pid: 42 },
            1u64,
        )
        .with_attr("zeta", true)
        .with_attr("exe", "a;b=c\\d")
        .with_attr("count", -3i64);
        let mut f = RowFormatter::new(b',', TimestampFormat::UnixNs, vec![]);
        assert!(
            row(&mut f, &p, &r).ends_with(",process,42,count=-3;exe=a\\;b\\=c\\\\d;zeta=true\n")
        );
        let mut f = RowFormatter::new(
            b',',
            TimestampFormat::UnixNs,
            vec!["exe".into(), "absent".into()],
        );
        assert!(f.header().ends_with(b",attributes,exe,absent\n"));
        assert!(row(&mut f, &p, &r).ends_with(",process,42,count=-3;zeta=true,a;b=c\\d,\n"));
    }

    #[test]
    fn delimiter_inside_numbers_is_quoted() {
        let (r, id) = registry();
        let p = MeasurementPoint::new(
            Timestamp::from_unix_nanos(0),
            id,
            Resource::LocalMachine,
            ResourceConsumer::LocalMachine,
            0.5,
        );
        let mut f = RowFormatter::new(b'.', TimestampFormat::Rfc3339, vec![]);
        assert_eq!(
            row(&mut f, &p, &r),
            "\"1970-01-01T00:00:00.000000000Z\".rapl_consumed_energy.J.\"0.5\".local_machine..local_machine..\n"
        );
    }
}
