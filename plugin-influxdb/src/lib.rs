//! Plugin `influxdb`: writes every measurement to an InfluxDB-compatible
//! time-series database (InfluxDB 1.x, 2.x, 3.x, VictoriaMetrics) in line
//! protocol over HTTP, surviving a slow, down or restarting server without
//! losing points and without unbounded memory.
//!
//! - [`line_protocol`]: the encoder (the hot path), with [`text`] for
//!   escaping and number formatting;
//! - [`output`]: line protocol batches for the shared delivery output;
//! - [`http`]: the write URL and authentication of each API version.
//!
//! Buffering, batching, retries, TLS and the counters are the shared
//! `alumet-delivery` crate's.

pub mod http;
pub mod line_protocol;
pub mod output;
pub mod text;
mod validation;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use alumet::pipeline::PluginStartContext;
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use serde::{Deserialize, Serialize};

use alumet_delivery::settings::with_delivery_key_docs;
use alumet_delivery::{add_delivery_output, DeliveryKeys, HttpTransport};

use crate::http::{ApiVersion, Secret};
use crate::line_protocol::{AttributeRole, LineProtocolEncoder};
use crate::output::LineProtocolBatch;

pub use stats::{InfluxDbStats, StatsHandle};

/// The output's counters: the shared delivery counters, under the names
/// this crate has always used.
pub mod stats {
    pub use alumet_delivery::stats::{DeliveryStats as InfluxDbStats, StatsHandle};
}

/// Configuration of `[plugins.influxdb]`.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxDbConfig {
    /// Base URL of the server. Default `http://localhost:8086`.
    pub url: String,
    /// Write API: `v2` (InfluxDB 2.x/3.x, VictoriaMetrics) or `v1` (InfluxDB 1.x). Default `v2`.
    pub api: ApiVersion,
    /// v2 organisation (may be empty for servers that ignore it). Default empty.
    pub org: String,
    /// v2 bucket. Default `alumet`.
    pub bucket: String,
    /// v1 database. Default `alumet`.
    pub database: String,
    /// v1 retention policy; empty for the database's default. Default empty.
    pub retention_policy: String,
    /// v1 user name: with it, the secret is sent as its password (basic auth). Default empty.
    pub username: String,
    /// The secret (v2 token, or v1 password) written in the config. Prefer
    /// `token_env` or `token_file`. At most one of the three. Default empty.
    pub token: String,
    /// Name of an environment variable holding the secret. Default empty.
    pub token_env: String,
    /// Path of a file holding the secret (surrounding whitespace is ignored). Default empty.
    pub token_file: String,
    /// Where attributes go by default: `tag` or `field`. Default `tag`.
    pub attributes_as: AttributeRole,
    /// Attributes always written as tags. Default empty.
    pub tag_attributes: Vec<String>,
    /// Attributes always written as fields. Default empty.
    pub field_attributes: Vec<String>,
    /// Tag key that receives the machine's host name; empty for none. Default `host`.
    pub host_tag: String,
    /// Points sent per request, at most. Default 5000.
    pub batch_size: usize,
    /// A partial batch is sent after this long. Default `1s`.
    #[serde(with = "alumet::config::duration")]
    pub flush_interval: Duration,
    /// Points kept while the server is unreachable; beyond, the oldest are
    /// dropped and counted. Default 1 000 000.
    pub max_buffer_points: usize,
    /// Compress request bodies (from 4 KiB on) with gzip. Default true.
    pub gzip: bool,
    /// Time limit of one request. Default `10s`.
    #[serde(with = "alumet::config::duration")]
    pub request_timeout: Duration,
    /// First retry delay after a failure; doubles up to `retry_max_delay`. Default `200ms`.
    #[serde(with = "alumet::config::duration")]
    pub retry_initial_delay: Duration,
    /// Largest retry delay. Default `10s`.
    #[serde(with = "alumet::config::duration")]
    pub retry_max_delay: Duration,
    /// At shutdown, how long to keep trying to deliver what is queued. Default `10s`.
    #[serde(with = "alumet::config::duration")]
    pub shutdown_timeout: Duration,
    /// How often the output's own figures (requests, retries, points
    /// delivered, lost and buffered) become `output_*` metrics; `"0s"` for
    /// never. Default `10s`.
    #[serde(with = "alumet::config::duration")]
    pub own_metrics_interval: Duration,
    /// Directory where batches that no longer fit in memory during an
    /// outage, and those left at shutdown, wait as files until delivered,
    /// also across restarts. Default empty: memory only.
    pub buffer_dir: String,
    /// Most bytes kept in `buffer_dir`. Default 1 GiB.
    pub max_buffer_disk_bytes: u64,
    /// Tags added to every point, e.g. `{ cluster = "a" }`. Default empty.
    pub tags: BTreeMap<String, String>,
    /// PEM file of the CA that signs the server's certificate (replaces the
    /// system's trust store). Default empty: the system's trust store.
    pub ca_file: String,
    /// PEM client certificate for mutual TLS. Default empty.
    pub client_cert_file: String,
    /// PEM private key of `client_cert_file`. Default empty.
    pub client_key_file: String,
}

