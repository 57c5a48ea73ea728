//! Checking and using the configuration: every key validated with an error
//! naming it; the endpoint and headers taken from the config or, when it
//! leaves them empty, from the standard `OTEL_EXPORTER_OTLP_*` variables;
//! headers are secrets and no error ever shows their values.

use alumet::config::ConfigError;
use alumet::plugin::PluginError;
use alumet_delivery::{DeliveryKeys, Secret, SecretSource, TlsFiles};

use crate::encode::EncoderOptions;
use crate::{OpenTelemetryConfig, DEFAULT_ENDPOINT};

/// Full metrics URL, used as it is.
pub const ENV_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
/// Base URL; `/v1/metrics` is appended.
pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Headers for metrics only.
pub const ENV_METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
/// Headers for every signal.
pub const ENV_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl OpenTelemetryConfig {
    /// Checks every value; the error names the key and what would be valid.
    pub fn validate(&self) -> Result<(), PluginError> {
        if !self.endpoint.is_empty() {
            alumet_delivery::http::validate_url("endpoint", &self.endpoint, DEFAULT_ENDPOINT)?;
        }
        self.header_source()
            .validate()
            .map_err(PluginError::Config)?;
        if !self.headers.is_empty() {
            parse_headers("headers", &self.headers)?;
        }
        self.delivery_keys().validate()?;
        for (key, value) in &self.resource_attributes {
            if key.is_empty() || value.is_empty() {
                return Err(invalid(
                    "resource_attributes",
                    "keys and values cannot be empty",
                ));
            }
            if ["service.name", "service.version", "host.name"].contains(&key.as_str()) {
                return Err(invalid(
                    "resource_attributes",
                    format!("`{key}` is already written by the plugin"),
                ));
            }
        }
        Ok(())
    }

    /// The metrics URL: the config's, else the environment's, else the OTLP default.
    pub fn resolve_endpoint(&self) -> Result<String, PluginError> {
        self.resolve_endpoint_with(env)
    }

    pub(crate) fn resolve_endpoint_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<String, PluginError> {
        if !self.endpoint.is_empty() {
            return Ok(self.endpoint.clone());
        }
        let (key, url) = if let Some(url) = env(ENV_METRICS_ENDPOINT) {
            (ENV_METRICS_ENDPOINT, url.trim().to_owned())
        } else if let Some(base) = env(ENV_ENDPOINT) {
            let base = base.trim();
            (
                ENV_ENDPOINT,
                format!("{}/v1/metrics", base.trim_end_matches('/')),
            )
        } else {
            return Ok(DEFAULT_ENDPOINT.to_owned());
        };
        let key = format!("endpoint (from ${key})");
        alumet_delivery::http::validate_url(&key, &url, DEFAULT_ENDPOINT)?;
        Ok(url)
    }

    fn header_source(&self) -> SecretSource<'_> {
        SecretSource {
            key: "headers",
            inline: &self.headers,
            env: &self.headers_env,
            file: &self.headers_file,
        }
    }

    /// The request headers, from the config, its variable or file, else the
    /// `OTEL_EXPORTER_OTLP_*HEADERS` variables.
    pub fn resolve_headers(&self) -> Result<Vec<(String, Secret)>, PluginError> {
        self.resolve_headers_with(env)
    }

    pub(crate) fn resolve_headers_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, Secret)>, PluginError> {
        let configured = self.header_source().resolve()?;
        if !configured.is_empty() {
            let key = [
                ("headers", &self.headers),
                ("headers_env", &self.headers_env),
                ("headers_file", &self.headers_file),
            ]
            .into_iter()
            .find(|(_, v)| !v.is_empty())
            .map_or("headers", |(k, _)| k);
            return parse_headers(key, configured.expose());
        }
        for name in [ENV_METRICS_HEADERS, ENV_HEADERS] {
            if let Some(value) = env(name) {
                return parse_headers(&format!("headers (from ${name})"), &value);
            }
        }
        Ok(Vec::new())
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

    pub(crate) fn encoder_options(&self, start_time_unix_nano: u64) -> EncoderOptions {
        let mut resource_attributes = vec![
            ("service.name".to_owned(), "alumet".to_owned()),
            (
                "service.version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
        ];
        match alumet_delivery::host_name() {
            Some(host) => resource_attributes.push(("host.name".to_owned(), host)),
            None => log::warn!(
                "opentelemetry: cannot read the host name; no host.name resource attribute"
            ),
        }
        resource_attributes.extend(machine_attributes(&alumet_kernelfs::virt::detect(
            std::path::Path::new("/proc"),
            std::path::Path::new("/sys"),
        )));
        // The configured ones last: a user's `cloud.provider` wins.
        resource_attributes.retain(|(k, _)| !self.resource_attributes.contains_key(k));
        resource_attributes.extend(
            self.resource_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        EncoderOptions {
            temporality: self.temporality,
            format: self.protocol,
            resource_attributes,
            start_time_unix_nano,
        }
    }
}

/// What the resource says of the machine: `alumet.machine` (`bare metal`,
/// `virtual machine (KVM)`), and on a cloud the semantic conventions'
/// `cloud.provider` and `cloud.platform` (only where the hypervisor names
/// one cloud's compute service).
pub fn machine_attributes(machine: &alumet_kernelfs::virt::MachineKind) -> Vec<(String, String)> {
    let mut attributes = vec![("alumet.machine".to_owned(), machine.to_string())];
    let cloud = match machine.hypervisor() {
        Some("Amazon EC2") => Some(("aws", "aws_ec2")),
        Some("Google Compute Engine") => Some(("gcp", "gcp_compute_engine")),
        Some("Alibaba Cloud") => Some(("alibaba_cloud", "alibaba_cloud_ecs")),
        _ => None,
    };
    if let Some((provider, platform)) = cloud {
        attributes.push(("cloud.provider".to_owned(), provider.to_owned()));
        attributes.push(("cloud.platform".to_owned(), platform.to_owned()));
    }
    attributes
}

/// Decodes `%XX` escapes (the W3C baggage form the OTLP headers use).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `key=value,key2=value2`. Errors name the key and the position of
/// the bad entry, never a value.
fn parse_headers(key: &str, text: &str) -> Result<Vec<(String, Secret)>, PluginError> {
    let mut headers = Vec::new();
    for (n, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((name, value)) = entry.split_once('=') else {
            return Err(invalid(
                key,
                format!("entry {} has no `=`; write key=value,key2=value2", n + 1),
            ));
        };
        let name = name.trim();
        if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(
                key,
                format!("entry {}: `{name}` is not a valid header name", n + 1),
            ));
        }
        let value = percent_decode(value.trim())
            .filter(|v| ureq::http::HeaderValue::from_str(v).is_ok())
            .ok_or_else(|| {
                invalid(
                    key,
                    format!(
                        "entry {} ({name}): the value is not a valid header value",
                        n + 1
                    ),
                )
            })?;
        headers.push((name.to_owned(), Secret::new(value)));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_and_its_cloud_are_resource_attributes() {
        use alumet_kernelfs::virt::MachineKind;
        let vm = |h: &str| MachineKind::VirtualMachine {
            hypervisor: Some(h.to_owned()),
        };
        assert_eq!(
            machine_attributes(&MachineKind::BareMetal),
            [("alumet.machine".to_owned(), "bare metal".to_owned())]
        );
        assert_eq!(
            machine_attributes(&vm("KVM")),
            [(
                "alumet.machine".to_owned(),
                "virtual machine (KVM)".to_owned()
            )]
        );
        let ec2 = machine_attributes(&vm("Amazon EC2"));
        assert!(ec2.contains(&("cloud.provider".to_owned(), "aws".to_owned())));
        assert!(ec2.contains(&("cloud.platform".to_owned(), "aws_ec2".to_owned())));
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn default_config_is_valid_and_round_trips_through_toml() {
        let c = OpenTelemetryConfig::default();
        c.validate().unwrap();
        let table = alumet::config::serialize_config(&c).unwrap();
        let text = toml::to_string(&table).unwrap();
        assert!(text.contains("protocol = \"http/protobuf\""), "{text}");
        assert!(text.contains("temporality = \"cumulative\""), "{text}");
        let back: OpenTelemetryConfig =
            alumet::config::deserialize_config(toml::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn the_endpoint_comes_from_the_config_else_the_environment_else_the_default() {
        let c = OpenTelemetryConfig::default();
        assert_eq!(c.resolve_endpoint_with(no_env).unwrap(), DEFAULT_ENDPOINT);
        let base = |n: &str| (n == ENV_ENDPOINT).then(|| "https://collector:4318/".to_owned());
        assert_eq!(
            c.resolve_endpoint_with(base).unwrap(),
            "https://collector:4318/v1/metrics"
        );
        let both = |n: &str| match n {
            ENV_METRICS_ENDPOINT => Some("http://m:1/custom".to_owned()),
            _ => Some("http://other:2".to_owned()),
        };
        assert_eq!(c.resolve_endpoint_with(both).unwrap(), "http://m:1/custom");
        let configured = OpenTelemetryConfig {
            endpoint: "http://x:3/v1/metrics".into(),
            ..Default::default()
        };
        assert_eq!(
            configured.resolve_endpoint_with(both).unwrap(),
            "http://x:3/v1/metrics"
        );
        let bad = |n: &str| (n == ENV_ENDPOINT).then(|| "collector:4318".to_owned());
        let err = c.resolve_endpoint_with(bad).unwrap_err().to_string();
        assert!(err.contains(ENV_ENDPOINT), "{err}");
    }

    #[test]
    fn headers_are_parsed_decoded_and_never_echoed() {
        let c = OpenTelemetryConfig {
            headers: "api-key=s3cr%3Dt, x-tenant = a b".into(),
            ..Default::default()
        };
        c.validate().unwrap();
        let h = c.resolve_headers_with(no_env).unwrap();
        assert_eq!(h[0].0, "api-key");
        assert_eq!(h[0].1.expose(), "s3cr=t");
        assert_eq!(h[1].1.expose(), "a b");
        assert!(!format!("{c:?}").contains("s3cr"));
        let from_env =
            |n: &str| (n == ENV_HEADERS).then(|| "authorization=Bearer%20tok".to_owned());
        let h = OpenTelemetryConfig::default()
            .resolve_headers_with(from_env)
            .unwrap();
        assert_eq!(h[0].1.expose(), "Bearer tok");
        let bad = OpenTelemetryConfig {
            headers: "api-key=ok,secret-without-equals".into(),
            ..Default::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("entry 2"), "{err}");
        assert!(
            !err.contains("secret-without-equals") && !err.contains("ok"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_are_reported_with_their_key() {
        let key_of = |c: OpenTelemetryConfig| match c.validate() {
            Err(PluginError::Config(ConfigError::Invalid { key, .. })) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        };
        let with = |f: fn(&mut OpenTelemetryConfig)| {
            let mut c = OpenTelemetryConfig::default();
            f(&mut c);
            c
        };
        assert_eq!(
            key_of(with(|c| c.endpoint = "localhost:4318".into())),
            "endpoint"
        );
        assert_eq!(key_of(with(|c| c.batch_size = 0)), "batch_size");
        assert_eq!(
            key_of(with(|c| {
                c.headers = "a=b".into();
                c.headers_env = "X".into();
            })),
            "headers"
        );
        assert_eq!(
            key_of(with(|c| c.client_cert_file = "c.pem".into())),
            "client_key_file"
        );
        assert_eq!(
            key_of(with(|c| {
                c.resource_attributes.insert("host.name".into(), "x".into());
            })),
            "resource_attributes"
        );
        let table: toml::Table = toml::from_str("endpiont = \"http://x\"").unwrap();
        assert!(alumet::config::deserialize_config::<OpenTelemetryConfig>(table).is_err());
    }
}
