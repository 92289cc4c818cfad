//! [`CredentialError`]: why a key or a credential was refused.

use crate::verify::VerifyError;

/// Why a private key or a credential (chain + key) was refused. Never
/// carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The PEM text holds no `PRIVATE KEY` (PKCS#8) block, or is malformed.
    #[error("no PKCS#8 private key (a `-----BEGIN PRIVATE KEY-----` block) in the PEM: {reason}")]
    KeyPem {
        /// Why.
        reason: String,
    },
    /// The bytes are not a PKCS#8 key of a supported algorithm (ECDSA
    /// P-256/P-384, Ed25519, RSA).
    #[error("unusable private key: {reason}")]
    Key {
        /// Why.
        reason: String,
    },
    /// The chain PEM holds no certificate, or a malformed one.
    #[error("certificate chain PEM: {reason}")]
    ChainPem {
        /// Why.
        reason: String,
    },
    /// No certificate was given.
    #[error("empty certificate chain: a credential needs at least the leaf")]
    EmptyChain,
    /// The leaf is not an X509-SVID.
    #[error("the leaf is not an X509-SVID: {0}")]
    Leaf(#[from] VerifyError),
    /// The private key is not the key of the leaf certificate.
    #[error("the private key does not match the leaf certificate's public key")]
    KeyMismatch,
    /// The leaf does not parse as rustls needs it.
    #[error("the leaf certificate cannot be used: {reason}")]
    Certificate {
        /// Why.
        reason: String,
    },
}
