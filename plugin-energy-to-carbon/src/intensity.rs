//! Where the carbon intensity of electricity comes from: a time series file,
//! a fixed value, or the bundled annual average of a country, and the value
//! that applies at a given time.

use std::path::Path;

use crate::countries::{self, Country};

/// A carbon intensity, g CO2e/kWh, and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Intensity {
    /// Rows of a CSV file: each value applies from its timestamp until the next row's.
    TimeSeries {
        /// The file's name, for the `intensity_source` attribute.
        label: String,
        /// (unix ns, g CO2e/kWh), sorted by time.
        rows: Vec<(u64, f64)>,
    },
    /// One value for all time.
    Fixed(f64),
    /// The bundled annual average of a country.
    Country(&'static Country),
    /// Nothing configured: the world's average, an estimate for any grid.
    WorldAverage,
}

/// The world's average carbon intensity of electricity generation in 2023,
/// g CO2e/kWh: Ember, Global Electricity Review 2024 (the figure its data
/// gives for the world, 481 g; life-cycle emissions, CO2 equivalent).
pub const WORLD_AVERAGE_G_PER_KWH: f64 = 481.0;

/// Where [`WORLD_AVERAGE_G_PER_KWH`] comes from.
pub const WORLD_AVERAGE_SOURCE: &str =
    "world average 2023 (Ember Global Electricity Review 2024) - no country configured";

impl Intensity {
    /// The intensity at `unix_ns` (the end of the energy interval). Before the
    /// first row of a time series the first row applies, after the last the last.
    pub fn at(&self, unix_ns: u64) -> f64 {
        match self {
            Intensity::Fixed(v) => *v,
            Intensity::Country(c) => c.g_co2e_per_kwh,
            Intensity::WorldAverage => WORLD_AVERAGE_G_PER_KWH,
            Intensity::TimeSeries { rows, .. } => {
                let i = rows.partition_point(|(t, _)| *t <= unix_ns);
                rows[i.saturating_sub(1)].1
            }
        }
    }

    /// Whether `unix_ns` lies outside the rows of a time series.
    pub fn outside_series(&self, unix_ns: u64) -> bool {
        match self {
            Intensity::TimeSeries { rows, .. } => rows.first().is_some_and(|(t, _)| unix_ns < *t),
            _ => false,
        }
    }

    /// Whether the intensity is a stand-in for the grid's, not the grid's
    /// own figure (the world average where nothing is configured).
    pub fn is_estimated(&self) -> bool {
        matches!(self, Intensity::WorldAverage)
    }

    /// The `intensity_source` attribute: what a reader needs to judge the
    /// figure (without commas, which would split it in `k=v,...` lists).
    pub fn source(&self) -> String {
        let text = match self {
            Intensity::TimeSeries { label, .. } => format!("time series {label}"),
            Intensity::Fixed(_) => "configured intensity_g_per_kwh".to_owned(),
            Intensity::WorldAverage => WORLD_AVERAGE_SOURCE.to_owned(),
            Intensity::Country(c) => format!(
                "{} {} annual average {} ({})",
                c.alpha_3,
                c.name,
                c.year,
                countries::TABLE_SOURCE
            ),
        };
        text.replace(',', "")
    }
}

/// Why an intensity could not be set up; the plugin turns it into a config error.
#[derive(Debug, PartialEq)]
pub struct IntensityError {
    /// The config key at fault.
    pub key: &'static str,
    /// What is wrong and what would be valid.
    pub reason: String,
}

/// The country of `code`, or an error suggesting the closest code.
pub fn country(code: &str) -> Result<Intensity, IntensityError> {
    match countries::lookup(code) {
        Some(c) => Ok(Intensity::Country(c)),
        None => Err(IntensityError {
            key: "country",
            reason: match countries::closest(code) {
                Some(best) => format!(
                    "unknown country code \"{code}\"; did you mean `{best}`? (ISO 3166-1 alpha-2 or alpha-3, e.g. \"FR\" or \"FRA\")"
                ),
                None => format!(
                    "unknown country code \"{code}\" (ISO 3166-1 alpha-2 or alpha-3, e.g. \"FR\" or \"FRA\")"
                ),
            },
        }),
    }
}

/// A fixed intensity, checked.
pub fn fixed(g_per_kwh: f64) -> Result<Intensity, IntensityError> {
    if g_per_kwh.is_finite() && g_per_kwh >= 0.0 {
        Ok(Intensity::Fixed(g_per_kwh))
    } else {
        Err(IntensityError {
            key: "intensity_g_per_kwh",
            reason: format!("{g_per_kwh} is not an intensity in g CO2e/kWh (≥ 0)"),
        })
    }
}

