//! The X509-SVID rules on single certificates: [`check_leaf`] and
//! [`check_signing_certificate`].
//!
//! These are the rules the X509-SVID standard adds on top of RFC 5280 path
//! validation (which rustls-webpki does in `chain.rs`). Parsing is
//! x509-parser's; nothing here decodes ASN.1 by hand.

use std::time::Duration;

use rustls_pki_types::UnixTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::spiffe_id::SpiffeId;

use super::error::VerifyError;

/// What [`check_leaf`] learns from a leaf that passes: its SPIFFE ID and
/// notAfter.
#[derive(Debug)]
pub(crate) struct LeafFacts {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) not_after: UnixTime,
}

/// Checks the X509-SVID leaf rules on `cert_der` and returns its SPIFFE ID.
///
/// The rules, in order:
/// 1. exactly one URI SAN, which parses as a SPIFFE ID with a non-empty path
///    (other SAN types, e.g. DNS, are allowed alongside);
/// 2. BasicConstraints present with CA:false (as strict as the `spiffe`
///    crate: an absent extension is refused, though RFC 5280 would default
///    it to CA:false);
/// 3. KeyUsage present with digitalSignature and without keyCertSign and
///    cRLSign.
///
/// This checks the certificate alone: no signature, validity period or
/// trust. Use [`super::verify_x509_svid`] for that. It is also the way to
/// read the peer's SPIFFE ID from the certificates a verified rustls
/// connection reports.
pub fn check_leaf(cert_der: &[u8]) -> Result<SpiffeId, VerifyError> {
    leaf_facts(cert_der).map(|facts| facts.spiffe_id)
}

/// [`check_leaf`], also returning the leaf's notAfter.
pub(crate) fn leaf_facts(cert_der: &[u8]) -> Result<LeafFacts, VerifyError> {
    let cert = parse(cert_der)?;
    let spiffe_id = leaf_spiffe_id(&cert)?;

    // X509-SVID §4.1: "Leaf certificates MUST set the cA field to false."
    // The `spiffe` crate also refuses a leaf whose BasicConstraints is absent.
    let basic = cert.basic_constraints().map_err(malformed)?;
    match basic {
        None => return Err(VerifyError::MissingBasicConstraints),
        Some(ext) if ext.value.ca => return Err(VerifyError::LeafIsCa),
        Some(_) => {}
    }

    let key_usage = cert
        .key_usage()
        .map_err(malformed)?
        .ok_or(VerifyError::MissingKeyUsage)?;
    // X509-SVID §4.3: "Leaf SVIDs MUST set digitalSignature."
    if !key_usage.value.digital_signature() {
        return Err(VerifyError::MissingDigitalSignature);
    }
    // X509-SVID §4.3: "Leaf SVIDs [...] MUST NOT set keyCertSign or cRLSign."
    if key_usage.value.key_cert_sign() {
        return Err(VerifyError::LeafCanSign { bit: "keyCertSign" });
    }
    if key_usage.value.crl_sign() {
        return Err(VerifyError::LeafCanSign { bit: "cRLSign" });
    }

    // A notAfter before 1970 is as expired as it gets; webpki refuses it
    // anyway, so clamping to the epoch loses nothing.
    let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(LeafFacts {
        spiffe_id,
        not_after: UnixTime::since_unix_epoch(Duration::from_secs(secs)),
    })
}

/// Checks the X509-SVID rules for a signing (CA) certificate: BasicConstraints
/// with CA:true and KeyUsage with keyCertSign.
///
/// [`super::verify_x509_svid`] applies it to every intermediate of the
/// verified path; the CA applies it when loading a plug-in signing
/// certificate.
pub fn check_signing_certificate(cert_der: &[u8]) -> Result<(), VerifyError> {
    let cert = parse(cert_der)?;
    let subject = || cert.subject().to_string();

    // X509-SVID §4.1: "Signing certificates MUST set the cA field to true."
    let is_ca = cert
        .basic_constraints()
        .map_err(malformed)?
        .is_some_and(|ext| ext.value.ca);
    if !is_ca {
        return Err(VerifyError::SigningCertNotCa { subject: subject() });
    }

    // X509-SVID §4.3: "Signing certificates MUST set keyCertSign."
    let key_usage = cert
        .key_usage()
        .map_err(malformed)?
        .ok_or_else(|| VerifyError::SigningCertMissingKeyUsage { subject: subject() })?;
    if !key_usage.value.key_cert_sign() {
        return Err(VerifyError::SigningCertMissingKeyCertSign { subject: subject() });
    }
    Ok(())
}

/// Parses one DER certificate, refusing trailing bytes.
fn parse(cert_der: &[u8]) -> Result<X509Certificate<'_>, VerifyError> {
    let (rest, cert) = X509Certificate::from_der(cert_der).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(VerifyError::Malformed(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

/// The leaf's only URI SAN, as a workload SPIFFE ID.
fn leaf_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, VerifyError> {
    // X509-SVID §2: "An X.509 SVID MUST contain exactly one URI SAN, and by
    // extension, exactly one SPIFFE ID. An X.509 SVID MAY contain any number
    // of other SAN field types, including DNS SANs."
    let san = cert.subject_alternative_name().map_err(malformed)?;
    let mut uris = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let uri = uris.next().ok_or(VerifyError::NoUriSan)?;
    let extra = uris.count();
    if extra > 0 {
        return Err(VerifyError::MultipleUriSans { count: extra + 1 });
    }

    let id = SpiffeId::parse(uri).map_err(|source| VerifyError::InvalidSpiffeId {
        uri: uri.to_owned(),
        source,
    })?;
    // A leaf SVID identifies a workload; a trust domain ID (no path) names
    // the trust domain itself, never a workload.
    if id.is_trust_domain_id() {
        return Err(VerifyError::TrustDomainIdAsLeaf { id });
    }
    Ok(id)
}

fn malformed(err: impl std::fmt::Display) -> VerifyError {
    VerifyError::Malformed(err.to_string())
}
