//! The allowed range of every numeric setting (intervals, timeouts, sizes,
//! counts, factors), and how a value is quoted in an error message.
//!
//! A value that `config check` accepts must be one the agent can run on:
//! `output_queue_capacity = 9223372036854775807` used to pass the check and
//! then abort the agent (and a reload with it killed a running one), and
//! `process_poll_interval = "1ns"` polled nonstop. So every plugin's
//! `validate` (run by `config check`, at start and at every reload) checks
//! each of its numbers against one of these ranges, and the message gives
//! the range. The ranges are wide: they refuse what cannot work or is
//! surely a typo, not what is merely unusual.

use std::time::Duration;

use crate::config::{format_duration, ConfigError};

/// Allowed durations: `min..=max`, and zero where it has a meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// Shortest allowed (besides zero, when allowed).
    pub min: Duration,
    /// Longest allowed.
    pub max: Duration,
    /// What `"0s"` means, when it is allowed (e.g. "off").
    pub zero_means: Option<&'static str>,
}

impl DurationRange {
    /// `min..=max`, zero refused.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            zero_means: None,
        }
    }

    /// The same range, where `"0s"` is also allowed and means `meaning`.
    pub const fn or_zero(self, meaning: &'static str) -> Self {
        Self {
            zero_means: Some(meaning),
            ..self
        }
    }

    /// Whether `value` is allowed.
    pub fn contains(&self, value: Duration) -> bool {
        (value.is_zero() && self.zero_means.is_some()) || (self.min..=self.max).contains(&value)
    }

    /// `Ok` if `value` is allowed, else an error naming `key` and the range.
    pub fn check(&self, key: &str, value: Duration) -> Result<(), ConfigError> {
        if self.contains(value) {
            return Ok(());
        }
        let zero = match self.zero_means {
            Some(meaning) => format!(", or \"0s\" ({meaning})"),
            None => String::new(),
        };
        Err(ConfigError::Invalid {
            key: key.to_owned(),
            reason: format!(
                "must be between \"{}\" and \"{}\"{zero}; got \"{}\"",
                format_duration(self.min),
                format_duration(self.max),
                format_duration(value)
            ),
        })
    }
}

/// Allowed whole numbers: `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRange {
    /// Smallest allowed.
    pub min: u64,
    /// Largest allowed.
    pub max: u64,
}

impl CountRange {
    /// `min..=max`.
    pub const fn new(min: u64, max: u64) -> Self {
        Self { min, max }
    }

    /// `Ok` if `value` is allowed, else an error naming `key` and the range.
    pub fn check(&self, key: &str, value: impl TryInto<u64>) -> Result<(), ConfigError> {
        let value = value.try_into().unwrap_or(u64::MAX);
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: key.to_owned(),
            reason: format!("must be between {} and {}; got {value}", self.min, self.max),
        })
    }
}

/// Allowed real numbers: `min..=max`, never NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RealRange {
    /// Smallest allowed.
    pub min: f64,
    /// Largest allowed.
    pub max: f64,
}

impl RealRange {
    /// `min..=max`.
    pub const fn new(min: f64, max: f64) -> Self {
        Self { min, max }
    }

    /// `Ok` if `value` is allowed, else an error naming `key` and the range.
    pub fn check(&self, key: &str, value: f64) -> Result<(), ConfigError> {
        if value.is_finite() && (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: key.to_owned(),
            reason: format!(
                "must be a number between {} and {}; got {value}",
                self.min, self.max
            ),
        })
    }
}

/// A fraction of a value (a relative change): 0 (any change) to 1 (100 %).
pub const FRACTION: RealRange = RealRange::new(0.0, 1.0);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Between two polls of a source: RAPL counters update every millisecond
/// (faster polls read the same value), and a day is the longest that means
/// anything for a measurement (tests poll on demand with a day between).
pub const POLL_INTERVAL: DurationRange = DurationRange::new(ms(1), s(86_400));
/// Between two hand-overs of a source's or output's points.
pub const FLUSH_INTERVAL: DurationRange = DurationRange::new(ms(1), s(86_400));
/// Of one request or one lookup: a millisecond is the least a local
/// socket needs; past ten minutes a peer is gone, not slow.
pub const TIMEOUT: DurationRange = DurationRange::new(ms(1), s(600));
/// Of a retry's backoff.
pub const RETRY_DELAY: DurationRange = DurationRange::new(ms(1), s(3600));
/// How old a carried-over or cached figure may get, or how long to wait
/// for late points: up to a day.
pub const MAX_AGE: DurationRange = DurationRange::new(ms(1), s(86_400));
/// A time window of figures (idle power, series expiry): a second to a week.
pub const WINDOW: DurationRange = DurationRange::new(s(1), s(7 * 86_400));
/// Batches queued between two stages of the pipeline. Each slot holds one
/// batch (up to thousands of points), so past a million the queue alone
/// could hold more than a machine's memory.
pub const QUEUE_CAPACITY: CountRange = CountRange::new(1, 1_000_000);
/// Points held by a network output while its server is unreachable (about
/// 150 bytes each: 100 million is 15 GB).
pub const BUFFER_POINTS: CountRange = CountRange::new(1, 100_000_000);
/// Points in one request.
pub const BATCH_POINTS: CountRange = CountRange::new(1, 1_000_000);

/// Longest value quoted whole in a message.
const SHOWN_MAX_CHARS: usize = 64;

/// `text` as a message quotes it: whole when short, else its first
/// characters and its length, so that a 5 MB value gives a short line in
/// the journal, not 5 MB.
pub fn shown(text: &str) -> String {
    if text.chars().count() <= SHOWN_MAX_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(SHOWN_MAX_CHARS - 16).collect();
    format!("{head}… ({} bytes in all)", text.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refuse_what_cannot_work_and_say_what_can() {
        let e = POLL_INTERVAL
            .check("poll_interval", Duration::from_nanos(1))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid value for `poll_interval`: must be between \"1ms\" and \"24h\"; got \"1ns\""
        );
        assert!(POLL_INTERVAL.check("p", Duration::ZERO).is_err());
        let off = POLL_INTERVAL.or_zero("off");
        assert!(off.check("p", Duration::ZERO).is_ok());
        assert!(off
            .check("p", s(90_000))
            .unwrap_err()
            .to_string()
            .contains("or \"0s\" (off); got \"25h\""));
        let e = QUEUE_CAPACITY
            .check("output_queue_capacity", usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("between 1 and 1000000; got 18446744073709551615"),
            "{e}"
        );
        assert!(QUEUE_CAPACITY.check("q", 1024usize).is_ok());
        assert!(RealRange::new(1.0, 3.0).check("pue", f64::NAN).is_err());
        assert!(RealRange::new(1.0, 3.0)
            .check("pue", f64::INFINITY)
            .is_err());
        assert!(RealRange::new(1.0, 3.0).check("pue", 1.2).is_ok());
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(shown("1s"), "1s");
        let long = "x".repeat(5_000_000);
        let s = shown(&long);
        assert!(s.len() < 100, "{s}");
        assert!(s.ends_with("(5000000 bytes in all)"), "{s}");
        // Never cut inside a character.
        assert!(shown(&"é".repeat(100)).starts_with("éé"));
    }
}
