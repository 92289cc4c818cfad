//! State shared by the gRPC service, the admin server and the background
//! tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use sigil_identity::verify::BundleHandle;
use sigil_identity::{BundleSet, TrustBundle};
use tokio::sync::{Semaphore, watch};

use super::metrics::Metrics;
use crate::authn::AuthnChain;
use crate::authz::Authorizer;
use crate::issue::CertIssuer;
use crate::jwtsvid::KeyRing;

/// Everything the request path reads.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The issuer in force; swapped atomically on reload. Requests in
    /// flight keep the `Arc` they loaded.
    pub(crate) issuer: ArcSwap<CertIssuer>,
    /// Caller authentication.
    pub(crate) authn: AuthnChain,
    /// Caller authorization.
    pub(crate) authz: Authorizer,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// Requests processed at once.
    pub(crate) limit: Semaphore,
    /// Ready once the authority is loaded and the listeners run.
    pub(crate) ready: AtomicBool,
    /// The trust bundle's sequence number (`spiffe_sequence`), bumped when
    /// the roots change.
    pub(crate) bundle_sequence: AtomicU64,
    /// Roots for verifying client SVIDs; follows the authority.
    pub(crate) client_bundles: BundleHandle,
    /// Notifies background tasks that the authority changed.
    pub(crate) authority_changed: watch::Sender<u64>,
    /// The JWT-SVID signing keys.
    pub(crate) jwt: Arc<KeyRing>,
}

impl Shared {
    /// Installs a new issuer: swaps it in, updates the client-SVID roots,
    /// bumps the bundle sequence if the roots changed, and wakes watchers.
    pub(crate) fn install(&self, issuer: CertIssuer) {
        let roots_changed = self.issuer.load().authority().roots() != issuer.authority().roots();
        let bundle = TrustBundle::with_x509_authorities(
            issuer.authority().trust_domain().clone(),
            issuer.authority().roots().iter().cloned(),
        );
        self.client_bundles.store(BundleSet::from(bundle));
        self.issuer.store(Arc::new(issuer));
        if roots_changed {
            self.bundle_sequence.fetch_add(1, Ordering::SeqCst);
        }
        self.authority_changed.send_modify(|n| *n += 1);
    }

    /// The current trust bundle: the X.509 roots and every published JWT
    /// signing key, with a sequence number that grows when either changes.
    pub(crate) fn bundle(&self) -> TrustBundle {
        let issuer = self.issuer.load();
        let mut bundle = TrustBundle::with_x509_authorities(
            issuer.authority().trust_domain().clone(),
            issuer.authority().roots().iter().cloned(),
        );
        for authority in self.jwt.authorities() {
            bundle.upsert_jwt_authority(authority);
        }
        let sequence = self
            .bundle_sequence
            .load(Ordering::SeqCst)
            .saturating_add(self.jwt.generation());
        bundle.set_sequence(Some(sequence));
        bundle
    }
}
