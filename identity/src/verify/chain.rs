//! Chain verification: [`verify_x509_svid`].
//!
//! ```text
//! chain[0] ──check_leaf──▶ SPIFFE ID ──trust domain──▶ that domain's bundle
//!    │                                                      │ roots = anchors
//!    └──────────── rustls-webpki path building (EKU, time, signatures) ◀┘
//!                      │ every intermediate in the path
//!                      └──▶ check_signing_certificate
//! ```
//!
//! Path validation is rustls-webpki's; names are never checked (a SPIFFE
//! peer is identified by its URI SAN, not a hostname).

use std::cell::Cell;

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, VerifiedPath};

use crate::bundle::{BundleSet, TrustBundle};
use crate::spiffe_id::{SpiffeId, TrustDomain};

use super::error::VerifyError;
use super::svid::{check_signing_certificate, leaf_facts};
use super::usage::Usage;

/// The most certificates [`verify_x509_svid`] accepts in one chain (leaf,
/// intermediates and a root some peers append).
pub const MAX_CHAIN_LEN: usize = 10;

/// The most DER bytes [`verify_x509_svid`] accepts in one chain, in total.
pub const MAX_CHAIN_BYTES: usize = 64 * 1024;

/// The *ring* signature algorithms chains may use: the same set rustls's
/// *ring* provider verifies.
static SIGNATURE_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_3072_8192_SHA384,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Proof that a chain verified as an X509-SVID: the leaf's SPIFFE ID and
/// notAfter. Only [`verify_x509_svid`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSvid {
    spiffe_id: SpiffeId,
    not_after: UnixTime,
}

impl VerifiedSvid {
    /// The verified SPIFFE ID of the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The verified SPIFFE ID of the leaf, by value.
    pub fn into_spiffe_id(self) -> SpiffeId {
        self.spiffe_id
    }

    /// When the verified chain stops verifying: the earliest notAfter of
    /// the leaf and the intermediates on the verified path (trust anchors
    /// have no validity in webpki).
    pub fn not_after(&self) -> UnixTime {
        self.not_after
    }
}

/// Verifies an X509-SVID chain at `now` for `usage`.
///
/// `chain[0]` is the leaf; the rest are intermediates in any order (a root
/// appended by the peer is harmless). The steps:
/// 1. bound the chain ([`MAX_CHAIN_LEN`], [`MAX_CHAIN_BYTES`]);
/// 2. [`super::check_leaf`] on the leaf, which yields its SPIFFE ID;
/// 3. take *that ID's* trust domain bundle from `bundles`: a chain never
///    verifies against another trust domain's roots;
/// 4. rustls-webpki path building to one of those roots, with `usage` as
///    the required ExtendedKeyUsage and no name check;
/// 5. [`super::check_signing_certificate`] on every intermediate of the
///    path (the roots are trusted as configured).
pub fn verify_x509_svid(
    chain: &[CertificateDer<'_>],
    bundles: &BundleSet,
    now: UnixTime,
    usage: Usage,
) -> Result<VerifiedSvid, VerifyError> {
    let (leaf, intermediates) = chain.split_first().ok_or(VerifyError::EmptyChain)?;
    verify_parts(leaf, intermediates, bundles, now, usage)
}

/// [`verify_x509_svid`] with the leaf and intermediates apart, as rustls
/// hands them over.
pub(super) fn verify_parts(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundles: &BundleSet,
    now: UnixTime,
    usage: Usage,
) -> Result<VerifiedSvid, VerifyError> {
    check_bounds(leaf, intermediates)?;

    let facts = leaf_facts(leaf)?;
    let trust_domain = facts.spiffe_id.trust_domain();
    let bundle = bundles
        .get(trust_domain)
        .ok_or_else(|| VerifyError::UnknownTrustDomain {
            trust_domain: trust_domain.clone(),
        })?;
    let anchors = trust_anchors(bundle)?;

    let end_entity = EndEntityCert::try_from(leaf).map_err(|e| map_webpki(e, trust_domain))?;

    // webpki calls this for each candidate path that is otherwise valid;
    // refusing one lets it try another, so a bad intermediate only fails the
    // chain when no good path exists. The first refusal is kept to report.
    let refused: Cell<Option<VerifyError>> = Cell::new(None);
    // The earliest notAfter of the intermediates on the accepted path: the
    // chain stops verifying then, even if the leaf lives longer.
    let path_not_after: Cell<Option<UnixTime>> = Cell::new(None);
    let check_path = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let mut earliest: Option<UnixTime> = None;
        for cert in path.intermediate_certificates() {
            if let Err(err) = check_signing_certificate(cert.der().as_ref()) {
                let first = refused.take().unwrap_or(err);
                refused.set(Some(first));
                return Err(webpki::Error::UnknownIssuer);
            }
            let not_after = not_after_of(cert.der().as_ref());
            earliest = Some(earliest.map_or(not_after, |e| e.min(not_after)));
        }
        path_not_after.set(earliest);
        Ok(())
    };

    let verified = end_entity.verify_for_usage(
        SIGNATURE_ALGORITHMS,
        &anchors,
        intermediates,
        now,
        usage.key_usage(),
        None,
        Some(&check_path),
    );
    match verified {
        Ok(_) => Ok(VerifiedSvid {
            spiffe_id: facts.spiffe_id,
            not_after: path_not_after
                .get()
                .map_or(facts.not_after, |path| path.min(facts.not_after)),
        }),
        Err(err) => Err(refused
            .take()
            .unwrap_or_else(|| map_webpki_usage(err, trust_domain, usage))),
    }
}

