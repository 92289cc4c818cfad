//! # sigil-ca
//!
//! Sigil's certificate authority as a library: where the signing key comes
//! from, and how a CSR becomes a short-lived X509-SVID chain.
//!
//! ```text
//!   authority::source ──▶ Authority ──▶ issue::CertIssuer ──▶ IssuedChain
//!   (self-signed root,    (validated     (CSR checks + Sigil's   [leaf, ..., root]
//!    Istio / cert-manager  key + chain)   X509-SVID template)
//!    plug-in directory)
//! ```
//!
//! JWT-SVIDs: [`jwtsvid::KeyRing`] holds the CA's JWT signing keys (ES256 by
//! default, rotated with overlap, persisted 0600) and mints tokens for an
//! identity the server has authorized.
//!
//! What it does not do: authenticate callers or decide which identity a
//! caller may hold. [`issue::IssueRequest::identity`] is the *result* of that
//! decision, made by the server in front of this library; the CSR can only
//! narrow it (a CSR asking for anything else is refused), never widen it.
//!
//! Invariants pinned by tests:
//! - nothing is signed unless the CSR's self-signature verifies and every
//!   check passes; the CSR contributes only its public key;
//! - a leaf never outlives its signing certificate;
//! - plug-in material is validated at load (key matches, chain reaches a
//!   root, every CA certificate is valid, can sign, has no URI name
//!   constraints and no RSA key under 2048 bits) and self-tested with
//!   rustls-webpki before it is used; a group- or world-readable plug-in
//!   key file is reported (warning and metric);
//! - private keys are written 0600 by atomic rename and never printed.
#![forbid(unsafe_code)]

pub mod authn;
pub mod authority;
pub mod authz;
pub mod config;
pub mod issue;
pub mod jwtsvid;
pub mod k8s;
pub mod serial;
pub mod server;

pub use authority::{Authority, AuthorityError};
pub use issue::{CertIssuer, IssuancePolicy, IssueError, IssueRequest, IssuedChain, Ttl};
