//! The Workload API's update streams: compute the message from watched
//! state, send it when it differs from the last one sent, wait for a change.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt as _};
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value};
use sigil_identity::{BundleSet, JwtAuthority, SpiffeId, TrustDomain};
use sigil_proto::spiffe::workload::{
    JwtBundlesResponse, X509BundlesResponse, X509svid, X509svidResponse,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::metrics::StreamGuard;
use crate::source::{CredentialSource, SvidState};

/// A server stream of Workload API updates.
pub type UpdateStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// Watched state that renders to one message kind.
pub(super) trait Watched: Send + 'static {
    type Message: Send + 'static;
    /// What tells two messages apart. A stream keeps the last key, never
    /// the last message: an X.509-SVID message holds private keys, which
    /// must not stay in memory for the life of the stream.
    type Key: PartialEq + Send + 'static;

    /// The message for the current state with its key (marking it seen),
    /// or `None` while there is nothing to send yet.
    fn current(&mut self) -> Option<(Self::Key, Self::Message)>;

    /// Resolves on the next change; `false` when a watched value's sender
    /// is gone (the source dropped it).
    fn changed(&mut self) -> BoxFuture<'_, bool>;
}

struct StreamState<W: Watched> {
    watched: W,
    last: Option<W::Key>,
    shutdown: CancellationToken,
    /// Resolves when the registration entries changed: the stream ends
    /// (UNAVAILABLE) and the client reconnects to be attested again.
    reattest: BoxFuture<'static, ()>,
    _guard: StreamGuard,
}

pub(super) fn updates<W: Watched>(
    watched: W,
    shutdown: CancellationToken,
    reattest: BoxFuture<'static, ()>,
    guard: StreamGuard,
) -> UpdateStream<W::Message> {
    let state = Some(StreamState {
        watched,
        last: None,
        shutdown,
        reattest,
        _guard: guard,
    });
    futures::stream::unfold(state, |state| async move {
        let mut state = state?;
        loop {
            if let Some((key, message)) = state.watched.current()
                && state.last.as_ref() != Some(&key)
            {
                state.last = Some(key);
                return Some((Ok(message), Some(state)));
            }
            tokio::select! {
                () = state.shutdown.cancelled() => return None,
                () = &mut state.reattest => {
                    let status = Status::unavailable(
                        "registration entries changed: reconnect to be attested again",
                    );
                    return Some((Err(status), None));
                }
                alive = state.watched.changed() => {
                    if !alive {
                        let status = Status::unavailable("the credential source stopped serving this identity");
                        return Some((Err(status), None));
                    }
                }
            }
        }
    })
    .boxed()
}

fn concat_der(certs: &[CertificateDer<'static>]) -> Vec<u8> {
    certs
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

// === impl X509Svids ===

/// The caller's X.509-SVIDs and the bundles.
pub(super) struct X509Svids {
    svids: Vec<watch::Receiver<SvidState>>,
    bundles: watch::Receiver<Arc<BundleSet>>,
    /// Whether a message was rendered yet.
    started: bool,
}

impl X509Svids {
    pub(super) fn new(source: &dyn CredentialSource, ids: &[SpiffeId]) -> Self {
        Self {
            svids: ids.iter().map(|id| source.watch_x509(id)).collect(),
            bundles: source.watch_bundles(),
            started: false,
        }
    }
}

/// An X.509-SVID message's key: each SVID's ID and version (a new version
/// on every rotation or bundle change), and the federated bundles.
type X509SvidsKey = (Vec<(String, u64)>, HashMap<String, Vec<u8>>);

impl Watched for X509Svids {
    type Message = X509svidResponse;
    type Key = X509SvidsKey;

    fn current(&mut self) -> Option<(X509SvidsKey, X509svidResponse)> {
        let bundles = Arc::clone(&self.bundles.borrow_and_update());
        let mut own: BTreeSet<TrustDomain> = BTreeSet::new();
        let mut svids = Vec::with_capacity(self.svids.len());
        let mut versions = Vec::with_capacity(self.svids.len());
        let mut pending = false;
        for rx in &mut self.svids {
            // Pending and Unavailable identities are left out: never an
            // expired certificate, never an empty one.
            match &*rx.borrow_and_update() {
                SvidState::Ready(issued) => {
                    let id = issued.svid.spiffe_id();
                    own.insert(id.trust_domain().clone());
                    versions.push((id.to_string(), issued.version));
                    svids.push(X509svid {
                        spiffe_id: id.to_string(),
                        x509_svid: concat_der(issued.svid.chain()),
                        x509_svid_key: issued.svid.private_key().secret_der().to_vec(),
                        bundle: concat_der(issued.bundle.x509_authorities()),
                        hint: String::new(),
                    });
                }
                SvidState::Pending => pending = true,
                SvidState::Unavailable(_) => {}
            }
        }
        // The first message waits until every identity has had its first
        // answer (issued or failed; the CA request timeout bounds it):
        // one-shot clients (py-spiffe's `fetch_x509_svids`, the crate's
        // `fetch_x509_svid`) read only that message, and their default SVID
        // is its first one, which must be the first identity in
        // registration order, not whichever was issued first.
        if svids.is_empty() || (pending && !self.started) {
            return None;
        }
        self.started = true;
        let federated_bundles: HashMap<String, Vec<u8>> = bundles
            .iter()
            .filter(|b| !own.contains(b.trust_domain()) && !b.x509_authorities().is_empty())
            .map(|b| {
                (
                    b.trust_domain().id_string(),
                    concat_der(b.x509_authorities()),
                )
            })
            .collect();
        Some((
            (versions, federated_bundles.clone()),
            X509svidResponse {
                svids,
                crl: Vec::new(),
                federated_bundles,
            },
        ))
    }

    fn changed(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let mut changes: Vec<BoxFuture<'_, bool>> = self
                .svids
                .iter_mut()
                .map(|rx| {
                    Box::pin(async move { rx.changed().await.is_ok() }) as BoxFuture<'_, bool>
                })
                .collect();
            let bundles = &mut self.bundles;
            changes.push(Box::pin(async move { bundles.changed().await.is_ok() }));
            futures::future::select_all(changes).await.0
        })
    }
}

