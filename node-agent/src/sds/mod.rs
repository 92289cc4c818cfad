//! The Envoy SDS v3 server (`envoy.service.secret.v3.SecretDiscoveryService`):
//! gives each caller on the SDS socket its own certificate and key and its
//! trust bundle, and pushes every rotation to every open stream.
//!
//! ```text
//!   Envoy ──StreamSecrets──▶ [uds listener: PeerInfo] ──▶ Sds ──▶ CallerIdentities (who is it?)
//!                                                          │
//!                                                          └──▶ CredentialSource (watch_x509, watch_bundles)
//! ```
//!
//! [`Sds`] is a plain tonic service: the unix-socket listener puts a
//! [`PeerInfo`] into every request's extensions; a request without one is
//! refused (`Unavailable`, fail closed). It spawns no task: each stream is
//! a state machine tonic polls, dropped (with its watch receivers and its
//! stream slot) when the client goes away.
//!
//! # Resources
//!
//! Type `type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret`
//! ([`SECRET_TYPE_URL`]), two names, exactly as istio-agent serves them:
//!
//! - `default` ([`DEFAULT_RESOURCE`]): the chain (leaf first) and PKCS#8 key
//!   of the caller's *first* identity, as `tls_certificate` with
//!   `certificate_chain` and `private_key` inline PEM;
//! - `ROOTCA` ([`ROOTCA_RESOURCE`]): `validation_context.trusted_ca`,
//!   inline PEM of the X.509 authorities of the caller's trust domain (that
//!   of its first identity). Federated trust domains are left out by
//!   default, unlike Istio, which merges extra trust anchors into
//!   `ROOTCA`: a flat `trusted_ca` pool cannot bind a root to its trust
//!   domain, so a federated root could vouch for local IDs. Meshes that
//!   want Istio's behaviour set [`RootCaScope::AllTrustDomains`].
//!
//! Any other name (`file-cert:/etc/passwd~/etc/passwd`, `file-root:…`,
//! `Default`, …), even next to valid ones, refuses the whole request and
//! closes the stream with `InvalidArgument` naming it, as
//! istio-agent closes a stream whose secret it cannot generate. Names map
//! to a closed enum before anything is looked up, and this module does no
//! file access at all: nothing can be read from disk on a client's behalf.
//!
//! # Protocol (state of the world, non-wildcard type)
//!
//! - The caller is attested once when the stream opens: no identity ->
//!   `PermissionDenied("no identity issued")`; attestation failure ->
//!   `Unavailable`. A stream is re-attested only by reconnecting; when the
//!   registration entries are reloaded
//!   ([`CallerIdentities::changed`])
//!   every open stream ends with `Unavailable` so that its client does.
//! - Each response carries the subscribed resources whose content changed
//!   since the client was last sent them, with a fresh `version_info`
//!   (a process-wide counter) and a fresh `nonce`. Resources left out are
//!   kept by the client (SDS is not a wildcard type).
//! - A request whose `response_nonce` is the last sent (or empty: a new or
//!   restarting subscription, which is sent everything) is current; other
//!   nonces are stale and ignored. A current request with `error_detail`
//!   is a NACK: logged, counted, the stream stays open and the rejected
//!   version is not resent; the next rotation is pushed as usual. Without
//!   it, an ACK.
//! - `resource_names` is the subscription: added names are sent, removed
//!   ones dropped. An empty list unsubscribes from everything and gets no
//!   response (Envoy sends it when it drops its last secret on the stream;
//!   Istio's xDS server treats it so for every non-wildcard type).
//! - `default` is sent only while the source has a valid certificate
//!   (`SvidState::Ready`, never expired by the source's invariant). While
//!   it is pending or unavailable nothing is sent for it and the stream
//!   stays open; Envoy keeps what it has (or keeps warming) and gets the
//!   next certificate the moment it exists.
//! - `DeltaSecrets` is `Unimplemented` (as in istio-agent).
//! - `FetchSecrets` (istio-agent answers `Unimplemented`) answers the named resources at once, waiting at most
//!   [`SdsSettings::fetch_timeout`] for ones not there yet, then
//!   `Unavailable`; empty `resource_names` is `InvalidArgument`.
//!
//! Bounds: [`SdsSettings::max_streams`] open streams, of which at most
//! [`SdsSettings::max_streams_per_identity`] for one identity (then
//! `ResourceExhausted`), [`SdsSettings::max_resource_names`] names per
//! request, [`SdsSettings::max_request_bytes`] per request message.
//!
//! Cost of a rotation: each certificate's `default` is encoded once and
//! shared by every stream that serves it (a cache keyed by weak
//! references, see `cache.rs`), so a push costs a stream one copy; an ACK
//! costs no encoding at all.
//!
//! Key material: the key's PEM is built in zeroized buffers, but its bytes
//! pass through prost and tonic's encoder, which does not zeroize.
//!
//! [`load`] drives many streams against a server and measures the time from
//! a rotation to its push arriving (for the benchmark).

mod cache;
mod config;
mod error;
mod fetch;
mod limits;
pub mod load;
mod metrics;
mod resource;
mod stream;
mod view;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use futures::stream::BoxStream;
use sigil_identity::SpiffeId;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument as _, debug, info_span, warn};

