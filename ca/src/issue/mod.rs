//! Issuance: CSR + authorized identity + optional lifetime → an X509-SVID
//! chain `[leaf, intermediates..., root]`.
//!
//! ```text
//!  CSR (PEM/DER) ─▶ size bound ─▶ parse ─▶ signature algorithm allowlist
//!     ─▶ key allowlist ─▶ self-signature verifies ─▶ requested SANs and
//!     extensions refused unless they match ─▶ Sigil's template ─▶ sign
//! ```
//!
//! The leaf comes only from Sigil's template (X509-SVID standard §4, §5):
//! empty subject (or the configured organization), exactly one URI SAN = the
//! authorized SPIFFE ID (critical when the subject is empty), CA:false,
//! digitalSignature (+ keyEncipherment for RSA keys), serverAuth +
//! clientAuth, SKI and AKI, a random positive 128-bit serial, notBefore
//! backdated by the clock-skew allowance, and
//! notAfter = min(now + requested-or-default TTL, now + maximum TTL,
//! signing certificate's notAfter).

mod csr;
mod error;
mod serving;
mod ttl;

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_identity::verify::{Usage, verify_x509_svid};
use sigil_identity::{BundleSet, SpiffeId, TrustBundle};
use time::OffsetDateTime;

use crate::authority::{Authority, AuthorityError, rfc3339};

pub use error::IssueError;
pub use serving::ServingCert;
pub use ttl::{Ttl, TtlError};

/// Default leaf lifetime: 24 hours.
pub const DEFAULT_TTL: Ttl = Ttl::from_const_secs(24 * 3600);
/// Default maximum leaf lifetime: 90 days.
pub const DEFAULT_MAX_TTL: Ttl = Ttl::from_const_secs(90 * 24 * 3600);
/// Default backdating of notBefore for clock skew: 60 seconds.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Default bound on a CSR's size: 64 KiB.
pub const DEFAULT_MAX_CSR_BYTES: usize = 64 * 1024;

/// How certificates are cut: lifetimes, skew, subject and input bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuancePolicy {
    /// Lifetime when the request names none. Default [`DEFAULT_TTL`].
    pub default_ttl: Ttl,
    /// Longest lifetime granted; longer requests are cut. Default
    /// [`DEFAULT_MAX_TTL`].
    pub max_ttl: Ttl,
    /// How far notBefore is backdated. Default [`DEFAULT_CLOCK_SKEW`].
    pub clock_skew: Duration,
    /// Organization (`O=`) of the leaf subject; `None` (the default) leaves
    /// the subject empty, as the X509-SVID standard recommends.
    pub subject_organization: Option<String>,
    /// Largest CSR accepted, in bytes. Default [`DEFAULT_MAX_CSR_BYTES`].
    pub max_csr_bytes: usize,
}

impl Default for IssuancePolicy {
    fn default() -> Self {
        Self {
            default_ttl: DEFAULT_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            clock_skew: DEFAULT_CLOCK_SKEW,
            subject_organization: None,
            max_csr_bytes: DEFAULT_MAX_CSR_BYTES,
        }
    }
}

/// One issuance request.
#[derive(Clone, Copy, Debug)]
pub struct IssueRequest<'a> {
    /// The CSR, PEM (`CERTIFICATE REQUEST`) or DER.
    pub csr: &'a [u8],
    /// The identity the caller is authorized to hold; the only URI SAN the
    /// certificate will carry.
    pub identity: &'a SpiffeId,
    /// The requested lifetime; `None` means the policy's default.
    pub ttl: Option<Ttl>,
}

/// An issued X509-SVID with its chain.
#[derive(Clone, Debug)]
pub struct IssuedChain {
    spiffe_id: SpiffeId,
    certs: Vec<CertificateDer<'static>>,
    serial: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl IssuedChain {
    /// The identity in the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// `[leaf, intermediates..., root]`, DER.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.certs.first()
    }

    /// The leaf's serial number (big-endian, positive).
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// The leaf's notBefore.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The leaf's notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Each certificate as PEM with a trailing newline, leaf first.
    pub fn pem_certs(&self) -> Vec<String> {
        self.certs.iter().map(|c| cert_pem(c)).collect()
    }

    /// The whole chain as one PEM document, leaf first.
    pub fn to_pem(&self) -> String {
        self.pem_certs().concat()
    }
}

