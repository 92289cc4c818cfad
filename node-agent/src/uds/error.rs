//! Errors of the unix-socket listener.

use std::io;
use std::path::PathBuf;

/// Why a socket could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdsError {
    /// The socket's parent directory could not be created.
    #[error("cannot create the socket directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Something that is not a socket is in the way; it is never removed.
    #[error("{path} exists and is not a unix socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The path has no parent directory or no file name.
    #[error("socket path {path} has no parent directory or file name")]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// Removing a stale socket, binding, setting the mode or moving the
    /// socket into place failed.
    #[error("cannot {action} the socket {path}: {source}")]
    Io {
        /// What was being done (`remove`, `bind`, `chmod`, `rename`).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}
