//! The CA's signing key: loading PEM keys in every common encoding and
//! exposing them to rcgen as a signer.
//!
//! Operators' keys come as PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`,
//! openssl's and cert-manager's default for RSA) or SEC1 (`EC PRIVATE KEY`).
//! ring loads only PKCS#8, so PKCS#1 and SEC1 keys are re-wrapped into a
//! PKCS#8 `PrivateKeyInfo` with the `pkcs8`/`sec1` crates (no hand-written
//! ASN.1). Every intermediate buffer holding key bytes is zeroized on drop.

use std::fmt;

use pkcs8::der::Encode;
use pkcs8::der::asn1::AnyRef;
use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use zeroize::Zeroizing;

/// `rsaEncryption` (RFC 8017).
const RSA_ENCRYPTION: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-ecPublicKey` (RFC 5480).
const EC_PUBLIC_KEY: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Why a private key could not be loaded. The reason never contains key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The input holds no PEM private key block.
    #[error("no PEM private key found (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NoKey,
    /// An `EC PRIVATE KEY` carries no named curve.
    #[error("EC private key does not name its curve")]
    MissingCurve,
    /// The key could not be re-encoded or was rejected by the crypto library.
    #[error("private key rejected: {0}")]
    Rejected(String),
}

/// The CA's signing key.
///
/// `Debug` prints the algorithm only; the key bytes are not reachable through
/// this type's API.
pub struct CaKey {
    inner: KeyPair,
}

impl CaKey {
    /// Generates a fresh ECDSA P-256 key.
    pub fn generate_p256() -> Result<Self, KeyError> {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|inner| Self { inner })
            .map_err(|e| KeyError::Rejected(e.to_string()))
    }

    /// Loads a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoKey)?;
        let pkcs8: Zeroizing<Vec<u8>> = match &key {
            PrivateKeyDer::Pkcs8(k) => Zeroizing::new(k.secret_pkcs8_der().to_vec()),
            PrivateKeyDer::Pkcs1(k) => wrap(RSA_ENCRYPTION, AnyRef::NULL, k.secret_pkcs1_der())?,
            PrivateKeyDer::Sec1(k) => {
                let der = k.secret_sec1_der();
                let ec = sec1::EcPrivateKey::try_from(der)
                    .map_err(|e| KeyError::Rejected(e.to_string()))?;
                let curve = ec
                    .parameters
                    .and_then(|p| p.named_curve())
                    .ok_or(KeyError::MissingCurve)?;
                wrap(EC_PUBLIC_KEY, AnyRef::from(&curve), der)?
            }
            _ => return Err(KeyError::NoKey),
        };
        let der = PrivateKeyDer::Pkcs8(pkcs8.as_slice().into());
        KeyPair::try_from(&der)
            .map(|inner| Self { inner })
            .map_err(|e| KeyError::Rejected(e.to_string()))
    }

    /// The key in PKCS#8 PEM, for writing to a 0600 file. Zeroized on drop.
    pub fn expose_secret_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.inner.serialize_pem())
    }

    /// The raw public key (EC point, RSA `RSAPublicKey`, or Ed25519 bytes),
    /// as it appears in a certificate's `subjectPublicKey` bit string.
    pub fn public_key_raw(&self) -> &[u8] {
        self.inner.public_key_raw()
    }

    /// A short, human name of the key's algorithm.
    pub fn algorithm_name(&self) -> &'static str {
        algorithm_name(self.inner.algorithm())
    }
}

fn wrap(
    oid: pkcs8::ObjectIdentifier,
    parameters: AnyRef<'_>,
    private_key: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let info = pkcs8::PrivateKeyInfo::new(
        pkcs8::AlgorithmIdentifierRef {
            oid,
            parameters: Some(parameters),
        },
        private_key,
    );
    info.to_der()
        .map(Zeroizing::new)
        .map_err(|e| KeyError::Rejected(e.to_string()))
}

fn algorithm_name(alg: &'static SignatureAlgorithm) -> &'static str {
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        "ECDSA P-256"
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ECDSA P-384"
    } else if alg == &rcgen::PKCS_ED25519 {
        "Ed25519"
    } else {
        "RSA"
    }
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaKey")
            .field("algorithm", &self.algorithm_name())
            .finish_non_exhaustive()
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        self.inner.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.inner.algorithm()
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.inner.sign(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_leak_key_material() {
        let key = CaKey::generate_p256().unwrap();
        let pem = key.expose_secret_pem();
        let debug = format!("{key:?}");
        assert_eq!(debug, "CaKey { algorithm: \"ECDSA P-256\", .. }");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&body[..16]));
    }

    #[test]
    fn pkcs8_round_trip() {
        let key = CaKey::generate_p256().unwrap();
        let again = CaKey::from_pem(key.expose_secret_pem().as_bytes()).unwrap();
        assert_eq!(key.public_key_raw(), again.public_key_raw());
    }

    #[test]
    fn rejects_non_keys() {
        assert_eq!(CaKey::from_pem(b"garbage").unwrap_err(), KeyError::NoKey);
        let cert_only = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            CaKey::from_pem(cert_only.as_bytes()).unwrap_err(),
            KeyError::NoKey
        );
        let bad = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            CaKey::from_pem(bad.as_bytes()).unwrap_err(),
            KeyError::Rejected(_)
        ));
    }
}