impl Default for InfluxDbConfig {
    fn default() -> Self {
        let d = DeliveryKeys::default();
        Self {
            url: "http://localhost:8086".into(),
            api: ApiVersion::V2,
            org: String::new(),
            bucket: "alumet".into(),
            database: "alumet".into(),
            retention_policy: String::new(),
            username: String::new(),
            token: String::new(),
            token_env: String::new(),
            token_file: String::new(),
            attributes_as: AttributeRole::Tag,
            tag_attributes: Vec::new(),
            field_attributes: Vec::new(),
            host_tag: "host".into(),
            batch_size: d.batch_size,
            flush_interval: d.flush_interval,
            max_buffer_points: d.max_buffer_points,
            gzip: d.gzip,
            request_timeout: d.request_timeout,
            retry_initial_delay: d.retry_initial_delay,
            retry_max_delay: d.retry_max_delay,
            shutdown_timeout: d.shutdown_timeout,
            own_metrics_interval: d.own_metrics_interval,
            buffer_dir: d.buffer_dir,
            max_buffer_disk_bytes: d.max_buffer_disk_bytes,
            tags: BTreeMap::new(),
            ca_file: d.tls.ca_file,
            client_cert_file: d.tls.client_cert_file,
            client_key_file: d.tls.client_key_file,
        }
    }
}

impl fmt::Debug for InfluxDbConfig {
    /// Like a derived `Debug` (the delivery and TLS keys as one
    /// [`DeliveryKeys`]), with the inline token redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfluxDbConfig")
            .field("url", &self.url)
            .field("api", &self.api)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("database", &self.database)
            .field("retention_policy", &self.retention_policy)
            .field("username", &self.username)
            .field("token", &Secret::new(self.token.clone()))
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .field("attributes_as", &self.attributes_as)
            .field("tag_attributes", &self.tag_attributes)
            .field("field_attributes", &self.field_attributes)
            .field("host_tag", &self.host_tag)
            .field("delivery", &self.delivery_keys())
            .field("tags", &self.tags)
            .finish()
    }
}

/// The `influxdb` plugin.
pub struct InfluxDbPlugin {
    config: InfluxDbConfig,
    stats: StatsHandle,
}

impl InfluxDbPlugin {
    /// Counters of the output (delivered, dropped and why), live.
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Points lost so far, whatever the reason (buffer full, rejected by
    /// the server, not representable, not delivered before shutdown).
    pub fn dropped_points(&self) -> u64 {
        self.stats.dropped_points()
    }

    /// The validated configuration.
    pub fn config(&self) -> &InfluxDbConfig {
        &self.config
    }
}

impl PluginDefinition for InfluxDbPlugin {
    const NAME: &'static str = "influxdb";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Writes measurements to InfluxDB 1.x/2.x/3.x or VictoriaMetrics (line protocol over HTTP).";
    type Config = InfluxDbConfig;

    fn init(config: InfluxDbConfig) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self {
            config,
            stats: StatsHandle::default(),
        })
    }

    fn check_availability(config: &InfluxDbConfig) -> Result<(), PluginError> {
        config.validate()?;
        config.delivery_keys().tls.load()?;
        config.resolve_secret().map(|_| ())
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        static DOCS: OnceLock<Vec<(&str, &str)>> = OnceLock::new();
        with_delivery_key_docs(&DOCS, &[
            ("url", "base URL of the server (no credentials in it)"),
            ("api", "\"v2\" (InfluxDB 2.x/3.x, VictoriaMetrics) or \"v1\" (InfluxDB 1.x)"),
            ("org", "v2 organisation (empty: not sent)"),
            ("bucket", "v2 bucket"),
            ("database", "v1 database"),
            ("retention_policy", "v1 retention policy (empty: the database's default)"),
            ("username", "v1 user; the secret is then its password (basic auth)"),
            ("token", "the secret inline (v2 token or v1 password); prefer token_env or token_file"),
            ("token_env", "environment variable holding the secret"),
            ("token_file", "file holding the secret"),
            ("attributes_as", "\"tag\" or \"field\": where point attributes go by default"),
            ("tag_attributes", "attributes always written as tags"),
            ("field_attributes", "attributes always written as fields"),
            ("host_tag", "tag key for the host name (empty: none)"),
            ("max_buffer_points", "points kept while the server is unreachable; beyond, the oldest are dropped and counted"),
            ("tags", "constant tags added to every point"),
            ("ca_file", "PEM file of the CA that signs the server's certificate (empty: the system's trust store)"),
        ])
    }
}

impl Plugin for InfluxDbPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let secret = self.config.resolve_secret()?;
        let keys = self.config.delivery_keys();
        let tls = keys.tls.load()?;
        let target = self.config.write_target(secret);
        let transport = HttpTransport::new(target.http_target(), tls);
        let settings = keys.settings("influxdb", transport.endpoint());
        log::debug!("influxdb: writing to {}", settings.endpoint);
        let encoder =
            LineProtocolBatch::new(LineProtocolEncoder::new(self.config.encoder_options()));
        add_delivery_output(ctx, "write", encoder, transport, settings, &self.stats)
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        log::info!("{}", self.stats.summary("influxdb"));
        Ok(())
    }
}
