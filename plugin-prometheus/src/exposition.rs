//! The exposition formats: Prometheus text 0.0.4 and OpenMetrics 1.0.0,
//! the choice between them from `Accept`, and the number formats.
//!
//! Text: `# HELP` and `# TYPE` once per family, counters named `…_total`.
//! OpenMetrics: the family is named without `_total`, with `# TYPE`,
//! `# UNIT` and `# HELP`; a counter's samples are `…_total` and `…_created`
//! (seconds since the epoch); the body ends with `# EOF`. No sample
//! carries a timestamp: Prometheus stamps scrapes itself, which keeps its
//! staleness handling right.

use std::fmt::Write;

pub use crate::family::push_f64;
use crate::family::{Family, Series};
use crate::naming::{self, FamilyType};
use crate::stats::ExporterStats;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text = 0,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics = 1,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The `q` of each media range of an `Accept` or `Accept-Encoding` value
/// that `matches`, the highest; `None` if none matches.
fn best_quality(header: &str, matches: impl Fn(&str) -> bool) -> Option<f32> {
    header
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let kind = parts.next()?.trim().to_ascii_lowercase();
            if !matches(&kind) {
                return None;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some(q)
        })
        .fold(None, |best: Option<f32>, q| {
            Some(best.map_or(q, |b| b.max(q)))
        })
}

/// OpenMetrics when the scraper prefers it in `Accept`, else text.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let om = best_quality(accept, |t| t == "application/openmetrics-text").unwrap_or(0.0);
    let text =
        best_quality(accept, |t| matches!(t, "text/plain" | "text/*" | "*/*")).unwrap_or(0.0);
    if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Whether `Accept-Encoding` allows gzip.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding
        .and_then(|h| best_quality(h, |e| e == "gzip" || e == "x-gzip"))
        .is_some_and(|q| q > 0.0)
}

fn push_seconds_of_ms(ms: u64, out: &mut String) {
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

/// Writes the metadata lines of a family.
fn push_header(
    name: &str,
    family_type: FamilyType,
    unit: &str,
    help: &str,
    format: Format,
    out: &mut String,
) {
    let counter = family_type == FamilyType::Counter;
    match format {
        Format::Text => {
            let suffix = if counter { "_total" } else { "" };
            let _ = write!(out, "# HELP {name}{suffix} ");
            naming::push_help(help, false, out);
            let _ = writeln!(out, "\n# TYPE {name}{suffix} {}", family_type.as_str());
        }
        Format::OpenMetrics => {
            let _ = writeln!(out, "# TYPE {name} {}", family_type.as_str());
            if !unit.is_empty() {
                let _ = writeln!(out, "# UNIT {name} {unit}");
            }
            let _ = write!(out, "# HELP {name} ");
            naming::push_help(help, true, out);
            out.push('\n');
        }
    }
}

fn push_sample(name: &str, suffix: &str, labels: &str, out: &mut String) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    out.push(' ');
}

/// Writes one family with the series for which `live` holds; nothing if none.
pub(crate) fn render_family(
    family: &Family,
    format: Format,
    live: impl Fn(&Series) -> bool,
    out: &mut String,
) {
    let mut series = family.series.iter().filter(|(_, s)| live(s)).peekable();
    if series.peek().is_none() {
        return;
    }
    let meta = &family.meta;
    push_header(
        &meta.name,
        meta.family_type,
        meta.unit,
        &meta.help,
        format,
        out,
    );
    let counter = meta.family_type == FamilyType::Counter;
    for (labels, s) in series {
        push_sample(&meta.name, if counter { "_total" } else { "" }, labels, out);
        family.format_value(s.value, out);
        out.push('\n');
        if counter && format == Format::OpenMetrics && s.created_ms != 0 {
            push_sample(&meta.name, "_created", labels, out);
            push_seconds_of_ms(s.created_ms, out);
            out.push('\n');
        }
    }
}

/// Writes the exporter's own families, then `# EOF` in OpenMetrics.
pub fn render_self_metrics(stats: &ExporterStats, prefix: &str, format: Format, out: &mut String) {
    let s = stats.snapshot();
    let families: [(&str, FamilyType, u64, &str); 7] = [
        ("series", FamilyType::Gauge, s.series, "Series exposed by this endpoint now."),
        ("dropped_series", FamilyType::Counter, s.dropped_series, "Distinct new series refused because max_series was reached."),
        ("dropped_points", FamilyType::Counter, s.dropped_points, "Points not exported: their series was refused (max_series), they were negative or non-finite deltas, or their metric's name collided with another's."),
        ("expired_series", FamilyType::Counter, s.expired_series, "Series removed because they were not updated for series_ttl."),
        ("scrapes", FamilyType::Counter, s.scrapes, "Scrapes of /metrics answered with 200."),
        ("rejected_requests", FamilyType::Counter, s.rejected_requests, "Requests answered 400 (no or several Host headers), 401, 404, 405 or 501."),
        ("evicted_connections", FamilyType::Counter, s.evicted_connections, "Connections closed while waiting for their request, to give their slot to a new connection (max_connections reached)."),
    ];
    let mut name = String::with_capacity(prefix.len() + 32);
    for (short, family_type, value, help) in families {
        name.clear();
        name.push_str(prefix);
        name.push_str("prometheus_");
        name.push_str(short);
        push_header(&name, family_type, "", help, format, out);
        let counter = family_type == FamilyType::Counter;
        push_sample(&name, if counter { "_total" } else { "" }, "", out);
        let _ = writeln!(out, "{value}");
        if counter && format == Format::OpenMetrics {
            push_sample(&name, "_created", "", out);
            push_seconds_of_ms(stats.started_ms, out);
            out.push('\n');
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_preferred() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            negotiate(Some(
                "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"
            )),
            Format::Text
        );
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(
            negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(negotiate(Some(";;;,,q=x")), Format::Text);
    }

    #[test]
    fn gzip_when_accepted() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("br, gzip;q=0.5")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn floats_round_trip() {
        let f = |v: f64| {
            let mut s = String::new();
            push_f64(v, &mut s);
            s
        };
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::INFINITY), "+Inf");
        assert_eq!(f(f64::NEG_INFINITY), "-Inf");
        assert_eq!(f(1e-7).parse::<f64>().unwrap(), 1e-7);
        assert_eq!(f(123456789.123).parse::<f64>().unwrap(), 123456789.123);
    }
}