pub use self::config::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESOURCE_NAMES,
    DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_IDENTITY, RootCaScope, SdsSettings,
};
pub use self::error::SdsError;
pub use self::metrics::{ReasonLabel, SdsMetrics};
pub use self::resource::{DEFAULT_RESOURCE, ROOTCA_RESOURCE, SECRET_TYPE_URL};
pub use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;

use self::cache::EncodedDefaults;
use self::limits::StreamSlot;
use self::stream::SecretStream;
use self::view::CallerView;
use crate::peer::{CallerIdentities, PeerInfo};
use crate::source::CredentialSource;

/// The SDS service. Cheap to clone; clones share streams, limits and
/// metrics.
#[derive(Clone)]
pub struct Sds {
    shared: Arc<Shared>,
}

/// What every stream and fetch shares.
pub(crate) struct Shared {
    source: Arc<dyn CredentialSource>,
    callers: Arc<dyn CallerIdentities>,
    settings: SdsSettings,
    metrics: SdsMetrics,
    /// Ends every stream (with `Unavailable`) when cancelled, so a
    /// graceful server shutdown does not wait for streams that never end.
    shutdown: CancellationToken,
    /// Open streams.
    open: AtomicUsize,
    /// Open streams per identity served.
    per_identity: Mutex<HashMap<SpiffeId, usize>>,
    /// Versions and nonces.
    counter: AtomicU64,
    /// `default` secrets, encoded once per certificate.
    encoded: EncodedDefaults,
}

impl Sds {
    /// A service serving `source`'s credentials to the callers `callers`
    /// attests. Cancelling `shutdown` ends every open stream with
    /// `Unavailable` (clients reconnect elsewhere or later) and refuses new
    /// calls.
    pub fn new(
        source: Arc<dyn CredentialSource>,
        callers: Arc<dyn CallerIdentities>,
        settings: SdsSettings,
        metrics: SdsMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                source,
                callers,
                settings,
                metrics,
                shutdown,
                open: AtomicUsize::new(0),
                per_identity: Mutex::default(),
                counter: AtomicU64::new(0),
                encoded: EncodedDefaults::default(),
            }),
        }
    }

    /// The tonic service to add to a server, with the request size bound
    /// applied.
    pub fn into_server(self) -> SecretDiscoveryServiceServer<Self> {
        let limit = self.shared.settings.max_request_bytes;
        SecretDiscoveryServiceServer::new(self).max_decoding_message_size(limit)
    }

    /// `StreamSecrets` streams open now.
    pub fn open_streams(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Sds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sds")
            .field("settings", &self.shared.settings)
            .field("open_streams", &self.open_streams())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Who the caller of `request` is, and the channels of its `default`
    /// identity (registering interest in it).
    async fn attest<T>(&self, request: &Request<T>) -> Result<CallerView, SdsError> {
        if self.shutdown.is_cancelled() {
            return Err(SdsError::ShuttingDown);
        }
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .copied()
            .ok_or(SdsError::NoPeer)?;
        // Taken before attesting, so no reload in between is missed.
        let reattest = self.callers.changed();
        let ids = self.callers.identities(peer).await?;
        let id = ids.into_iter().next().ok_or(SdsError::NoIdentity)?;
        Ok(CallerView::new(
            id.clone(),
            self.source.watch_x509(&id),
            self.source.watch_bundles(),
            self.settings.root_ca,
            reattest,
        ))
    }

    fn refuse(&self, e: SdsError) -> Status {
        self.metrics.error(&e);
        match e {
            SdsError::NoIdentity
            | SdsError::TooManyStreams { .. }
            | SdsError::TooManyIdentityStreams { .. }
            | SdsError::ShuttingDown
            | SdsError::EntriesChanged => {
                debug!(error = %e, "SDS call refused");
            }
            _ => warn!(error = %e, "SDS call refused"),
        }
        e.into()
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = BoxStream<'static, Result<DeltaDiscoveryResponse, Status>>;
    type StreamSecretsStream = BoxStream<'static, Result<DiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(self.shared.refuse(SdsError::DeltaUnsupported))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let shared = &self.shared;
        let peer = request.extensions().get::<PeerInfo>().copied();
        let span = info_span!(
            "sds_stream",
            peer.uid = peer.map(|p| p.uid),
            peer.pid = peer.and_then(|p| p.pid),
            spiffe_id = tracing::field::Empty,
        );
        // The slot is taken before attestation so that a flood of
        // connections cannot run unbounded attestations either.
        let mut slot = StreamSlot::acquire(shared).map_err(|e| shared.refuse(e))?;
        let view = shared
            .attest(&request)
            .instrument(span.clone())
            .await
            .map_err(|e| shared.refuse(e))?;
        span.record("spiffe_id", tracing::field::display(&view.id));
        slot.bind(&view.id).map_err(|e| shared.refuse(e))?;
        let stream = SecretStream::new(shared.clone(), slot, request.into_inner(), view, span);
        Ok(Response::new(stream.into_stream()))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let shared = &self.shared;
        let view = shared
            .attest(&request)
            .await
            .map_err(|e| shared.refuse(e))?;
        shared
            .fetch(view, request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| shared.refuse(e))
    }
}
