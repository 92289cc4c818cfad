//! [`CallerView`]: one caller's credentials as SDS serves them, read from
//! the [`CredentialSource`](crate::source::CredentialSource)'s watch
//! channels.

use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use sigil_identity::{BundleSet, SpiffeId};
use tokio::sync::watch;

use super::config::RootCaScope;
use super::resource::{self, DefaultKey};
use crate::source::{IssuedSvid, SvidState};

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
}

/// Both channels' values at one moment.
pub(super) struct Snapshot {
    /// The SVID's state.
    pub(super) svid: SvidState,
    /// The bundles.
    pub(super) bundles: Arc<BundleSet>,
}

impl CallerView {
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
    pub(super) fn root_pem(&self, snapshot: &Snapshot) -> Option<String> {
        let fallback = match &snapshot.svid {
            SvidState::Ready(issued) => Some(&*issued.bundle),
            SvidState::Pending | SvidState::Unavailable(_) => None,
        };
        resource::root_pem(
            self.id.trust_domain(),
            &snapshot.bundles,
            fallback,
            self.scope,
        )
    }
}

/// The resources of one response and the content keys they carry.
#[derive(Default)]
pub(super) struct Batch {
    /// Packed secrets.
    pub(super) resources: Vec<Any>,
    /// The `default` content included, if any.
    pub(super) default: Option<DefaultKey>,
    /// The `ROOTCA` PEM included, if any.
    pub(super) root: Option<String>,
}

impl Batch {
    pub(super) fn push_default(&mut self, issued: &IssuedSvid) {
        self.resources.push(resource::tls_certificate(&issued.svid));
        self.default = Some(DefaultKey::of(issued));
    }

    pub(super) fn push_root(&mut self, pem: String) {
        self.resources.push(resource::validation_context(&pem));
        self.root = Some(pem);
    }
}
