//! [`Usage`]: the TLS role a leaf must be fit for. Its own module so that
//! [`VerifyError`](super::VerifyError) can name it without importing the
//! chain verifier (imports in `verify/` go one way:
//! `usage`, `error` ◀ `svid` ◀ `chain` ◀ `rustls`).

use webpki::KeyUsage;

/// The TLS role the leaf must be fit for (its ExtendedKeyUsage).
///
/// Following RFC 5280 §4.2.1.12 (as webpki does), a leaf without an
/// ExtendedKeyUsage extension is fit for both; one with the extension must
/// list the purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// The leaf authenticates a TLS client (`id-kp-clientAuth`).
    ClientAuth,
    /// The leaf authenticates a TLS server (`id-kp-serverAuth`).
    ServerAuth,
}

impl Usage {
    pub(super) fn key_usage(self) -> KeyUsage {
        match self {
            Self::ClientAuth => KeyUsage::client_auth(),
            Self::ServerAuth => KeyUsage::server_auth(),
        }
    }
}
