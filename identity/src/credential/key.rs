//! [`PrivateKey`]: a PKCS#8 private key that never prints and is zeroized
//! on drop.

use std::fmt;
use std::sync::Arc;

use rustls::SignatureAlgorithm;
use rustls::sign::SigningKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use super::error::CredentialError;

/// A private key in PKCS#8 DER.
///
/// Checked at construction (it loads as a signing key with rustls' *ring*
/// provider); the bytes are zeroized when it drops; `Debug` prints the
/// algorithm and the length only; there is no `Display` and no
/// `Serialize`. [`Self::secret_der`] is the one way to the bytes.
#[derive(Clone)]
pub struct PrivateKey {
    der: Zeroizing<Vec<u8>>,
    algorithm: SignatureAlgorithm,
}

impl PrivateKey {
    /// A key from PKCS#8 DER bytes (taken over, and zeroized on drop even
    /// when refused).
    pub fn from_pkcs8_der(der: Vec<u8>) -> Result<Self, CredentialError> {
        let der = Zeroizing::new(der);
        let algorithm = signing_key(&der)?.algorithm();
        Ok(Self { der, algorithm })
    }

    /// A key from the first `PRIVATE KEY` (PKCS#8) PEM block of `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CredentialError> {
        let parsed = Zeroizing::new(PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| {
            CredentialError::KeyPem {
                reason: e.to_string(),
            }
        })?);
        Self::from_pkcs8_der(parsed.secret_pkcs8_der().to_vec())
    }

    /// The PKCS#8 DER bytes. Handle with care: never log or persist them
    /// except as a key file (mode 0600).
    pub fn secret_der(&self) -> &[u8] {
        &self.der
    }

    /// The key's signature algorithm (ECDSA, Ed25519, RSA).
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The key as a rustls signing key (*ring* provider).
    pub(super) fn signing_key(&self) -> Result<Arc<dyn SigningKey>, CredentialError> {
        signing_key(&self.der)
    }
}

fn signing_key(der: &[u8]) -> Result<Arc<dyn SigningKey>, CredentialError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der));
    rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| CredentialError::Key {
        reason: e.to_string(),
    })
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .field("der_len", &self.der.len())
            .finish_non_exhaustive()
    }
}
