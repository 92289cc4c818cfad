//! In-memory fakes of the agent's seams, for tests and benchmarks of the
//! socket servers: a [`FakeSource`] whose credentials the test sets, and
//! [`FixedCallers`], which maps uids to identities.
//!
//! Not used by the daemon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use futures::future::BoxFuture;
use sigil_identity::{BundleSet, SpiffeId};
use tokio::sync::watch;

use crate::peer::{AttestError, CallerIdentities, PeerInfo};
use crate::source::{CredentialSource, JwtSvid, SourceError, SvidState};

/// A [`CredentialSource`] whose state the test drives.
#[derive(Debug)]
pub struct FakeSource {
    svids: Mutex<HashMap<SpiffeId, watch::Sender<SvidState>>>,
    bundles: watch::Sender<Arc<BundleSet>>,
    jwt: Mutex<HashMap<SpiffeId, Result<String, SourceError>>>,
}

impl Default for FakeSource {
    fn default() -> Self {
        Self {
            svids: Mutex::default(),
            bundles: watch::Sender::new(Arc::new(BundleSet::new())),
            jwt: Mutex::default(),
        }
    }
}

impl FakeSource {
    /// An empty source: every identity is `Pending`, no bundles.
    pub fn new() -> Self {
        Self::default()
    }

    fn sender(&self, id: &SpiffeId) -> watch::Sender<SvidState> {
        self.svids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.clone())
            .or_insert_with(|| watch::Sender::new(SvidState::Pending))
            .clone()
    }

    /// Sets `id`'s state; watchers are notified.
    pub fn set_svid(&self, id: &SpiffeId, state: SvidState) {
        self.sender(id).send_replace(state);
    }

    /// Sets the bundles; watchers are notified.
    pub fn set_bundles(&self, bundles: BundleSet) {
        self.bundles.send_replace(Arc::new(bundles));
    }

    /// What [`CredentialSource::jwt_svid`] answers for `id`: the token (its
    /// `exp` is reported as `expires_at`, one hour from now) or an error.
    pub fn set_jwt(&self, id: &SpiffeId, answer: Result<String, SourceError>) {
        self.jwt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), answer);
    }

    /// How many receivers watch `id` now.
    pub fn watchers(&self, id: &SpiffeId) -> usize {
        self.sender(id).receiver_count()
    }
}

impl CredentialSource for FakeSource {
    fn watch_x509(&self, id: &SpiffeId) -> watch::Receiver<SvidState> {
        self.sender(id).subscribe()
    }

    fn watch_bundles(&self) -> watch::Receiver<Arc<BundleSet>> {
        self.bundles.subscribe()
    }

    fn jwt_svid(
        &self,
        id: &SpiffeId,
        audiences: &[String],
    ) -> BoxFuture<'static, Result<JwtSvid, SourceError>> {
        let answer = self
            .jwt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .unwrap_or_else(|| Err(SourceError::Unavailable("no JWT-SVID configured".into())));
        let id = id.clone();
        let mut audiences = audiences.to_vec();
        audiences.sort();
        audiences.dedup();
        Box::pin(async move {
            let token = answer?;
            let expires_at = SystemTime::now() + std::time::Duration::from_secs(3600);
            Ok(JwtSvid::new(id, audiences, expires_at, token))
        })
    }
}

/// A [`CallerIdentities`] keyed by uid; a uid with no entry gets no
/// identity, a uid in `failing` fails attestation.
#[derive(Debug, Default, Clone)]
pub struct FixedCallers {
    /// Identities per uid.
    pub by_uid: HashMap<u32, Vec<SpiffeId>>,
    /// Uids whose attestation fails.
    pub failing: Vec<u32>,
    /// Bump it (`send_modify`) to tell open streams that the answers
    /// changed ([`CallerIdentities::changed`]).
    pub entries_changed: Arc<watch::Sender<u64>>,
}

impl CallerIdentities for FixedCallers {
    fn identities(&self, peer: PeerInfo) -> BoxFuture<'static, Result<Vec<SpiffeId>, AttestError>> {
        let answer = if self.failing.contains(&peer.uid) {
            Err(AttestError::Failed(format!(
                "uid {} fails attestation",
                peer.uid
            )))
        } else {
            Ok(self.by_uid.get(&peer.uid).cloned().unwrap_or_default())
        };
        Box::pin(async move { answer })
    }

    fn changed(&self) -> BoxFuture<'static, ()> {
        let mut changes = self.entries_changed.subscribe();
        Box::pin(async move {
            if changes.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
        })
    }
}