// === impl X509Bundles ===

/// The X.509 authorities of every trust domain.
pub(super) struct X509Bundles(pub(super) watch::Receiver<Arc<BundleSet>>);

impl Watched for X509Bundles {
    type Message = X509BundlesResponse;
    type Key = X509BundlesResponse;

    fn current(&mut self) -> Option<(X509BundlesResponse, X509BundlesResponse)> {
        let set = Arc::clone(&self.0.borrow_and_update());
        let bundles: HashMap<String, Vec<u8>> = set
            .iter()
            .filter(|b| !b.x509_authorities().is_empty())
            .map(|b| {
                (
                    b.trust_domain().id_string(),
                    concat_der(b.x509_authorities()),
                )
            })
            .collect();
        (!bundles.is_empty()).then(|| {
            let message = X509BundlesResponse {
                crl: Vec::new(),
                bundles,
            };
            (message.clone(), message)
        })
    }

    fn changed(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.0.changed().await.is_ok() })
    }
}

/// A JWT authority as the Workload API hands it out: its JWK with `kid`
/// and without `use`. The SPIFFE bundle marks JWT keys `use: jwt-svid`;
/// the `spiffe` crate refuses a key whose `use` it does not expect, and a
/// JWKS loader following RFC 7517 skips keys whose `use` is not `sig`.
/// The JWKS holds JWT keys only, so `use` says nothing there.
pub(super) fn public_jwk(authority: &JwtAuthority) -> Map<String, Value> {
    let mut jwk = authority.jwk().clone();
    jwk.remove("use");
    jwk.insert("kid".into(), Value::String(authority.key_id().to_owned()));
    jwk
}

// === impl JwtBundles ===

/// The JWT authorities of every trust domain, as JWKS.
pub(super) struct JwtBundles(pub(super) watch::Receiver<Arc<BundleSet>>);

impl Watched for JwtBundles {
    type Message = JwtBundlesResponse;
    type Key = JwtBundlesResponse;

    fn current(&mut self) -> Option<(JwtBundlesResponse, JwtBundlesResponse)> {
        let set = Arc::clone(&self.0.borrow_and_update());
        let bundles: HashMap<String, Vec<u8>> = set
            .iter()
            .map(|b| {
                let keys: Vec<Value> = b
                    .jwt_authorities()
                    .iter()
                    .map(|authority| Value::Object(public_jwk(authority)))
                    .collect();
                let mut doc = Map::new();
                doc.insert("keys".into(), Value::Array(keys));
                let json = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
                (b.trust_domain().id_string(), json)
            })
            .collect();
        (!bundles.is_empty()).then(|| {
            let message = JwtBundlesResponse { bundles };
            (message.clone(), message)
        })
    }

    fn changed(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.0.changed().await.is_ok() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeSource;

    #[test]
    fn the_first_x509_message_waits_for_every_identity_then_keeps_registration_order() {
        let ca = sigil_test_util::TestCa::root("example.org");
        let td = TrustDomain::new("example.org").unwrap();
        let ids: Vec<SpiffeId> = ["spiffe://example.org/first", "spiffe://example.org/second"]
            .iter()
            .map(|s| SpiffeId::parse(s).unwrap())
            .collect();
        let ready = |id: &SpiffeId| {
            let leaf = ca.leaf(&id.to_string());
            let key = sigil_identity::PrivateKey::from_pkcs8_der(leaf.key.serialize_der()).unwrap();
            SvidState::Ready(crate::source::IssuedSvid {
                svid: Arc::new(sigil_identity::X509Svid::new(vec![leaf.der.clone()], key).unwrap()),
                bundle: Arc::new(sigil_identity::TrustBundle::with_x509_authorities(
                    td.clone(),
                    [ca.cert.der.clone()],
                )),
                version: 1,
            })
        };
        let source = FakeSource::new();
        let mut watched = X509Svids::new(&source, &ids);
        let names = |(_, m): (X509SvidsKey, X509svidResponse)| -> Vec<String> {
            m.svids.into_iter().map(|s| s.spiffe_id).collect()
        };

        // The second is issued first: nothing yet, the first is pending.
        source.set_svid(&ids[1], ready(&ids[1]));
        assert!(watched.current().is_none());
        // Both issued: one message, in registration order.
        source.set_svid(&ids[0], ready(&ids[0]));
        assert_eq!(
            names(watched.current().unwrap()),
            ["spiffe://example.org/first", "spiffe://example.org/second"]
        );

        // A failed identity does not hold the others back.
        let other = FakeSource::new();
        let mut partial = X509Svids::new(&other, &ids);
        other.set_svid(&ids[0], SvidState::Unavailable("refused".into()));
        assert!(partial.current().is_none(), "the second is still pending");
        other.set_svid(&ids[1], ready(&ids[1]));
        assert_eq!(
            names(partial.current().unwrap()),
            ["spiffe://example.org/second"]
        );
    }
}
