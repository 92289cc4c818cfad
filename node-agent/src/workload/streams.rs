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
    type Message: PartialEq + Clone + Send + 'static;

    /// The message for the current state (marking it seen), or `None`
    /// while there is nothing to send yet.
    fn current(&mut self) -> Option<Self::Message>;

    /// Resolves on the next change; `false` when a watched value's sender
    /// is gone (the source dropped it).
    fn changed(&mut self) -> BoxFuture<'_, bool>;
}

struct StreamState<W: Watched> {
    watched: W,
    last: Option<W::Message>,
    shutdown: CancellationToken,
    _guard: StreamGuard,
}

pub(super) fn updates<W: Watched>(
    watched: W,
    shutdown: CancellationToken,
    guard: StreamGuard,
) -> UpdateStream<W::Message> {
    let state = Some(StreamState {
        watched,
        last: None,
        shutdown,
        _guard: guard,
    });
    futures::stream::unfold(state, |state| async move {
        let mut state = state?;
        loop {
            if let Some(message) = state.watched.current()
                && state.last.as_ref() != Some(&message)
            {
                state.last = Some(message.clone());
                return Some((Ok(message), Some(state)));
            }
            tokio::select! {
                () = state.shutdown.cancelled() => return None,
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
}

impl X509Svids {
    pub(super) fn new(source: &dyn CredentialSource, ids: &[SpiffeId]) -> Self {
        Self {
            svids: ids.iter().map(|id| source.watch_x509(id)).collect(),
            bundles: source.watch_bundles(),
        }
    }
}

impl Watched for X509Svids {
    type Message = X509svidResponse;

    fn current(&mut self) -> Option<X509svidResponse> {
        let bundles = Arc::clone(&self.bundles.borrow_and_update());
        let mut own: BTreeSet<TrustDomain> = BTreeSet::new();
        let mut svids = Vec::with_capacity(self.svids.len());
        for rx in &mut self.svids {
            // Pending and Unavailable identities are left out: never an
            // expired certificate, never an empty one.
            if let SvidState::Ready(issued) = &*rx.borrow_and_update() {
                let id = issued.svid.spiffe_id();
                own.insert(id.trust_domain().clone());
                svids.push(X509svid {
                    spiffe_id: id.to_string(),
                    x509_svid: concat_der(issued.svid.chain()),
                    x509_svid_key: issued.svid.private_key().secret_der().to_vec(),
                    bundle: concat_der(issued.bundle.x509_authorities()),
                    hint: String::new(),
                });
            }
        }
        if svids.is_empty() {
            return None;
        }
        let federated_bundles = bundles
            .iter()
            .filter(|b| !own.contains(b.trust_domain()) && !b.x509_authorities().is_empty())
            .map(|b| {
                (
                    b.trust_domain().id_string(),
                    concat_der(b.x509_authorities()),
                )
            })
            .collect();
        Some(X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles,
        })
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

    fn current(&mut self) -> Option<X509BundlesResponse> {
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
        (!bundles.is_empty()).then(|| X509BundlesResponse {
            crl: Vec::new(),
            bundles,
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

    fn current(&mut self) -> Option<JwtBundlesResponse> {
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
        (!bundles.is_empty()).then_some(JwtBundlesResponse { bundles })
    }

    fn changed(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.0.changed().await.is_ok() })
    }
}
