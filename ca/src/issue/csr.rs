//! CSR checks: what Sigil takes from a PKCS#10 request, and what makes it
//! refuse one.
//!
//! The CSR contributes only its public key, and only after its
//! self-signature verifies. Everything else in the certificate comes from
//! Sigil's template, so the checks here exist to *refuse* requests that ask
//! for more than they may get, rather than to copy anything from them.

use rcgen::{PublicKeyData, SignatureAlgorithm};
use sigil_identity::SpiffeId;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::der_parser::asn1_rs::{Oid, Tag};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::IssueError;

/// RSA modulus sizes accepted in CSRs.
pub(crate) const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// Signature algorithms refused as broken, by OID.
const WEAK_SIGNATURES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.2", "MD2 with RSA"),
    ("1.2.840.113549.1.1.3", "MD4 with RSA"),
    ("1.2.840.113549.1.1.4", "MD5 with RSA"),
    ("1.2.840.113549.1.1.5", "SHA-1 with RSA"),
    ("1.3.14.3.2.29", "SHA-1 with RSA"),
    ("1.2.840.10045.4.1", "ECDSA with SHA-1"),
    ("1.2.840.10040.4.3", "DSA with SHA-1"),
];

/// Signature algorithms accepted (x509-parser verifies each with ring).
const ALLOWED_SIGNATURES: &[Oid<'static>] = &[
    OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384,
    OID_SIG_ED25519,
    OID_PKCS1_SHA256WITHRSA,
    OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA,
    // RSASSA-PSS with SHA-2 only: ring refuses PSS with SHA-1.
    OID_PKCS1_RSASSAPSS,
];

/// The kind of key a CSR carries, once it passed the allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa,
}

