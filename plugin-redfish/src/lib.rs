//! Plugin `redfish`: the whole node's power and energy, read from its BMC
//! over Redfish (HTTPS).
//!
//! - [`client`]: the HTTP boundary (session, basic auth, timeouts, TLS),
//!   behind the [`client::Transport`] trait;
//! - [`discovery`]: which chassis to measure and from which reading, found
//!   once at start;
//! - [`source`]: the source polling the BMC on its own thread;
//! - [`testing`]: an in-memory BMC for unit tests.

pub mod client;
pub mod discovery;
pub mod source;
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use alumet::config::ConfigError;
use alumet::metrics::{Metric, MetricKind, Unit, ValueType};
use alumet::pipeline::{PluginStartContext, SourceTrigger};
use alumet::plugin::{Plugin, PluginDefinition, PluginError};
use alumet::secret::SecretSource;
use alumet_delivery::TlsFiles;
use serde::{Deserialize, Serialize};

use crate::client::{Client, FetchError, TransportError, UreqTransport};
use crate::discovery::{discover, Discovery, DiscoveryError};
use crate::source::{BmcSource, SourceMetrics, MIN_FREEZE_AFTER};

/// The energy metric.
pub const ENERGY_METRIC: &str = "redfish_consumed_energy";

/// The power metric.
pub const POWER_METRIC: &str = "redfish_power";

/// The definition of [`ENERGY_METRIC`].
pub fn energy_metric() -> Metric {
    Metric::new(
        ENERGY_METRIC,
        Unit::Joule,
        ValueType::F64,
        MetricKind::Delta,
        "Energy consumed by the chassis (the whole node, as its BMC measures it) during the interval ending at the timestamp, from the BMC's energy counter or, with integrated=true, its power integrated over the polls (0 J at the first reading: the start of the first interval).",
    )
}

/// The definition of [`POWER_METRIC`].
pub fn power_metric() -> Metric {
    Metric::new(
        POWER_METRIC,
        Unit::Watt,
        ValueType::F64,
        MetricKind::Gauge,
        "Power drawn by the chassis (the whole node) as its BMC reports it at the poll.",
    )
}

/// Configuration of `[plugins.redfish]`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedfishConfig {
    /// The BMC's URL, e.g. `https://10.0.0.2` (required).
    pub endpoint: String,
    /// The BMC user (required).
    pub username: String,
    /// The password inline (prefer `password_file` or `password_env`).
    pub password: String,
    /// The environment variable holding the password.
    pub password_env: String,
    /// The file holding the password.
    pub password_file: String,
    /// PEM file of the CA that signed the BMC's certificate (empty: the system's trust store).
    pub ca_file: String,
    /// The chassis to measure, by `Id` (empty: every node-level chassis).
    pub chassis: Vec<String>,
    /// Time between two polls of the BMC.
    #[serde(with = "alumet::config::duration")]
    pub poll_interval: Duration,
    /// The longest one request may take.
    #[serde(with = "alumet::config::duration")]
    pub timeout: Duration,
}

impl Default for RedfishConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            username: String::new(),
            password: String::new(),
            password_env: String::new(),
            password_file: String::new(),
            ca_file: String::new(),
            chassis: Vec::new(),
            poll_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

impl RedfishConfig {
    fn password_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "password",
            inline: &self.password,
            env: &self.password_env,
            file: &self.password_file,
        }
    }

    /// The endpoint without a trailing slash.
    fn endpoint(&self) -> &str {
        self.endpoint.trim_end_matches('/')
    }

    fn validate(&self) -> Result<(), PluginError> {
        alumet::limits::POLL_INTERVAL.check("poll_interval", self.poll_interval)?;
        alumet::limits::TIMEOUT.check("timeout", self.timeout)?;
        if self.endpoint.is_empty() {
            return Err(invalid(
                "endpoint",
                "required: the URL of the BMC, e.g. \"https://10.0.0.2\"",
            )
            .into());
        }
        let uri =
            alumet_delivery::http::validate_url("endpoint", self.endpoint(), "https://10.0.0.2")?;
        if !matches!(uri.path(), "" | "/") {
            return Err(invalid(
                "endpoint",
                format!(
                    "`{}` must be the BMC's address only, without a path (the plugin asks /redfish/v1/...)",
                    self.endpoint
                ),
            )
            .into());
        }
        if self.username.is_empty() {
            return Err(invalid("username", "required: the BMC user to log in as").into());
        }
        let password = self.password_source();
        password.validate()?;
        if !password.is_set() {
            return Err(invalid(
                "password_file",
                "required: set password_file (or password_env, or password)",
            )
            .into());
        }
        for (i, id) in self.chassis.iter().enumerate() {
            if id.trim().is_empty() {
                return Err(invalid("chassis", format!("entry {i} is empty")).into());
            }
        }
        Ok(())
    }

    /// The longest discovery may take: a few requests per chassis.
    fn discovery_budget(&self) -> Duration {
        (self.timeout * 6).max(Duration::from_secs(30))
    }

    /// A counter still for this long is frozen.
    fn freeze_after(&self) -> Duration {
        (self.poll_interval * 3).max(MIN_FREEZE_AFTER)
    }
}

