//! Trust bundles: the X.509 roots and JWT keys of a trust domain.
//!
//! A [`TrustBundle`] holds *several* X.509 authorities because root rotation
//! needs an overlap: during a rotation the old and the new root are both
//! trusted. A [`BundleSet`] maps trust domains to their bundles; verifiers use
//! it to pick the bundle of the peer's own trust domain.
//!
//! Bundles travel in two formats:
//!
//! - PEM ([`TrustBundle::from_pem`], [`TrustBundle::to_pem`]): concatenated
//!   `CERTIFICATE` blocks, X.509 authorities only (Istio `root-cert.pem`);
//! - SPIFFE bundle JSON ([`TrustBundle::from_spiffe_json`],
//!   [`TrustBundle::to_spiffe_json`]): a JWK Set carrying both X.509 and JWT
//!   authorities plus `spiffe_sequence` and `spiffe_refresh_hint`.
//!
//! Decoding bounds input size and entry counts and fails with a
//! [`BundleError`] naming the offending block or key.

use std::collections::BTreeMap;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::spiffe_id::TrustDomain;

mod error;
mod json;
mod jwk;
mod pem;

#[cfg(test)]
mod tests;

pub use error::BundleError;
pub use json::{MAX_JSON_BUNDLE_KEYS, MAX_JSON_BUNDLE_LEN, USE_JWT_SVID, USE_X509_SVID};
pub use pem::{MAX_PEM_BUNDLE_LEN, MAX_PEM_CERTIFICATES};

/// Parses `der` as exactly one X.509 certificate (no trailing bytes).
fn parse_certificate(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        ));
    }
    Ok(cert)
}

/// A JWT signing authority of a trust domain: a public JWK with its key ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtAuthority {
    key_id: String,
    jwk: serde_json::Map<String, serde_json::Value>,
}

impl JwtAuthority {
    /// A JWT authority from its key ID and the public JWK members.
    pub fn new(key_id: impl Into<String>, jwk: serde_json::Map<String, serde_json::Value>) -> Self {
        Self {
            key_id: key_id.into(),
            jwk,
        }
    }

    /// The key ID (`kid`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public JWK members (including `kid`).
    pub fn jwk(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.jwk
    }
}

/// The trust material of one trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<CertificateDer<'static>>,
    jwt_authorities: Vec<JwtAuthority>,
    sequence: Option<u64>,
    refresh_hint: Option<Duration>,
}

impl TrustBundle {
    /// An empty bundle for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: None,
            refresh_hint: None,
        }
    }

    /// A bundle for `trust_domain` holding `roots` (duplicates dropped).
    pub fn with_x509_authorities(
        trust_domain: TrustDomain,
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Self {
        let mut bundle = Self::new(trust_domain);
        for root in roots {
            bundle.add_x509_authority(root);
        }
        bundle
    }

    /// The trust domain this bundle belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The X.509 authorities (roots), in insertion order.
    pub fn x509_authorities(&self) -> &[CertificateDer<'static>] {
        &self.x509_authorities
    }

    /// Adds an X.509 authority; a certificate already present is not added
    /// twice. Returns whether it was added.
    pub fn add_x509_authority(&mut self, der: CertificateDer<'static>) -> bool {
        if self.x509_authorities.contains(&der) {
            return false;
        }
        self.x509_authorities.push(der);
        true
    }

    /// Removes an X.509 authority (e.g. a retired root). Returns whether it
    /// was present.
    pub fn remove_x509_authority(&mut self, der: &CertificateDer<'_>) -> bool {
        let before = self.x509_authorities.len();
        self.x509_authorities.retain(|c| c.as_ref() != der.as_ref());
        before != self.x509_authorities.len()
    }

    /// The JWT authorities.
    pub fn jwt_authorities(&self) -> &[JwtAuthority] {
        &self.jwt_authorities
    }

    /// Adds or replaces (by key ID) a JWT authority.
    pub fn upsert_jwt_authority(&mut self, authority: JwtAuthority) {
        self.jwt_authorities
            .retain(|a| a.key_id != authority.key_id);
        self.jwt_authorities.push(authority);
    }

    /// The SPIFFE bundle sequence number (`spiffe_sequence`), if any.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// Sets the sequence number.
    pub fn set_sequence(&mut self, sequence: Option<u64>) {
        self.sequence = sequence;
    }

    /// The refresh hint (`spiffe_refresh_hint`), if any.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// Sets the refresh hint.
    pub fn set_refresh_hint(&mut self, hint: Option<Duration>) {
        self.refresh_hint = hint;
    }
}

/// Trust bundles for several trust domains (the local one and federated
/// ones), keyed by trust domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleSet {
    bundles: BTreeMap<TrustDomain, TrustBundle>,
}

impl BundleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts (or replaces) the bundle of its trust domain.
    pub fn insert(&mut self, bundle: TrustBundle) {
        self.bundles.insert(bundle.trust_domain.clone(), bundle);
    }

    /// The bundle of `trust_domain`, if known.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&TrustBundle> {
        self.bundles.get(trust_domain)
    }

    /// All bundles, ordered by trust domain.
    pub fn iter(&self) -> impl Iterator<Item = &TrustBundle> {
        self.bundles.values()
    }

    /// The number of trust domains in the set.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// Whether the set holds no bundle.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }
}

impl From<TrustBundle> for BundleSet {
    fn from(bundle: TrustBundle) -> Self {
        let mut set = Self::new();
        set.insert(bundle);
        set
    }
}
