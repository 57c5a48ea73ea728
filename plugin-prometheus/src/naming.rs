//! Prometheus names for Alumet metrics, attributes and values: the unit
//! table, name and label sanitisation, and the escaping of label values
//! and help text.

use std::fmt::Write;

use alumet::metrics::{Metric, MetricKind, Unit};

/// How a metric is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyType {
    /// A monotonic total: `_total` samples (and `_created` in OpenMetrics).
    Counter,
    /// The last value.
    Gauge,
}

impl FamilyType {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
        }
    }
}

/// The Prometheus form of one Alumet metric.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyName {
    /// The family name, without `_total` (e.g. `alumet_rapl_consumed_energy_joules`).
    pub name: String,
    /// The base unit as Prometheus writes it (`joules`), empty for none.
    pub unit: &'static str,
    /// Counter or gauge.
    pub family_type: FamilyType,
    /// What the Alumet value is multiplied by to get the base unit
    /// (1e-6 for µJ, 0.01 for %).
    pub scale: f64,
    /// The `# HELP` text (unescaped).
    pub help: String,
}

/// The Prometheus base unit of an Alumet unit and the factor from the
/// unit to it. Counts such as `{packet}` have no unit in Prometheus names.
pub fn base_unit(unit: &Unit) -> (&'static str, f64) {
    match unit {
        Unit::Unity => ("", 1.0),
        Unit::Second => ("seconds", 1.0),
        Unit::Watt => ("watts", 1.0),
        Unit::Joule => ("joules", 1.0),
        Unit::Volt => ("volts", 1.0),
        Unit::Ampere => ("amperes", 1.0),
        Unit::Hertz => ("hertz", 1.0),
        Unit::DegreeCelsius => ("celsius", 1.0),
        Unit::Byte => ("bytes", 1.0),
        Unit::Percent => ("ratio", 0.01),
        // UCUM annotations ({packet}, {switch}) are counts, not units; any
        // other custom unit is not known to Prometheus and gets no suffix
        // (its symbol is in the help text).
        Unit::Custom { .. } => ("", 1.0),
    }
}

/// The family of `metric` with `prefix` (already validated). A metric name
/// that already starts with the prefix (the pipeline's `alumet_…`) or
/// already ends with its unit is not given them twice.
pub fn family_name(prefix: &str, metric: &Metric) -> FamilyName {
    let (unit, unit_factor) = base_unit(&metric.unit.base);
    let family_type = match metric.kind {
        MetricKind::Delta | MetricKind::Counter => FamilyType::Counter,
        MetricKind::Gauge => FamilyType::Gauge,
    };
    let mut name = String::with_capacity(prefix.len() + metric.name.len() + unit.len() + 1);
    if !metric.name.starts_with(prefix) {
        name.push_str(prefix);
    }
    name.push_str(&metric.name);
    if family_type == FamilyType::Counter {
        if let Some(stripped) = name.strip_suffix("_total") {
            name.truncate(stripped.len());
        }
    }
    if !unit.is_empty() && !name.ends_with(&format!("_{unit}")) {
        name.push('_');
        name.push_str(unit);
    }
    let symbol = metric.unit.symbol();
    let mut help = metric.description.trim().to_owned();
    let _ = write!(
        help,
        " (Alumet metric {}, {}{}{})",
        metric.name,
        metric.kind.as_str(),
        if symbol.is_empty() { "" } else { ", in " },
        symbol
    );
    if metric.kind == MetricKind::Delta {
        help.push_str("; exposed as the sum of its deltas since the agent started");
    }
    FamilyName {
        name,
        unit,
        family_type,
        scale: metric.unit.prefix.factor() * unit_factor,
        help,
    }
}

/// Whether `prefix` can start a metric name (empty, or `[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_valid_prefix(prefix: &str) -> bool {
    prefix.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
    })
}

/// The labels every series has, in this order (empty values are omitted,
/// which Prometheus treats the same as an absent label).
pub const BUILTIN_LABELS: [&str; 4] = [
    "resource_kind",
    "resource_id",
    "consumer_kind",
    "consumer_id",
];

