//! Workload API errors and their gRPC status (one table).

use crate::peer::AttestError;
use crate::source::SourceError;

/// The exact message SPIFFE clients expect when a caller has no identity.
pub const NO_IDENTITY_ISSUED: &str = "no identity issued";

/// Why a Workload API call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The `workload.spiffe.io: true` metadata is missing.
    #[error("security header missing from request")]
    MissingHeader,
    /// The request is malformed (no audience, a bad SPIFFE ID, a bad token).
    #[error("{0}")]
    InvalidArgument(String),
    /// No registration entry matched the caller.
    #[error("no identity issued")]
    NoIdentity,
    /// The caller asked for an identity it does not hold.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller could not be attested.
    #[error("{0}")]
    Attestation(#[from] AttestError),
    /// The request did not come through the unix-socket listener (no
    /// peer credentials).
    #[error("caller credentials unavailable")]
    NoPeer,
    /// The credential source could not answer.
    #[error("{0}")]
    Unavailable(String),
}

impl From<SourceError> for WorkloadError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::InvalidArgument(m) => Self::InvalidArgument(m),
            SourceError::PermissionDenied(m) => Self::PermissionDenied(m),
            SourceError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<WorkloadError> for tonic::Status {
    fn from(e: WorkloadError) -> Self {
        let message = e.to_string();
        match e {
            WorkloadError::MissingHeader | WorkloadError::InvalidArgument(_) => {
                Self::invalid_argument(message)
            }
            WorkloadError::NoIdentity => Self::permission_denied(NO_IDENTITY_ISSUED),
            WorkloadError::PermissionDenied(_) => Self::permission_denied(message),
            WorkloadError::Attestation(_)
            | WorkloadError::NoPeer
            | WorkloadError::Unavailable(_) => Self::unavailable(message),
        }
    }
}
