//! The errors of the plugin contract, apart from the plugin module so that
//! the pipeline can name them without depending on the contract itself.

use crate::config::ConfigError;

/// Boxed error for plugin and element failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The plugin cannot work on this machine. `reason` says what is missing,
    /// `fix` what the user can do; the agent prints them on one line.
    #[error("{reason}{}", fix.as_ref().map(|f| format!(" ({f})")).unwrap_or_default())]
    Unavailable {
        /// What is missing (a kernel interface, a permission, a library).
        reason: String,
        /// What to do about it, if anything.
        fix: Option<String>,
    },
    /// Registering a metric failed.
    #[error(transparent)]
    Metric(#[from] crate::metrics::MetricError),
    /// Any other failure.
    #[error(transparent)]
    Other(BoxError),
}

impl PluginError {
    /// The plugin cannot run here: `reason`, and what the user can do.
    pub fn unavailable(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        PluginError::Unavailable {
            reason: reason.into(),
            fix: Some(fix.into()),
        }
    }

    /// Wraps any error.
    pub fn other(e: impl Into<BoxError>) -> Self {
        PluginError::Other(e.into())
    }
}
