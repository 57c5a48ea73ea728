//! TLS settings shared by every network output: the system's trust store
//! by default, `ca_file` for a private CA (it then replaces the system's
//! roots, like curl's `--cacert`), and a client certificate and key for
//! mutual TLS. Files are read and checked when the plugin starts, so a
//! missing or unreadable file is one line at start, not a failing request.

use alumet::config::ConfigError;
use alumet::plugin::PluginError;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// The TLS keys of an output's config (empty strings for unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file with the CA certificate(s) that sign the server's certificate.
    pub ca_file: String,
    /// PEM file with the client certificate (chain), for mutual TLS.
    pub client_cert_file: String,
    /// PEM file with the client's private key, for mutual TLS.
    pub client_key_file: String,
}

fn invalid(key: &str, reason: impl Into<String>) -> PluginError {
    PluginError::Config(ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, PluginError> {
    std::fs::read(path).map_err(|e| {
        PluginError::unavailable(
            format!("cannot read {path} ({key}): {}", e.kind()),
            "check the path and that the agent's user can read it",
        )
    })
}

fn pem_items(key: &str, path: &str) -> Result<Vec<PemItem<'static>>, PluginError> {
    let bytes = read(key, path)?;
    ureq::tls::parse_pem(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            PluginError::unavailable(
                format!("{path} ({key}) is not valid PEM: {e}"),
                "give a PEM file (-----BEGIN CERTIFICATE----- or -----BEGIN PRIVATE KEY-----)",
            )
        })
}

fn certificates(key: &str, path: &str) -> Result<Vec<Certificate<'static>>, PluginError> {
    let certs: Vec<_> = pem_items(key, path)?
        .into_iter()
        .filter_map(|item| match item {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(PluginError::unavailable(
            format!("{path} ({key}) holds no certificate"),
            "give a PEM file with -----BEGIN CERTIFICATE----- blocks",
        ));
    }
    Ok(certs)
}

fn private_key(key: &str, path: &str) -> Result<PrivateKey<'static>, PluginError> {
    pem_items(key, path)?
        .into_iter()
        .find_map(|item| match item {
            PemItem::PrivateKey(k) => Some(k),
            _ => None,
        })
        .ok_or_else(|| {
            PluginError::unavailable(
                format!("{path} ({key}) holds no private key"),
                "give a PEM file with a -----BEGIN PRIVATE KEY----- block",
            )
        })
}

impl TlsFiles {
    /// Checks the keys without reading the files: a client certificate
    /// needs its key and the other way round.
    pub fn validate(&self) -> Result<(), PluginError> {
        match (
            self.client_cert_file.is_empty(),
            self.client_key_file.is_empty(),
        ) {
            (false, true) => Err(invalid(
                "client_key_file",
                "required with client_cert_file (mutual TLS needs both)",
            )),
            (true, false) => Err(invalid(
                "client_cert_file",
                "required with client_key_file (mutual TLS needs both)",
            )),
            _ => Ok(()),
        }
    }

    /// Reads the files into the TLS configuration of the HTTP client.
    pub fn load(&self) -> Result<TlsConfig, PluginError> {
        self.validate()?;
        let roots = if self.ca_file.is_empty() {
            RootCerts::PlatformVerifier
        } else {
            RootCerts::new_with_certs(&certificates("ca_file", &self.ca_file)?)
        };
        let client_cert = if self.client_cert_file.is_empty() {
            None
        } else {
            let chain = certificates("client_cert_file", &self.client_cert_file)?;
            let key = private_key("client_key_file", &self.client_key_file)?;
            Some(ClientCert::new_with_certs(&chain, key))
        };
        Ok(TlsConfig::builder()
            .root_certs(roots)
            .client_cert(client_cert)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_needs_its_key() {
        let only_cert = TlsFiles {
            client_cert_file: "c.pem".into(),
            ..Default::default()
        };
        let err = only_cert.validate().unwrap_err().to_string();
        assert!(err.contains("client_key_file"), "{err}");
        assert!(TlsFiles::default().validate().is_ok());
    }

    #[test]
    fn unreadable_or_empty_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles {
            ca_file: dir.path().join("nope.pem").display().to_string(),
            ..Default::default()
        };
        let err = missing.load().unwrap_err().to_string();
        assert!(err.contains("ca_file"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem\n").unwrap();
        let empty = TlsFiles {
            ca_file: empty.display().to_string(),
            ..Default::default()
        };
        let err = empty.load().unwrap_err().to_string();
        assert!(err.contains("holds no certificate"), "{err}");
        assert!(TlsFiles::default().load().is_ok());
    }
}
