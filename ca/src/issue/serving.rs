//! The CA's own TLS serving certificate: names from config, signed by the
//! CA itself, with a key generated in memory.
//!
//! Unlike workload certificates this is not an X509-SVID: clients such as
//! istio-agent connect by DNS name (`istiod.istio-system.svc`), ztunnel
//! often by IP address (`CA_ADDRESS=https://127.0.0.1:15012`), and verify
//! it with the CA's root like any TLS server certificate. A configured
//! name that parses as an IPv4 or IPv6 address becomes an IP SAN (clients
//! connecting by IP match only those, RFC 6125 §6.2.1 / RFC 9525); every
//! other name a DNS SAN.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use sigil_identity::PrivateKey;
use time::OffsetDateTime;

use super::{CertIssuer, IssueError, Ttl, validity};
use crate::serial::random_serial;

/// A serving certificate chain and its private key.
pub struct ServingCert {
    /// `[leaf, intermediates..., root]`.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8, zeroized on drop).
    pub key: PrivateKey,
    /// When the leaf expires.
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertIssuer {
    /// Issues a TLS server certificate for `names` valid for `ttl` (cut at
    /// the signing certificate's notAfter), with a fresh ECDSA P-256 key.
    /// Names that parse as IP addresses (`127.0.0.1`, `::1`) are issued as
    /// IP SANs, the others as DNS SANs.
    pub fn issue_serving_cert(
        &self,
        names: &[String],
        ttl: Ttl,
        now: OffsetDateTime,
    ) -> Result<ServingCert, IssueError> {
        let authority = self.authority();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("sigil-ca", String::as_str),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        (params.not_before, params.not_after) =
            validity(authority, now, ttl, self.policy().clock_skew)?;
        params.use_authority_key_identifier_extension = true;
        if params.not_after <= now {
            return Err(IssueError::AuthorityNotValid {
                not_after: crate::authority::rfc3339(authority.not_after()),
            });
        }
        let not_after = params.not_after;
        let leaf = params
            .signed_by(&key, authority.issuer())
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(authority.chain_after_leaf().iter().cloned());
        Ok(ServingCert {
            chain,
            key: PrivateKey::from_pkcs8_der(key.serialize_der())
                .map_err(|e| IssueError::Signing(e.to_string()))?,
            not_after,
        })
    }
}

/// The SAN for one configured name: an IP SAN for an IP address, a DNS SAN
/// otherwise.
fn san(name: &str) -> Result<SanType, IssueError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    name.to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|e: rcgen::Error| IssueError::Signing(format!("DNS name {name:?}: {e}")))
}
