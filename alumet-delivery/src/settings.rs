//! How one output delivers: batch size, buffer bound, retry timing and the
//! shutdown deadline, checked once with errors that name the config key.

use std::time::Duration;

use alumet::config::ConfigError;
use alumet::plugin::PluginError;

/// The delivery settings of one output (every network output has these
/// config keys, under these names).
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The plugin's name: log prefix and sender thread name.
    pub name: &'static str,
    /// Where the points go, for log messages (no secret in it).
    pub endpoint: String,
    /// Most points in one request (`batch_size`).
    pub batch_size: usize,
    /// A partial batch is sent after this long (`flush_interval`).
    pub flush_interval: Duration,
    /// Points kept while the server is unreachable (`max_buffer_points`).
    pub max_buffer_points: usize,
    /// Whether to gzip bodies of at least [`crate::sender::GZIP_MIN_BYTES`] (`gzip`).
    pub gzip: bool,
    /// Time limit of one request (`request_timeout`).
    pub request_timeout: Duration,
    /// First retry delay (`retry_initial_delay`).
    pub retry_initial_delay: Duration,
    /// Largest retry delay; the backoff doubles up to it (`retry_max_delay`).
    pub retry_max_delay: Duration,
    /// Largest wait accepted from a Retry-After header.
    pub max_retry_after: Duration,
    /// At shutdown, how long to keep delivering what is queued (`shutdown_timeout`).
    pub shutdown_timeout: Duration,
}

impl DeliverySettings {
    /// The defaults every network output documents.
    pub fn new(name: &'static str, endpoint: impl Into<String>) -> Self {
        Self {
            name,
            endpoint: endpoint.into(),
            batch_size: 5000,
            flush_interval: Duration::from_secs(1),
            max_buffer_points: 1_000_000,
            gzip: true,
            request_timeout: Duration::from_secs(10),
            retry_initial_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    /// Checks every value; the error names the key and what would be valid.
    pub fn validate(&self) -> Result<(), PluginError> {
        let invalid = |key: &str, reason: String| {
            Err(PluginError::Config(ConfigError::Invalid {
                key: key.into(),
                reason,
            }))
        };
        if self.batch_size == 0 {
            return invalid("batch_size", "must be at least 1".into());
        }
        if self.max_buffer_points < self.batch_size {
            return invalid(
                "max_buffer_points",
                format!(
                    "must be at least batch_size ({}), or no full batch fits",
                    self.batch_size
                ),
            );
        }
        for (key, value) in [
            ("flush_interval", self.flush_interval),
            ("request_timeout", self.request_timeout),
            ("retry_initial_delay", self.retry_initial_delay),
        ] {
            if value.is_zero() {
                return invalid(key, "must be longer than zero".into());
            }
        }
        if self.retry_max_delay < self.retry_initial_delay {
            return invalid(
                "retry_max_delay",
                "must be at least retry_initial_delay".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_values_are_reported_with_their_key() {
        let key_of = |f: fn(&mut DeliverySettings)| {
            let mut s = DeliverySettings::new("t", "x");
            f(&mut s);
            match s.validate() {
                Err(PluginError::Config(ConfigError::Invalid { key, .. })) => key,
                other => panic!("expected an invalid key, got {other:?}"),
            }
        };
        assert!(DeliverySettings::new("t", "x").validate().is_ok());
        assert_eq!(key_of(|s| s.batch_size = 0), "batch_size");
        assert_eq!(key_of(|s| s.max_buffer_points = 10), "max_buffer_points");
        assert_eq!(
            key_of(|s| s.flush_interval = Duration::ZERO),
            "flush_interval"
        );
        assert_eq!(
            key_of(|s| s.retry_max_delay = Duration::from_millis(1)),
            "retry_max_delay"
        );
    }
}
