//! The signing authority: a signing key, its certificate, and the chain from
//! that certificate to a root.
//!
//! An [`Authority`] is immutable and validated once, when it is built:
//!
//! ```text
//!  files / generated root ──▶ Material ──validate──▶ Authority ──▶ issuer
//!                                        │
//!            key matches cert, every chain certificate is a CA with
//!            keyCertSign, valid now, RSA ≥ 2048, no URI name constraints,
//!            each link's signature verifies, the chain reaches a root
//! ```
//!
//! Sources live in [`source`]: a self-signed root created on first start,
//! or plug-in material in Istio's or cert-manager's layout. Every loader
//! ends with a self-test (`probe`): a probe SVID signed by the new
//! authority must verify to its roots. Plug-in key files readable by group
//! or others are reported as [`KeyFileWarning`]s, not refused.
//!
//! This module does not depend on `issue` (which signs with an
//! [`Authority`]); what both need, serial numbers, is in
//! [`crate::serial`].

mod error;
mod key;
mod probe;
pub mod source;

use std::path::{Path, PathBuf};

use rcgen::Issuer;
use rustls_pki_types::CertificateDer;
use sigil_identity::TrustDomain;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use zeroize::Zeroizing;

pub use error::AuthorityError;
pub use key::{CaKey, KeyError};

/// The longest chain (signing certificate up to and including the root)
/// an authority accepts.
pub const MAX_CHAIN_LEN: usize = 8;

/// The minimum RSA modulus size anywhere in the chain.
pub const MIN_RSA_BITS: usize = 2048;

/// A certificate read from a file, remembered with where it came from so
/// errors can name the file.
#[derive(Clone, Debug)]
pub struct SourcedCert {
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// The file it was read from.
    pub path: PathBuf,
    /// Its position in that file, from 0.
    pub index: usize,
}

/// Unvalidated CA material, as read from a source.
#[derive(Debug)]
pub struct Material {
    /// The certificate of the signing key.
    pub signing_cert: SourcedCert,
    /// The signing key, PEM (PKCS#8, PKCS#1 or SEC1). It is parsed only
    /// after the signing certificate passed its checks, so a weak key is
    /// reported as such rather than as unparsable.
    pub key_pem: Zeroizing<Vec<u8>>,
    /// Where the key came from (for errors).
    pub key_path: PathBuf,
    /// Certificates that may link the signing certificate to a root.
    pub chain: Vec<SourcedCert>,
    /// The trust anchors; all of them form the trust bundle.
    pub roots: Vec<SourcedCert>,
    /// The file the roots came from (for errors).
    pub roots_path: PathBuf,
}

/// A plug-in key file that group or others may read (mode `& 0o077 != 0`).
/// Reported (logged at load, and as a metric by the server), not refused:
/// Kubernetes Secret volumes are mounted 0644 unless `defaultMode` says
/// otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFileWarning {
    /// The key file.
    pub path: PathBuf,
    /// Its permission bits (`0o644`).
    pub mode: u32,
}

impl std::fmt::Display for KeyFileWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: CA private key file has mode {:04o}, readable by group or others; restrict it to 0600 (Kubernetes: the Secret volume's defaultMode: 0400)",
            self.path.display(),
            self.mode
        )
    }
}

