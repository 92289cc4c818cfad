//! Configuration errors, each naming the setting at fault.

use std::path::PathBuf;

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
    /// The TOML is malformed, or names an unknown setting, or a value has
    /// the wrong type (the message names the field and line).
    #[error("invalid config: {reason}")]
    Parse {
        /// The parser's message.
        reason: String,
    },
    /// A `SIGIL_CA__*` environment variable could not be applied: its name
    /// is malformed or names no setting, or its value does not fit the
    /// setting.
    #[error("invalid config: environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Why (with the setting it maps to).
        reason: String,
    },
    /// A value breaks a rule.
    #[error("invalid config: {field} = {value}: {reason}")]
    Invalid {
        /// The setting, dotted (`server.max_connections`).
        field: String,
        /// The value given.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
}
