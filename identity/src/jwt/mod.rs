//! JWT and JWKS validation, strict where common libraries are lax.
//!
//! The CA authenticates Kubernetes service-account tokens and OIDC tokens
//! with it; the proxy will authenticate end-user JWTs with it. Security
//! invariant 4: the algorithm allowlist is tied to the key's type, `iss`,
//! `aud`, `exp`, `nbf` are checked with bounded leeway, header `jku`, `x5u`,
//! `jwk` and `x5c` are never trusted, and an unknown `kid` is reported as its
//! own error ([`JwtError::UnknownKid`]) so the caller can run one
//! rate-limited JWKS refresh.
//!
//! ```text
//!  JWKS bytes ──▶ Jwks::from_json ──▶ Jwks { kid → DecodingKey + allowed algs }
//!                                         │
//!  "Bearer …" ──▶ BearerToken ──▶ JwtValidator::validate(token, &jwks, now)
//!                                   ├─ compact form, size bound
//!                                   ├─ strict header (dup members, crit, alg)
//!                                   ├─ key by kid, alg ∈ key's allowlist
//!                                   ├─ signature: jsonwebtoken (ring)
//!                                   └─ strict claims: exp nbf iat iss aud
//!                                         ▼
//!                                    VerifiedJwt
//! ```
//!
//! What it does not do: fetch or cache JWKS documents (the caller owns
//! I/O and refresh rate-limiting: `sigil_runtime::jwt` for the daemons),
//! HMAC, JWE, or the JWS JSON serialization.

mod alg;
mod bearer;
mod error;
mod jwks;
mod roca;
mod strict_json;
mod validate;

#[cfg(test)]
mod tests;

pub use alg::JwsAlgorithm;
pub use bearer::{BearerToken, MAX_BEARER_TOKEN_BYTES};
pub use error::{BearerTokenError, JwksError, JwtError, JwtPolicyError};
pub use jwks::{Jwks, MAX_JWKS_BYTES, MAX_JWKS_KEYS, MAX_RSA_BITS, MIN_RSA_BITS};
pub use validate::{
    DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_BYTES, JwtPolicy, JwtValidator, MAX_LEEWAY,
    MAX_TOKEN_BYTES_LIMIT, VerifiedJws, VerifiedJwt, verify_jws_signature,
};
