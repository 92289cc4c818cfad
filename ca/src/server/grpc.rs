//! `IstioCertificateService/CreateCertificate`, wire-compatible with Istio.
//!
//! Per request: concurrency permit → credentials (one `authorization`
//! value parsed as an RFC 6750 bearer token; the client SVID verified again
//! against the current bundle at the current time) → authentication →
//! authorization (with `ImpersonatedIdentity`) → issuance →
//! `[leaf, intermediates..., trust bundle]`, each element PEM with a
//! trailing newline, the last element holding *all* current roots (ztunnel
//! builds its trust store from the last element alone).
//!
//! Status codes (one table, [`issue_status`] and friends):
//! UNAUTHENTICATED no or invalid credential · PERMISSION_DENIED identity
//! mismatch or forbidden impersonation · INVALID_ARGUMENT bad CSR, TTL or
//! metadata · RESOURCE_EXHAUSTED over a limit · UNAVAILABLE no usable
//! authority or a dependency down · INTERNAL a bug. The mappings match
//! every variant by name: a new error variant needs a decision here.

use std::sync::Arc;
use std::time::Instant;

use rustls_pki_types::UnixTime;
use sigil_identity::jwt::{BearerToken, BearerTokenError};
use sigil_proto::IMPERSONATED_IDENTITY;
use sigil_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateService;
use sigil_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Code, Request, Response, Status};

use super::metrics::{OutcomeLabel, ReasonLabel};
use super::state::Shared;
use super::tls::ConnInfo;
use crate::authn::{AuthnError, Credentials, DEV_TOKEN_PREFIX};
use crate::authz::AuthzError;
use crate::issue::{IssueError, IssueRequest, Ttl, cert_pem};

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
        let conn = extensions.get::<Arc<ConnInfo>>().map(Arc::as_ref);
        let remote = conn.map(|c| c.remote);
        let bearer = bearer(&metadata).map_err(|e| authn_status(shared, &e))?;
        let peer = match conn {
            None => None,
            Some(conn) => conn
                .peer(&shared.client_bundles, UnixTime::now())
                .map_err(|e| {
                    authn_status(
                        shared,
                        &AuthnError::Invalid {
                            method: "svid",
                            reason: format!("the client certificate is no longer valid: {e}"),
                        },
                    )
                })?,
        };
        let credentials = Credentials {
            bearer: bearer.as_ref().map(Bearer::expose_secret),
            peer: peer.as_ref(),
        };
        let caller = shared
            .authn
            .authenticate(credentials)
            .await
            .map_err(|e| authn_status(shared, &e))?;

        let impersonated = impersonated_identity(&message)?;
        let identity = shared
            .authz
            .authorize(&caller, impersonated)
            .await
            .map_err(|e| {
                tracing::info!(
                    client.addr = remote.map(tracing::field::display),
                    caller = %caller.identity,
                    method = caller.method,
                    impersonated = impersonated.unwrap_or(""),
                    outcome = "denied",
                    error = %e,
                    "certificate request refused"
                );
                authz_status(&e)
            })?;

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
            Err(status) => code_name(status.code()),
        };
        metrics
            .issued
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        result.map(Response::new)
    }
}

/// The request's bearer token.
enum Bearer<'a> {
    /// An RFC 6750 token.
    Token(BearerToken),
    /// A development token, `dev:<namespace>:<service-account>`: RFC 6750
    /// except for its `:` separators. Only the development authenticator
    /// (zero-config trials) takes it; to every other one it is unknown.
    Development(&'a str),
}

impl Bearer<'_> {
    fn expose_secret(&self) -> &str {
        match self {
            Self::Token(token) => token.expose_secret(),
            Self::Development(token) => token,
        }
    }
}

/// The bearer token of the request's `authorization` metadata: at most one
/// value, `Bearer <b64token>` (RFC 6750), parsed once here.
fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<Option<Bearer<'_>>, AuthnError> {
    let mut values = metadata.get_all("authorization").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthnError::MalformedHeader(
            "more than one authorization value",
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| AuthnError::MalformedHeader("not ASCII"))?;
    match BearerToken::from_authorization_header(text) {
        Ok(token) => Ok(Some(Bearer::Token(token))),
        Err(BearerTokenError::InvalidCharacter) => development_token(text)
            .map(|token| Some(Bearer::Development(token)))
            .ok_or(AuthnError::MalformedHeader(bearer_reason(
                &BearerTokenError::InvalidCharacter,
            ))),
        Err(e) => Err(AuthnError::MalformedHeader(bearer_reason(&e))),
    }
}