/// The one line printed when the BMC cannot be used.
fn connect_error(config: &RedfishConfig, e: DiscoveryError) -> PluginError {
    let endpoint = config.endpoint();
    let user = &config.username;
    match e {
        DiscoveryError::Fetch(FetchError::Unauthorized { status, .. }) => PluginError::unavailable(
            format!("the BMC at {endpoint} refused the credentials of user \"{user}\" (HTTP {status})"),
            "check [plugins.redfish] username and the password in password_file (or password_env)",
        ),
        DiscoveryError::Fetch(FetchError::Transport(TransportError::Tls(reason))) => {
            PluginError::unavailable(
                format!("TLS with the BMC at {endpoint} failed: {reason}"),
                "set [plugins.redfish] ca_file to the PEM file of the CA that signed the BMC's certificate",
            )
        }
        DiscoveryError::Fetch(FetchError::Transport(e)) => PluginError::unavailable(
            format!("cannot reach the BMC at {endpoint}: {e}"),
            "check [plugins.redfish] endpoint and that the BMC's Redfish service is on",
        ),
        DiscoveryError::Fetch(e) => PluginError::unavailable(
            format!("the BMC at {endpoint} (user \"{user}\"): {e}"),
            "check that the endpoint is a Redfish service (GET /redfish/v1/)",
        ),
        e @ DiscoveryError::NoSuchChassis { .. } => PluginError::unavailable(
            format!("the BMC at {endpoint}: {e}"),
            "fix [plugins.redfish] chassis, or leave it empty to choose automatically",
        ),
        e @ DiscoveryError::TooLong(_) => PluginError::unavailable(
            format!("the BMC at {endpoint}: {e}"),
            "raise [plugins.redfish] timeout, or name the chassis to measure in chassis",
        ),
    }
}

/// Logs in and finds the chassis to measure. Every failure is one line
/// naming the BMC and the user, never the password.
pub fn connect(config: &RedfishConfig) -> Result<(Arc<Client>, Discovery), PluginError> {
    config.validate()?;
    let password = config.password_source().resolve()?;
    let tls = TlsFiles {
        ca_file: config.ca_file.clone(),
        ..TlsFiles::default()
    }
    .load()?;
    let transport = UreqTransport::new(config.endpoint(), tls, config.timeout);
    let client = Client::new(
        Box::new(transport),
        config.endpoint(),
        &config.username,
        password,
    );
    connect_with(client, config).map(|(c, d)| (Arc::new(c), d))
}

/// [`connect`] over a client built elsewhere (tests: a fake transport).
pub fn connect_with(
    client: Client,
    config: &RedfishConfig,
) -> Result<(Client, Discovery), PluginError> {
    let found = client
        .login()
        .map_err(DiscoveryError::from)
        .and_then(|()| discover(&client, &config.chassis, config.discovery_budget()));
    match found {
        Ok(d) if d.plans.is_empty() => {
            client.logout();
            Err(PluginError::unavailable(
                format!(
                    "the BMC at {} reports no node-level power or energy ({})",
                    config.endpoint(),
                    if d.skipped.is_empty() {
                        "no chassis".to_owned()
                    } else {
                        d.skipped.join("; ")
                    }
                ),
                "name the chassis to measure in [plugins.redfish] chassis",
            ))
        }
        Ok(d) => Ok((client, d)),
        Err(e) => {
            client.logout();
            Err(connect_error(config, e))
        }
    }
}

/// The `redfish` plugin.
pub struct RedfishPlugin {
    config: RedfishConfig,
    /// The session, kept to be deleted at stop.
    client: Option<Arc<Client>>,
}

