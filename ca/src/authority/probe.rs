//! The load-time self-test: a probe X509-SVID signed by the loaded
//! authority must verify to its own roots with the verifier the agent and
//! the proxy use (rustls-webpki underneath), so material that validates
//! field by field but cannot produce verifiable chains is refused at load
//! rather than at the first handshake.
//!
//! The probe is built here, not by `issue`, so the authority does not
//! depend on the issuance module (which depends on it); it carries what
//! the verifier checks of any X509-SVID: one URI SAN, CA:false,
//! digitalSignature, serverAuth + clientAuth, and an AKI.

use std::time::Duration;

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls_pki_types::UnixTime;
use sigil_identity::verify::{Usage, verify_x509_svid};
use sigil_identity::{BundleSet, SpiffeId, TrustBundle};
use time::OffsetDateTime;

use super::{Authority, AuthorityError};
use crate::serial::random_serial;

/// How long the probe is valid (it is never written anywhere).
const PROBE_LIFETIME: time::Duration = time::Duration::minutes(1);

/// Signs a probe SVID with `authority` at `now` and verifies it against
/// the authority's roots, for both TLS usages.
pub(crate) fn self_test(authority: &Authority, now: OffsetDateTime) -> Result<(), AuthorityError> {
    let fail = |e: &dyn std::fmt::Display| AuthorityError::SelfTest(e.to_string());
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let id =
        SpiffeId::from_parts(authority.trust_domain(), "/sigil/self-test").map_err(|e| fail(&e))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| fail(&e))?;
    let mut params = CertificateParams::default();
    let uri = id.to_string().try_into().map_err(|e| fail(&e))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = now.max(authority.not_before());
    params.not_after = now
        .checked_add(PROBE_LIFETIME)
        .unwrap_or(now)
        .min(authority.not_after());
    params.use_authority_key_identifier_extension = true;
    if params.not_after <= now {
        return Err(fail(&"the signing certificate is not valid now"));
    }
    let leaf = params
        .signed_by(&key, authority.issuer())
        .map_err(|e| fail(&e))?;
    let mut chain = vec![leaf.der().clone()];
    chain.extend(authority.chain_after_leaf().iter().cloned());

    let unix_now = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    let bundles = BundleSet::from(TrustBundle::with_x509_authorities(
        authority.trust_domain().clone(),
        authority.roots().iter().cloned(),
    ));
    for usage in [Usage::ServerAuth, Usage::ClientAuth] {
        verify_x509_svid(&chain, &bundles, unix_now, usage).map_err(|e| fail(&e))?;
    }
    Ok(())
}
