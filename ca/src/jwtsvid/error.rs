//! Why a JWT-SVID could not be minted or the key ring not loaded.

use std::path::PathBuf;
use std::sync::Arc;

use super::alg::JwtAlgorithm;

/// A key ring or minting failure. Messages never hold key material or
/// tokens.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// The request named no audience.
    #[error("at least one audience is required")]
    NoAudience,
    /// More audiences than allowed.
    #[error("{count} audiences requested; at most {max} are allowed")]
    TooManyAudiences {
        /// How many were requested.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// An audience is empty or too long.
    #[error("audience {index} is invalid: {reason}")]
    BadAudience {
        /// Its position in the request.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A stored key does not parse.
    #[error("the stored {algorithm} JWT signing key is unusable: {reason}")]
    BadKey {
        /// Its algorithm.
        algorithm: JwtAlgorithm,
        /// What ring said.
        reason: String,
    },
    /// The key file is not what this version writes.
    #[error(
        "{path}: not a JWT signing key file: {reason}; move it away to start with a new key (tokens it signed then no longer verify)"
    )]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The clock is before 1970 or beyond what a JWT date holds.
    #[error("the system clock is outside the range of JWT dates")]
    Clock,
    /// A broken invariant.
    #[error("{0}")]
    Internal(String),
}

impl JwtSvidError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
