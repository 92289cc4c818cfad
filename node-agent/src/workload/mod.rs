//! The SPIFFE Workload API server (`/SpiffeWorkloadAPI/*`), served on a
//! unix socket through [`crate::uds::serve`].
//!
//! Every call must carry the metadata `workload.spiffe.io: true`
//! (InvalidArgument otherwise). The caller is the [`PeerInfo`] the listener
//! put into the request; its identities come from [`CallerIdentities`]:
//! none is `PermissionDenied("no identity issued")`, an attestation failure
//! is `Unavailable`. Credentials come from a [`CredentialSource`].
//!
//! | method | answer |
//! |---|---|
//! | `FetchX509SVID` (stream) | every identity of the caller whose SVID is ready: DER chain leaf first, PKCS#8 key, DER roots; other trust domains' roots as `federated_bundles` |
//! | `FetchX509Bundles` (stream) | DER roots per trust domain ID |
//! | `FetchJWTSVID` | a JWT-SVID per identity (or the one asked for) and audience |
//! | `FetchJWTBundles` (stream) | a JWKS (JWT keys only, each with `kid`, no `use`) per trust domain ID |
//! | `ValidateJWTSVID` | the token verified with the JWT authorities of its own trust domain, its claims |
//!
//! Streams send the whole state when it changes and nothing when it did not
//! (the SPIFFE Workload API spec); they wait for the first ready SVID or
//! non-empty bundle set, leave out an identity whose state is `Unavailable`
//! (never an expired certificate), and end when the server shuts down.

mod error;
mod jwt;
mod metrics;
mod streams;

use std::sync::Arc;

use sigil_identity::SpiffeId;
use sigil_proto::spiffe::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use sigil_proto::spiffe::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::peer::{CallerIdentities, PeerInfo};
use crate::source::CredentialSource;

pub use error::{NO_IDENTITY_ISSUED, WorkloadError};
pub use metrics::{MethodCodeLabels, MethodLabel, WorkloadMetrics};
pub use streams::UpdateStream;

/// The metadata key every Workload API request must carry, with value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The largest request message accepted (a `ValidateJWTSVID` token is at
/// most 16 KiB; the other requests are a few audiences long).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The Workload API service; wrap it with [`WorkloadApi::into_server`]
/// (or [`SpiffeWorkloadApiServer::new`]) and serve it with
/// [`crate::uds::serve`].
#[derive(Clone)]
pub struct WorkloadApi {
    source: Arc<dyn CredentialSource>,
    callers: Arc<dyn CallerIdentities>,
    metrics: WorkloadMetrics,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for WorkloadApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadApi").finish_non_exhaustive()
    }
}

impl WorkloadApi {
    /// A Workload API over `source` and `callers`. Its streams end when
    /// `shutdown` fires, so a draining listener is not held open by them.
    pub fn new(
        source: Arc<dyn CredentialSource>,
        callers: Arc<dyn CallerIdentities>,
        metrics: WorkloadMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            source,
            callers,
            metrics,
            shutdown,
        }
    }

    /// The tonic server (a tower service) to pass to [`crate::uds::serve`]
    /// or to add to a `tonic::service::Routes`; request messages over
    /// [`MAX_REQUEST_BYTES`] are refused.
    pub fn into_server(self) -> SpiffeWorkloadApiServer<Self> {
        SpiffeWorkloadApiServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// Checks the security header and attests the caller: its identities,
    /// never empty.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Vec<SpiffeId>, WorkloadError> {
        let peer = self.peer(request)?;
        let ids = self.callers.identities(peer).await?;
        if ids.is_empty() {
            tracing::debug!(peer.uid = peer.uid, peer.pid = ?peer.pid, "no registration entry matches the caller");
            return Err(WorkloadError::NoIdentity);
        }
        Ok(ids)
    }

    /// Attests the caller of a streaming method and streams what `watch`
    /// builds for its identities; the stream ends when the registration
    /// entries change (taken before attesting, so no reload in between is
    /// missed) or at shutdown.
    async fn stream<T, W>(
        &self,
        method: &'static str,
        request: &Request<T>,
        watch: impl FnOnce(&dyn CredentialSource, Vec<SpiffeId>) -> W,
    ) -> Result<Response<streams::UpdateStream<W::Message>>, Status>
    where
        W: streams::Watched,
    {
        let reattest = self.callers.changed();
        let result = self.caller(request).await.map(|ids| {
            streams::updates(
                watch(self.source.as_ref(), ids),
                self.shutdown.clone(),
                reattest,
                self.metrics.stream_opened(method),
            )
        });
        self.finish(method, result).map(Response::new)
    }

    fn peer<T>(&self, request: &Request<T>) -> Result<PeerInfo, WorkloadError> {
        check_header(request)?;
        request
            .extensions()
            .get::<PeerInfo>()
            .copied()
            .ok_or(WorkloadError::NoPeer)
    }

    fn finish<T>(
        &self,
        method: &'static str,
        result: Result<T, WorkloadError>,
    ) -> Result<T, Status> {
        match result {
            Ok(value) => {
                self.metrics.record(method, Ok(()));
                Ok(value)
            }
            Err(error) => {
                let status = Status::from(error);
                self.metrics.record(method, Err(status.code()));
                Err(status)
            }
        }
    }
}

/// "All requests MUST include the metadata key `workload.spiffe.io` with
/// value `true`" (SPIFFE Workload Endpoint §4).
fn check_header<T>(request: &Request<T>) -> Result<(), WorkloadError> {
    match request.metadata().get(SECURITY_HEADER) {
        Some(value) if value.as_bytes() == b"true" => Ok(()),
        _ => Err(WorkloadError::MissingHeader),
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = streams::UpdateStream<X509svidResponse>;
    type FetchX509BundlesStream = streams::UpdateStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = streams::UpdateStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.stream("FetchX509SVID", &request, |source, ids| {
            streams::X509Svids::new(source, &ids)
        })
        .await
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.stream("FetchX509Bundles", &request, |source, _| {
            streams::X509Bundles(source.watch_bundles())
        })
        .await
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        const METHOD: &str = "FetchJWTSVID";
        let result = self.fetch_jwt_svids(&request).await;
        self.finish(METHOD, result).map(Response::new)
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.stream("FetchJWTBundles", &request, |source, _| {
            streams::JwtBundles(source.watch_bundles())
        })
        .await
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        const METHOD: &str = "ValidateJWTSVID";
        let result = self.validate(&request).await;
        self.finish(METHOD, result).map(Response::new)
    }
}
