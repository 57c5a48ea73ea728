//! TLS for the endpoint: the certificate chain and key from PEM files,
//! served with rustls (ring provider, TLS 1.2 and 1.3).

use std::sync::Arc;

use alumet::plugin::PluginError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn unreadable(key: &str, path: &str, e: impl std::fmt::Display) -> PluginError {
    PluginError::unavailable(
        format!("cannot use {path} ({key}): {e}"),
        "give a readable PEM file (certificate chain for tls_cert_file, private key for tls_key_file)",
    )
}

/// The rustls configuration for `cert_file` (PEM chain, leaf first) and `key_file` (PEM key).
pub fn server_config(
    cert_file: &str,
    key_file: &str,
) -> Result<Arc<rustls::ServerConfig>, PluginError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| unreadable("tls_cert_file", cert_file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable("tls_cert_file", cert_file, e))?;
    if certs.is_empty() {
        return Err(unreadable(
            "tls_cert_file",
            cert_file,
            "no certificate in it",
        ));
    }
    // The error of a key file never contains the key.
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| unreadable("tls_key_file", key_file, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(PluginError::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| unreadable("tls_key_file", key_file, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
