//! Configuration errors, each naming the setting at fault.

use std::path::PathBuf;

use sigil_runtime::env::EnvError;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TOML or a `SIGIL_AGENT__*` variable could not be applied (the
    /// message names the field or the variable).
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A value breaks a rule.
    #[error("invalid config: {field} = {value}: {reason}")]
    Invalid {
        /// The setting, dotted (`certificates.renew_fraction`).
        field: String,
        /// The value given.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
}

pub(super) fn invalid(field: &str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        value: value.to_string(),
        reason: reason.into(),
    }
}
