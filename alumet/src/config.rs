//! Helpers for plugin configuration: TOML tables and human durations.
//!
//! Each plugin has a serde config struct with defaults. The agent turns the
//! default into a TOML table for `config regen`, and deserializes the user's
//! table back. Durations are written as human strings ("10ms", "1s") because
//! raw integers make people guess the unit.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A TOML table, the form of every plugin's configuration.
pub type ConfigTable = toml::Table;

/// Why a configuration could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The default config could not be serialized (a bug in the plugin).
    #[error("cannot serialize the configuration: {0}")]
    Serialize(#[from] toml::ser::Error),
    /// The table does not match the plugin's config struct.
    #[error("{0}")]
    Deserialize(#[from] toml::de::Error),
    /// The value was well-formed but not acceptable.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The offending key.
        key: String,
        /// Why, and what would be valid.
        reason: String,
    },
    /// The serialized config is not a table.
    #[error("the configuration must be a TOML table")]
    NotATable,
}

/// Serializes a config struct into a TOML table.
pub fn serialize_config<T: Serialize>(config: &T) -> Result<ConfigTable, ConfigError> {
    match toml::Value::try_from(config)? {
        toml::Value::Table(t) => Ok(t),
        _ => Err(ConfigError::NotATable),
    }
}

/// Deserializes a config struct from a TOML table.
pub fn deserialize_config<T: DeserializeOwned>(table: ConfigTable) -> Result<T, ConfigError> {
    Ok(toml::Value::Table(table).try_into()?)
}

/// The message shown for any malformed duration.
pub const DURATION_HELP: &str =
    "expected a number followed by a unit, e.g. \"500us\", \"10ms\", \"1s\", \"1.5s\", \"2m\" (units: ns, us, ms, s, m, h)";

/// Parses a human duration such as `10ms`, `1s`, `1.5s`, `2m`, `500us`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("invalid duration \"{text}\": missing unit; {DURATION_HELP}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration \"{text}\": {DURATION_HELP}"))?;
    let factor_ns: f64 = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        other => {
            return Err(format!(
                "invalid duration \"{text}\": unknown unit \"{other}\"; {DURATION_HELP}"
            ))
        }
    };
    let nanos = number * factor_ns;
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(format!("invalid duration \"{text}\": too large"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Formats a duration in the shortest exact human form (`1s`, `10ms`, `1500us`).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    const UNITS: [(u128, &str); 5] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ];
    for (factor, unit) in UNITS {
        if ns != 0 && ns % factor == 0 {
            return format!("{}{unit}", ns / factor);
        }
    }
    format!("{ns}ns")
}

/// Reads a human duration string; a bare number gets a message with an
/// example, since its unit cannot be guessed.
struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a duration string such as \"10ms\" or \"1s\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_duration(text).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {v}: write it as a string with a unit, e.g. \"{v}ms\" or \"{v}s\" (units: ns, us, ms, s, m, h)"
        )))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {v}: write it as a string with a unit, e.g. \"{v}s\" (units: ns, us, ms, s, m, h)"
        )))
    }
}

/// `#[serde(with = "alumet::config::duration")]` for `Duration` fields.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Serializes as a human string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Deserializes from a human string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(super::DurationVisitor)
    }
}

/// `#[serde(with = "alumet::config::optional_duration")]` for `Option<Duration>` fields.
pub mod optional_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Serializes as a human string (TOML has no null: use `skip_serializing_if`).
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from a human string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(super::DurationVisitor).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("10ms").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("10 parsecs").unwrap_err().contains("e.g."));
        assert!(parse_duration("fast").is_err());
        assert_eq!(format_duration(Duration::from_millis(10)), "10ms");
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(format_duration(Duration::ZERO), "0ns");
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Example {
        #[serde(with = "duration")]
        poll_interval: Duration,
        name: String,
    }

    #[test]
    fn a_bare_number_is_not_a_duration() {
        let err = toml::from_str::<Example>("poll_interval = 10\nname = \"x\"").unwrap_err();
        assert!(err.message().contains("\"10ms\""), "{}", err.message());
    }

    #[test]
    fn config_round_trips_through_toml() {
        let c = Example {
            poll_interval: Duration::from_millis(100),
            name: "x".into(),
        };
        let table = serialize_config(&c).unwrap();
        let text = toml::to_string(&table).unwrap();
        assert!(text.contains("poll_interval = \"100ms\""));
        let back: Example = deserialize_config(toml::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
