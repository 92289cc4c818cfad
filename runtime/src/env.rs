//! Settings from the environment: every setting of a daemon's TOML file
//! can be overridden by a `SIGIL_<DAEMON>__<PATH>` variable (the CA uses
//! `SIGIL_CA__`, the node agent and the proxy their own prefix).
//!
//! The path is the setting's TOML path with `__` between segments; segments
//! are lower-cased, and a number selects an entry of a list:
//!
//! | variable (prefix `SIGIL_CA__`) | setting |
//! |---|---|
//! | `SIGIL_CA__TRUST_DOMAIN=example.org` | `trust_domain` |
//! | `SIGIL_CA__SERVER__MAX_CONNECTIONS=100` | `server.max_connections` |
//! | `SIGIL_CA__AUTHENTICATORS__0__LEEWAY=30s` | `authenticators[0].leeway` (the entry must exist in the file) |
//!
//! A value is read as a TOML value when it is one (`100`, `true`,
//! `["a", "b"]`, `{ file = "/jwks.json" }`) and as a string otherwise
//! (`5s`, `0.0.0.0:15012`, `example.org`); if the setting refuses the TOML
//! reading, the string is tried (so `SIGIL_CA__KUBERNETES__CA_SECRET_NAME=123`
//! is the name `"123"`).
//!
//! ```text
//! defaults ─▶ TOML file ─▶ <PREFIX>* (sorted by name, one at a time) ─▶ flags ─▶ validate()
//!                 EnvOverrides::apply::<Config>(text)
//! ```
//!
//! The overlay is generic over the configuration type: any
//! `T: DeserializeOwned` whose structs refuse unknown fields. Each variable
//! is checked as it is applied: a path the configuration does not have, a
//! value of the wrong type, or a malformed name is an [`EnvError`] naming
//! the variable; [`EnvOverrides::set_by`] finds the variable behind a
//! setting, so a daemon can name it in its own validation errors. The
//! process environment is read through [`Environment`], so tests pass a map
//! instead of mutating the process's variables.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::hash::BuildHasher;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// What separates the path segments in a variable's name.
pub const ENV_SEPARATOR: &str = "__";

/// Where environment variables come from.
pub trait Environment {
    /// Every variable, name and value, as the operating system gives them.
    fn vars(&self) -> Vec<(OsString, OsString)>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn vars(&self) -> Vec<(OsString, OsString)> {
        std::env::vars_os().collect()
    }
}

impl<S: BuildHasher> Environment for HashMap<String, String, S> {
    fn vars(&self) -> Vec<(OsString, OsString)> {
        self.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }
}

impl Environment for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(OsString, OsString)> {
        self.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }
}

/// Why the file or an override could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The TOML text is malformed, names an unknown setting, or a value has
    /// the wrong type (the message names the field and line).
    #[error("invalid config: {reason}")]
    Parse {
        /// The parser's message.
        reason: String,
    },
    /// An override variable could not be applied: its name is malformed
    /// or names no setting, or its value does not fit the setting.
    #[error("invalid config: environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Why (with the setting it maps to).
        reason: String,
    },
}

/// One override variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvOverride {
    /// The variable's name.
    pub var: String,
    /// The setting's path, lower-cased: `["server", "max_connections"]`.
    pub path: Vec<String>,
    value: String,
}

/// The override variables of an environment with one prefix, in name
/// order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvOverrides {
    overrides: Vec<EnvOverride>,
}

impl EnvOverrides {
    /// Collects and checks the names of the variables of `env` that start
    /// with `prefix` (e.g. `SIGIL_CA__`, ending in [`ENV_SEPARATOR`]);
    /// other variables are ignored.
    pub fn from_env(env: &dyn Environment, prefix: &str) -> Result<Self, EnvError> {
        let mut overrides = Vec::new();
        for (name, value) in env.vars() {
            let lossy = name.to_string_lossy();
            if !lossy.starts_with(prefix) {
                continue;
            }
            let error = |reason: &str| EnvError::Env {
                var: lossy.clone().into_owned(),
                reason: reason.to_owned(),
            };
            let Some(var) = name.to_str() else {
                return Err(error("the name is not UTF-8"));
            };
            let Some(value) = value.to_str() else {
                return Err(error("the value is not UTF-8"));
            };
            let path: Vec<String> = var
                .strip_prefix(prefix)
                .unwrap_or_default()
                .split(ENV_SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(error(&format!(
                    "expected {prefix}<SECTION>__<SETTING>: a path segment is empty"
                )));
            }
            overrides.push(EnvOverride {
                var: var.to_owned(),
                path,
                value: value.to_owned(),
            });
        }
        overrides.sort_by(|a, b| a.var.cmp(&b.var));
        for pair in overrides.windows(2) {
            if let [a, b] = pair
                && a.path == b.path
            {
                return Err(EnvError::Env {
                    var: b.var.clone(),
                    reason: format!("sets {} like {}", a.setting(), a.var),
                });
            }
        }
        Ok(Self { overrides })
    }

