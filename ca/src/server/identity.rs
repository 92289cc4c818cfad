//! `sigil.v1.IdentityService`: Sigil's own service on the gRPC port, next
//! to Istio's, authenticated and authorized by the same path
//! ([`authorize_call`]).
//!
//! - `MintJwtSvid`: a JWT-SVID for the identity the caller may hold (its
//!   own, or with `impersonated_identity` a workload's, bounded exactly as
//!   `ImpersonatedIdentity` is for certificates). Audience required; the
//!   lifetime is the request's (or `jwt_svid.default_ttl`), cut to
//!   `jwt_svid.max_ttl` and, for a caller authenticated by its SVID, to its
//!   cap (`issuance.svid_max_ttl`) as for certificates.
//! - `FetchBundle`: the SPIFFE bundle JSON (X.509 and JWT authorities), to
//!   authenticated callers only.
//!
//! Status codes: those of [`authorize_call`], then INVALID_ARGUMENT for a
//! missing, empty, oversized or excess audience, RESOURCE_EXHAUSTED over the
//! in-flight bound, INTERNAL for a bug.
//!
//! Also here: the task that rotates the JWT signing keys.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_proto::sigil::v1::identity_service_server::IdentityService;
use sigil_proto::sigil::v1::{
    FetchBundleRequest, FetchBundleResponse, MintJwtSvidRequest, MintJwtSvidResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::call::{Authorized, authenticate_call, authorize_call};
use super::metrics::OutcomeLabel;
use super::state::Shared;
use super::tls::ConnInfo;
use crate::jwtsvid::{JwtSvidError, MintRequest};

/// The longest the rotation task sleeps: wall-clock changes are noticed
/// within this.
const MAX_ROTATION_WAIT: Duration = Duration::from_secs(60);
/// The shortest it sleeps, and after a failed key write.
const MIN_ROTATION_WAIT: Duration = Duration::from_secs(1);
const RETRY_ROTATION_WAIT: Duration = Duration::from_secs(10);

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct IdentityApi {
    shared: Arc<Shared>,
}

impl IdentityApi {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    async fn mint(
        &self,
        request: Request<MintJwtSvidRequest>,
    ) -> Result<MintJwtSvidResponse, Status> {
        const RPC: &str = "MintJwtSvid";
        let shared = &self.shared;
        let _permit = shared
            .limit
            .try_acquire()
            .map_err(|_| Status::resource_exhausted("too many requests in flight; retry later"))?;
        let (metadata, extensions, message) = request.into_parts();
        let impersonated = Some(message.impersonated_identity.as_str()).filter(|s| !s.is_empty());
        let Authorized { caller, identity } =
            authorize_call(shared, &metadata, &extensions, Ok(impersonated), RPC).await?;

        let ttl = u64::try_from(message.ttl_seconds)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let remote = extensions.get::<Arc<ConnInfo>>().map(|c| c.remote);
        let svid = shared
            .jwt
            .mint(
                MintRequest {
                    subject: &identity,
                    audiences: &message.audience,
                    ttl,
                    // A capped caller (SVID) never gets more than its cap.
                    cap: caller.max_ttl.map(|t| t.as_duration()),
                },
                SystemTime::now(),
            )
            .map_err(|e| {
                tracing::info!(
                    rpc = RPC,
                    client.addr = remote.map(tracing::field::display),
                    caller = %caller.identity,
                    method = caller.method,
                    identity = %identity,
                    outcome = "refused",
                    error = %e,
                    "request refused"
                );
                jwt_status(&e)
            })?;
        tracing::info!(
            rpc = RPC,
            client.addr = remote.map(tracing::field::display),
            caller = %caller.identity,
            method = caller.method,
            identity = %identity,
            kid = %svid.kid,
            expires_at = svid.expires_at,
            outcome = "issued",
            "JWT-SVID minted"
        );
        let expires_at = i64::try_from(svid.expires_at)
            .map_err(|_| Status::internal("BUG: JWT expiry out of range"))?;
        Ok(MintJwtSvidResponse {
            spiffe_id: svid.spiffe_id.to_string(),
            expires_at,
            token: svid.into_token(),
        })
    }

    async fn bundle(
        &self,
        request: Request<FetchBundleRequest>,
    ) -> Result<FetchBundleResponse, Status> {
        let shared = &self.shared;
        let _permit = shared
            .limit
            .try_acquire()
            .map_err(|_| Status::resource_exhausted("too many requests in flight; retry later"))?;
        let (metadata, extensions, _) = request.into_parts();
        authenticate_call(shared, &metadata, &extensions, "FetchBundle").await?;
        let spiffe_bundle = shared.bundle().to_spiffe_json().map_err(|e| {
            tracing::error!(error = %e, "cannot encode the trust bundle");
            Status::internal("cannot encode the trust bundle")
        })?;
        Ok(FetchBundleResponse { spiffe_bundle })
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn mint_jwt_svid(
        &self,
        request: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, Status> {
        let result = self.mint(request).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(status) => sigil_proto::code_label(status.code()),
        };
        self.shared
            .metrics
            .jwt_svids_minted
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        result.map(Response::new)
    }

    async fn fetch_bundle(
        &self,
        request: Request<FetchBundleRequest>,
    ) -> Result<Response<FetchBundleResponse>, Status> {
        self.bundle(request).await.map(Response::new)
    }
}

/// The status for a minting refusal.
pub(crate) fn jwt_status(err: &JwtSvidError) -> Status {
    match err {
        JwtSvidError::NoAudience
        | JwtSvidError::TooManyAudiences { .. }
        | JwtSvidError::BadAudience { .. } => Status::invalid_argument(err.to_string()),
        JwtSvidError::BadKey { .. }
        | JwtSvidError::BadKeyFile { .. }
        | JwtSvidError::Io { .. }
        | JwtSvidError::Clock
        | JwtSvidError::Internal(_) => Status::internal(err.to_string()),
    }
}

/// Applies the key ring's timeline (prepare, activate, drop) when due, until
/// `stop`.
pub(crate) async fn rotate_jwt_keys(shared: Arc<Shared>, stop: CancellationToken) {
    let mut wait = MIN_ROTATION_WAIT;
    loop {
        let due = shared
            .jwt
            .next_event()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        wait = wait.max(due).min(MAX_ROTATION_WAIT);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let ring = shared.jwt.clone();
        // The key file is written synchronously: off the runtime's threads.
        let result = tokio::task::spawn_blocking(move || ring.advance(SystemTime::now())).await;
        wait = MIN_ROTATION_WAIT;
        match result {
            Ok(Ok(true)) => tracing::info!(
                active_kid = shared.jwt.active_kid().as_deref().unwrap_or(""),
                published = shared.jwt.authorities().len(),
                "JWT signing keys rotated"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "JWT signing key rotation failed; the current keys stay in use");
                wait = RETRY_ROTATION_WAIT;
            }
            Err(error) => {
                tracing::warn!(%error, "JWT signing key rotation task failed");
                wait = RETRY_ROTATION_WAIT;
            }
        }
    }
}
