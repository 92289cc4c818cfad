//! # sigil-identity
//!
//! The SPIFFE identity core every Sigil component shares:
//!
//! - [`spiffe_id`]: [`SpiffeId`] and [`TrustDomain`], parsed exactly per the
//!   SPIFFE-ID standard;
//! - [`bundle`]: [`TrustBundle`] (several X.509 roots per trust domain plus JWT
//!   keys) in PEM and SPIFFE bundle JSON, and [`BundleSet`] for several trust
//!   domains;
//! - [`verify`]: X509-SVID verification, also as rustls server and client
//!   certificate verifiers, so the node agent and the proxy share one
//!   implementation;
//! - [`jwt`]: strict JWKS loading ([`Jwks`]) and JWT validation
//!   ([`JwtValidator`]) for service-account, OIDC and end-user tokens;
//! - [`credential`]: one's own credential — [`X509Svid`] (chain + key,
//!   checked to belong together), [`PrivateKey`] (zeroized, redacted) —
//!   and [`CredentialResolver`], which rustls servers and clients present
//!   from, swapped atomically and failing closed before the first one.
//!
//! ```text
//!   sigil-ca ──┐
//!   node-agent ├──▶ sigil-identity ──▶ rustls-webpki, x509-parser
//!   proxy ─────┘
//! ```
//!
//! It does no I/O beyond what a verifier needs; the only private keys it
//! holds are the ones handed to [`credential`], zeroized on drop.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod credential;
pub mod jwt;
pub mod spiffe_id;
pub mod verify;

#[cfg(test)]
mod test_tls;

pub use bundle::{BundleError, BundleSet, JwtAuthority, TrustBundle};
pub use credential::{CredentialError, CredentialResolver, PrivateKey, X509Svid};
pub use jwt::{BearerToken, Jwks, JwtError, JwtPolicy, JwtValidator, VerifiedJwt};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
pub use verify::{
    BundleHandle, IdMatcher, SpiffeClientVerifier, SpiffeServerVerifier, Usage, VerifiedSvid,
    VerifyError, check_leaf, check_signing_certificate, verify_x509_svid,
};