    /// Whether there is no override.
    pub fn is_empty(&self) -> bool {
        self.overrides.is_empty()
    }

    /// The overrides, in the order they are applied.
    pub fn iter(&self) -> impl Iterator<Item = &EnvOverride> {
        self.overrides.iter()
    }

    /// The configuration from the defaults, then the TOML `text`, then
    /// these overrides. Not validated: the caller may apply flags first,
    /// then validates (and names the variable with [`Self::set_by`]).
    pub fn apply<T: DeserializeOwned>(&self, text: &str) -> Result<T, EnvError> {
        // The file alone first, so its errors keep their line numbers.
        let mut config: T = toml::from_str(text).map_err(|e| EnvError::Parse {
            reason: e.to_string(),
        })?;
        if self.overrides.is_empty() {
            return Ok(config);
        }
        let mut table: Table = toml::from_str(text).map_err(|e| EnvError::Parse {
            reason: e.to_string(),
        })?;
        // One at a time, so a refusal names the variable that caused it.
        for o in &self.overrides {
            config = o.apply_to(&mut table)?;
        }
        Ok(config)
    }

    /// The override that set `field` (as validation errors name settings:
    /// `server.max_connections`, `authenticators[0].leeway`) or a table
    /// or list entry holding it; the most specific one when several did.
    pub fn set_by(&self, field: &str) -> Option<&EnvOverride> {
        self.overrides
            .iter()
            .filter(|o| {
                let setting = o.setting();
                field == setting
                    || field
                        .strip_prefix(setting.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .max_by_key(|o| o.path.len())
    }
}

impl EnvOverride {
    /// The setting as validation errors name it: `server.max_connections`,
    /// `authenticators[0].leeway`.
    pub fn setting(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            if segment.bytes().all(|b| b.is_ascii_digit()) {
                out.push('[');
                out.push_str(segment);
                out.push(']');
            } else {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(segment);
            }
        }
        out
    }

    fn error(&self, reason: impl std::fmt::Display) -> EnvError {
        EnvError::Env {
            var: self.var.clone(),
            reason: format!("{}: {reason}", self.setting()),
        }
    }

    /// Sets the value in `table` if the result still deserializes; returns
    /// that configuration.
    fn apply_to<T: DeserializeOwned>(&self, table: &mut Table) -> Result<T, EnvError> {
        let readings = self
            .value
            .parse::<Value>()
            .ok()
            .into_iter()
            .chain([Value::String(self.value.clone())]);
        let mut first_refusal = None;
        for reading in readings {
            let mut trial = Value::Table(table.clone());
            set(&mut trial, &self.path, reading).map_err(|reason| self.error(reason))?;
            match trial.clone().try_into::<T>() {
                Ok(config) => {
                    if let Value::Table(trial) = trial {
                        *table = trial;
                    }
                    return Ok(config);
                }
                Err(e) => {
                    first_refusal.get_or_insert_with(|| e.message().trim().to_owned());
                }
            }
        }
        Err(self.error(first_refusal.unwrap_or_default()))
    }
}

/// Puts `value` at `path` under `node`, creating missing tables; a number
/// indexes an existing list entry.
fn set(node: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((segment, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    match node {
        Value::Table(table) => {
            if !table.contains_key(segment)
                && let Some(index) = rest.first().filter(|s| s.parse::<usize>().is_ok())
            {
                return Err(format!(
                    "the file has no {segment:?} list, so it has no entry {index} (entries can be changed, not added)"
                ));
            }
            let child = table
                .entry(segment.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            set(child, rest, value)
        }
        Value::Array(items) => {
            let len = items.len();
            let child = segment
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get_mut(index))
                .ok_or_else(|| {
                    format!(
                        "{segment:?} is not an entry of the list (it has {len}; entries are numbered from 0 and must exist in the file)"
                    )
                })?;
            set(child, rest, value)
        }
        other => Err(format!(
            "cannot set {segment:?} inside a {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests;