/// The token of `Bearer dev:<b64token chars and colons>`, which RFC 6750
/// refuses only for its colons.
fn development_token(header: &str) -> Option<&str> {
    let (_, token) = header.split_once(' ')?;
    let rest = token.strip_prefix(DEV_TOKEN_PREFIX)?;
    rest.bytes()
        .all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b':')
        })
        .then_some(token)
}

/// A fixed description of a bearer token refusal (never the value).
fn bearer_reason(err: &BearerTokenError) -> &'static str {
    match err {
        BearerTokenError::WrongScheme => "only the Bearer scheme is accepted",
        BearerTokenError::Malformed => "expected `Bearer <token>` with one space and one token",
        BearerTokenError::Empty => "the bearer token is empty",
        BearerTokenError::InvalidCharacter => {
            "the bearer token holds a character outside RFC 6750's b64token"
        }
        BearerTokenError::TooLarge { .. } => "the bearer token is too large",
        // Defined in sigil-identity and `#[non_exhaustive]`.
        _ => "not a valid bearer token",
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

fn authn_status(shared: &Shared, err: &AuthnError) -> Status {
    shared
        .metrics
        .authn_failures
        .get_or_create(&ReasonLabel {
            reason: err.metric_reason(),
        })
        .inc();
    tracing::info!(error = %err, outcome = "unauthenticated", "certificate request refused");
    match err {
        AuthnError::Unavailable { .. } => Status::unavailable(err.to_string()),
        AuthnError::NoCredential
        | AuthnError::UnrecognisedToken
        | AuthnError::MalformedHeader(_)
        | AuthnError::Invalid { .. } => Status::unauthenticated(err.to_string()),
    }
}

/// The status for an authorization refusal.
pub(crate) fn authz_status(err: &AuthzError) -> Status {
    match err {
        AuthzError::BadImpersonatedIdentity { .. } => Status::invalid_argument(err.to_string()),
        AuthzError::Unavailable(_) => Status::unavailable(err.to_string()),
        AuthzError::NotANodeAgent { .. }
        | AuthzError::UnknownCallerNode { .. }
        | AuthzError::NotOnCallersNode { .. } => Status::permission_denied(err.to_string()),
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

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use tonic::metadata::{MetadataMap, MetadataValue};

    use super::*;

    fn with_authorization(values: &[&str]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for value in values {
            metadata.append("authorization", MetadataValue::try_from(*value).unwrap());
        }
        metadata
    }

    fn parsed(values: &[&str]) -> Result<Option<String>, AuthnError> {
        let metadata = with_authorization(values);
        bearer(&metadata).map(|b| b.map(|b| b.expose_secret().to_owned()))
    }

    #[test]
    fn the_authorization_header_is_parsed_strictly() {
        assert_eq!(parsed(&[]), Ok(None));
        assert_eq!(
            parsed(&["Bearer abc.def.ghi"]),
            Ok(Some("abc.def.ghi".into()))
        );
        assert_eq!(parsed(&["bearer abc=="]), Ok(Some("abc==".into())));
        assert_eq!(
            parsed(&["Bearer dev:default:web"]),
            Ok(Some("dev:default:web".into()))
        );
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearer a b",
            "Bearerabc",
            "Bearer  abc",
            "Bearer a:b",
            "Bearer dev:a b",
            "Bearer dev:a\"b",
            "Bearer abc%",
        ] {
            let result = parsed(&[bad]);
            assert!(
                matches!(result, Err(AuthnError::MalformedHeader(_))),
                "{bad:?}: {result:?}"
            );
        }
    }

    #[test]
    fn two_authorization_values_are_refused() {
        let result = parsed(&["Bearer abc", "Bearer def"]);
        assert_eq!(
            result,
            Err(AuthnError::MalformedHeader(
                "more than one authorization value"
            ))
        );
        assert_eq!(
            result.unwrap_err().metric_reason(),
            "malformed_header",
            "counted as a malformed header"
        );
        assert!(matches!(
            parsed(&["Bearer abc", "Bearer abc"]),
            Err(AuthnError::MalformedHeader(_))
        ));
    }
}
