//! Workload keys: generated on the node, one per certificate, never sent
//! anywhere; and the PKCS#10 request that proves possession of one.
//!
//! ```text
//! KeyAlgorithm ─▶ generate ─▶ PrivateKey (PKCS#8, zeroized) ─▶ csr_pem(key, id) ─▶ CSR PEM ─▶ CA
//! ```
//!
//! ECDSA and Ed25519 keys come from *ring*; RSA keys from the `rsa` crate
//! (ring cannot generate RSA), exported to PKCS#8 DER straight into a
//! zeroizing buffer. The CSR has the shape ztunnel sends: an empty subject
//! and exactly one subjectAltName, the SPIFFE ID as URI, marked critical
//! (RFC 5280 §4.2.1.6: "If the subject field contains an empty sequence,
//! then the issuing CA MUST include a subjectAltName extension that is
//! marked as critical"). Sigil's CA accepts every algorithm here (P-256,
//! P-384, Ed25519, RSA 2048..=8192 with e = 65537; `ca/src/issue/csr.rs`).
//!
//! rcgen copies the PKCS#8 bytes into its own `KeyPair` while signing the
//! CSR; that copy is not zeroized by rcgen and lives only for the duration
//! of [`csr_pem`].

use std::fmt;
use std::str::FromStr;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, SignatureAlgorithm};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use rsa::pkcs8::EncodePrivateKey as _;
use rustls_pki_types::PrivatePkcs8KeyDer;
use sigil_identity::{PrivateKey, SpiffeId};
use zeroize::Zeroizing;

#[cfg(test)]
mod tests;

/// The algorithm of the workload keys the agent generates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default, as ztunnel).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA, 2048-bit modulus, PKCS#1 v1.5 with SHA-256 (as istio-agent).
    Rsa2048,
    /// RSA, 3072-bit modulus, PKCS#1 v1.5 with SHA-256.
    Rsa3072,
}

impl KeyAlgorithm {
    /// Every algorithm, in the order of their names.
    pub const ALL: [Self; 5] = [
        Self::EcdsaP256,
        Self::EcdsaP384,
        Self::Ed25519,
        Self::Rsa2048,
        Self::Rsa3072,
    ];

    /// The configuration name (`ecdsa-p256`, `ecdsa-p384`, `ed25519`,
    /// `rsa-2048`, `rsa-3072`).
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
        }
    }

    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
            Self::Rsa2048 | Self::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// Whether generating a key takes long enough (RSA: tens to hundreds
    /// of milliseconds) that it belongs on a blocking thread.
    pub fn is_slow(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| KeyError::UnknownAlgorithm { name: s.to_owned() })
    }
}

/// Why a key or a CSR could not be made. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The configured name is not an algorithm.
    #[error(
        "unknown key algorithm {name:?}: expected one of ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072"
    )]
    UnknownAlgorithm {
        /// The name given.
        name: String,
    },
    /// Key generation failed (the system random source, or an encoder).
    #[error("cannot generate a {algorithm} key: {reason}")]
    Generate {
        /// The algorithm.
        algorithm: KeyAlgorithm,
        /// Why.
        reason: String,
    },
    /// The CSR could not be built or signed.
    #[error("cannot build the certificate request for {spiffe_id}: {reason}")]
    Csr {
        /// The identity asked for.
        spiffe_id: String,
        /// Why.
        reason: String,
    },
}

/// A fresh private key of `algorithm`.
pub fn generate(algorithm: KeyAlgorithm) -> Result<PrivateKey, KeyError> {
    let fail = |reason: String| KeyError::Generate { algorithm, reason };
    let rng = SystemRandom::new();
    let mut der: Zeroizing<Vec<u8>> = match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            let alg = if algorithm == KeyAlgorithm::EcdsaP256 {
                &ECDSA_P256_SHA256_ASN1_SIGNING
            } else {
                &ECDSA_P384_SHA384_ASN1_SIGNING
            };
            let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|e| fail(e.to_string()))?;
            Zeroizing::new(doc.as_ref().to_vec())
        }
        KeyAlgorithm::Ed25519 => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| fail(e.to_string()))?;
            Zeroizing::new(doc.as_ref().to_vec())
        }
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => {
            let bits = if algorithm == KeyAlgorithm::Rsa2048 {
                2048
            } else {
                3072
            };
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits)
                .map_err(|e| fail(e.to_string()))?;
            // `SecretDocument` zeroizes its own buffer on drop.
            let doc = key.to_pkcs8_der().map_err(|e| fail(e.to_string()))?;
            Zeroizing::new(doc.as_bytes().to_vec())
        }
    };
    // `from_pkcs8_der` takes the buffer over and zeroizes it on drop.
    PrivateKey::from_pkcs8_der(std::mem::take(&mut *der)).map_err(|e| fail(e.to_string()))
}

/// A PEM PKCS#10 request for `id`, signed with `key` (of `algorithm`):
/// empty subject, one critical URI SAN.
pub fn csr_pem(
    key: &PrivateKey,
    algorithm: KeyAlgorithm,
    id: &SpiffeId,
) -> Result<String, KeyError> {
    let fail = |reason: String| KeyError::Csr {
        spiffe_id: id.to_string(),
        reason,
    };
    let pkcs8 = PrivatePkcs8KeyDer::from(key.secret_der());
    let pair = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, algorithm.signature_algorithm())
        .map_err(|e| fail(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = id
        .to_string()
        .try_into()
        .map_err(|e: rcgen::Error| fail(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params
        .serialize_request(&pair)
        .and_then(|csr| csr.pem())
        .map_err(|e| fail(e.to_string()))
}

/// A fresh key of `algorithm` and its CSR for `id`.
pub fn key_and_csr(
    algorithm: KeyAlgorithm,
    id: &SpiffeId,
) -> Result<(PrivateKey, String), KeyError> {
    let key = generate(algorithm)?;
    let csr = csr_pem(&key, algorithm, id)?;
    Ok((key, csr))
}
