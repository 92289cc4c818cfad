//! Why a registration entries file was refused.

use std::path::PathBuf;

/// Why a registration entries file was refused. The previous set, if any,
/// stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The file could not be read.
    #[error("cannot read the registration entries file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The file is larger than allowed.
    #[error("the registration entries file {path} has {size} bytes, at most {max}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("registration entries: {0}")]
    Syntax(String),
    /// The file holds more entries than allowed.
    #[error("registration entries: {count} entries, at most {max}")]
    TooManyEntries {
        /// How many it holds.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One entry is invalid.
    #[error("registration entry {index} ({spiffe_id}): {field}: {reason}")]
    InvalidEntry {
        /// The entry's position in the file, from 1.
        index: usize,
        /// Its `spiffe_id` as written.
        spiffe_id: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}
