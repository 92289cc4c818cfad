//! [`CallerView`]: one caller's credentials as SDS serves them, read from
//! the [`CredentialSource`](crate::source::CredentialSource)'s watch
//! channels.

use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use futures::future::BoxFuture;
use sigil_identity::{BundleSet, SpiffeId, TrustBundle, X509Svid};
use tokio::sync::watch;

use super::cache::EncodedDefaults;
use super::config::RootCaScope;
use super::resource::{self, DefaultKey};
use crate::source::SvidState;

/// The caller's identity and the channels its resources come from.
pub(super) struct CallerView {
    /// The identity served as `default` (the caller's first).
    pub(super) id: SpiffeId,
    /// Its X.509-SVID.
    pub(super) svid: watch::Receiver<SvidState>,
    /// Every trust bundle the agent knows.
    pub(super) bundles: watch::Receiver<Arc<BundleSet>>,
    /// What `ROOTCA` carries.
    pub(super) scope: RootCaScope,
    /// Resolves when the caller's registration entries may have changed
    /// ([`CallerIdentities::changed`](crate::peer::CallerIdentities::changed)):
    /// the stream ends and the client reconnects to be attested again.
    pub(super) reattest: BoxFuture<'static, ()>,
    /// The last `ROOTCA` PEM and the inputs it was built from (the bundle
    /// set and the SVID's bundle), so a rotation that changes neither
    /// costs no re-encoding.
    root_memo: Option<RootMemo>,
}

struct RootMemo {
    bundles: Arc<BundleSet>,
    fallback: Option<Arc<TrustBundle>>,
    pem: Option<String>,
}

/// Both channels' values at one moment.
pub(super) struct Snapshot {
    /// The SVID's state.
    pub(super) svid: SvidState,
    /// The bundles.
    pub(super) bundles: Arc<BundleSet>,
}

impl CallerView {
    pub(super) fn new(
        id: SpiffeId,
        svid: watch::Receiver<SvidState>,
        bundles: watch::Receiver<Arc<BundleSet>>,
        scope: RootCaScope,
        reattest: BoxFuture<'static, ()>,
    ) -> Self {
        Self {
            id,
            svid,
            bundles,
            scope,
            reattest,
            root_memo: None,
        }
    }

    /// The current values, marking both channels seen (so `changed()`
    /// waits for the next change).
    pub(super) fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            svid: self.svid.borrow_and_update().clone(),
            bundles: self.bundles.borrow_and_update().clone(),
        }
    }

    /// The `ROOTCA` PEM in `snapshot`, if there is one. The bundle that
    /// came with the SVID stands in while the bundle set has none for the
    /// caller's trust domain.
    pub(super) fn root_pem(&mut self, snapshot: &Snapshot) -> Option<String> {
        let fallback = match &snapshot.svid {
            SvidState::Ready(issued) => Some(issued.bundle.clone()),
            SvidState::Pending | SvidState::Unavailable(_) => None,
        };
        if let Some(memo) = &self.root_memo
            && Arc::ptr_eq(&memo.bundles, &snapshot.bundles)
            && match (&memo.fallback, &fallback) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        {
            return memo.pem.clone();
        }
        let pem = resource::root_pem(
            self.id.trust_domain(),
            &snapshot.bundles,
            fallback.as_deref(),
            self.scope,
        );
        self.root_memo = Some(RootMemo {
            bundles: snapshot.bundles.clone(),
            fallback,
            pem: pem.clone(),
        });
        pem
    }
}

/// The resources of one response and the content they carry.
#[derive(Default)]
pub(super) struct Batch {
    /// Packed secrets.
    pub(super) resources: Vec<Any>,
    /// The `default` certificate included, if any.
    pub(super) default: Option<DefaultKey>,
    /// The `ROOTCA` PEM included, if any.
    pub(super) root: Option<String>,
}

impl Batch {
    pub(super) fn push_default(&mut self, encoded: &EncodedDefaults, svid: &Arc<X509Svid>) {
        self.resources.push(encoded.get(svid));
        self.default = Some(DefaultKey::of(svid));
    }

    pub(super) fn push_root(&mut self, pem: String) {
        self.resources.push(resource::validation_context(&pem));
        self.root = Some(pem);
    }
}
