//! JWT issuers whose keys are fetched: the CA authenticates Kubernetes and
//! OIDC tokens with them, the proxy will authenticate end-user JWTs
//! (RequestAuthentication) with them, without depending on the CA.
//!
//! - [`JwksSource`]: an issuer's keys from a file, inline, or an `https`
//!   JWKS URI, with a rate-limited refresh on an unknown `kid`, reload
//!   after `max_age`, and the `max_stale` bound past which keys that cannot
//!   be re-read are not trusted;
//! - [`JwtIssuer`]: one issuer, checking a token with
//!   [`sigil_identity::JwtValidator`] against its source's keys, including
//!   the UNAVAILABLE rule (an unknown `kid` while the keys cannot be
//!   reloaded cannot be decided now);
//! - [`JwtIssuers`]: several issuers, routing a token to its own by the
//!   (unverified) `iss` claim.
//!
//! ```text
//!  token ─▶ JwtIssuers::route (peek iss) ─▶ JwtIssuer::verify
//!                                              ├─ JwksSource::refresh_if_stale (max_age)
//!                                              ├─ JwksSource::fresh (max_stale) ──▶ Unavailable
//!                                              ├─ JwtValidator::validate ──▶ VerifiedJwt
//!                                              └─ unknown kid: refresh (rate-limited), retry once
//! ```
//!
//! What a verified token *means* (an identity, a principal) is the
//! caller's business.

mod issuer;
mod source;

#[cfg(test)]
mod tests;

pub use issuer::{IssuerError, JwtIssuer, JwtIssuers, peek_issuer};
pub use source::{
    DEFAULT_JWKS_MAX_AGE, DEFAULT_JWKS_MAX_STALE, JWKS_FETCH_TIMEOUT, JwksSource, JwksSourceError,
    MAX_JWKS_RESPONSE_BYTES,
};
