//! Why a certificate was not issued.

use sigil_identity::{SpiffeId, TrustDomain};

use super::ttl::TtlError;

/// Why an issuance request was refused. Nothing is signed when any of these
/// is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The CSR is larger than the configured bound.
    #[error("CSR is {size} bytes; the limit is {limit}")]
    CsrTooLarge {
        /// The CSR's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The CSR is neither a PEM `CERTIFICATE REQUEST` nor DER PKCS#10.
    #[error("CSR is not a PKCS#10 request in PEM or DER: {reason}")]
    CsrMalformed {
        /// What the parser said.
        reason: String,
    },
    /// The CSR's self-signature does not verify with its own public key.
    #[error("CSR signature does not verify with the CSR's public key")]
    CsrSignatureInvalid,
    /// The CSR is signed with a broken hash (MD5, SHA-1).
    #[error("CSR is signed with {algorithm}, which is not accepted; use SHA-256 or stronger")]
    WeakSignatureAlgorithm {
        /// The algorithm's name.
        algorithm: &'static str,
    },
    /// The CSR is signed with an algorithm outside the allowlist.
    #[error("CSR signature algorithm {oid} is not supported")]
    UnsupportedSignatureAlgorithm {
        /// The algorithm's OID.
        oid: String,
    },
    /// The key type is outside the allowlist
    /// (ECDSA P-256/P-384, RSA 2048–8192 with e = 65537, Ed25519).
    #[error(
        "CSR key algorithm {oid} is not allowed; use ECDSA P-256/P-384, RSA 2048-8192 or Ed25519"
    )]
    UnsupportedKeyAlgorithm {
        /// The key algorithm's OID.
        oid: String,
    },
    /// An EC key on a curve other than P-256 or P-384.
    #[error("CSR EC key uses curve {curve}; only P-256 and P-384 are allowed")]
    UnsupportedCurve {
        /// The curve's OID.
        curve: String,
    },
    /// An EC key with explicit (or absent) curve parameters instead of a named curve.
    #[error("CSR EC key has explicit or missing curve parameters; only named curves are allowed")]
    ExplicitCurve,
    /// An RSA key outside 2048–8192 bits.
    #[error("CSR RSA key is {bits} bits; 2048 to 8192 bits are allowed")]
    RsaKeySize {
        /// The modulus size.
        bits: usize,
    },
    /// An RSA key whose public exponent is not 65537.
    #[error("CSR RSA key has public exponent {exponent}; only 65537 is allowed")]
    RsaExponent {
        /// The exponent, in hex.
        exponent: String,
    },
    /// The CSR asks for a DNS, IP, email or other non-URI SAN.
    #[error("CSR requests a {kind} SAN {value:?}; only the SPIFFE ID URI SAN is allowed")]
    ForbiddenSan {
        /// The SAN type (`DNS`, `IP`, `email`, ...).
        kind: &'static str,
        /// The requested value.
        value: String,
    },
    /// The CSR asks for several URI SANs.
    #[error("CSR requests {count} URI SANs; an X509-SVID has exactly one")]
    MultipleUriSans {
        /// How many were requested.
        count: usize,
    },
    /// The CSR's URI SAN is not the identity the caller is authorized for.
    #[error(
        "CSR requests identity {requested:?}, but the caller is authorized only for {authorized}"
    )]
    SanMismatch {
        /// The URI the CSR asked for.
        requested: String,
        /// The identity the caller may hold.
        authorized: SpiffeId,
    },
    /// The CSR asks for a CA certificate (BasicConstraints CA:true).
    #[error(
        "CSR requests a CA certificate (BasicConstraints CA:true); workload certificates are never CAs"
    )]
    RequestsCa,
    /// The CSR asks for keyCertSign or cRLSign.
    #[error("CSR requests certificate or CRL signing key usage; workload certificates cannot sign")]
    RequestsSigningUsage,
    /// The CSR carries a critical extension Sigil does not understand.
    #[error("CSR carries unsupported critical extension {oid}")]
    UnsupportedCriticalExtension {
        /// The extension's OID.
        oid: String,
    },
    /// The CSR carries more than one extensionRequest attribute.
    #[error("CSR carries several extensionRequest attributes")]
    DuplicateExtensionRequest,
    /// The authorized identity belongs to another trust domain.
    #[error("identity {id} is not in this CA's trust domain {trust_domain}")]
    WrongTrustDomain {
        /// The identity.
        id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// The authorized identity is a trust domain ID, which names no workload.
    #[error("identity {id} is a trust domain ID; a workload identity needs a path")]
    TrustDomainIdentity {
        /// The identity.
        id: SpiffeId,
    },
    /// The requested lifetime is invalid.
    #[error(transparent)]
    InvalidTtl(#[from] TtlError),
    /// The signing certificate has expired or is not valid yet: nothing can
    /// be issued until the CA is renewed.
    #[error("the signing certificate is not valid at this time (valid until {not_after})")]
    AuthorityNotValid {
        /// The signing certificate's notAfter (RFC 3339).
        not_after: String,
    },
    /// Signing failed inside the crypto library.
    #[error("signing failed: {0}")]
    Signing(String),
}
