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
        /// Whether what the plugin reads is simply not on this machine (no
        /// GPU, no RAPL, a virtual machine's counters that do not count):
        /// information, not a fault. `false`: something a person can fix
        /// (a permission, a driver, a counter that should count).
        absent: bool,
    },
    /// Registering a metric failed.
    #[error(transparent)]
    Metric(#[from] crate::metrics::MetricError),
    /// Any other failure.
    #[error(transparent)]
    Other(BoxError),
}

impl PluginError {
    /// The plugin cannot run here because of a fault a person can fix:
    /// `reason`, and what to do.
    pub fn unavailable(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        PluginError::Unavailable {
            reason: reason.into(),
            fix: Some(fix.into()),
            absent: false,
        }
    }

    /// The plugin has nothing to read on this machine (the hardware or
    /// driver is not there): `reason`, and what would change that.
    pub fn absent(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        PluginError::Unavailable {
            reason: reason.into(),
            fix: Some(fix.into()),
            absent: true,
        }
    }

    /// Whether the plugin cannot run only because what it reads is not on
    /// this machine (see [`PluginError::Unavailable`]).
    pub fn is_absent(&self) -> bool {
        matches!(self, PluginError::Unavailable { absent: true, .. })
    }

    /// Wraps any error.
    pub fn other(e: impl Into<BoxError>) -> Self {
        PluginError::Other(e.into())
    }
}
