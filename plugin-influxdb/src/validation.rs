//! Checking and using the configuration: validation of every key with an
//! error naming it, the secret's resolution (never echoed), and the
//! translation into the HTTP target and the encoder's options.

use alumet::config::ConfigError;
use alumet::plugin::PluginError;
use alumet::secret::SecretSource;

use alumet_delivery::{DeliveryKeys, TlsFiles};

use crate::http::{ApiVersion, Auth, Secret, WriteTarget};
use crate::line_protocol::{EncoderOptions, BUILTIN_TAGS};
use crate::InfluxDbConfig;

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

impl InfluxDbConfig {
    /// Checks every value; the error names the key and what would be valid.
    pub fn validate(&self) -> Result<(), PluginError> {
        validate_url(&self.url)?;
        match self.api {
            ApiVersion::V2 if self.bucket.is_empty() => {
                return Err(invalid("bucket", "required with api = \"v2\""))
            }
            ApiVersion::V1 if self.database.is_empty() => {
                return Err(invalid("database", "required with api = \"v1\""))
            }
            _ => {}
        }
        self.secret_source().validate()?;
        self.delivery_keys().validate()?;
        if let Some(both) = self
            .tag_attributes
            .iter()
            .find(|a| self.field_attributes.contains(a))
        {
            return Err(invalid(
                "field_attributes",
                format!("attribute `{both}` is also in tag_attributes; choose one"),
            ));
        }
        for (key, value) in &self.tags {
            if key.is_empty() || value.is_empty() {
                return Err(invalid("tags", "tag keys and values cannot be empty"));
            }
            if BUILTIN_TAGS.contains(&key.as_str()) || *key == self.host_tag {
                return Err(invalid(
                    "tags",
                    format!("`{key}` is already written by the plugin"),
                ));
            }
        }
        if BUILTIN_TAGS.contains(&self.host_tag.as_str()) {
            return Err(invalid(
                "host_tag",
                format!("`{}` is already written by the plugin", self.host_tag),
            ));
        }
        Ok(())
    }

    /// Where the secret comes from: `token`, `token_env` or `token_file`.
    fn secret_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "token",
            inline: &self.token,
            env: &self.token_env,
            file: &self.token_file,
        }
    }

    /// Reads the secret from wherever the config says. Errors never contain it.
    pub fn resolve_secret(&self) -> Result<Secret, PluginError> {
        self.secret_source().resolve()
    }

    /// The delivery and TLS keys, for the shared output and transport.
    pub(crate) fn delivery_keys(&self) -> DeliveryKeys {
        DeliveryKeys {
            batch_size: self.batch_size,
            flush_interval: self.flush_interval,
            max_buffer_points: self.max_buffer_points,
            gzip: self.gzip,
            request_timeout: self.request_timeout,
            retry_initial_delay: self.retry_initial_delay,
            retry_max_delay: self.retry_max_delay,
            shutdown_timeout: self.shutdown_timeout,
            own_metrics_interval: self.own_metrics_interval,
            buffer_dir: self.buffer_dir.clone(),
            max_buffer_disk_bytes: self.max_buffer_disk_bytes,
            tls: TlsFiles {
                ca_file: self.ca_file.clone(),
                client_cert_file: self.client_cert_file.clone(),
                client_key_file: self.client_key_file.clone(),
            },
        }
    }

    pub(crate) fn write_target(&self, secret: Secret) -> WriteTarget {
        let auth = if secret.is_empty() {
            Auth::None
        } else if self.api == ApiVersion::V1 && !self.username.is_empty() {
            Auth::Basic {
                username: self.username.clone(),
                password: secret,
            }
        } else {
            Auth::Token(secret)
        };
        WriteTarget {
            url: self.url.clone(),
            api: self.api,
            org: self.org.clone(),
            bucket: self.bucket.clone(),
            database: self.database.clone(),
            retention_policy: self.retention_policy.clone(),
            auth,
        }
    }

    pub(crate) fn encoder_options(&self) -> EncoderOptions {
        let mut constant_tags: Vec<(String, String)> = self
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !self.host_tag.is_empty() {
            match alumet_delivery::host_name() {
                Some(host) => constant_tags.push((self.host_tag.clone(), host)),
                None => log::warn!(
                    "influxdb: cannot read the host name; points have no `{}` tag",
                    self.host_tag
                ),
            }
        }
        EncoderOptions {
            attributes_as: self.attributes_as,
            tag_attributes: self.tag_attributes.clone(),
            field_attributes: self.field_attributes.clone(),
            constant_tags,
        }
    }
}

