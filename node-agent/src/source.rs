//! What the socket servers (SDS, Workload API, file output) see of the
//! agent's credentials: a [`CredentialSource`].
//!
//! The certificate manager implements it; the servers depend only on this
//! trait, so each is tested against a fake source. Interest is expressed by
//! holding a [`watch::Receiver`]: an identity somebody watches is kept and
//! rotated; one nobody has watched for the configured idle time is dropped
//! and its key zeroized. A one-shot fetch takes a receiver, reads it and
//! drops it, which counts as "asked for now".
//!
//! Invariant every implementation keeps: a [`SvidState::Ready`] value never
//! holds an expired certificate. When a certificate expires without a
//! successor the state becomes [`SvidState::Unavailable`].

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use sigil_identity::{BundleSet, SpiffeId, TrustBundle, X509Svid};
use tokio::sync::watch;
use zeroize::Zeroizing;

/// One identity's current X.509-SVID and the trust bundle that came with
/// it (the last element of the CA's response).
#[derive(Clone)]
pub struct IssuedSvid {
    /// Chain (leaf first) and private key.
    pub svid: Arc<X509Svid>,
    /// The trust bundle of the SVID's trust domain.
    pub bundle: Arc<TrustBundle>,
    /// Increases on every change of this identity (rotation or bundle
    /// change); usable as xDS `version_info`.
    pub version: u64,
}

impl fmt::Debug for IssuedSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSvid")
            .field("spiffe_id", &self.svid.spiffe_id().to_string())
            .field("not_after", &self.svid.not_after().as_secs())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One identity as a watcher sees it.
#[derive(Clone, Debug)]
pub enum SvidState {
    /// Nothing issued yet: the first request is in flight or being retried.
    Pending,
    /// A certificate that is valid now.
    Ready(IssuedSvid),
    /// No valid certificate: none could be obtained, or the last one
    /// expired before a successor arrived. The reason is for operators and
    /// logs (never secret material).
    Unavailable(Arc<str>),
}

/// A JWT-SVID: a bearer credential, zeroized on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct JwtSvid {
    /// The SPIFFE ID in `sub`.
    pub spiffe_id: SpiffeId,
    /// The audiences it was minted for (`aud`), sorted and deduplicated.
    pub audiences: Vec<String>,
    /// `exp`.
    pub expires_at: SystemTime,
    token: Zeroizing<String>,
}

impl JwtSvid {
    /// A JWT-SVID from its parts.
    pub fn new(
        spiffe_id: SpiffeId,
        audiences: Vec<String>,
        expires_at: SystemTime,
        token: String,
    ) -> Self {
        Self {
            spiffe_id,
            audiences,
            expires_at,
            token: Zeroizing::new(token),
        }
    }

    /// The compact JWS.
    pub fn expose_secret(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("audiences", &self.audiences)
            .field("expires_at", &self.expires_at)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a credential could not be produced.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The request itself is wrong (e.g. no audience).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The CA refused (the caller may not hold the identity).
    #[error("refused by the CA: {0}")]
    PermissionDenied(String),
    /// The CA is unreachable or the feature is not available from it.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The agent's credentials, as servers consume them.
pub trait CredentialSource: Send + Sync + 'static {
    /// Watches `id`'s X.509-SVID, registering interest (the first call
    /// for an identity starts issuance). The receiver's current value is
    /// the state now; it changes on every rotation.
    fn watch_x509(&self, id: &SpiffeId) -> watch::Receiver<SvidState>;

    /// Watches the trust bundles the agent knows (its own trust domain and
    /// federated ones), each with its X.509 and JWT authorities.
    fn watch_bundles(&self) -> watch::Receiver<Arc<BundleSet>>;

    /// A JWT-SVID for `id` and `audiences` (non-empty), from the cache when
    /// it has more than half its lifetime left.
    fn jwt_svid(
        &self,
        id: &SpiffeId,
        audiences: &[String],
    ) -> BoxFuture<'static, Result<JwtSvid, SourceError>>;
}