/// Writes the label name for attribute `key`: invalid characters become
/// `_`, a leading digit gets a `_` before it, and a name that would clash
/// with a built-in label or the reserved `__` space gets `attr_` before it.
pub fn push_label_name(key: &str, out: &mut String) {
    let start = out.len();
    for (i, c) in key.chars().enumerate() {
        if i == 0 && c.is_ascii_digit() {
            out.push('_');
        }
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    let written = &out[start..];
    if written.is_empty() || written.starts_with("__") || BUILTIN_LABELS.contains(&written) {
        out.insert_str(start, "attr_");
    }
}

/// Writes a label value escaped for both formats (`\` `"` and newline).
pub fn push_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes help text escaped: `\` and newline always, `"` too in OpenMetrics.
pub fn push_help(text: &str, openmetrics: bool, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if openmetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alumet::metrics::{PrefixedUnit, UnitPrefix, ValueType};

    fn metric(name: &str, unit: impl Into<PrefixedUnit>, kind: MetricKind) -> Metric {
        Metric::new(
            name,
            unit,
            ValueType::F64,
            kind,
            "Some \"thing\".\nSecond line",
        )
    }

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let f = family_name(
            "alumet_",
            &metric("rapl_consumed_energy", Unit::Joule, MetricKind::Delta),
        );
        assert_eq!(f.name, "alumet_rapl_consumed_energy_joules");
        assert_eq!(f.family_type, FamilyType::Counter);
        assert_eq!(f.unit, "joules");
        let f = family_name(
            "alumet_",
            &metric("process_cpu_usage", Unit::Percent, MetricKind::Gauge),
        );
        assert_eq!(f.name, "alumet_process_cpu_usage_ratio");
        assert_eq!(f.scale, 0.01);
        let f = family_name(
            "alumet_",
            &metric("alumet_dropped_points", Unit::Unity, MetricKind::Delta),
        );
        assert_eq!(f.name, "alumet_dropped_points");
        let f = family_name("", &metric("memory_bytes", Unit::Byte, MetricKind::Gauge));
        assert_eq!(f.name, "memory_bytes");
        let f = family_name(
            "",
            &metric("requests_total", Unit::Unity, MetricKind::Counter),
        );
        assert_eq!(f.name, "requests");
        let uj = PrefixedUnit {
            prefix: UnitPrefix::Micro,
            base: Unit::Joule,
        };
        let f = family_name("x_", &metric("energy", uj, MetricKind::Counter));
        assert_eq!(f.name, "x_energy_joules");
        assert!((f.scale - 1e-6).abs() < 1e-18);
        let packets = Unit::Custom {
            ucum: "{packet}".into(),
            symbol: "packets".into(),
        };
        let f = family_name("", &metric("network_packets", packets, MetricKind::Delta));
        assert_eq!(f.name, "network_packets");
        assert!(f.help.contains("packets"), "{}", f.help);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(is_valid_prefix(""));
        assert!(is_valid_prefix("alumet_"));
        assert!(is_valid_prefix("a:b_"));
        assert!(!is_valid_prefix("1x_"));
        assert!(!is_valid_prefix("a-b"));
    }

    #[test]
    fn label_names_are_sanitised_and_values_escaped() {
        let name = |k: &str| {
            let mut s = String::new();
            push_label_name(k, &mut s);
            s
        };
        assert_eq!(name("job_id"), "job_id");
        assert_eq!(name("pod.uid"), "pod_uid");
        assert_eq!(name("9lives"), "_9lives");
        assert_eq!(name("résumé"), "r_sum_");
        assert_eq!(name("__name__"), "attr___name__");
        assert_eq!(name("resource_kind"), "attr_resource_kind");
        assert_eq!(name(""), "attr_");
        let mut v = String::new();
        push_label_value("a\\b\"c\nd", &mut v);
        assert_eq!(v, "a\\\\b\\\"c\\nd");
        let mut h = String::new();
        push_help("a\\\"b\nc", true, &mut h);
        assert_eq!(h, "a\\\\\\\"b\\nc");
        h.clear();
        push_help("a\\\"b\nc", false, &mut h);
        assert_eq!(h, "a\\\\\"b\\nc");
    }
}
