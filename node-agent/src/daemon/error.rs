//! Why the agent could not start or stopped with an error.

use std::path::PathBuf;

/// A start-up or serving failure, naming the setting or file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file the configuration names could not be read or is invalid.
    #[error("{setting}: {path}: {reason}")]
    File {
        /// The setting naming the file (`ca.roots_file`).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A listener could not be set up.
    #[error("cannot listen for {setting} on {address}: {reason}")]
    Listen {
        /// The setting (`sds.socket`, `admin.addr`).
        setting: &'static str,
        /// The socket path or address.
        address: String,
        /// Why.
        reason: String,
    },
    /// A component could not be built from its settings.
    #[error("{setting}: {reason}")]
    Component {
        /// The setting or section at fault.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}
