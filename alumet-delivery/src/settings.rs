//! How one output delivers: batch size, buffer bound, retry timing and the
//! shutdown deadline, checked once with errors that name the config key.
//!
//! The delivery and TLS keys stand flat in each output's config struct
//! (serde's `flatten` cannot be combined with `deny_unknown_fields`, which
//! the agent's did-you-mean diagnostics rely on), so the shared part is
//! [`DeliveryKeys`]: their defaults, their docs ([`DELIVERY_KEY_DOCS`]),
//! their validation and their translation into [`DeliverySettings`] and
//! [`TlsFiles`].

use std::sync::OnceLock;
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::plugin::PluginError;

use crate::tls::TlsFiles;

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
    /// How often the output's own figures become metrics; zero for never
    /// (`own_metrics_interval`, see [`crate::self_metrics`]).
    pub own_metrics_interval: Duration,
    /// Directory of the disk buffer; empty for memory only (`buffer_dir`,
    /// see [`crate::spill`]).
    pub buffer_dir: std::path::PathBuf,
    /// Most bytes the disk buffer holds (`max_buffer_disk_bytes`).
    pub max_buffer_disk_bytes: u64,
}

impl DeliverySettings {
    /// The defaults every network output documents ([`DeliveryKeys::default`]).
    pub fn new(name: &'static str, endpoint: impl Into<String>) -> Self {
        DeliveryKeys::default().settings(name, endpoint)
    }

    /// Checks every value; the error names the key and what would be valid.
    pub fn validate(&self) -> Result<(), PluginError> {
        let invalid = |key: &str, reason: String| {
            Err(PluginError::Config(ConfigError::Invalid {
                key: key.into(),
                reason,
            }))
        };
        use alumet::limits::{
            DurationRange, BATCH_POINTS, BUFFER_POINTS, FLUSH_INTERVAL, RETRY_DELAY, TIMEOUT,
        };
        BATCH_POINTS.check("batch_size", self.batch_size)?;
        // At least one large batch; at most a terabyte.
        alumet::limits::CountRange::new(1 << 20, 1 << 40)
            .check("max_buffer_disk_bytes", self.max_buffer_disk_bytes)?;
        BUFFER_POINTS.check("max_buffer_points", self.max_buffer_points)?;
        FLUSH_INTERVAL.check("flush_interval", self.flush_interval)?;
        TIMEOUT.check("request_timeout", self.request_timeout)?;
        RETRY_DELAY.check("retry_initial_delay", self.retry_initial_delay)?;
        RETRY_DELAY.check("retry_max_delay", self.retry_max_delay)?;
        TIMEOUT
            .or_zero("do not wait")
            .check("shutdown_timeout", self.shutdown_timeout)?;
        // Its own figures more often than every second would outnumber
        // the points it delivers on a small node.
        DurationRange::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
        )
        .or_zero("off")
        .check("own_metrics_interval", self.own_metrics_interval)?;
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

/// The delivery and TLS keys of an output's config, by value: each output
/// copies its flat fields into one of these (`delivery_keys()`), and the
/// defaults, the checks and the settings come from here.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryKeys {
    /// `batch_size`.
    pub batch_size: usize,
    /// `flush_interval`.
    pub flush_interval: Duration,
    /// `max_buffer_points`.
    pub max_buffer_points: usize,
    /// `gzip`.
    pub gzip: bool,
    /// `request_timeout`.
    pub request_timeout: Duration,
    /// `retry_initial_delay`.
    pub retry_initial_delay: Duration,
    /// `retry_max_delay`.
    pub retry_max_delay: Duration,
    /// `shutdown_timeout`.
    pub shutdown_timeout: Duration,
    /// `own_metrics_interval`.
    pub own_metrics_interval: Duration,
    /// `buffer_dir`.
    pub buffer_dir: String,
    /// `max_buffer_disk_bytes`.
    pub max_buffer_disk_bytes: u64,
    /// `ca_file`, `client_cert_file`, `client_key_file`.
    pub tls: TlsFiles,
}

impl Default for DeliveryKeys {
    /// The defaults every network output documents.
    fn default() -> Self {
        Self {
            batch_size: 5000,
            flush_interval: Duration::from_secs(1),
            max_buffer_points: 1_000_000,
            gzip: true,
            request_timeout: Duration::from_secs(10),
            retry_initial_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            own_metrics_interval: crate::self_metrics::DEFAULT_INTERVAL,
            buffer_dir: String::new(),
            max_buffer_disk_bytes: 1 << 30,
            tls: TlsFiles::default(),
        }
    }
}

