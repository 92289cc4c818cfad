//! The single-certificate rules: `check_leaf` and `check_signing_certificate`.

use rcgen::{BasicConstraints, IsCa, KeyUsagePurpose, SanType};
use sigil_test_util::{TestCa, ca_params, p256};

use super::{ID_A, TD_A, id, leaf_with, uri_san};
use crate::spiffe_id::SpiffeIdError;
use crate::verify::{VerifyError, check_leaf, check_signing_certificate};

fn leaf_err(edit: impl FnOnce(&mut rcgen::CertificateParams)) -> VerifyError {
    let ca = TestCa::root(TD_A);
    let leaf = leaf_with(&ca, ID_A, edit);
    check_leaf(&leaf.der).unwrap_err()
}

#[test]
fn valid_leaf_yields_its_spiffe_id() {
    let ca = TestCa::root(TD_A);
    assert_eq!(check_leaf(&ca.leaf(ID_A).der).unwrap(), id(ID_A));
}

#[test]
fn dns_san_alongside_the_uri_san_is_allowed() {
    let ca = TestCa::root(TD_A);
    let leaf = leaf_with(&ca, ID_A, |p| {
        p.subject_alt_names
            .push(SanType::DnsName("web.default.svc".try_into().unwrap()));
    });
    assert_eq!(check_leaf(&leaf.der).unwrap(), id(ID_A));
}

#[test]
fn no_san_at_all_is_refused() {
    let err = leaf_err(|p| p.subject_alt_names.clear());
    assert_eq!(err, VerifyError::NoUriSan);
}

#[test]
fn dns_only_san_is_refused() {
    let err = leaf_err(|p| {
        p.subject_alt_names = vec![SanType::DnsName("web.example".try_into().unwrap())];
    });
    assert_eq!(err, VerifyError::NoUriSan);
}

#[test]
fn two_uri_sans_are_refused() {
    let err = leaf_err(|p| {
        p.subject_alt_names
            .push(uri_san("spiffe://a.example/ns/default/sa/other"));
    });
    assert_eq!(err, VerifyError::MultipleUriSans { count: 2 });
}

#[test]
fn non_spiffe_uri_is_refused() {
    let err = leaf_err(|p| p.subject_alt_names = vec![uri_san("https://a.example/web")]);
    assert_eq!(
        err,
        VerifyError::InvalidSpiffeId {
            uri: "https://a.example/web".into(),
            source: SpiffeIdError::WrongScheme,
        }
    );
}

#[test]
fn trust_domain_id_is_not_a_workload_identity() {
    let err = leaf_err(|p| p.subject_alt_names = vec![uri_san("spiffe://a.example")]);
    assert_eq!(
        err,
        VerifyError::TrustDomainIdAsLeaf {
            id: id("spiffe://a.example")
        }
    );
}

#[test]
fn ca_true_leaf_is_refused() {
    let err = leaf_err(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
    assert_eq!(err, VerifyError::LeafIsCa);
}

#[test]
fn leaf_without_basic_constraints_is_refused() {
    // rcgen writes no BasicConstraints extension for `IsCa::NoCa`.
    let err = leaf_err(|p| p.is_ca = IsCa::NoCa);
    assert_eq!(err, VerifyError::MissingBasicConstraints);
}

#[test]
fn leaf_without_key_usage_is_refused() {
    let err = leaf_err(|p| p.key_usages.clear());
    assert_eq!(err, VerifyError::MissingKeyUsage);
}

#[test]
fn leaf_without_digital_signature_is_refused() {
    let err = leaf_err(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]);
    assert_eq!(err, VerifyError::MissingDigitalSignature);
}

#[test]
fn leaf_with_key_cert_sign_is_refused() {
    let err = leaf_err(|p| p.key_usages.push(KeyUsagePurpose::KeyCertSign));
    assert_eq!(err, VerifyError::LeafCanSign { bit: "keyCertSign" });
}

#[test]
fn leaf_with_crl_sign_is_refused() {
    let err = leaf_err(|p| p.key_usages.push(KeyUsagePurpose::CrlSign));
    assert_eq!(err, VerifyError::LeafCanSign { bit: "cRLSign" });
}

#[test]
fn garbage_and_trailing_bytes_are_malformed() {
    assert!(matches!(
        check_leaf(b"not a certificate"),
        Err(VerifyError::Malformed(_))
    ));
    let ca = TestCa::root(TD_A);
    let mut der = ca.leaf(ID_A).der.to_vec();
    der.push(0);
    assert!(matches!(check_leaf(&der), Err(VerifyError::Malformed(_))));
}

#[test]
fn roots_and_intermediates_are_signing_certificates() {
    let root = TestCa::root(TD_A);
    check_signing_certificate(&root.cert.der).unwrap();
    check_signing_certificate(&root.intermediate("int").cert.der).unwrap();
}

#[test]
fn signing_certificate_without_key_cert_sign_is_refused() {
    let root = TestCa::root(TD_A);
    let mut params = ca_params("intermediate", "no keyCertSign", 30);
    params.key_usages = vec![KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let int = root.intermediate_with(params, p256());
    assert!(matches!(
        check_signing_certificate(&int.cert.der),
        Err(VerifyError::SigningCertMissingKeyCertSign { subject }) if subject.contains("no keyCertSign")
    ));
}

#[test]
fn signing_certificate_without_key_usage_is_refused() {
    let root = TestCa::root(TD_A);
    let mut params = ca_params("intermediate", "no KeyUsage", 30);
    params.key_usages.clear();
    let int = root.intermediate_with(params, p256());
    assert!(matches!(
        check_signing_certificate(&int.cert.der),
        Err(VerifyError::SigningCertMissingKeyUsage { .. })
    ));
}

#[test]
fn ca_false_or_absent_signing_certificate_is_refused() {
    let root = TestCa::root(TD_A);
    for is_ca in [IsCa::ExplicitNoCa, IsCa::NoCa] {
        let mut params = ca_params("intermediate", "not a CA", 30);
        params.is_ca = is_ca;
        let int = root.intermediate_with(params, p256());
        assert!(matches!(
            check_signing_certificate(&int.cert.der),
            Err(VerifyError::SigningCertNotCa { subject }) if subject.contains("not a CA")
        ));
    }
    // A leaf SVID is no signing certificate either.
    assert!(matches!(
        check_signing_certificate(&root.leaf(ID_A).der),
        Err(VerifyError::SigningCertNotCa { .. })
    ));
}
