//! Secrets (tokens, API keys, header values): a type whose `Debug` never
//! shows them, a redactor for text that may reach a log, and their
//! resolution from the config, an environment variable or a file.

use std::fmt;

use alumet::config::ConfigError;
use alumet::plugin::PluginError;

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

/// Where a secret may come from: the three config keys and their values
/// (inline, environment variable name, file path); at most one is set.
#[derive(Debug, Clone, Copy)]
pub struct SecretSource<'a> {
    /// `(key, value)` of the inline secret.
    pub inline: (&'a str, &'a str),
    /// `(key, name of the variable)`.
    pub env: (&'a str, &'a str),
    /// `(key, path of the file)`.
    pub file: (&'a str, &'a str),
}

impl SecretSource<'_> {
    /// Checks that at most one of the three is set; the error names the keys.
    pub fn validate(&self) -> Result<(), PluginError> {
        let set = [self.inline.1, self.env.1, self.file.1]
            .iter()
            .filter(|s| !s.is_empty())
            .count();
        if set > 1 {
            return Err(PluginError::Config(ConfigError::Invalid {
                key: self.inline.0.into(),
                reason: format!(
                    "set at most one of {}, {} and {}",
                    self.inline.0, self.env.0, self.file.0
                ),
            }));
        }
        Ok(())
    }

    /// The secret (empty when none is set); surrounding whitespace is
    /// ignored. Errors name the variable or file, never the secret.
    pub fn resolve(&self) -> Result<Secret, PluginError> {
        let (_, inline) = self.inline;
        let (env_key, env) = self.env;
        let (file_key, file) = self.file;
        if !inline.is_empty() {
            return Ok(Secret::new(inline));
        }
        if !env.is_empty() {
            return match std::env::var(env) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
                _ => Err(PluginError::unavailable(
                    format!("the environment variable {env} ({env_key}) is not set or empty"),
                    format!("export it before starting the agent, or set {file_key}"),
                )),
            };
        }
        if !file.is_empty() {
            return match std::fs::read_to_string(file) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
                Ok(_) => Err(PluginError::unavailable(
                    format!("the file {file} ({file_key}) is empty"),
                    "write the secret into it",
                )),
                Err(e) => Err(PluginError::unavailable(
                    format!("cannot read the file {file} ({file_key}): {}", e.kind()),
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
            inline: ("token", inline),
            env: ("token_env", env),
            file: ("token_file", file),
        }
    }

    #[test]
    fn secrets_come_from_inline_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let path = path.display().to_string();
        assert_eq!(
            source("", "", &path).resolve().unwrap().expose(),
            "from-file"
        );
        assert_eq!(
            source("inline", "", "").resolve().unwrap().expose(),
            "inline"
        );
        let err = source("", "ALUMET_TEST_SURELY_UNSET_VARIABLE", "")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("ALUMET_TEST_SURELY_UNSET_VARIABLE"), "{err}");
        assert_eq!(source("", "", "").resolve().unwrap(), Secret::default());
        assert!(source("a", "B", "").validate().is_err());
    }

    #[test]
    fn debug_and_redaction_hide_the_secret() {
        assert_eq!(format!("{:?}", Secret::new("xyz")), "\"<redacted>\"");
        let r = Redactor::new(vec!["xyz".into(), String::new()]);
        assert_eq!(r.redact("a xyz b"), "a <redacted> b");
    }
}
