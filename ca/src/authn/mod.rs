//! Caller authentication: who is asking for a certificate.
//!
//! Authenticators are configured as an ordered list ([`AuthnChain`]). Each
//! one first says whether it *recognises* the credential (a JWT from its
//! issuer, a client SVID, a development token); the first that does decides,
//! and its verdict is final — a rejected token is never retried with the
//! next authenticator.
//!
//! ```text
//! Credentials { bearer token?, verified client SVID? }
//!    │  for each authenticator, in order:
//!    ├─ NotMine ──────────────▶ next
//!    ├─ Authenticated(Caller) ─▶ authorization
//!    └─ Rejected(error) ───────▶ UNAUTHENTICATED (or UNAVAILABLE)
//! ```
//!
//! A [`Caller`] carries the SPIFFE ID it may hold, derived by the
//! authenticator (`spiffe://<td>/ns/<ns>/sa/<sa>` for Kubernetes service
//! accounts), and what is known of its pod and node for impersonation
//! checks. Tokens are never logged.

mod dev;
mod jwt;
mod review;
mod svid;

use std::time::SystemTime;

use futures::future::BoxFuture;
use sigil_identity::SpiffeId;

use crate::issue::Ttl;
use crate::k8s::PodRef;

pub use dev::{DEV_TOKEN_PREFIX, DevelopmentAuthenticator};
pub use jwt::{IdentityMapping, JwtAuthenticator};
pub use review::{
    FAILED_REVIEW_BURST, FAILED_REVIEW_CACHE_SIZE, FAILED_REVIEW_CACHE_TTL,
    FAILED_REVIEWS_PER_SECOND, MAX_CACHE_TTL, NO_EXPIRY_CACHE_TTL, ReviewCache,
    TokenReviewAuthenticator,
};
pub use sigil_runtime::jwt::{
    DEFAULT_JWKS_MAX_AGE, DEFAULT_JWKS_MAX_STALE, JWKS_FETCH_TIMEOUT, JwksSource, JwksSourceError,
    MAX_JWKS_RESPONSE_BYTES,
};
pub use svid::SvidAuthenticator;

/// What the caller presented.
#[derive(Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The bearer token from `authorization: Bearer <token>`, if any.
    pub bearer: Option<&'a str>,
    /// The SPIFFE ID of the verified client certificate, if the caller used
    /// mutual TLS with a valid SVID.
    pub peer: Option<&'a SpiffeId>,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer_len", &self.bearer.map(str::len))
            .field("peer", &self.peer)
            .finish()
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The identity this caller may hold.
    pub identity: SpiffeId,
    /// Which authenticator vouched for it (`kubernetes-jwt`, `svid`, ...).
    pub method: &'static str,
    /// The pod the credential is bound to, when known.
    pub pod: Option<PodRef>,
    /// The node the credential is bound to, when known.
    pub node: Option<String>,
    /// When the credential stops being valid, when known.
    pub expires_at: Option<SystemTime>,
    /// The longest certificate this caller may obtain, when its
    /// authenticator bounds it (`svid`: renewal must not extend a
    /// credential, so `issuance.svid_max_ttl`). `None`: the issuance policy
    /// alone decides.
    pub max_ttl: Option<Ttl>,
}

impl Caller {
    /// A caller known only by identity.
    pub fn new(identity: SpiffeId, method: &'static str) -> Self {
        Self {
            identity,
            method,
            pod: None,
            node: None,
            expires_at: None,
            max_ttl: None,
        }
    }

    /// The lifetime to ask the issuer for: `requested` (or, when `None`,
    /// the policy's `default_ttl`), cut to [`Caller::max_ttl`]. Without a
    /// cap, `requested` unchanged (the issuer applies its default and
    /// maximum).
    pub fn bounded_ttl(&self, requested: Option<Ttl>, default_ttl: Ttl) -> Option<Ttl> {
        match self.max_ttl {
            None => requested,
            Some(cap) => Some(requested.unwrap_or(default_ttl).min(cap)),
        }
    }
}