impl DeliveryKeys {
    /// The settings of the output `name` delivering to `endpoint`. A
    /// Retry-After is honoured up to a minute, or `retry_max_delay` if longer.
    pub fn settings(&self, name: &'static str, endpoint: impl Into<String>) -> DeliverySettings {
        DeliverySettings {
            name,
            endpoint: endpoint.into(),
            batch_size: self.batch_size,
            flush_interval: self.flush_interval,
            max_buffer_points: self.max_buffer_points,
            gzip: self.gzip,
            request_timeout: self.request_timeout,
            retry_initial_delay: self.retry_initial_delay,
            retry_max_delay: self.retry_max_delay,
            max_retry_after: self.retry_max_delay.max(Duration::from_secs(60)),
            shutdown_timeout: self.shutdown_timeout,
            own_metrics_interval: self.own_metrics_interval,
            buffer_dir: self.buffer_dir.clone().into(),
            max_buffer_disk_bytes: self.max_buffer_disk_bytes,
        }
    }

    /// Checks the delivery values and the TLS keys; the error names the key.
    pub fn validate(&self) -> Result<(), PluginError> {
        self.settings("", "").validate()?;
        self.tls.validate()
    }
}

/// Docs of the delivery and TLS keys whose wording does not depend on the
/// peer (`max_buffer_points` and `ca_file` name it, so each output documents
/// those itself). See [`with_delivery_key_docs`].
pub const DELIVERY_KEY_DOCS: &[(&str, &str)] = &[
    ("batch_size", "points per request, at most"),
    ("flush_interval", "a partial batch is sent after this long"),
    ("gzip", "compress request bodies of 4 KiB or more"),
    ("request_timeout", "time limit of one request"),
    (
        "retry_initial_delay",
        "first retry delay; doubles up to retry_max_delay",
    ),
    ("retry_max_delay", "largest retry delay"),
    (
        "shutdown_timeout",
        "at shutdown, how long to keep trying to deliver what is queued",
    ),
    (
        "buffer_dir",
        "directory where batches that no longer fit in memory (max_buffer_points) during an outage, and those left at shutdown, wait as files until delivered, also across restarts; \"\": memory only",
    ),
    (
        "max_buffer_disk_bytes",
        "most bytes kept in buffer_dir; beyond, the oldest batches are dropped and counted",
    ),
    (
        "own_metrics_interval",
        "how often the output's own figures (requests, retries, points delivered, lost and buffered) become output_* metrics; \"0s\" for never",
    ),
    ("client_cert_file", "PEM client certificate, for mutual TLS"),
    ("client_key_file", "PEM private key of client_cert_file"),
];

/// An output's `config_docs`: its own key docs followed by
/// [`DELIVERY_KEY_DOCS`], built once into `cell` (a `static` of the output).
pub fn with_delivery_key_docs(
    cell: &'static OnceLock<Vec<(&'static str, &'static str)>>,
    own: &'static [(&'static str, &'static str)],
) -> &'static [(&'static str, &'static str)] {
    cell.get_or_init(|| own.iter().chain(DELIVERY_KEY_DOCS).copied().collect())
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

    #[test]
    fn keys_map_to_settings_and_are_checked_with_tls() {
        let keys = DeliveryKeys {
            retry_max_delay: Duration::from_secs(120),
            ..DeliveryKeys::default()
        };
        let s = keys.settings("out", "http://x");
        assert_eq!((s.name, s.endpoint.as_str()), ("out", "http://x"));
        assert_eq!(s.max_retry_after, Duration::from_secs(120));
        assert_eq!(
            DeliveryKeys::default().settings("o", "").max_retry_after,
            Duration::from_secs(60)
        );
        assert!(DeliveryKeys::default().validate().is_ok());
        let no_key = DeliveryKeys {
            tls: TlsFiles {
                client_cert_file: "c.pem".into(),
                ..TlsFiles::default()
            },
            ..DeliveryKeys::default()
        };
        assert!(matches!(
            no_key.validate(),
            Err(PluginError::Config(ConfigError::Invalid { key, .. })) if key == "client_key_file"
        ));
    }

    #[test]
    fn docs_are_the_output_s_then_the_shared_ones() {
        static CELL: OnceLock<Vec<(&str, &str)>> = OnceLock::new();
        let docs = with_delivery_key_docs(&CELL, &[("url", "u")]);
        assert_eq!(docs[0], ("url", "u"));
        assert_eq!(docs.len(), 1 + DELIVERY_KEY_DOCS.len());
        assert!(std::ptr::eq(docs, with_delivery_key_docs(&CELL, &[])));
    }
}
