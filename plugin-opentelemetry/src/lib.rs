//! Plugin `opentelemetry`: pushes every measurement to an OpenTelemetry
//! Collector (or any OTLP receiver) over OTLP/HTTP, protobuf or JSON,
//! without losing points to a slow, down or restarting receiver.
//!
//! - [`encode`]: Alumet points → OTLP metrics (the data model mapping),
//!   with the point attributes and the per-series running totals in
//!   private modules;
//! - [`proto`]: the OTLP messages (prost), [`json`]: their JSON mapping;
//! - [`transport`]: the request and the `partial_success` reader;
//! - [`config`] checks: endpoint and headers from config or `OTEL_*` variables.
//!
//! Buffering, batching, retries, TLS and the counters are the shared
//! `alumet-delivery` crate's, as for the InfluxDB output.

mod attributes;
mod config;
pub mod encode;
pub mod json;
pub mod proto;
mod series;
pub mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use alumet::measurement::Timestamp;
use alumet::pipeline::PluginStartContext;
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use alumet_delivery::settings::with_delivery_key_docs;
use alumet_delivery::{add_delivery_output, DeliveryKeys, HttpTransport, Secret};
use serde::{Deserialize, Serialize};

pub use alumet_delivery::{DeliveryStats, StatsHandle};
pub use encode::{BodyFormat, Temporality};

/// The OTLP/HTTP default endpoint for metrics.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318/v1/metrics";

/// Configuration of `[plugins.opentelemetry]`.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpenTelemetryConfig {
    /// Full URL of the metrics endpoint. Empty: `$OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`,
    /// else `$OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/metrics`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: String,
    /// `http/protobuf` (default) or `http/json`.
    pub protocol: BodyFormat,
    /// Temporality of the sums made from delta metrics: `cumulative` (default) or `delta`.
    pub temporality: Temporality,
    /// Request headers as `key=value,key2=value2` (values percent-decoded),
    /// e.g. an API key. They are secrets. Prefer `headers_env` or `headers_file`.
    /// Empty, with the other two: `$OTEL_EXPORTER_OTLP_METRICS_HEADERS`, else
    /// `$OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: String,
    /// Environment variable holding the headers. Default empty.
    pub headers_env: String,
    /// File holding the headers. Default empty.
    pub headers_file: String,
    /// Resource attributes added to `service.name`, `service.version` and `host.name`.
    pub resource_attributes: BTreeMap<String, String>,
    /// Points sent per request, at most. Default 5000.
    pub batch_size: usize,
    /// A partial batch is sent after this long. Default `1s`.
    #[serde(with = "alumet::config::duration")]
    pub flush_interval: Duration,
    /// Points kept while the receiver is unreachable; beyond, the oldest
    /// are dropped and counted. Default 1 000 000.
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
    /// PEM file of the CA that signs the receiver's certificate (replaces
    /// the system's trust store). Default empty.
    pub ca_file: String,
    /// PEM client certificate for mutual TLS. Default empty.
    pub client_cert_file: String,
    /// PEM private key of `client_cert_file`. Default empty.
    pub client_key_file: String,
}

impl Default for OpenTelemetryConfig {
    fn default() -> Self {
        let d = DeliveryKeys::default();
        Self {
            endpoint: String::new(),
            protocol: BodyFormat::Protobuf,
            temporality: Temporality::Cumulative,
            headers: String::new(),
            headers_env: String::new(),
            headers_file: String::new(),
            resource_attributes: BTreeMap::new(),
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
            ca_file: d.tls.ca_file,
            client_cert_file: d.tls.client_cert_file,
            client_key_file: d.tls.client_key_file,
        }
    }
}

impl fmt::Debug for OpenTelemetryConfig {
    /// Like a derived `Debug` (the delivery and TLS keys as one
    /// [`DeliveryKeys`]), with the inline headers redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenTelemetryConfig")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("temporality", &self.temporality)
            .field("headers", &Secret::new(self.headers.clone()))
            .field("headers_env", &self.headers_env)
            .field("headers_file", &self.headers_file)
            .field("resource_attributes", &self.resource_attributes)
            .field("delivery", &self.delivery_keys())
            .finish()
    }
}

/// The `opentelemetry` plugin.
pub struct OpenTelemetryPlugin {
    config: OpenTelemetryConfig,
    stats: StatsHandle,
}

impl OpenTelemetryPlugin {
    /// Counters of the output (delivered, dropped and why), live.
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Points lost so far, whatever the reason.
    pub fn dropped_points(&self) -> u64 {
        self.stats.dropped_points()
    }
}

impl PluginDefinition for OpenTelemetryPlugin {
    const NAME: &'static str = "opentelemetry";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Pushes measurements to an OpenTelemetry Collector or any OTLP receiver (OTLP/HTTP, protobuf or JSON).";
    type Config = OpenTelemetryConfig;

    fn init(config: OpenTelemetryConfig) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self {
            config,
            stats: StatsHandle::default(),
        })
    }

    fn check_availability(config: &OpenTelemetryConfig) -> Result<(), PluginError> {
        config.validate()?;
        config.resolve_endpoint()?;
        config.resolve_headers()?;
        config.delivery_keys().tls.load().map(|_| ())
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        static DOCS: OnceLock<Vec<(&str, &str)>> = OnceLock::new();
        with_delivery_key_docs(&DOCS, &[
            ("endpoint", "metrics URL; empty: $OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, else $OTEL_EXPORTER_OTLP_ENDPOINT/v1/metrics, else http://127.0.0.1:4318/v1/metrics"),
            ("protocol", "\"http/protobuf\" or \"http/json\""),
            ("temporality", "sums of delta metrics: \"cumulative\" (running totals since agent start) or \"delta\""),
            ("headers", "request headers \"key=value,key2=value2\" (secrets, e.g. an API key); prefer headers_env or headers_file; all three empty: $OTEL_EXPORTER_OTLP_METRICS_HEADERS, else $OTEL_EXPORTER_OTLP_HEADERS"),
            ("headers_env", "environment variable holding the headers"),
            ("headers_file", "file holding the headers"),
            ("resource_attributes", "resource attributes added to service.name, service.version and host.name"),
            ("max_buffer_points", "points kept while the receiver is unreachable; beyond, the oldest are dropped and counted"),
            ("ca_file", "PEM file of the CA that signs the receiver's certificate (empty: the system's trust store)"),
        ])
    }
}

impl Plugin for OpenTelemetryPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let endpoint = self.config.resolve_endpoint()?;
        let headers = self.config.resolve_headers()?;
        let keys = self.config.delivery_keys();
        let tls = keys.tls.load()?;
        let target = transport::http_target(&endpoint, self.config.protocol, headers);
        let transport = HttpTransport::new(target, tls);
        let settings = keys.settings("opentelemetry", &endpoint);
        log::debug!("opentelemetry: exporting to {endpoint}");
        let encoder =
            encode::OtlpEncoder::new(self.config.encoder_options(Timestamp::now().unix_nanos()));
        add_delivery_output(ctx, "export", encoder, transport, settings, &self.stats)
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        log::info!("{}", self.stats.summary("opentelemetry"));
        Ok(())
    }
}
