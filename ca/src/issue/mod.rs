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
    SanType,
};
use rustls_pki_types::CertificateDer;
use sigil_identity::SpiffeId;
use time::OffsetDateTime;

use crate::authority::{Authority, rfc3339};
use crate::serial::random_serial;

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

/// The issuance pipeline itself.
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
    let (not_before, not_after) = validity(authority, now, ttl, policy.clock_skew)?;
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

/// `(notBefore, notAfter)` of a certificate issued at `now` for `ttl`:
/// backdated by `skew`, and neither before the signing certificate's
/// notBefore nor after its notAfter. Checked arithmetic: a lifetime or skew
/// beyond what a date can hold is an error, never a panic.
pub(crate) fn validity(
    authority: &Authority,
    now: OffsetDateTime,
    ttl: Ttl,
    skew: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), IssueError> {
    let too_long = || {
        IssueError::InvalidTtl(TtlError::TooLong {
            seconds: ttl.as_secs(),
        })
    };
    let not_after = time::Duration::try_from(ttl.as_duration())
        .ok()
        .and_then(|d| now.checked_add(d))
        .ok_or_else(too_long)?
        .min(authority.not_after());
    // A skew beyond the representable range backdates to the signing
    // certificate's notBefore, which bounds it anyway.
    let not_before = time::Duration::try_from(skew)
        .ok()
        .and_then(|d| now.checked_sub(d))
        .map_or(authority.not_before(), |t| t.max(authority.not_before()));
    Ok((not_before, not_after))
}

/// Accepts exactly one PEM `CERTIFICATE REQUEST` (or the legacy `NEW
/// CERTIFICATE REQUEST`) block, with nothing but whitespace around it, or
/// raw DER.
///
/// A PEM document holding a second block (another CSR, a certificate, a
/// key) or trailing text is refused: what was signed must be all that was
/// sent, so a front end or log that reads the input differently (the last
/// block, say) cannot be shown one request while another is signed.
fn decode_csr(input: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, IssueError> {
    let trimmed = input.trim_ascii();
    if !trimmed.starts_with(b"-----BEGIN") {
        return Ok(std::borrow::Cow::Borrowed(input));
    }
    let malformed = |reason: String| IssueError::CsrMalformed { reason };
    let blocks = pem::parse_many(trimmed).map_err(|e| malformed(e.to_string()))?;
    let block = match <[pem::Pem; 1]>::try_from(blocks) {
        Ok([block]) => block,
        Err(blocks) => {
            return Err(malformed(format!(
                "{} PEM blocks; exactly one \"CERTIFICATE REQUEST\" is allowed",
                blocks.len()
            )));
        }
    };
    match block.tag() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => {}
        other => {
            return Err(malformed(format!(
                "PEM block is {other:?}, expected \"CERTIFICATE REQUEST\""
            )));
        }
    }
    // The one block must end the input: `parse_many` skips text between
    // and after blocks.
    let end_line = format!("-----END {}-----", block.tag());
    if !trimmed.ends_with(end_line.as_bytes()) {
        return Err(malformed(
            "text after the PEM block; send exactly one \"CERTIFICATE REQUEST\" block".to_owned(),
        ));
    }
    Ok(std::borrow::Cow::Owned(block.into_contents()))
}

#[cfg(test)]
mod tests;
