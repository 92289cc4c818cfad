//! [`JwtIssuer`]: one issuer's tokens checked against its fetched keys;
//! [`JwtIssuers`]: routing a token to its issuer.
//!
//! A token is *recognised* when its (unverified) `iss` is the issuer's;
//! from then on every check is strict ([`sigil_identity::jwt`]): signature
//! with an algorithm allowed for the key, `exp` required, `nbf`/`iat` not
//! in the future, issuer and audience matched, duplicate claims and `crit`
//! refused, `jku`/`x5u`/`jwk` ignored.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use sigil_identity::jwt::{JwtError, JwtPolicy, JwtPolicyError, JwtValidator, VerifiedJwt};

use super::source::{JwksSource, JwksSourceError};

/// Why a token from a recognised issuer was not verified.
///
/// Deliberately exhaustive (not `#[non_exhaustive]`): callers map each
/// variant to a status code with no catch-all arm, so a new variant is a
/// compile error there rather than silently getting a wrong code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    /// The token is invalid: final (UNAUTHENTICATED).
    #[error(transparent)]
    Invalid(#[from] JwtError),
    /// The issuer's keys could not be (re)loaded, so the token cannot be
    /// decided now (its `kid` may be a rotation the keys in use miss); the
    /// caller should retry (UNAVAILABLE).
    #[error("the issuer's keys cannot be reloaded: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The issuer's keys could not be re-read for longer than
    /// `jwks.max_stale` and are no longer trusted (UNAVAILABLE).
    #[error("{0}")]
    Stale(JwksSourceError),
}

/// One JWT issuer: its policy (issuer, audiences, leeway) and its keys.
#[derive(Debug)]
pub struct JwtIssuer {
    issuer: String,
    validator: JwtValidator,
    keys: Arc<JwksSource>,
}

impl JwtIssuer {
    /// An issuer for tokens whose `iss` is `policy.issuer` (required: a
    /// token is routed by it), with keys from `keys`.
    pub fn new(policy: JwtPolicy, keys: Arc<JwksSource>) -> Result<Self, JwtPolicyError> {
        let issuer = policy.issuer.clone().unwrap_or_default();
        let validator = JwtValidator::new(policy)?;
        Ok(Self {
            issuer,
            validator,
            keys,
        })
    }

    /// The issuer (`iss`) this handles.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The source of the issuer's keys.
    pub fn keys(&self) -> &Arc<JwksSource> {
        &self.keys
    }

    /// Whether `token`'s unverified `iss` names this issuer: only a
    /// routing decision, [`Self::verify`] checks everything.
    pub fn recognises(&self, token: &str) -> bool {
        peek_issuer(token).as_deref() == Some(self.issuer.as_str())
    }

    /// Verifies `token` at `now` against the issuer's keys: reloads keys
    /// older than `max_age` first, refuses keys older than `max_stale`
    /// ([`IssuerError::Stale`]), and on an unknown `kid` refreshes
    /// (rate-limited) and tries once more.
    pub async fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedJwt, IssuerError> {
        self.keys.refresh_if_stale().await;
        let keys = self.keys.fresh().map_err(IssuerError::Stale)?;
        match self.validator.validate(token, &keys, now) {
            Err(JwtError::UnknownKid { .. }) => {
                // Maybe the issuer rotated its keys: refresh (rate-limited)
                // and try once more.
                match self.keys.refresh().await {
                    Ok(fresh) => Ok(self.validator.validate(token, &fresh, now)?),
                    // Another request may have just reloaded: check again.
                    // If the last reload failed and the next is not due,
                    // the kid may be a rotation the keys in use miss, so
                    // the token cannot be decided now — as for the request
                    // whose reload failed.
                    Err(JwksSourceError::RateLimited { last_failure, .. }) => {
                        let keys = self.keys.fresh().map_err(IssuerError::Stale)?;
                        match (self.validator.validate(token, &keys, now), last_failure) {
                            (Err(JwtError::UnknownKid { .. }), Some(reason)) => {
                                Err(IssuerError::Unavailable { reason })
                            }
                            (other, _) => Ok(other?),
                        }
                    }
                    Err(e) => Err(IssuerError::Unavailable {
                        reason: e.to_string(),
                    }),
                }
            }
            other => Ok(other?),
        }
    }
}

/// Several issuers; a token goes to the one its `iss` names.
#[derive(Debug, Default)]
pub struct JwtIssuers {
    issuers: Vec<JwtIssuer>,
}

impl JwtIssuers {
    /// The issuers, tried in order (the first whose issuer matches wins).
    pub fn new(issuers: Vec<JwtIssuer>) -> Self {
        Self { issuers }
    }

    /// The issuer `token` claims to come from, if one is configured.
    pub fn route(&self, token: &str) -> Option<&JwtIssuer> {
        let iss = peek_issuer(token)?;
        self.issuers.iter().find(|i| i.issuer == iss)
    }

    /// Verifies `token` with its issuer; `None` when no configured issuer
    /// takes it.
    pub async fn verify(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Option<Result<VerifiedJwt, IssuerError>> {
        Some(self.route(token)?.verify(token, now).await)
    }
}

/// Reads a JWT's `iss` claim *without verifying anything*: only to route a
/// token to the issuer that then verifies it.
pub fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}
