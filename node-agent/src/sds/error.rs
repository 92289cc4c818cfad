//! [`SdsError`]: why an SDS call was refused or a stream ended, and its
//! gRPC status (one table, in [`From<SdsError> for tonic::Status`]).

use crate::peer::AttestError;

/// Longest resource name echoed back in an error or a log line; the rest
/// is cut (a name is attacker-chosen).
const MAX_ECHOED_NAME: usize = 96;

/// Why an SDS request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SdsError {
    /// The connection carries no peer credentials (the listener did not
    /// attest it): refused, fail closed.
    #[error("no peer credentials on this connection; the SDS socket listener must provide them")]
    NoPeer,
    /// The caller could not be attested.
    #[error(transparent)]
    Attestation(#[from] AttestError),
    /// No registration entry matches the caller. The text is the one
    /// clients match on.
    #[error("no identity issued")]
    NoIdentity,
    /// [`super::SdsSettings::max_streams`] streams are open already.
    #[error("too many SDS streams open (limit {limit}); retry later")]
    TooManyStreams {
        /// The configured limit.
        limit: usize,
    },
    /// [`super::SdsSettings::max_streams_per_identity`] streams are open
    /// for the caller's identity already.
    #[error("too many SDS streams open for {id} (limit {limit}); retry later")]
    TooManyIdentityStreams {
        /// The identity.
        id: String,
        /// The configured limit.
        limit: usize,
    },
    /// The request asks for a type this service does not serve.
    #[error(
        "unsupported type_url {type_url:?}: this service serves only {}",
        super::SECRET_TYPE_URL
    )]
    UnsupportedType {
        /// The requested type (cut to a bounded length).
        type_url: String,
    },
    /// The request names more resources than allowed.
    #[error("{actual} resource names in one request (limit {limit})")]
    TooManyNames {
        /// The configured limit.
        limit: usize,
        /// How many the request named.
        actual: usize,
    },
    /// A resource name other than `default` and `ROOTCA`. Nothing is
    /// looked up for it, and no file is ever read.
    #[error(
        "unknown SDS resource {name:?}: this agent serves only \"default\" (the caller's certificate and key) and \"ROOTCA\" (its trust bundle)"
    )]
    UnknownResource {
        /// The requested name (cut to a bounded length).
        name: String,
    },
    /// `FetchSecrets` without resource names.
    #[error("FetchSecrets needs resource_names: \"default\" and/or \"ROOTCA\"")]
    NoResourceNames,
    /// `FetchSecrets` waited for a credential that did not become ready.
    #[error("no valid credential for {resource} yet: {reason}")]
    NotReady {
        /// The resource name.
        resource: &'static str,
        /// Why (for operators; never secret material).
        reason: String,
    },
    /// The agent is shutting down (or its credential source stopped).
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// The registration entries changed while the stream was open: the
    /// client reconnects and is attested against the new entries.
    #[error("registration entries changed: reconnect to be attested again")]
    EntriesChanged,
    /// DeltaSecrets (incremental xDS) is not served.
    #[error("DeltaSecrets is not implemented; use StreamSecrets (state of the world)")]
    DeltaUnsupported,
}

impl SdsError {
    /// The low-cardinality `reason` label of the error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoPeer => "no_peer",
            Self::Attestation(_) => "attestation_failed",
            Self::NoIdentity => "no_identity",
            Self::TooManyStreams { .. } => "stream_limit",
            Self::TooManyIdentityStreams { .. } => "identity_stream_limit",
            Self::UnsupportedType { .. } | Self::TooManyNames { .. } | Self::NoResourceNames => {
                "invalid_request"
            }
            Self::UnknownResource { .. } => "unknown_resource",
            Self::NotReady { .. } => "not_ready",
            Self::ShuttingDown => "shutting_down",
            Self::EntriesChanged => "entries_changed",
            Self::DeltaUnsupported => "unimplemented",
        }
    }

    /// Every value [`Self::reason`] can return.
    pub(super) const REASONS: [&'static str; 11] = [
        "no_peer",
        "attestation_failed",
        "no_identity",
        "stream_limit",
        "identity_stream_limit",
        "invalid_request",
        "unknown_resource",
        "not_ready",
        "shutting_down",
        "entries_changed",
        "unimplemented",
    ];

    /// An [`Self::UnknownResource`] for `name`, cut to a bounded length.
    pub(super) fn unknown_resource(name: &str) -> Self {
        Self::UnknownResource {
            name: bounded(name),
        }
    }

    /// An [`Self::UnsupportedType`] for `type_url`, cut to a bounded length.
    pub(super) fn unsupported_type(type_url: &str) -> Self {
        Self::UnsupportedType {
            type_url: bounded(type_url),
        }
    }
}

/// `s` cut to [`MAX_ECHOED_NAME`] characters, marked when cut.
fn bounded(s: &str) -> String {
    if s.chars().count() <= MAX_ECHOED_NAME {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(MAX_ECHOED_NAME).collect();
    out.push('…');
    out
}

impl From<SdsError> for tonic::Status {
    fn from(e: SdsError) -> Self {
        let message = e.to_string();
        match e {
            SdsError::NoPeer
            | SdsError::Attestation(_)
            | SdsError::NotReady { .. }
            | SdsError::ShuttingDown
            | SdsError::EntriesChanged => Self::unavailable(message),
            SdsError::NoIdentity => Self::permission_denied(message),
            SdsError::TooManyStreams { .. } | SdsError::TooManyIdentityStreams { .. } => {
                Self::resource_exhausted(message)
            }
            SdsError::UnsupportedType { .. }
            | SdsError::TooManyNames { .. }
            | SdsError::UnknownResource { .. }
            | SdsError::NoResourceNames => Self::invalid_argument(message),
            SdsError::DeltaUnsupported => Self::unimplemented(message),
        }
    }
}
