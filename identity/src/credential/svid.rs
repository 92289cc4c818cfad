//! [`X509Svid`]: an X.509-SVID chain and its private key, checked to
//! belong together.

use std::fmt;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::error::CredentialError;
use super::key::PrivateKey;
use crate::spiffe_id::SpiffeId;
use crate::verify::leaf_facts;

/// An X.509-SVID: the chain (leaf first, then intermediates) and the
/// leaf's private key.
///
/// Construction checks the leaf against the X509-SVID rules
/// ([`crate::verify::check_leaf`]), reads its SPIFFE ID and notAfter, and
/// refuses a key that does not match the leaf's public key. It does not
/// check the chain against a trust bundle: a credential is one's own, its
/// peers verify it.
#[derive(Clone)]
pub struct X509Svid {
    spiffe_id: SpiffeId,
    not_after: UnixTime,
    key: PrivateKey,
    certified: Arc<CertifiedKey>,
}

impl X509Svid {
    /// `chain` (leaf first) with the leaf's `key`.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKey,
    ) -> Result<Self, CredentialError> {
        let leaf = chain.first().ok_or(CredentialError::EmptyChain)?;
        let facts = leaf_facts(leaf.as_ref())?;
        // The chain is kept once, inside the rustls `CertifiedKey` (a node
        // agent holds thousands of these).
        let certified = certified_key(chain, &key)?;
        Ok(Self {
            spiffe_id: facts.spiffe_id,
            not_after: facts.not_after,
            key,
            certified,
        })
    }

    /// From PEM: the certificates of `chain_pem` (leaf first) and the
    /// PKCS#8 key of `key_pem`.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, CredentialError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CredentialError::ChainPem {
                reason: e.to_string(),
            })?;
        Self::new(chain, PrivateKey::from_pem(key_pem)?)
    }

    /// The leaf's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The leaf's private key.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The leaf's notAfter (intermediates may expire earlier).
    pub fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// The chain and key as rustls serves them.
    pub(super) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }
}

impl fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after.as_secs())
            .field("chain_len", &self.certified.cert.len())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// `chain` and `key` as a rustls [`CertifiedKey`], refusing a key that is
/// not the leaf's (SubjectPublicKeyInfo compared; every *ring* key knows
/// its public key, so "cannot tell" is a refusal too).
pub(super) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKey,
) -> Result<Arc<CertifiedKey>, CredentialError> {
    if chain.is_empty() {
        return Err(CredentialError::EmptyChain);
    }
    let certified = CertifiedKey::new(chain, key.signing_key()?);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(CredentialError::KeyMismatch),
        Err(e) => Err(CredentialError::Certificate {
            reason: e.to_string(),
        }),
    }
}