fn validate_url(url: &str) -> Result<(), PluginError> {
    let uri = alumet_delivery::http::validate_url("url", url, "http://localhost:8086")?;
    if uri.query().is_some() {
        return Err(invalid(
            "url",
            "give the base URL only; the plugin adds the write path and its parameters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_round_trips_through_toml() {
        let c = InfluxDbConfig::default();
        c.validate().unwrap();
        let table = alumet::config::serialize_config(&c).unwrap();
        let text = toml::to_string(&table).unwrap();
        assert!(text.contains("url = \"http://localhost:8086\""), "{text}");
        assert!(text.contains("flush_interval = \"1s\""), "{text}");
        let back: InfluxDbConfig =
            alumet::config::deserialize_config(toml::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    fn with(f: impl FnOnce(&mut InfluxDbConfig)) -> Result<(), PluginError> {
        let mut c = InfluxDbConfig::default();
        f(&mut c);
        c.validate()
    }

    #[test]
    fn invalid_values_are_reported_with_their_key() {
        let key_of = |r: Result<(), PluginError>| match r {
            Err(PluginError::Config(ConfigError::Invalid { key, .. })) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        };
        assert_eq!(key_of(with(|c| c.url = "localhost:8086".into())), "url");
        assert_eq!(key_of(with(|c| c.url = "ftp://x".into())), "url");
        assert_eq!(
            key_of(with(|c| c.url = "http://u:p@host:8086".into())),
            "url"
        );
        assert_eq!(
            key_of(with(|c| {
                c.token = "a".into();
                c.token_env = "B".into();
            })),
            "token"
        );
        assert_eq!(key_of(with(|c| c.batch_size = 0)), "batch_size");
        assert_eq!(
            key_of(with(|c| c.max_buffer_points = 10)),
            "max_buffer_points"
        );
        assert_eq!(
            key_of(with(|c| {
                c.tag_attributes = vec!["exe".into()];
                c.field_attributes = vec!["exe".into()];
            })),
            "field_attributes"
        );
        assert_eq!(
            key_of(with(|c| {
                c.tags.insert("resource_id".into(), "x".into());
            })),
            "tags"
        );
        assert_eq!(
            key_of(with(|c| {
                c.api = ApiVersion::V1;
                c.database.clear();
            })),
            "database"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let table: toml::Table = toml::from_str("urll = \"http://x\"").unwrap();
        assert!(alumet::config::deserialize_config::<InfluxDbConfig>(table).is_err());
    }

    #[test]
    fn the_token_never_shows_in_debug_or_errors() {
        let mut c = InfluxDbConfig {
            token: "tok-very-secret".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("tok-very-secret"));
        c.token_env = "SOME_VAR".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(!err.contains("tok-very-secret"), "{err}");
    }

    #[test]
    fn secrets_come_from_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let c = InfluxDbConfig {
            token_file: path.display().to_string(),
            ..Default::default()
        };
        assert_eq!(c.resolve_secret().unwrap().expose(), "from-file");
        let missing = InfluxDbConfig {
            token_env: "ALUMET_TEST_SURELY_UNSET_VARIABLE".into(),
            ..Default::default()
        };
        let err = missing.resolve_secret().unwrap_err().to_string();
        assert!(err.contains("ALUMET_TEST_SURELY_UNSET_VARIABLE"), "{err}");
        assert_eq!(
            InfluxDbConfig::default().resolve_secret().unwrap(),
            Secret::default()
        );
    }

    #[test]
    fn v1_with_a_user_uses_basic_auth_else_a_token() {
        let mut c = InfluxDbConfig {
            api: ApiVersion::V1,
            username: "me".into(),
            ..Default::default()
        };
        assert!(matches!(
            c.write_target(Secret::new("pw")).auth,
            Auth::Basic { .. }
        ));
        c.username.clear();
        assert!(matches!(
            c.write_target(Secret::new("pw")).auth,
            Auth::Token(_)
        ));
        assert_eq!(c.write_target(Secret::default()).auth, Auth::None);
    }
}