/// A validated signing authority.
pub struct Authority {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, CaKey>,
    /// Everything an issued chain carries after the leaf:
    /// `[signing cert, intermediates..., root]`, or `[root]` when the root
    /// signs directly.
    chain_after_leaf: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key_algorithm: &'static str,
    /// Set by the plug-in directory loader.
    key_file_warnings: Vec<KeyFileWarning>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("key_algorithm", &self.key_algorithm)
            .field("chain_len", &self.chain_after_leaf.len())
            .field("roots", &self.roots.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Validates `material` at time `now` and builds the authority.
    pub fn from_material(
        trust_domain: TrustDomain,
        material: Material,
        now: OffsetDateTime,
    ) -> Result<Self, AuthorityError> {
        let Material {
            signing_cert,
            key_pem,
            key_path,
            chain,
            roots,
            roots_path,
        } = material;

        let signing = parse(&signing_cert)?;
        check_ca(&signing_cert, &signing, now)?;
        let key = CaKey::from_pem(&key_pem).map_err(|source| AuthorityError::BadKey {
            path: key_path.clone(),
            source,
        })?;
        drop(key_pem);
        if signing.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(AuthorityError::KeyMismatch {
                key_path,
                cert_path: signing_cert.path.clone(),
            });
        }
        check_trust_domain(&signing_cert, &signing, &trust_domain)?;

        // Walk issuer links from the signing certificate to a root.
        let parsed_chain: Vec<_> = chain
            .iter()
            .map(|c| parse(c).map(|p| (c, p)))
            .collect::<Result<_, _>>()?;
        let parsed_roots: Vec<_> = roots
            .iter()
            .map(|c| parse(c).map(|p| (c, p)))
            .collect::<Result<_, _>>()?;
        // Weak keys first: ring cannot even check a signature made with an
        // RSA key under 2048 bits, which would otherwise surface as a
        // misleading "no issuer found".
        for (cert, parsed) in parsed_chain.iter().chain(parsed_roots.iter()) {
            check_key_strength(cert, parsed)?;
        }

        let mut chain_after_leaf = vec![signing_cert.der.clone()];
        let mut current: (&SourcedCert, &X509Certificate<'_>) = (&signing_cert, &signing);
        let is_root = |der: &CertificateDer<'_>| roots.iter().any(|r| r.der == *der);
        let mut reached_root = is_root(&signing_cert.der);
        while !reached_root {
            if chain_after_leaf.len() >= MAX_CHAIN_LEN {
                return Err(AuthorityError::ChainTooLong {
                    path: signing_cert.path.clone(),
                    limit: MAX_CHAIN_LEN,
                });
            }
            let (cert, x509) = current;
            if is_self_signed(x509) {
                return Err(AuthorityError::ChainNotToRoot {
                    path: cert.path.clone(),
                    subject: x509.subject().to_string(),
                    roots: roots_path,
                });
            }
            // Prefer a root as the issuer, so a root copied into the chain
            // file still ends the walk.
            let issuer = parsed_roots
                .iter()
                .chain(parsed_chain.iter())
                .find(|(_, candidate)| issued_by(x509, candidate))
                .ok_or_else(|| AuthorityError::ChainIncomplete {
                    path: cert.path.clone(),
                    subject: x509.subject().to_string(),
                    issuer: x509.issuer().to_string(),
                })?;
            let (issuer_cert, issuer_x509) = (issuer.0, &issuer.1);
            check_ca(issuer_cert, issuer_x509, now)?;
            chain_after_leaf.push(issuer_cert.der.clone());
            reached_root = is_root(&issuer_cert.der);
            current = (issuer_cert, issuer_x509);
        }
        // Every root in the bundle must itself be usable as an anchor.
        for (root, parsed) in &parsed_roots {
            check_ca(root, parsed, now)?;
        }

        let issuer = Issuer::from_ca_cert_der(&signing_cert.der, key).map_err(|e| {
            AuthorityError::BadCertificate {
                path: signing_cert.path.clone(),
                index: signing_cert.index,
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            trust_domain,
            key_algorithm: issuer.key().algorithm_name(),
            issuer,
            chain_after_leaf,
            roots: roots.into_iter().map(|r| r.der).collect(),
            not_before: signing.validity().not_before.to_datetime(),
            not_after: signing.validity().not_after.to_datetime(),
            key_file_warnings: Vec::new(),
        })
    }

    /// The trust domain this authority issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The rcgen issuer (signing key plus issuer name and key identifier).
    pub(crate) fn issuer(&self) -> &Issuer<'static, CaKey> {
        &self.issuer
    }

    /// What an issued chain carries after the leaf:
    /// `[signing certificate, intermediates..., root]`.
    pub fn chain_after_leaf(&self) -> &[CertificateDer<'static>] {
        &self.chain_after_leaf
    }

    /// The signing certificate.
    pub fn signing_cert(&self) -> Option<&CertificateDer<'static>> {
        self.chain_after_leaf.first()
    }

    /// All trusted roots (the trust bundle), in file order.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// When the signing certificate becomes valid.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// When the signing certificate expires; no leaf outlives it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The signing key's algorithm, e.g. `ECDSA P-256`.
    pub fn key_algorithm(&self) -> &'static str {
        self.key_algorithm
    }

    /// Key files found readable by group or others when this authority was
    /// loaded from a plug-in directory (empty otherwise).
    pub fn key_file_warnings(&self) -> &[KeyFileWarning] {
        &self.key_file_warnings
    }
}

