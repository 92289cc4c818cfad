//! `IstioCertificateService/CreateCertificate`, wire-compatible with Istio.
//!
//! Per request: concurrency permit → [`authorize_call`] (credentials,
//! authentication, authorization with `ImpersonatedIdentity`; the one path
//! Sigil's `IdentityService` shares) → issuance →
//! `[leaf, intermediates..., trust bundle]`, each element PEM with a
//! trailing newline, the last element holding *all* current roots (ztunnel
//! builds its trust store from the last element alone).
//!
//! Status codes (one table, [`issue_status`] here and the authentication
//! and authorization mappings in `call`):
//! UNAUTHENTICATED no or invalid credential · PERMISSION_DENIED identity
//! mismatch or forbidden impersonation · INVALID_ARGUMENT bad CSR, TTL or
//! metadata · RESOURCE_EXHAUSTED over a limit · UNAVAILABLE no usable
//! authority or a dependency down · INTERNAL a bug. The mappings match
//! every variant by name: a new error variant needs a decision here.

use std::sync::Arc;
use std::time::Instant;

use sigil_proto::IMPERSONATED_IDENTITY;
use sigil_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateService;
use sigil_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Code, Request, Response, Status};

use super::call::{Authorized, authorize_call};
use super::metrics::OutcomeLabel;
use super::state::Shared;
use super::tls::ConnInfo;
use crate::issue::{IssueError, IssueRequest, Ttl, cert_pem};

/// The method name in logs.
const RPC: &str = "CreateCertificate";

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct CaService {
    shared: Arc<Shared>,
}

impl CaService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    async fn handle(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        let shared = &self.shared;
        let _permit = shared
            .limit
            .try_acquire()
            .map_err(|_| Status::resource_exhausted("too many requests in flight; retry later"))?;

        // Borrowed for the whole request: nothing about the connection is
        // copied or formatted unless a log line needs it.
        let (metadata, extensions, message) = request.into_parts();
        let remote = extensions.get::<Arc<ConnInfo>>().map(|c| c.remote);
        let Authorized { caller, identity } = authorize_call(
            shared,
            &metadata,
            &extensions,
            impersonated_identity(&message),
            RPC,
        )
        .await?;

        let requested = if message.validity_duration <= 0 {
            None
        } else {
            Some(
                Ttl::from_secs(message.validity_duration)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            )
        };
        let issuer = shared.issuer.load_full();
        // A capped caller (SVID renewal) never gets more than its cap.
        let ttl = caller.bounded_ttl(requested, issuer.policy().default_ttl);
        let chain = issuer
            .issue(IssueRequest {
                csr: message.csr.as_bytes(),
                identity: &identity,
                ttl,
            })
            .map_err(|e| {
                tracing::info!(
                    client.addr = remote.map(tracing::field::display),
                    caller = %caller.identity,
                    method = caller.method,
                    identity = %identity,
                    outcome = "refused",
                    error = %e,
                    "certificate request refused"
                );
                issue_status(&e)
            })?;
        tracing::info!(
            client.addr = remote.map(tracing::field::display),
            caller = %caller.identity,
            method = caller.method,
            identity = %identity,
            not_after = %chain.not_after(),
            outcome = "issued",
            "certificate issued"
        );

        // [leaf, intermediates...] then the whole bundle as the last element.
        let intermediates = issuer.intermediates_pem();
        let mut cert_chain = Vec::with_capacity(intermediates.len() + 2);
        if let Some(leaf) = chain.leaf() {
            cert_chain.push(cert_pem(leaf));
        }
        cert_chain.extend(intermediates.iter().cloned());
        cert_chain.push(issuer.bundle_pem().to_owned());
        Ok(IstioCertificateResponse { cert_chain })
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let start = Instant::now();
        let result = self.handle(request).await;
        let metrics = &self.shared.metrics;
        metrics.latency.observe(start.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(status) => sigil_proto::code_label(status.code()),
        };
        metrics
            .issued
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        result.map(Response::new)
    }
}

fn impersonated_identity(message: &IstioCertificateRequest) -> Result<Option<&str>, Status> {
    use prost_types::value::Kind;
    let Some(value) = message
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
    else {
        return Ok(None);
    };
    match &value.kind {
        Some(Kind::StringValue(s)) => Ok(Some(s.as_str())),
        _ => Err(Status::invalid_argument(format!(
            "metadata {IMPERSONATED_IDENTITY} must be a string"
        ))),
    }
}

/// The status for an issuance refusal.
pub(crate) fn issue_status(err: &IssueError) -> Status {
    let code = match err {
        IssueError::SanMismatch { .. }
        | IssueError::WrongTrustDomain { .. }
        | IssueError::TrustDomainIdentity { .. } => Code::PermissionDenied,
        IssueError::CsrTooLarge { .. } => Code::ResourceExhausted,
        IssueError::AuthorityNotValid { .. } => Code::Unavailable,
        IssueError::Signing(_) => Code::Internal,
        IssueError::CsrMalformed { .. }
        | IssueError::CsrSignatureInvalid
        | IssueError::WeakSignatureAlgorithm { .. }
        | IssueError::UnsupportedSignatureAlgorithm { .. }
        | IssueError::UnsupportedKeyAlgorithm { .. }
        | IssueError::UnsupportedCurve { .. }
        | IssueError::ExplicitCurve
        | IssueError::RsaKeySize { .. }
        | IssueError::RsaExponent { .. }
        | IssueError::ForbiddenSan { .. }
        | IssueError::MultipleUriSans { .. }
        | IssueError::RequestsCa
        | IssueError::RequestsSigningUsage
        | IssueError::UnsupportedCriticalExtension { .. }
        | IssueError::DuplicateExtensionRequest
        | IssueError::InvalidTtl(_) => Code::InvalidArgument,
    };
    Status::new(code, err.to_string())
}
