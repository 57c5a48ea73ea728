//! Plugin `prometheus`: a scrape endpoint (`GET /metrics`) for Prometheus,
//! VictoriaMetrics, Grafana Agent/Alloy and any OpenMetrics scraper.
//!
//! Deltas (energy, CPU time, bytes) are exposed as counters, the sum of
//! the deltas since the agent started, so that `rate()` and `increase()`
//! are right and a restart is a visible counter reset; gauges stay gauges.
//!
//! - [`naming`]: names, units, labels, escaping;
//! - [`store`]: the bounded state of every series (TTL, `max_series`),
//!   made of `family`'s families and series (what the exposition renders);
//! - [`exposition`]: text 0.0.4 and OpenMetrics 1.0.0, content negotiation;
//! - [`output`]: the pipeline output that updates the store;
//! - [`server`] and [`tls`]: the HTTP(S) boundary (hyper, rustls), with
//!   [`gzip`] compressing the unchanged part of a body once and [`slots`]
//!   deciding which connection gives its slot up when all are taken;
//! - [`stats`]: the exporter's own counters.

pub mod exposition;
pub(crate) mod family;
pub mod gzip;
pub mod naming;
pub mod output;
pub mod server;
pub mod slots;
pub mod stats;
pub mod store;
pub mod tls;
mod validation;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alumet::pipeline::{OutputOptions, PluginStartContext};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use alumet::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::output::PrometheusOutput;
use crate::server::{ServerHandle, Shared};
use crate::stats::{ExporterStats, StatsSnapshot};
use crate::store::{Store, StoreSettings};

/// The default address: loopback only. 9100–9999 are all taken in the
/// Prometheus wiki's port allocations; 8719 is the default of no common
/// exporter, database or Prometheus component.
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:8719";

