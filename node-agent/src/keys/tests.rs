use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::*;

fn id() -> SpiffeId {
    SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap()
}

/// Parses the PEM CSR, checks its self-signature, and returns
/// (subject is empty, [(critical, uris)] per SAN extension, SPKI algorithm OID).
fn inspect(pem: &str) -> (bool, Vec<(bool, Vec<String>)>, String) {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    assert_eq!(block.label, "CERTIFICATE REQUEST");
    let (rest, csr) = X509CertificationRequest::from_der(&block.contents).unwrap();
    assert!(rest.is_empty());
    csr.verify_signature().unwrap();
    let info = &csr.certification_request_info;
    let mut sans = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => sans.push(
                san.general_names
                    .iter()
                    .map(|n| match n {
                        GeneralName::URI(u) => (*u).to_owned(),
                        other => format!("non-URI: {other:?}"),
                    })
                    .collect(),
            ),
            other => panic!("unexpected extension request {other:?}"),
        }
    }
    // Criticality is only on the raw extensions.
    let mut crit = Vec::new();
    for attr in info.iter_attributes() {
        if let x509_parser::cri_attributes::ParsedCriAttribute::ExtensionRequest(req) =
            attr.parsed_attribute()
        {
            for ext in &req.extensions {
                crit.push(ext.critical);
            }
        }
    }
    assert_eq!(crit.len(), sans.len());
    (
        info.subject.iter().count() == 0,
        crit.into_iter().zip(sans).collect(),
        info.subject_pki.algorithm.algorithm.to_id_string(),
    )
}

fn check(algorithm: KeyAlgorithm, spki_oid: &str) {
    let (key, csr) = key_and_csr(algorithm, &id()).unwrap();
    let (empty_subject, sans, oid) = inspect(&csr);
    assert!(empty_subject, "{algorithm}: the subject is empty");
    assert_eq!(
        sans,
        vec![(true, vec![id().to_string()])],
        "{algorithm}: exactly one critical SAN with exactly the SPIFFE URI"
    );
    assert_eq!(oid, spki_oid, "{algorithm}: key type in the CSR");
    // The key round-trips through PKCS#8 into the identity crate's type.
    let again = PrivateKey::from_pkcs8_der(key.secret_der().to_vec()).unwrap();
    assert_eq!(again.algorithm(), key.algorithm());
    // Debug shows no key bytes.
    let debug = format!("{key:?}");
    assert!(debug.contains("der_len"), "{debug}");
    // Two calls give two different keys.
    let (other, _) = key_and_csr(algorithm, &id()).unwrap();
    assert_ne!(other.secret_der(), key.secret_der());
}

#[test]
fn ecdsa_p256_csr() {
    check(KeyAlgorithm::EcdsaP256, "1.2.840.10045.2.1");
}

#[test]
fn ecdsa_p384_csr() {
    check(KeyAlgorithm::EcdsaP384, "1.2.840.10045.2.1");
}

#[test]
fn ed25519_csr() {
    check(KeyAlgorithm::Ed25519, "1.3.101.112");
}

#[test]
fn rsa_2048_csr() {
    check(KeyAlgorithm::Rsa2048, "1.2.840.113549.1.1.1");
}

#[test]
fn rsa_3072_csr() {
    check(KeyAlgorithm::Rsa3072, "1.2.840.113549.1.1.1");
}

#[test]
fn names_round_trip_and_unknown_is_refused() {
    for alg in KeyAlgorithm::ALL {
        assert_eq!(alg.to_string().parse::<KeyAlgorithm>().unwrap(), alg);
    }
    assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcdsaP256);
    assert_eq!(
        "ecdsa-p256".parse::<KeyAlgorithm>().unwrap(),
        KeyAlgorithm::EcdsaP256
    );
    let err = "rsa-1024".parse::<KeyAlgorithm>().unwrap_err();
    assert!(err.to_string().contains("rsa-1024"), "{err}");
}
