//! Checking the configuration (every key, with an error naming it), the
//! resolution of the credentials (never echoed), and the warnings when the
//! endpoint is reachable from the network.

use std::net::SocketAddr;

use alumet::config::ConfigError;
use alumet::plugin::PluginError;
use alumet::secret::{http_basic_authorization, SecretSource};

use crate::naming::is_valid_prefix;
use crate::server::Authorization;
use crate::PrometheusConfig;

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

impl PrometheusConfig {
    fn bearer_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "bearer_token",
            inline: &self.bearer_token,
            env: &self.bearer_token_env,
            file: &self.bearer_token_file,
        }
    }

    fn password_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "basic_password",
            inline: &self.basic_password,
            env: &self.basic_password_env,
            file: &self.basic_password_file,
        }
    }

    /// Checks every value and returns the address to listen on.
    pub fn validate(&self) -> Result<SocketAddr, PluginError> {
        let address: SocketAddr = self.listen_address.trim().parse().map_err(|_| {
            invalid(
                "listen_address",
                format!(
                    "`{}` is not an IP address and port; e.g. \"127.0.0.1:8719\", \"[::1]:8719\", or \"0.0.0.0:8719\" for every interface",
                    self.listen_address
                ),
            )
        })?;
        if !is_valid_prefix(&self.prefix) {
            return Err(invalid(
                "prefix",
                format!("`{}` cannot start a metric name: use letters, digits, `_` or `:`, not starting with a digit", self.prefix),
            ));
        }
        if self.series_ttl.is_zero() {
            return Err(invalid("series_ttl", "must be longer than zero"));
        }
        alumet::limits::WINDOW.check("series_ttl", self.series_ttl)?;
        // A series costs about a kilobyte; a connection, a task and its buffers.
        alumet::limits::CountRange::new(1, 100_000_000).check("max_series", self.max_series)?;
        alumet::limits::CountRange::new(1, 65_536)
            .check("max_connections", self.max_connections)?;
        if self.max_series == 0 {
            return Err(invalid("max_series", "must be at least 1"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        self.bearer_source().validate()?;
        self.password_source().validate()?;
        if self.bearer_source().is_set()
            && (self.password_source().is_set() || !self.basic_username.is_empty())
        {
            return Err(invalid(
                "bearer_token",
                "choose one authentication: a bearer token or basic_username with a password",
            ));
        }
        if self.password_source().is_set() && self.basic_username.is_empty() {
            return Err(invalid(
                "basic_username",
                "required with a basic_password* key",
            ));
        }
        if !self.basic_username.is_empty() && !self.password_source().is_set() {
            return Err(invalid(
                "basic_password",
                "basic_username needs a password: set basic_password_env, basic_password_file or basic_password",
            ));
        }
        if self.basic_username.contains(':') {
            return Err(invalid(
                "basic_username",
                "cannot contain `:` (basic authentication separates it from the password)",
            ));
        }
        match (self.tls_cert_file.is_empty(), self.tls_key_file.is_empty()) {
            (false, true) => return Err(invalid("tls_key_file", "required with tls_cert_file")),
            (true, false) => return Err(invalid("tls_cert_file", "required with tls_key_file")),
            _ => {}
        }
        Ok(address)
    }

    /// Who may scrape, with the secrets read from wherever they are configured.
    pub fn authorization(&self) -> Result<Authorization, PluginError> {
        if self.bearer_source().is_set() {
            return Ok(Authorization::Bearer(self.bearer_source().resolve()?));
        }
        if !self.basic_username.is_empty() {
            let password = self.password_source().resolve()?;
            let header = http_basic_authorization(&self.basic_username, &password);
            let credentials = header.expose().trim_start_matches("Basic ").to_owned();
            return Ok(Authorization::Basic(alumet::secret::Secret::new(
                credentials,
            )));
        }
        Ok(Authorization::Open)
    }

    /// Says so when the endpoint is reachable beyond this machine without
    /// authentication, or sends credentials in clear text over the network.
    pub(crate) fn warn_if_exposed(
        &self,
        address: SocketAddr,
        authorization: &Authorization,
        tls: bool,
    ) {
        if address.ip().is_loopback() {
            return;
        }
        if *authorization == Authorization::Open {
            log::warn!(
                "prometheus: listening on {address}, beyond loopback, without authentication: anyone who can reach this port reads the measurements (set bearer_token_file or basic_username)"
            );
        } else if !tls {
            log::warn!(
                "prometheus: listening on {address}, beyond loopback, without TLS: credentials cross the network in clear text (set tls_cert_file and tls_key_file)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut PrometheusConfig)) -> Result<SocketAddr, PluginError> {
        let mut c = PrometheusConfig::default();
        f(&mut c);
        c.validate()
    }

    fn key_of(r: Result<SocketAddr, PluginError>) -> String {
        match r {
            Err(PluginError::Config(ConfigError::Invalid { key, .. })) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn the_default_listens_on_loopback_only() {
        let address = PrometheusConfig::default().validate().unwrap();
        assert!(address.ip().is_loopback());
        assert_eq!(
            PrometheusConfig::default().authorization().unwrap(),
            Authorization::Open
        );
    }

    #[test]
    fn invalid_values_are_reported_with_their_key() {
        assert_eq!(
            key_of(with(|c| c.listen_address = "localhost:1".into())),
            "listen_address"
        );
        assert_eq!(
            key_of(with(|c| c.listen_address = "127.0.0.1".into())),
            "listen_address"
        );
        assert_eq!(key_of(with(|c| c.prefix = "9x".into())), "prefix");
        assert_eq!(
            key_of(with(|c| c.series_ttl = std::time::Duration::ZERO)),
            "series_ttl"
        );
        assert_eq!(key_of(with(|c| c.max_series = 0)), "max_series");
        assert_eq!(key_of(with(|c| c.max_connections = 0)), "max_connections");
        assert_eq!(
            key_of(with(|c| {
                c.bearer_token = "a".into();
                c.bearer_token_env = "B".into();
            })),
            "bearer_token"
        );
        assert_eq!(
            key_of(with(|c| {
                c.bearer_token = "a".into();
                c.basic_username = "u".into();
            })),
            "bearer_token"
        );
        assert_eq!(
            key_of(with(|c| c.basic_password = "p".into())),
            "basic_username"
        );
        assert_eq!(
            key_of(with(|c| c.basic_username = "u".into())),
            "basic_password"
        );
        assert_eq!(
            key_of(with(|c| {
                c.basic_username = "u:v".into();
                c.basic_password = "p".into();
            })),
            "basic_username"
        );
        assert_eq!(
            key_of(with(|c| c.tls_cert_file = "c.pem".into())),
            "tls_key_file"
        );
        assert_eq!(
            key_of(with(|c| c.tls_key_file = "k.pem".into())),
            "tls_cert_file"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let table: toml::Table = toml::from_str("listen_adress = \"127.0.0.1:1\"").unwrap();
        assert!(alumet::config::deserialize_config::<PrometheusConfig>(table).is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_and_come_from_env_or_file() {
        let c = PrometheusConfig {
            bearer_token: "tok-very-secret".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("tok-very-secret"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "open sesame\n").unwrap();
        let c = PrometheusConfig {
            basic_username: "Aladdin".into(),
            basic_password_file: path.display().to_string(),
            ..Default::default()
        };
        c.validate().unwrap();
        let Authorization::Basic(credentials) = c.authorization().unwrap() else {
            panic!("basic expected")
        };
        assert_eq!(credentials.expose(), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        let missing = PrometheusConfig {
            bearer_token_env: "ALUMET_TEST_SURELY_UNSET_VARIABLE".into(),
            ..Default::default()
        };
        let err = missing.authorization().unwrap_err().to_string();
        assert!(err.contains("ALUMET_TEST_SURELY_UNSET_VARIABLE"), "{err}");
    }

    #[test]
    fn default_config_round_trips_through_toml() {
        let c = PrometheusConfig::default();
        let table = alumet::config::serialize_config(&c).unwrap();
        let text = toml::to_string(&table).unwrap();
        assert!(text.contains("series_ttl = \"5m\""), "{text}");
        let back: PrometheusConfig =
            alumet::config::deserialize_config(toml::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