fn check_bounds(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), VerifyError> {
    let len = intermediates.len().saturating_add(1);
    if len > MAX_CHAIN_LEN {
        return Err(VerifyError::ChainTooLong {
            len,
            max: MAX_CHAIN_LEN,
        });
    }
    let bytes = intermediates
        .iter()
        .fold(leaf.len(), |sum, cert| sum.saturating_add(cert.len()));
    if bytes > MAX_CHAIN_BYTES {
        return Err(VerifyError::ChainTooLarge {
            bytes,
            max: MAX_CHAIN_BYTES,
        });
    }
    Ok(())
}

/// The bundle's roots as webpki trust anchors. An unusable root fails the
/// verification (closed) instead of being skipped silently.
fn trust_anchors(bundle: &TrustBundle) -> Result<Vec<TrustAnchor<'_>>, VerifyError> {
    let roots = bundle.x509_authorities();
    if roots.is_empty() {
        return Err(VerifyError::NoX509Authorities {
            trust_domain: bundle.trust_domain().clone(),
        });
    }
    roots
        .iter()
        .map(|root| {
            webpki::anchor_from_trusted_cert(root).map_err(|e| VerifyError::BadTrustAnchor {
                trust_domain: bundle.trust_domain().clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

fn map_webpki_usage(err: webpki::Error, trust_domain: &TrustDomain, usage: Usage) -> VerifyError {
    match err {
        webpki::Error::RequiredEkuNotFoundContext(_) => VerifyError::RequiredEkuNotFound { usage },
        other => map_webpki(other, trust_domain),
    }
}

fn map_webpki(err: webpki::Error, trust_domain: &TrustDomain) -> VerifyError {
    use webpki::Error as E;
    match err {
        E::CertExpired { time, not_after } => VerifyError::Expired { time, not_after },
        E::CertNotValidYet { time, not_before } => VerifyError::NotYetValid { time, not_before },
        E::UnknownIssuer => VerifyError::UnknownIssuer {
            trust_domain: trust_domain.clone(),
        },
        E::InvalidSignatureForPublicKey => VerifyError::BadSignature,
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            VerifyError::UnsupportedSignatureAlgorithm
        }
        E::CaUsedAsEndEntity => VerifyError::LeafIsCa,
        E::EndEntityUsedAsCa => VerifyError::IssuerNotCa,
        E::BadDer
        | E::BadDerTime
        | E::MalformedExtensions
        | E::TrailingData(_)
        | E::UnsupportedCertVersion => VerifyError::Malformed(err.to_string()),
        other => VerifyError::Other(other.to_string()),
    }
}

/// A certificate's notAfter (already parsed and checked by webpki; one that
/// does not parse here counts as expired at the epoch, which only makes
/// callers re-verify sooner).
fn not_after_of(der: &[u8]) -> UnixTime {
    let secs = x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, cert)| u64::try_from(cert.validity().not_after.timestamp()).ok())
        .unwrap_or(0);
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}