impl Plugin for RedfishPlugin {
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError> {
        let (client, found) = connect(&self.config)?;
        for line in &found.skipped {
            log::info!("redfish: {}: {line}", client.endpoint());
        }
        for plan in &found.plans {
            log::info!("redfish: {} {}", client.endpoint(), plan.describe());
        }
        let metrics = SourceMetrics {
            energy: ctx.create_metric(energy_metric())?,
            power: ctx.create_metric(power_metric())?,
            unmeasured: ctx.create_metric(alumet_energy::unmeasured_metric())?,
        };
        let source = BmcSource::new(
            client.clone(),
            found.plans,
            metrics,
            self.config.freeze_after(),
        );
        // Its own thread: a BMC that takes the whole timeout to answer
        // delays only its own points.
        // A BMC refreshes its readings every few seconds and answers slowly:
        // its own thread, and its own interval even in `exec`.
        let trigger = SourceTrigger::every(self.config.poll_interval)
            .on_dedicated_thread()
            .keeping_interval();
        ctx.add_source("bmc", Box::new(source), trigger);
        self.client = Some(client);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        if let Some(client) = self.client.take() {
            client.logout();
        }
        Ok(())
    }
}

impl PluginDefinition for RedfishPlugin {
    const NAME: &'static str = "redfish";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Whole-node power and energy from the BMC over Redfish (HTTPS): the BMC's energy counter, or its power integrated";
    type Config = RedfishConfig;

    fn init(config: RedfishConfig) -> Result<Self, PluginError> {
        config.validate()?;
        Ok(Self {
            config,
            client: None,
        })
    }

    fn check_availability(config: &RedfishConfig) -> Result<(), PluginError> {
        config.validate()?;
        config.password_source().resolve().map(|_| ())
    }

    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[
            ("endpoint", "URL of the BMC, e.g. \"https://10.0.0.2\" (required)"),
            ("username", "BMC user to log in as (required)"),
            ("password", "the password inline (prefer password_file or password_env; set one of the three)"),
            ("password_env", "environment variable holding the password"),
            ("password_file", "file holding the password"),
            ("ca_file", "PEM file of the CA that signed the BMC's certificate (empty: the system's trust store)"),
            ("chassis", "chassis to measure, by Id (e.g. [\"1U\"]); empty: every node-level chassis, none counted twice"),
            ("poll_interval", "time between two polls of the BMC (BMCs refresh power every few seconds)"),
            ("timeout", "longest time one request to the BMC may take"),
        ]
    }

    fn inventory(config: &RedfishConfig) -> Vec<String> {
        match connect(config) {
            Ok((client, found)) => {
                let endpoint = config.endpoint();
                let mut lines: Vec<String> = found
                    .plans
                    .iter()
                    .map(|p| format!("{endpoint} {}", p.describe()))
                    .collect();
                lines.extend(
                    found
                        .skipped
                        .iter()
                        .map(|s| format!("{endpoint} {s}, skipped")),
                );
                client.logout();
                lines
            }
            Err(e) => vec![format!("{}: cannot connect: {e}", config.endpoint())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeBmc;

    fn config() -> RedfishConfig {
        RedfishConfig {
            endpoint: "https://10.0.0.2".into(),
            username: "root".into(),
            password: "x".into(),
            ..RedfishConfig::default()
        }
    }

    #[test]
    fn configs_are_checked() {
        assert!(RedfishPlugin::init(config()).is_ok());
        let err = |c: RedfishConfig| RedfishPlugin::init(c).err().unwrap().to_string();
        assert!(err(RedfishConfig::default()).contains("endpoint"));
        let e = err(RedfishConfig {
            endpoint: "https://root:pw@10.0.0.2".into(),
            ..config()
        });
        assert!(e.contains("credentials") && !e.contains("pw@"), "{e}");
        assert!(err(RedfishConfig {
            endpoint: "https://10.0.0.2/redfish/v1".into(),
            ..config()
        })
        .contains("without a path"));
        assert!(err(RedfishConfig {
            username: String::new(),
            ..config()
        })
        .contains("username"));
        assert!(err(RedfishConfig {
            password: String::new(),
            ..config()
        })
        .contains("password_file"));
        assert!(err(RedfishConfig {
            password_env: "PW".into(),
            ..config()
        })
        .contains("at most one"));
        assert!(err(RedfishConfig {
            timeout: Duration::from_secs(3600),
            ..config()
        })
        .contains("timeout"));
        assert!(err(RedfishConfig {
            poll_interval: Duration::ZERO,
            ..config()
        })
        .contains("poll_interval"));
    }

    #[test]
    fn bad_credentials_are_one_line_naming_the_bmc_and_the_user() {
        let bmc = FakeBmc::new("root", "right");
        let e = connect_with(bmc.client("root", "wrong"), &config())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("https://10.0.0.2") && e.contains("\"root\""),
            "{e}"
        );
        assert!(!e.contains("wrong") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn a_bmc_without_node_power_is_one_line() {
        let bmc = FakeBmc::new("root", "x");
        let e = connect_with(bmc.client("root", "x"), &config())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("reports no node-level power"), "{e}");
    }
}