/// The public key of a checked CSR, in the form rcgen writes into the
/// certificate's SubjectPublicKeyInfo.
#[derive(Debug)]
pub(crate) struct CsrPublicKey {
    pub(crate) kind: KeyKind,
    raw: Vec<u8>,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        // rcgen derives the SPKI AlgorithmIdentifier from this: id-ecPublicKey
        // with the named curve, rsaEncryption with NULL, or id-Ed25519.
        match self.kind {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
            KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// Parses and checks a DER CSR for `authorized`. Returns its public key.
pub(crate) fn check(der: &[u8], authorized: &SpiffeId) -> Result<CsrPublicKey, IssueError> {
    let csr = match X509CertificationRequest::from_der(der) {
        Ok(([], csr)) => csr,
        Ok(_) => return Err(malformed("trailing bytes after the CSR")),
        Err(e) => return Err(malformed(&e.to_string())),
    };
    check_signature_algorithm(&csr)?;
    let key = check_key(&csr.certification_request_info.subject_pki)?;
    csr.verify_signature()
        .map_err(|_| IssueError::CsrSignatureInvalid)?;
    check_extensions(&csr, authorized)?;
    Ok(key)
}

fn malformed(reason: &str) -> IssueError {
    IssueError::CsrMalformed {
        reason: reason.to_owned(),
    }
}

fn check_signature_algorithm(csr: &X509CertificationRequest<'_>) -> Result<(), IssueError> {
    let alg = &csr.signature_algorithm.algorithm;
    if ALLOWED_SIGNATURES.contains(alg) {
        return Ok(());
    }
    let oid = alg.to_id_string();
    match WEAK_SIGNATURES.iter().find(|(o, _)| *o == oid) {
        Some((_, name)) => Err(IssueError::WeakSignatureAlgorithm { algorithm: name }),
        None => Err(IssueError::UnsupportedSignatureAlgorithm { oid }),
    }
}

fn check_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<CsrPublicKey, IssueError> {
    let alg = &spki.algorithm.algorithm;
    let kind = if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        // RFC 5480: namedCurve is the only form allowed; specifiedCurve
        // (explicit parameters) enables curve-substitution attacks.
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .filter(|p| p.tag() == Tag::Oid)
            .and_then(|p| p.as_oid().ok())
            .ok_or(IssueError::ExplicitCurve)?;
        if curve == OID_EC_P256 {
            KeyKind::EcdsaP256
        } else if curve == OID_NIST_EC_P384 {
            KeyKind::EcdsaP384
        } else {
            return Err(IssueError::UnsupportedCurve {
                curve: curve.to_id_string(),
            });
        }
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(malformed("RSA public key cannot be parsed"));
        };
        let bits = rsa.key_size();
        if !RSA_BITS.contains(&bits) {
            return Err(IssueError::RsaKeySize { bits });
        }
        let exponent = strip_leading_zeros(rsa.exponent);
        if exponent != [0x01, 0x00, 0x01] {
            return Err(IssueError::RsaExponent {
                exponent: exponent.iter().map(|b| format!("{b:02x}")).collect(),
            });
        }
        KeyKind::Rsa
    } else if *alg == OID_SIG_ED25519 {
        KeyKind::Ed25519
    } else {
        return Err(IssueError::UnsupportedKeyAlgorithm {
            oid: alg.to_id_string(),
        });
    };
    Ok(CsrPublicKey {
        kind,
        raw: spki.subject_public_key.data.to_vec(),
    })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

fn check_extensions(
    csr: &X509CertificationRequest<'_>,
    authorized: &SpiffeId,
) -> Result<(), IssueError> {
    let mut requests =
        csr.certification_request_info
            .iter_attributes()
            .filter_map(|attr| match attr.parsed_attribute() {
                ParsedCriAttribute::ExtensionRequest(req) => Some(req),
                _ => None,
            });
    let Some(request) = requests.next() else {
        // No extensions: the identity comes from the authorization decision
        // alone (SPIRE-style CSRs carry only the key).
        return Ok(());
    };
    if requests.next().is_some() {
        return Err(IssueError::DuplicateExtensionRequest);
    }
    let mut uris = Vec::new();
    for ext in &request.extensions {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(uri) => uris.push(*uri),
                        other => return Err(forbidden_san(other)),
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(IssueError::RequestsCa),
            ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                return Err(IssueError::RequestsSigningUsage);
            }
            // The template decides these; asking for the usual values is fine.
            ParsedExtension::BasicConstraints(_)
            | ParsedExtension::KeyUsage(_)
            | ParsedExtension::ExtendedKeyUsage(_)
            | ParsedExtension::SubjectKeyIdentifier(_) => {}
            ParsedExtension::ParseError { error } => {
                return Err(malformed(&format!(
                    "extension {} cannot be parsed: {error}",
                    ext.oid.to_id_string()
                )));
            }
            _ if ext.critical => {
                return Err(IssueError::UnsupportedCriticalExtension {
                    oid: ext.oid.to_id_string(),
                });
            }
            _ => {}
        }
    }
    match uris.as_slice() {
        [] => Ok(()),
        [uri] if uri_names(uri, authorized) => Ok(()),
        [uri] => Err(IssueError::SanMismatch {
            requested: (*uri).to_owned(),
            authorized: authorized.clone(),
        }),
        many => Err(IssueError::MultipleUriSans { count: many.len() }),
    }
}

/// Whether `uri` is exactly `id`'s URI, without allocating.
fn uri_names(uri: &str, id: &SpiffeId) -> bool {
    uri.strip_prefix(sigil_identity::spiffe_id::SCHEME_PREFIX)
        .and_then(|rest| rest.strip_prefix(id.trust_domain().as_str()))
        == Some(id.path())
}

fn forbidden_san(name: &GeneralName<'_>) -> IssueError {
    let (kind, value) = match name {
        GeneralName::DNSName(d) => ("DNS", (*d).to_owned()),
        GeneralName::RFC822Name(e) => ("email", (*e).to_owned()),
        GeneralName::IPAddress(ip) => ("IP", format_ip(ip)),
        GeneralName::DirectoryName(n) => ("directory name", n.to_string()),
        GeneralName::RegisteredID(oid) => ("registered ID", oid.to_id_string()),
        GeneralName::OtherName(oid, _) => ("other name", oid.to_id_string()),
        other => ("other", format!("{other:?}")),
    };
    IssueError::ForbiddenSan { kind, value }
}

fn format_ip(bytes: &[u8]) -> String {
    match bytes.len() {
        4 | 16 => {
            let addr: Option<std::net::IpAddr> = if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
                Some(v4.into())
            } else {
                <[u8; 16]>::try_from(bytes).ok().map(Into::into)
            };
            addr.map(|a| a.to_string()).unwrap_or_default()
        }
        _ => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}
