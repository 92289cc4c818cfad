//! Settings from the environment: every setting of the TOML file can be
//! overridden by a `SIGIL_CA__<PATH>` variable.
//!
//! The overlay itself is shared by the daemons ([`sigil_runtime::env`],
//! which documents the name → path mapping and how values are read); this
//! module fixes the CA's prefix and configuration type and turns its
//! errors into [`ConfigError`]s:
//!
//! | variable | setting |
//! |---|---|
//! | `SIGIL_CA__TRUST_DOMAIN=example.org` | `trust_domain` |
//! | `SIGIL_CA__SERVER__MAX_CONNECTIONS=100` | `server.max_connections` |
//! | `SIGIL_CA__SERVER__HANDSHAKE_TIMEOUT=5s` | `server.handshake_timeout` |
//! | `SIGIL_CA__KUBERNETES__ENABLED=true` | `kubernetes.enabled` |
//! | `SIGIL_CA__SERVER__DNS_NAMES=["sigil-ca.sigil-system.svc"]` | `server.dns_names` |
//! | `SIGIL_CA__AUTHENTICATORS__0__LEEWAY=30s` | `authenticators[0].leeway` (the entry must exist in the file) |
//!
//! ```text
//! defaults ─▶ TOML file ─▶ SIGIL_CA__* (sorted by name, one at a time) ─▶ flags ─▶ validate()
//! ```
//!
//! [`EnvOverrides::attribute`] names the variable in a validation error
//! about a setting it set.

use sigil_runtime::env::{self as overlay, EnvError};
pub use sigil_runtime::env::{ENV_SEPARATOR, EnvOverride, Environment, ProcessEnvironment};

use super::{CaConfig, ConfigError};

/// The prefix of override variables.
pub const ENV_PREFIX: &str = "SIGIL_CA__";

/// The `SIGIL_CA__*` variables of an environment, in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvOverrides(overlay::EnvOverrides);

impl From<EnvError> for ConfigError {
    fn from(error: EnvError) -> Self {
        match error {
            EnvError::Parse { reason } => ConfigError::Parse { reason },
            EnvError::Env { var, reason } => ConfigError::Env { var, reason },
            // `EnvError` is non-exhaustive; a new kind still names the
            // variables as a parse error.
            other => ConfigError::Parse {
                reason: other.to_string(),
            },
        }
    }
}

impl EnvOverrides {
    /// Collects and checks the names of the `SIGIL_CA__*` variables of
    /// `env`; other variables are ignored.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        Ok(Self(overlay::EnvOverrides::from_env(env, ENV_PREFIX)?))
    }

    /// Whether there is no override.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The overrides, in the order they are applied.
    pub fn iter(&self) -> impl Iterator<Item = &EnvOverride> {
        self.0.iter()
    }

    /// The configuration from the defaults, then the TOML `text`, then
    /// these overrides. Not validated: the caller may apply flags first,
    /// then calls [`CaConfig::validate`] (and [`Self::attribute`] on its error).
    pub fn apply(&self, text: &str) -> Result<CaConfig, ConfigError> {
        Ok(self.0.apply(text)?)
    }

    /// Names the variable in an [`ConfigError::Invalid`] about a setting
    /// (or part of one) that an override set; other errors pass unchanged.
    pub fn attribute(&self, error: ConfigError) -> ConfigError {
        let ConfigError::Invalid {
            field,
            value,
            reason,
        } = error
        else {
            return error;
        };
        let reason = match self.0.set_by(&field) {
            Some(o) => format!("{reason} (set by {})", o.var),
            None => reason,
        };
        ConfigError::Invalid {
            field,
            value,
            reason,
        }
    }
}

impl CaConfig {
    /// Defaults, then the TOML `text`, then the `SIGIL_CA__*` variables of
    /// `env`; validated, with errors naming the variable where one set the
    /// setting at fault.
    pub fn from_toml_with_env(text: &str, env: &dyn Environment) -> Result<Self, ConfigError> {
        let overrides = EnvOverrides::from_env(env)?;
        let config = overrides.apply(text)?;
        config.validate().map_err(|e| overrides.attribute(e))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