/// Why authentication failed. Messages never contain the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthnError {
    /// No authenticator recognised what the caller presented (or nothing
    /// was presented).
    #[error("no credential recognised: send `authorization: Bearer <token>` or a client SVID")]
    NoCredential,
    /// A bearer token was sent but no configured authenticator takes it
    /// (e.g. a JWT from an issuer none of them is configured for).
    #[error(
        "the bearer token matches no configured authenticator (unknown issuer or token format)"
    )]
    UnrecognisedToken,
    /// The `authorization` header is not `Bearer <token>`.
    #[error("malformed authorization header: {0}")]
    MalformedHeader(&'static str),
    /// The credential was recognised and is invalid.
    #[error("{method}: {reason}")]
    Invalid {
        /// The authenticator.
        method: &'static str,
        /// Why (never the token itself).
        reason: String,
    },
    /// The authenticator could not decide (e.g. the API server or the JWKS
    /// endpoint is unreachable); the caller should retry.
    #[error("{method}: cannot verify the credential now: {reason}")]
    Unavailable {
        /// The authenticator.
        method: &'static str,
        /// Why.
        reason: String,
    },
}

impl AuthnError {
    /// A short, fixed label for metrics (`reason` label).
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Self::NoCredential => "no_credential",
            Self::UnrecognisedToken => "unrecognised_token",
            Self::MalformedHeader(_) => "malformed_header",
            Self::Invalid { .. } => "invalid",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

/// An authenticator's verdict.
#[derive(Debug)]
pub enum Outcome {
    /// Authenticated.
    Authenticated(Caller),
    /// Not this authenticator's kind of credential: ask the next.
    NotMine,
    /// Recognised and refused: final.
    Rejected(AuthnError),
}

/// One way of authenticating callers.
pub trait Authenticator: Send + Sync {
    /// The name used in logs, metrics and errors.
    fn kind(&self) -> &'static str;

    /// Authenticates `credentials`.
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> BoxFuture<'a, Outcome>;
}

/// The configured authenticators, in order.
#[derive(Default)]
pub struct AuthnChain {
    authenticators: Vec<Box<dyn Authenticator>>,
}

impl std::fmt::Debug for AuthnChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.authenticators.iter().map(|a| a.kind()))
            .finish()
    }
}

impl AuthnChain {
    /// A chain of `authenticators`, tried in order.
    pub fn new(authenticators: Vec<Box<dyn Authenticator>>) -> Self {
        Self { authenticators }
    }

    /// The first authenticator that recognises the credential decides.
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Caller, AuthnError> {
        for authenticator in &self.authenticators {
            match authenticator.authenticate(credentials).await {
                Outcome::Authenticated(caller) => return Ok(caller),
                Outcome::Rejected(err) => return Err(err),
                Outcome::NotMine => {}
            }
        }
        if credentials.bearer.is_some() {
            Err(AuthnError::UnrecognisedToken)
        } else {
            Err(AuthnError::NoCredential)
        }
    }
}

/// The longest bearer token taken for a JWT.
pub const MAX_JWT_BYTES: usize = 16 * 1024;

/// Whether `token` has a JWT's shape (JWS compact serialization): three
/// non-empty base64url segments separated by dots, at most
/// [`MAX_JWT_BYTES`]. Verifies nothing; keeps garbage away from costly
/// checks (a TokenReview).
pub fn looks_like_jwt(token: &str) -> bool {
    let base64url = |segment: &str| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    token.len() <= MAX_JWT_BYTES && {
        let mut segments = token.split('.');
        matches!(
            (segments.next(), segments.next(), segments.next(), segments.next()),
            (Some(h), Some(p), Some(s), None) if base64url(h) && base64url(p) && base64url(s)
        )
    }
}

/// Decodes a JWT's claims *without verifying anything*.
fn peek_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads a JWT's `exp` claim *without verifying anything*: used only after
/// the API server vouched for the token, to bound how long its review is
/// cached.
pub fn peek_expiry(token: &str) -> Option<SystemTime> {
    let exp = peek_claims(token)?.get("exp")?.as_u64()?;
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(exp))
}

#[cfg(test)]
mod tests;
