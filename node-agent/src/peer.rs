//! Who is calling on a unix socket, and which identities that caller may
//! have: the seam between the socket servers and workload attestation.
//!
//! The socket listener reads the peer's credentials (SO_PEERCRED) when it
//! accepts a connection and puts a [`PeerInfo`] into every request's
//! extensions; a server asks its [`CallerIdentities`] which SPIFFE IDs that
//! caller is entitled to.

use futures::future::BoxFuture;
use sigil_identity::SpiffeId;

/// The kernel's view of the process at the other end of a unix socket,
/// read once when the connection was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's pid (absent on kernels that do not report it).
    pub pid: Option<i32>,
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// The start time of `pid` when the connection was accepted (field 22
    /// of `/proc/<pid>/stat`, clock ticks after boot). Attestation refuses
    /// a caller whose pid now belongs to a process that started at another
    /// time: the connection outlived its creator and the pid was reused.
    /// `None` when unknown (then a /proc-based attestation refuses).
    pub start_time: Option<u64>,
}

/// Why a caller could not be attested.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The caller's process could not be examined, or changed while it was
    /// examined (a recycled pid). Clients see `Unavailable`.
    #[error("workload attestation failed: {0}")]
    Failed(String),
}

/// Maps a caller to the identities it may hold.
pub trait CallerIdentities: Send + Sync + 'static {
    /// The SPIFFE IDs `peer` is entitled to, in a stable order (the first
    /// is the default: SDS `default`, and the Workload API's first SVID).
    /// Empty when no registration entry matches; the servers then answer
    /// `PermissionDenied("no identity issued")`.
    fn identities(&self, peer: PeerInfo) -> BoxFuture<'static, Result<Vec<SpiffeId>, AttestError>>;

    /// Resolves when the answers of [`identities`](Self::identities) may
    /// have changed since this call (registration entries reloaded). A
    /// stream takes it when it opens and ends when it resolves, so its
    /// caller reconnects and is attested against the new entries: a
    /// removed entry stops being served. The default never resolves.
    fn changed(&self) -> BoxFuture<'static, ()> {
        Box::pin(futures::future::pending())
    }
}
