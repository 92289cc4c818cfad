//! Why attestation failed, with a low-cardinality reason for metrics.

use crate::peer::AttestError;

/// The class of an attestation failure (the `reason` label of
/// `attestation_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FailureReason {
    /// The process changed while it was examined: another start time, uid
    /// or gid (a recycled pid, or a process that changed credentials).
    Changed,
    /// `/proc` disagrees with the kernel's SO_PEERCRED answer.
    CredentialsMismatch,
    /// The Kubernetes API could not be asked, or does not know the pod.
    Kubernetes,
    /// The kernel reported no pid for the peer.
    NoPid,
    /// The process is gone.
    ProcessGone,
    /// Its `/proc` entry could not be read or parsed.
    ProcUnreadable,
}

impl FailureReason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::CredentialsMismatch => "credentials_mismatch",
            Self::Kubernetes => "kubernetes",
            Self::NoPid => "no_pid",
            Self::ProcessGone => "process_gone",
            Self::ProcUnreadable => "proc_unreadable",
        }
    }
}

/// An attestation failure: its class and a message for logs (pids, paths,
/// the differing values; never secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AttestFailure {
    /// The class, for metrics.
    pub reason: FailureReason,
    /// What happened.
    pub message: String,
}

impl AttestFailure {
    /// A failure of class `reason`.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl From<AttestFailure> for AttestError {
    fn from(failure: AttestFailure) -> Self {
        Self::Failed(failure.message)
    }
}