/// PEM-encodes a DER certificate with LF line endings and a trailing newline.
pub fn cert_pem(der: &CertificateDer<'_>) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.as_ref()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Signs workload certificates with an [`Authority`] under an
/// [`IssuancePolicy`].
#[derive(Debug, Clone)]
pub struct CertIssuer {
    authority: Arc<Authority>,
    policy: IssuancePolicy,
    subject: DistinguishedName,
    /// PEM of the intermediates every chain carries (between leaf and root).
    intermediates_pem: Vec<String>,
    /// PEM of all roots, concatenated: the trust bundle.
    bundle_pem: String,
}

impl CertIssuer {
    /// An issuer for `authority` under `policy`.
    pub fn new(authority: Arc<Authority>, policy: IssuancePolicy) -> Self {
        let mut subject = DistinguishedName::new();
        if let Some(org) = &policy.subject_organization {
            subject.push(DnType::OrganizationName, org.as_str());
        }
        let tail = authority.chain_after_leaf();
        let intermediates_pem = tail
            .get(..tail.len().saturating_sub(1))
            .unwrap_or_default()
            .iter()
            .map(|c| cert_pem(c))
            .collect();
        let bundle_pem = authority.roots().iter().map(|r| cert_pem(r)).collect();
        Self {
            authority,
            policy,
            subject,
            intermediates_pem,
            bundle_pem,
        }
    }

    /// PEM of the intermediates every issued chain carries, signing
    /// certificate first, root excluded (computed once).
    pub fn intermediates_pem(&self) -> &[String] {
        &self.intermediates_pem
    }

    /// PEM of all current roots, concatenated: the trust bundle (computed
    /// once).
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// The authority this issuer signs with.
    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// The policy in force.
    pub fn policy(&self) -> &IssuancePolicy {
        &self.policy
    }

    /// Issues a certificate now.
    pub fn issue(&self, request: IssueRequest<'_>) -> Result<IssuedChain, IssueError> {
        self.issue_at(request, OffsetDateTime::now_utc())
    }

    /// Issues a certificate as if the time were `now`.
    pub fn issue_at(
        &self,
        request: IssueRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<IssuedChain, IssueError> {
        sign(&self.authority, &self.policy, &self.subject, request, now)
    }
}

/// The issuance pipeline itself, shared by [`CertIssuer`] and the load-time
/// self-test.
fn sign(
    authority: &Authority,
    policy: &IssuancePolicy,
    subject: &DistinguishedName,
    request: IssueRequest<'_>,
    now: OffsetDateTime,
) -> Result<IssuedChain, IssueError> {
    let IssueRequest { csr, identity, ttl } = request;
    // X.509 times have whole seconds; keep what we report equal to what we sign.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    if csr.len() > policy.max_csr_bytes {
        return Err(IssueError::CsrTooLarge {
            size: csr.len(),
            limit: policy.max_csr_bytes,
        });
    }
    if identity.trust_domain() != authority.trust_domain() {
        return Err(IssueError::WrongTrustDomain {
            id: identity.clone(),
            trust_domain: authority.trust_domain().clone(),
        });
    }
    if identity.is_trust_domain_id() {
        return Err(IssueError::TrustDomainIdentity {
            id: identity.clone(),
        });
    }
    let der = decode_csr(csr)?;
    let key = csr::check(&der, identity)?;

    let ttl = ttl.unwrap_or(policy.default_ttl).min(policy.max_ttl);
    let not_after = (now + ttl.as_duration()).min(authority.not_after());
    let not_before = (now - policy.clock_skew).max(authority.not_before());
    if not_after <= now || now < authority.not_before() {
        return Err(IssueError::AuthorityNotValid {
            not_after: rfc3339(authority.not_after()),
        });
    }

    let serial = random_serial();
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.clone();
    let uri = identity
        .to_string()
        .try_into()
        .map_err(|e: rcgen::Error| IssueError::Signing(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = if key.kind == csr::KeyKind::Rsa {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(serial.clone());
    params.not_before = not_before;
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    let leaf = params
        .signed_by(&key, authority.issuer())
        .map_err(|e| IssueError::Signing(e.to_string()))?;

    let mut certs = Vec::with_capacity(1 + authority.chain_after_leaf().len());
    certs.push(leaf.der().clone());
    certs.extend(authority.chain_after_leaf().iter().cloned());
    Ok(IssuedChain {
        spiffe_id: identity.clone(),
        certs,
        serial: serial.to_bytes(),
        not_before,
        not_after,
    })
}

/// A random positive serial number of exactly 128 bits (16 bytes, top bit
/// clear so DER needs no padding byte, second bit set so it never shrinks).
pub fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    if let Some(first) = bytes.first_mut() {
        *first = (*first & 0x7f) | 0x40;
    }
    SerialNumber::from_slice(&bytes)
}

/// Accepts a PEM `CERTIFICATE REQUEST` (or the legacy `NEW CERTIFICATE
/// REQUEST`) or raw DER.
fn decode_csr(input: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, IssueError> {
    let trimmed = input.trim_ascii_start();
    if !trimmed.starts_with(b"-----BEGIN") {
        return Ok(std::borrow::Cow::Borrowed(input));
    }
    let parsed = pem::parse(trimmed).map_err(|e| IssueError::CsrMalformed {
        reason: e.to_string(),
    })?;
    match parsed.tag() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => {
            Ok(std::borrow::Cow::Owned(parsed.into_contents()))
        }
        other => Err(IssueError::CsrMalformed {
            reason: format!("PEM block is {other:?}, expected \"CERTIFICATE REQUEST\""),
        }),
    }
}

/// Issues a probe SVID with a throwaway key and verifies it with the shared
/// X509-SVID verifier (rustls-webpki underneath) against the authority's own
/// roots, so material that
/// validates field by field but cannot produce verifiable chains is refused
/// at load rather than at the first handshake.
pub(crate) fn self_test(authority: &Authority, now: OffsetDateTime) -> Result<(), AuthorityError> {
    let fail = |e: &dyn std::fmt::Display| AuthorityError::SelfTest(e.to_string());
    let id =
        SpiffeId::from_parts(authority.trust_domain(), "/sigil/self-test").map_err(|e| fail(&e))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| fail(&e))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| fail(&e))?;
    let request = IssueRequest {
        csr: csr.der(),
        identity: &id,
        ttl: Ttl::from_secs(60).ok(),
    };
    let chain = sign(
        authority,
        &IssuancePolicy::default(),
        &DistinguishedName::new(),
        request,
        now,
    )
    .map_err(|e| fail(&e))?;
    let unix_now = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    // The same verifier the agent and the proxy use: X509-SVID rules plus a
    // rustls-webpki path to this trust domain's roots, for both usages.
    let bundles = BundleSet::from(TrustBundle::with_x509_authorities(
        authority.trust_domain().clone(),
        authority.roots().iter().cloned(),
    ));
    for usage in [Usage::ServerAuth, Usage::ClientAuth] {
        verify_x509_svid(chain.certs(), &bundles, unix_now, usage).map_err(|e| fail(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