/// Configuration of `[plugins.prometheus]`.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// IP address and port to listen on. Default `127.0.0.1:8719` (loopback only).
    pub listen_address: String,
    /// Prefix of every metric name. Default `alumet_`.
    pub prefix: String,
    /// A series not updated for this long disappears. Default `5m`.
    #[serde(with = "alumet::config::duration")]
    pub series_ttl: Duration,
    /// Most series exposed at once; beyond, new series are refused and counted. Default 100 000.
    pub max_series: usize,
    /// Most client connections at once. Default 64. When all are taken, a
    /// new connection takes the slot of the one waiting longest for its request.
    pub max_connections: usize,
    /// Bearer token scrapers must send, inline. Prefer `bearer_token_env` or `bearer_token_file`.
    pub bearer_token: String,
    /// Environment variable holding the bearer token.
    pub bearer_token_env: String,
    /// File holding the bearer token.
    pub bearer_token_file: String,
    /// User name for basic authentication (with one of the `basic_password*` keys).
    pub basic_username: String,
    /// Basic-authentication password, inline. Prefer `basic_password_env` or `basic_password_file`.
    pub basic_password: String,
    /// Environment variable holding the basic-authentication password.
    pub basic_password_env: String,
    /// File holding the basic-authentication password.
    pub basic_password_file: String,
    /// PEM certificate chain: with `tls_key_file`, the endpoint speaks HTTPS only.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            listen_address: DEFAULT_LISTEN_ADDRESS.into(),
            prefix: "alumet_".into(),
            series_ttl: Duration::from_secs(300),
            max_series: 100_000,
            max_connections: 64,
            bearer_token: String::new(),
            bearer_token_env: String::new(),
            bearer_token_file: String::new(),
            basic_username: String::new(),
            basic_password: String::new(),
            basic_password_env: String::new(),
            basic_password_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl fmt::Debug for PrometheusConfig {
    /// Like a derived `Debug`, with the inline secrets redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusConfig")
            .field("listen_address", &self.listen_address)
            .field("prefix", &self.prefix)
            .field("series_ttl", &self.series_ttl)
            .field("max_series", &self.max_series)
            .field("max_connections", &self.max_connections)
            .field("bearer_token", &Secret::new(self.bearer_token.clone()))
            .field("bearer_token_env", &self.bearer_token_env)
            .field("bearer_token_file", &self.bearer_token_file)
            .field("basic_username", &self.basic_username)
            .field("basic_password", &Secret::new(self.basic_password.clone()))
            .field("basic_password_env", &self.basic_password_env)
            .field("basic_password_file", &self.basic_password_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

/// The `prometheus` plugin.
pub struct PrometheusPlugin {
    config: PrometheusConfig,
    listen_address: SocketAddr,
    stats: Arc<ExporterStats>,
    server: Option<ServerHandle>,
}

impl PrometheusPlugin {
    /// The address the endpoint listens on, once started (the real port when configured as 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(ServerHandle::local_addr)
    }

    /// The exporter's counters, live.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

impl PluginDefinition for PrometheusPlugin {
    const NAME: &'static str = "prometheus";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Serves the latest measurements on GET /metrics for Prometheus and OpenMetrics scrapers (deltas as counters).";
    type Config = PrometheusConfig;

    fn init(config: PrometheusConfig) -> Result<Self, PluginError> {
        let listen_address = config.validate()?;
        Ok(Self {
            config,
            listen_address,
            stats: Arc::new(ExporterStats::default()),
            server: None,
        })
    }

    fn check_availability(config: &PrometheusConfig) -> Result<(), PluginError> {
        config.validate()?;
        config.authorization().map(|_| ())
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("listen_address", "IP address and port of the endpoint; loopback by default, \"0.0.0.0:8719\" opens it to the network"),
            ("prefix", "prefix of every metric name (empty: none)"),
            ("series_ttl", "a series not updated for this long disappears (processes come and go)"),
            ("max_series", "most series exposed at once; new series beyond are refused, counted and logged"),
            ("max_connections", "most client connections at once"),
            ("bearer_token", "token scrapers must send (Authorization: Bearer); prefer bearer_token_env or bearer_token_file"),
            ("bearer_token_env", "environment variable holding the bearer token"),
            ("bearer_token_file", "file holding the bearer token"),
            ("basic_username", "user name for basic authentication (with a basic_password* key)"),
            ("basic_password", "basic-authentication password; prefer basic_password_env or basic_password_file"),
            ("basic_password_env", "environment variable holding the basic-authentication password"),
            ("basic_password_file", "file holding the basic-authentication password"),
            ("tls_cert_file", "PEM certificate chain; with tls_key_file, the endpoint speaks HTTPS only"),
            ("tls_key_file", "PEM private key of tls_cert_file"),
        ]
    }
}

impl Plugin for PrometheusPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let authorization = self.config.authorization()?;
        let tls = if self.config.tls_cert_file.is_empty() {
            None
        } else {
            Some(tls::server_config(
                &self.config.tls_cert_file,
                &self.config.tls_key_file,
            )?)
        };
        self.config
            .warn_if_exposed(self.listen_address, &authorization, tls.is_some());
        let store = Arc::new(Mutex::new(Store::new(
            StoreSettings {
                prefix: self.config.prefix.clone(),
                series_ttl: self.config.series_ttl,
                max_series: self.config.max_series,
            },
            self.stats.clone(),
            ctx.loss_reporter(),
        )));
        let listener = std::net::TcpListener::bind(self.listen_address).map_err(|e| {
            PluginError::unavailable(
                format!(
                    "cannot listen on {} (listen_address): {e}",
                    self.listen_address
                ),
                "choose another port or address, or stop what listens there",
            )
        })?;
        let shared = Arc::new(Shared {
            store: store.clone(),
            stats: self.stats.clone(),
            prefix: self.config.prefix.clone(),
            authorization,
        });
        let server = server::start(listener, tls.clone(), shared, self.config.max_connections)
            .map_err(|e| PluginError::other(format!("cannot start the HTTP server: {e}")))?;
        log::info!(
            "prometheus: serving {}://{}/metrics",
            if tls.is_some() { "https" } else { "http" },
            server.local_addr()
        );
        self.server = Some(server);
        ctx.add_output(
            "endpoint",
            Box::new(PrometheusOutput::new(store)),
            OutputOptions {
                flush_interval: None,
                // The endpoint exposes current totals and values: every
                // point keeps its series alive (`series_ttl`) and current.
                thinned: false,
            },
        );
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
        let s = self.stats.snapshot();
        log::info!(
            "prometheus: {} scrapes served, {} series at the end, {} series expired, {} refused (max_series), {} points not exported",
            s.scrapes,
            s.series,
            s.expired_series,
            s.dropped_series,
            s.dropped_points
        );
        Ok(())
    }
}
