//! [`VerifyError`]: every reason an X509-SVID or its chain is refused.
//!
//! One variant per rule, so a log line or a test names the exact rule a
//! certificate broke. Conversion into [`rustls::Error`] lives in
//! `verify/rustls.rs`, next to the verifiers that need it.

use rustls_pki_types::UnixTime;

use crate::spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};

use super::usage::Usage;

/// Why an X509-SVID (or a signing certificate, or a whole chain) was refused.
///
/// Variants carry what an operator needs to fix the problem (the offending
/// URI, trust domain, certificate subject, limit and actual value); they
/// never carry key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    // === chain shape ===
    /// No certificate was presented.
    #[error("no certificate presented: an X509-SVID chain needs at least the leaf")]
    EmptyChain,
    /// More certificates were presented than the verifier accepts.
    #[error("certificate chain has {len} certificates; the limit is {max}")]
    ChainTooLong {
        /// The number of certificates presented.
        len: usize,
        /// The limit ([`super::MAX_CHAIN_LEN`]).
        max: usize,
    },
    /// The presented certificates are larger in total than the verifier
    /// accepts.
    #[error("certificate chain is {bytes} bytes long; the limit is {max}")]
    ChainTooLarge {
        /// The total DER size presented.
        bytes: usize,
        /// The limit ([`super::MAX_CHAIN_BYTES`]).
        max: usize,
    },
    /// A certificate is not well-formed DER X.509 (or carries an extension
    /// twice or in a form that does not parse).
    #[error("malformed certificate: {0}")]
    Malformed(String),

    // === leaf rules (X509-SVID §2, §4) ===
    /// The leaf has no URI SAN (it may have DNS or other SANs only).
    #[error(
        "leaf certificate has no URI SAN; an X509-SVID carries its SPIFFE ID as exactly one URI SAN"
    )]
    NoUriSan,
    /// The leaf has more than one URI SAN.
    #[error("leaf certificate has {count} URI SANs; an X509-SVID must carry exactly one")]
    MultipleUriSans {
        /// The number of URI SANs found.
        count: usize,
    },
    /// The leaf's URI SAN is not a valid SPIFFE ID.
    #[error("leaf URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    InvalidSpiffeId {
        /// The URI SAN as found in the certificate.
        uri: String,
        /// The SPIFFE-ID rule it breaks.
        #[source]
        source: SpiffeIdError,
    },
    /// The leaf's SPIFFE ID is a trust domain ID (no path), which names a
    /// trust domain and never a workload.
    #[error("leaf SPIFFE ID {id} has no path: a trust domain ID cannot identify a workload")]
    TrustDomainIdAsLeaf {
        /// The trust domain ID found.
        id: SpiffeId,
    },
    /// The leaf has no BasicConstraints extension (CA:false must be explicit).
    #[error("leaf certificate has no BasicConstraints extension; it must be present with CA:false")]
    MissingBasicConstraints,
    /// The leaf has BasicConstraints CA:true.
    #[error("leaf certificate has BasicConstraints CA:true; an X509-SVID leaf must set CA:false")]
    LeafIsCa,
    /// The leaf has no KeyUsage extension.
    #[error("leaf certificate has no KeyUsage extension; it must be present with digitalSignature")]
    MissingKeyUsage,
    /// The leaf's KeyUsage lacks digitalSignature.
    #[error("leaf certificate KeyUsage lacks digitalSignature, which an X509-SVID leaf must set")]
    MissingDigitalSignature,
    /// The leaf's KeyUsage sets keyCertSign or cRLSign.
    #[error(
        "leaf certificate KeyUsage sets {bit}; an X509-SVID leaf must not set keyCertSign or cRLSign"
    )]
    LeafCanSign {
        /// The offending bit: `"keyCertSign"` or `"cRLSign"`.
        bit: &'static str,
    },

    // === signing certificate rules (X509-SVID §4) ===
    /// A signing (CA) certificate has no BasicConstraints, or CA:false.
    #[error(
        "signing certificate {subject:?} is not a CA: BasicConstraints must be present with CA:true"
    )]
    SigningCertNotCa {
        /// The certificate's subject DN.
        subject: String,
    },
    /// A signing certificate has no KeyUsage extension.
    #[error("signing certificate {subject:?} has no KeyUsage extension; it must set keyCertSign")]
    SigningCertMissingKeyUsage {
        /// The certificate's subject DN.
        subject: String,
    },
    /// A signing certificate's KeyUsage lacks keyCertSign.
    #[error("signing certificate {subject:?} KeyUsage lacks keyCertSign")]
    SigningCertMissingKeyCertSign {
        /// The certificate's subject DN.
        subject: String,
    },

    // === trust ===
    /// The leaf's trust domain has no bundle in the verifier's bundle set.
    #[error(
        "no trust bundle for trust domain {trust_domain:?}; add or federate its bundle to accept its workloads"
    )]
    UnknownTrustDomain {
        /// The leaf's trust domain.
        trust_domain: TrustDomain,
    },
    /// The trust domain's bundle holds no X.509 authority.
    #[error("trust bundle of {trust_domain:?} holds no X.509 authority")]
    NoX509Authorities {
        /// The trust domain of the empty bundle.
        trust_domain: TrustDomain,
    },
    /// A root in the trust domain's bundle cannot be used as a trust anchor.
    #[error("trust bundle of {trust_domain:?} holds an unusable X.509 authority: {reason}")]
    BadTrustAnchor {
        /// The trust domain of the bundle.
        trust_domain: TrustDomain,
        /// Why the root was rejected.
        reason: String,
    },
    /// The chain does not lead to any root of the leaf's trust domain.
    #[error(
        "certificate chain does not lead to a root in the bundle of {trust_domain:?} (unknown issuer)"
    )]
    UnknownIssuer {
        /// The leaf's trust domain, whose roots were tried.
        trust_domain: TrustDomain,
    },
    /// A signature in the chain does not verify.
    #[error("a certificate signature in the chain is invalid")]
    BadSignature,
    /// A certificate is signed with an algorithm the verifier does not
    /// support (or that does not fit the issuer's key).
    #[error("a certificate in the chain uses an unsupported signature algorithm")]
    UnsupportedSignatureAlgorithm,
    /// A certificate in the path that issued another is not a CA.
    #[error("a certificate used as an issuer in the chain is not a CA")]
    IssuerNotCa,
    /// A certificate in the path has expired.
    #[error("certificate expired: validation time {time:?} is after notAfter {not_after:?}")]
    Expired {
        /// The validation time.
        time: UnixTime,
        /// The certificate's notAfter.
        not_after: UnixTime,
    },
    /// A certificate in the path is not valid yet.
    #[error(
        "certificate not valid yet: validation time {time:?} is before notBefore {not_before:?}"
    )]
    NotYetValid {
        /// The validation time.
        time: UnixTime,
        /// The certificate's notBefore.
        not_before: UnixTime,
    },
    /// The leaf has an ExtendedKeyUsage extension without the purpose the
    /// verifier requires.
    #[error(
        "leaf ExtendedKeyUsage does not allow {usage:?}; add id-kp-serverAuth and id-kp-clientAuth"
    )]
    RequiredEkuNotFound {
        /// The required usage.
        usage: Usage,
    },
    /// Chain verification failed for another reason (the webpki error).
    #[error("certificate chain verification failed: {0}")]
    Other(String),

    // === policy ===
    /// The chain is valid but the peer's SPIFFE ID is not one the verifier
    /// accepts.
    #[error("peer SPIFFE ID {id} is not allowed by this verifier's ID matcher")]
    IdNotAllowed {
        /// The peer's (verified) SPIFFE ID.
        id: SpiffeId,
    },
}
