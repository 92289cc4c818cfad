//! RequestAuthentication: end-user JWTs validated with the same strict
//! validation and JWKS fetching as the CA ([`sigil_runtime::jwt`]).
//!
//! SEAM (issue 16, being built): [`JwtFilter::none`] accepts every request
//! as carrying no token.

use crate::policy::JwtIdentity;

/// Why a request's JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtReject {
    /// 401 (invalid token) or 403 (audience not allowed), as Envoy's jwt_authn.
    pub status: http::StatusCode,
    /// The short response body / log detail (never the token).
    pub message: String,
}

/// The JWT rules of the RequestAuthentications that select the workload.
#[derive(Debug, Default)]
pub struct JwtFilter {}

impl JwtFilter {
    /// No rules: every request passes with no identity.
    pub fn none() -> Self {
        Self {}
    }

    /// Finds the request's token(s) by the rules' locations, validates them,
    /// rewrites `parts` as the rules say (token removed unless
    /// `forwardOriginalToken`, payload/claims to headers) and returns the
    /// end-user identity (`None`: no token).
    pub async fn authenticate(
        &self,
        _parts: &mut http::request::Parts,
    ) -> Result<Option<JwtIdentity>, JwtReject> {
        Ok(None)
    }
}
