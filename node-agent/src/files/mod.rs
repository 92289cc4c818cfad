//! File output, for applications that read their credentials from files
//! (what spiffe-helper does for SPIRE): one identity's chain, key and trust
//! bundle written into a directory on every change, then optionally a
//! command run or a signal sent to a process named by a pid file.
//!
//! ```text
//! CredentialSource::watch_x509(id) ─┐
//! CredentialSource::watch_bundles() ┴─▶ svid_key.pem (0600), svid.pem, svid_bundle.pem ─▶ command / kill -HUP
//! ```
//!
//! - Every file is written atomically (temporary file, fsync, rename,
//!   directory fsync; `sigil_runtime::fs`): a reader sees the old file or
//!   the new one. The key is written first, then the chain, then the
//!   bundle; the hook runs after all three.
//! - The key is PKCS#8 PEM with mode 0600 whatever the umask; chain and
//!   bundle are 0644. A missing directory is created with mode 0700.
//! - Only a valid certificate is written. While the identity is `Pending`
//!   or `Unavailable` (the CA cannot be reached and the last certificate
//!   expired) the files are left as they are and a warning is logged:
//!   removing them would break a reader that still holds a valid bundle,
//!   and a reader must check expiry anyway. A certificate already expired
//!   when it arrives is never written.
//! - Nothing is rewritten (and no hook runs) when chain and bundle are
//!   unchanged. A failed write is retried every [`RETRY_INTERVAL`].
//! - The signal is sent with `rustix::process::kill_process` (a safe
//!   wrapper of kill(2); the crate forbids `unsafe`), to the positive pid
//!   in the pid file, read afresh each time.

mod metrics;
#[cfg(test)]
mod tests;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sigil_identity::SpiffeId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::{FileOutputMetrics, ResultLabel};

use crate::source::CredentialSource;

/// Default name of the chain file (leaf first), as spiffe-helper names it.
pub const DEFAULT_CERT_FILE_NAME: &str = "svid.pem";
/// Default name of the key file, as spiffe-helper names it.
pub const DEFAULT_KEY_FILE_NAME: &str = "svid_key.pem";
/// Default name of the trust bundle file, as spiffe-helper names it.
pub const DEFAULT_BUNDLE_FILE_NAME: &str = "svid_bundle.pem";
/// Default time a command may run before it is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default signal sent to the pid file's process.
pub const DEFAULT_RELOAD_SIGNAL: ReloadSignal = ReloadSignal::Hup;
/// Interval between retries of a failed write.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// A signal that tells a process to reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSignal {
    /// SIGHUP.
    Hup,
    /// SIGINT.
    Int,
    /// SIGTERM.
    Term,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
}

impl ReloadSignal {
    /// Parses `HUP`, `SIGHUP`, `usr1`, … (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        let upper = name.to_ascii_uppercase();
        match upper.strip_prefix("SIG").unwrap_or(&upper) {
            "HUP" => Some(Self::Hup),
            "INT" => Some(Self::Int),
            "TERM" => Some(Self::Term),
            "USR1" => Some(Self::Usr1),
            "USR2" => Some(Self::Usr2),
            _ => None,
        }
    }

    fn to_rustix(self) -> rustix::process::Signal {
        use rustix::process::Signal;
        match self {
            Self::Hup => Signal::HUP,
            Self::Int => Signal::INT,
            Self::Term => Signal::TERM,
            Self::Usr1 => Signal::USR1,
            Self::Usr2 => Signal::USR2,
        }
    }
}

/// Where to send a signal after the files changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalTarget {
    /// A file holding the process's pid (decimal, surrounding whitespace
    /// ignored), read before every signal.
    pub pid_file: PathBuf,
    /// The signal ([`DEFAULT_RELOAD_SIGNAL`]).
    pub signal: ReloadSignal,
}

/// Settings of one [`FileOutput`].
#[derive(Debug, Clone)]
pub struct FileOutputSettings {
    /// The identity written.
    pub identity: SpiffeId,
    /// The directory the files go to.
    pub dir: PathBuf,
    /// Chain file name ([`DEFAULT_CERT_FILE_NAME`]).
    pub cert_file_name: String,
    /// Key file name ([`DEFAULT_KEY_FILE_NAME`]).
    pub key_file_name: String,
    /// Bundle file name ([`DEFAULT_BUNDLE_FILE_NAME`]).
    pub bundle_file_name: String,
    /// Append the X.509 authorities of federated trust domains to the
    /// bundle file (default false: the identity's own trust domain only).
    pub include_federated_bundles: bool,
    /// A command to run after the files changed: program and arguments,
    /// run directly (no shell).
    pub command: Option<Vec<String>>,
    /// How long the command may run before it is killed
    /// ([`DEFAULT_COMMAND_TIMEOUT`]).
    pub command_timeout: Duration,
    /// A process to signal after the files changed (after the command, if
    /// both are set).
    pub signal: Option<SignalTarget>,
}

impl FileOutputSettings {
    /// Defaults for `identity` written into `dir`, no hook.
    pub fn new(identity: SpiffeId, dir: impl Into<PathBuf>) -> Self {
        Self {
            identity,
            dir: dir.into(),
            cert_file_name: DEFAULT_CERT_FILE_NAME.to_owned(),
            key_file_name: DEFAULT_KEY_FILE_NAME.to_owned(),
            bundle_file_name: DEFAULT_BUNDLE_FILE_NAME.to_owned(),
            include_federated_bundles: false,
            command: None,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            signal: None,
        }
    }
}

/// Writes one identity's files on every change.
pub struct FileOutput {
    settings: FileOutputSettings,
    source: Arc<dyn CredentialSource>,
    metrics: FileOutputMetrics,
}

impl std::fmt::Debug for FileOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileOutput")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl FileOutput {
    /// An output of `settings.identity` from `source`.
    pub fn new(
        settings: FileOutputSettings,
        source: Arc<dyn CredentialSource>,
        metrics: FileOutputMetrics,
    ) -> Self {
        Self {
            settings,
            source,
            metrics,
        }
    }

    /// Spawns [`run`](Self::run) into `tracker`.
    pub fn spawn(self, tracker: &TaskTracker, cancel: CancellationToken) {
        tracker.spawn(self.run(cancel));
    }

    /// Watches the identity and writes its files until `cancel` fires (a
    /// write or hook in progress finishes first).
    pub async fn run(self, cancel: CancellationToken) {
        writer::run(self.settings, self.source, self.metrics, cancel).await;
    }
}