/// Reads a time series: CSV rows `timestamp,g_co2e_per_kwh` (a header row
/// is allowed), timestamps as RFC 3339 (`2024-03-01T13:00:00Z`, offsets
/// allowed) or unix seconds.
pub fn time_series(path: &Path) -> Result<Intensity, IntensityError> {
    let err = |reason: String| IntensityError {
        key: "intensity_file",
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut rows: Vec<(u64, f64)> = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| err(format!("{}: {e}", path.display())))?;
        let line = record.position().map_or(index as u64 + 1, |p| p.line());
        let at = |what: &str| format!("{}:{line}: {what}", path.display());
        if record.len() < 2 {
            return Err(err(at(
                "expected two columns: timestamp, g CO2e/kWh (e.g. 2024-03-01T13:00:00Z,56.0)",
            )));
        }
        let (Some(time), Some(value)) = (record.get(0), record.get(1)) else {
            continue;
        };
        let Some(t) = parse_timestamp(time) else {
            if index == 0 {
                continue; // the header row
            }
            return Err(err(at(&format!(
                "\"{time}\" is not a timestamp (RFC 3339 such as 2024-03-01T13:00:00Z, or unix seconds)"
            ))));
        };
        let v: f64 = value.parse().map_err(|_| {
            err(at(&format!(
                "\"{value}\" is not an intensity in g CO2e/kWh"
            )))
        })?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(err(at(&format!(
                "{v} is not an intensity in g CO2e/kWh (≥ 0)"
            ))));
        }
        if rows.last().is_some_and(|(prev, _)| *prev >= t) {
            return Err(err(at("timestamps must increase from row to row")));
        }
        rows.push((t, v));
    }
    if rows.is_empty() {
        return Err(err(format!("{} holds no row", path.display())));
    }
    let label = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Intensity::TimeSeries { label, rows })
}

/// Unix seconds (integer or decimal) or RFC 3339, to unix ns.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1e9).round() as u64);
    }
    parse_rfc3339(text)
}

fn digits(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(range)?;
    if part.bytes().all(|b| b.is_ascii_digit()) {
        part.parse().ok()
    } else {
        None
    }
}

/// `YYYY-MM-DDTHH:MM[:SS[.fff]](Z|±HH:MM)`; a space may replace the `T`.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 17 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let (year, month, day) = (digits(s, 0..4)?, digits(s, 5..7)?, digits(s, 8..10)?);
    let (hour, minute) = (digits(s, 11..13)?, digits(s, 14..16)?);
    let mut i = 16;
    let mut second = 0;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b':') {
        second = digits(s, 17..19)?;
        i = 19;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            let frac = s.get(start..end)?;
            if frac.is_empty() {
                return None;
            }
            let padded: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
            nanos = padded.parse().ok()?;
            i = end;
        }
    }
    let offset_s = match s.get(i..)? {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') => {
            let sign = if rest.as_bytes()[0] == b'-' { -1 } else { 1 };
            if rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (digits(rest, 1..3)? * 3600 + digits(rest, 4..6)? * 60)
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    u64::try_from(seconds)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(nanos).ok()?)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("0"), Some(0));
        assert_eq!(
            parse_timestamp("1700000000.5"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_timestamp("2023-11-14 23:13:20.25+01:00"),
            Some(1_700_000_000_250_000_000)
        );
        assert_eq!(
            parse_timestamp("2024-02-29T00:00Z"),
            Some(1_709_164_800_000_000_000)
        );
        assert_eq!(parse_timestamp("2023-13-01T00:00:00Z"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20"),
            None,
            "no zone: ambiguous"
        );
    }

    #[test]
    fn step_function() {
        let series = Intensity::TimeSeries {
            label: "x".into(),
            rows: vec![(100, 10.0), (200, 20.0)],
        };
        assert_eq!(series.at(50), 10.0);
        assert!(series.outside_series(50));
        assert_eq!(series.at(100), 10.0);
        assert_eq!(series.at(199), 10.0);
        assert_eq!(series.at(200), 20.0);
        assert_eq!(series.at(10_000), 20.0);
    }

    #[test]
    fn unknown_country_suggests() {
        let e = country("FRX").unwrap_err();
        assert_eq!(e.key, "country");
        assert!(e.reason.contains("did you mean `FRA`"), "{}", e.reason);
        assert!(fixed(-1.0).is_err());
    }
}
