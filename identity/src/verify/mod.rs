//! X509-SVID verification.
//!
//! - [`check_leaf`] and [`check_signing_certificate`]: the X509-SVID rules
//!   on one certificate (URI SAN, BasicConstraints, KeyUsage);
//! - [`verify_x509_svid`]: a whole chain against the bundle of the leaf's
//!   own trust domain, with rustls-webpki, yielding a [`VerifiedSvid`];
//! - [`SpiffeServerVerifier`] and [`SpiffeClientVerifier`]: the same as
//!   rustls verifiers, narrowed by an [`IdMatcher`] and reading the current
//!   bundles from a [`BundleHandle`] on every handshake.
//!
//! ```text
//! peer chain ─▶ check_leaf ─▶ SpiffeId ─▶ bundle of its trust domain
//!                                              │
//!               webpki path (time, EKU, sigs) ◀┘─▶ intermediates: check_signing_certificate
//!                                              │
//!                                     IdMatcher ─▶ VerifiedSvid / rustls verdict
//! ```
//!
//! Out of scope: revocation (SPIFFE relies on short lifetimes), hostname
//! checks (SPIFFE peers have none), and JWT-SVIDs.

mod chain;
mod error;
mod handle;
mod matcher;
mod rustls;
mod svid;
mod usage;

#[cfg(test)]
mod tests;

pub use self::chain::{MAX_CHAIN_BYTES, MAX_CHAIN_LEN, VerifiedSvid, verify_x509_svid};
pub use self::error::VerifyError;
pub use self::handle::BundleHandle;
pub use self::matcher::IdMatcher;
pub use self::rustls::{SpiffeClientVerifier, SpiffeServerVerifier};
pub(crate) use self::svid::leaf_facts;
pub use self::svid::{check_leaf, check_signing_certificate};
pub use self::usage::Usage;