// === validation helpers ===

fn parse(cert: &SourcedCert) -> Result<X509Certificate<'_>, AuthorityError> {
    match X509Certificate::from_der(cert.der.as_ref()) {
        Ok(([], parsed)) => Ok(parsed),
        Ok(_) => Err(bad_cert(cert, "trailing bytes after the certificate")),
        Err(e) => Err(bad_cert(cert, &e.to_string())),
    }
}

fn bad_cert(cert: &SourcedCert, reason: &str) -> AuthorityError {
    AuthorityError::BadCertificate {
        path: cert.path.clone(),
        index: cert.index,
        reason: reason.to_owned(),
    }
}

/// Checks that a certificate can act as a CA in the chain at `now`.
fn check_ca(
    cert: &SourcedCert,
    x509: &X509Certificate<'_>,
    now: OffsetDateTime,
) -> Result<(), AuthorityError> {
    let path = || cert.path.clone();
    let subject = || x509.subject().to_string();
    // X509-SVID §4.1: "Signing certificates MUST set the cA field to true."
    let is_ca = matches!(x509.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    if !is_ca {
        return Err(AuthorityError::NotACa {
            path: path(),
            subject: subject(),
        });
    }
    // X509-SVID §4.3: "Signing certificates MUST set keyCertSign."
    let can_sign = matches!(x509.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
    if !can_sign {
        return Err(AuthorityError::NoKeyCertSign {
            path: path(),
            subject: subject(),
        });
    }
    let validity = x509.validity();
    let not_before = validity.not_before.to_datetime();
    let not_after = validity.not_after.to_datetime();
    if now < not_before {
        return Err(AuthorityError::NotYetValid {
            path: path(),
            subject: subject(),
            not_before: rfc3339(not_before),
        });
    }
    if now > not_after {
        return Err(AuthorityError::Expired {
            path: path(),
            subject: subject(),
            not_after: rfc3339(not_after),
        });
    }
    check_key_strength(cert, x509)?;
    for ext in x509.extensions() {
        if let ParsedExtension::NameConstraints(nc) = ext.parsed_extension() {
            let subtrees = nc
                .permitted_subtrees
                .iter()
                .flatten()
                .chain(nc.excluded_subtrees.iter().flatten());
            if subtrees
                .clone()
                .any(|s| matches!(s.base, GeneralName::URI(_)))
            {
                return Err(AuthorityError::UriNameConstraints {
                    path: path(),
                    subject: subject(),
                });
            }
        }
    }
    Ok(())
}

/// Refuses RSA keys under [`MIN_RSA_BITS`].
fn check_key_strength(
    cert: &SourcedCert,
    x509: &X509Certificate<'_>,
) -> Result<(), AuthorityError> {
    if let Ok(PublicKey::RSA(rsa)) = x509.public_key().parsed() {
        let bits = rsa.key_size();
        if bits < MIN_RSA_BITS {
            return Err(AuthorityError::WeakRsaKey {
                path: cert.path.clone(),
                subject: x509.subject().to_string(),
                bits,
            });
        }
    }
    Ok(())
}

fn check_trust_domain(
    cert: &SourcedCert,
    x509: &X509Certificate<'_>,
    expected: &TrustDomain,
) -> Result<(), AuthorityError> {
    let Ok(Some(san)) = x509.subject_alternative_name() else {
        return Ok(());
    };
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Ok(id) = sigil_identity::SpiffeId::parse(uri)
            && id.trust_domain() != expected
        {
            return Err(AuthorityError::TrustDomainMismatch {
                path: cert.path.clone(),
                found: id.trust_domain().to_string(),
                expected: expected.to_string(),
            });
        }
    }
    Ok(())
}

fn is_self_signed(x509: &X509Certificate<'_>) -> bool {
    x509.subject().as_raw() == x509.issuer().as_raw() && x509.verify_signature(None).is_ok()
}

fn issued_by(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    child.issuer().as_raw() == issuer.subject().as_raw()
        && child.verify_signature(Some(issuer.public_key())).is_ok()
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Joins `dir` and `name` (a tiny helper that keeps call sites readable).
pub(crate) fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[cfg(test)]
mod tests;
