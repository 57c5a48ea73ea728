//! Secrets in plugin configurations (tokens, passwords): where they come
//! from and how they stay out of logs.
//!
//! A plugin that needs a secret offers three keys for it: the value inline
//! (`token`), the name of an environment variable (`token_env`) or the path
//! of a file (`token_file`); at most one may be set. [`SecretSource`] checks
//! and reads them with errors that name the key but never the value, and
//! [`Secret`] carries the value with a `Debug` that does not show it. The
//! agent's `config show` redacts the inline keys by name (`token`,
//! `*_token`, `*_password`...), so secret keys must be named that way.

use std::fmt;

use crate::config::ConfigError;
use crate::plugin::PluginError;

/// A secret string whose `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True if no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `candidate` in a time that does not depend on where
    /// they differ (only on their lengths), for checking credentials.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != candidate.len() {
            return false;
        }
        mine.iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

/// Removes secrets from text that may be logged.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// Redacts these secrets (empty ones are ignored).
    pub fn new(secrets: Vec<String>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }
}

/// The value of an HTTP `Authorization` header for basic authentication
/// (`Basic base64(user:password)`); it contains the password.
pub fn http_basic_authorization(username: &str, password: &Secret) -> Secret {
    let credentials = format!("{username}:{}", password.expose());
    Secret(format!("Basic {}", base64(credentials.as_bytes())))
}

/// Standard base64 with padding (RFC 4648), for basic auth.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The three config keys that can hold one secret: `<key>` inline,
/// `<key>_env` and `<key>_file`, with their values as configured.
#[derive(Clone, Copy)]
pub struct SecretSource<'a> {
    /// The inline key, e.g. `token`; the others are `token_env` and `token_file`.
    pub key: &'a str,
    /// The secret written in the config (empty: not set).
    pub inline: &'a str,
    /// Name of the environment variable holding it (empty: not set).
    pub env: &'a str,
    /// Path of the file holding it (empty: not set).
    pub file: &'a str,
}

impl fmt::Debug for SecretSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSource")
            .field("key", &self.key)
            .field("inline", &Secret::new(self.inline))
            .field("env", &self.env)
            .field("file", &self.file)
            .finish()
    }
}

impl SecretSource<'_> {
    /// True if one of the three keys is set.
    pub fn is_set(&self) -> bool {
        !(self.inline.is_empty() && self.env.is_empty() && self.file.is_empty())
    }

    /// Checks that at most one of the three keys is set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let set = [self.inline, self.env, self.file]
            .iter()
            .filter(|s| !s.is_empty())
            .count();
        if set > 1 {
            let key = self.key;
            return Err(ConfigError::Invalid {
                key: key.into(),
                reason: format!("set at most one of {key}, {key}_env and {key}_file"),
            });
        }
        Ok(())
    }

    /// Reads the secret from wherever it is configured (surrounding
    /// whitespace removed); empty if none of the keys is set. A variable or
    /// file that is missing or empty is an error that says which key to
    /// fix; errors never contain the secret.
    pub fn resolve(&self) -> Result<Secret, PluginError> {
        let key = self.key;
        if !self.inline.is_empty() {
            return Ok(Secret::new(self.inline));
        }
        if !self.env.is_empty() {
            return match std::env::var(self.env) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
                _ => Err(PluginError::unavailable(
                    format!(
                        "the environment variable {} ({key}_env) is not set or empty",
                        self.env
                    ),
                    format!("export it before starting the agent, or set {key}_file"),
                )),
            };
        }
        if !self.file.is_empty() {
            return match std::fs::read_to_string(self.file) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
                Ok(_) => Err(PluginError::unavailable(
                    format!("the file {} ({key}_file) is empty", self.file),
                    format!("write the {key} into it"),
                )),
                Err(e) => Err(PluginError::unavailable(
                    format!(
                        "cannot read the file {} ({key}_file): {}",
                        self.file,
                        e.kind()
                    ),
                    "check the path and that the agent's user can read it",
                )),
            };
        }
        Ok(Secret::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source<'a>(inline: &'a str, env: &'a str, file: &'a str) -> SecretSource<'a> {
        SecretSource {
            key: "token",
            inline,
            env,
            file,
        }
    }

    #[test]
    fn at_most_one_key() {
        assert!(source("", "", "").validate().is_ok());
        assert!(source("a", "", "").validate().is_ok());
        let err = source("a", "B", "").validate().unwrap_err().to_string();
        assert!(err.contains("token_env"), "{err}");
        assert!(!err.contains("a,"), "{err}");
    }

    #[test]
    fn from_inline_file_or_env() {
        assert_eq!(source("x", "", "").resolve().unwrap().expose(), "x");
        let dir = std::env::temp_dir().join(format!("alumet-secret-{}", std::process::id()));
        std::fs::write(&dir, "  from-file\n").unwrap();
        let path = dir.display().to_string();
        assert_eq!(
            source("", "", &path).resolve().unwrap().expose(),
            "from-file"
        );
        std::fs::remove_file(&dir).unwrap();
        let err = source("", "", &path).resolve().unwrap_err().to_string();
        assert!(err.contains("token_file"), "{err}");
        let err = source("", "ALUMET_SURELY_UNSET_VAR_42", "")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("ALUMET_SURELY_UNSET_VAR_42"), "{err}");
        assert!(source("", "", "").resolve().unwrap().is_empty());
    }

    #[test]
    fn never_shown_and_compared_whole() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert!(!format!("{:?}", source("hunter2", "", "")).contains("hunter2"));
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b"hunter"));
    }

    #[test]
    fn basic_authorization_is_rfc_7617() {
        let h = http_basic_authorization("Aladdin", &Secret::new("open sesame"));
        assert_eq!(h.expose(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
