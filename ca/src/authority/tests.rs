//! Authority validation tests on in-memory material (file layouts and
//! openssl-made PKIs are covered end to end in `sigil-tests`).

use rcgen::{IsCa, KeyUsagePurpose, SanType};
use sigil_identity::TrustDomain;
use sigil_test_util::{TestCa, ca_params, p256};
use time::OffsetDateTime;

use super::*;

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn sourced(ca: &TestCa, path: &str) -> SourcedCert {
    SourcedCert {
        der: ca.cert.der.clone(),
        path: path.into(),
        index: 0,
    }
}

fn material(signing: &TestCa, chain: &[&TestCa], roots: &[&TestCa]) -> Material {
    Material {
        signing_cert: sourced(signing, "ca-cert.pem"),
        key_pem: signing.cert.key.serialize_pem().into_bytes().into(),
        key_path: "ca-key.pem".into(),
        chain: chain.iter().map(|c| sourced(c, "cert-chain.pem")).collect(),
        roots: roots.iter().map(|c| sourced(c, "root-cert.pem")).collect(),
        roots_path: "root-cert.pem".into(),
    }
}

fn build(m: Material) -> Result<Authority, AuthorityError> {
    Authority::from_material(td(), m, OffsetDateTime::now_utc())
}

#[test]
fn walks_the_chain_in_issuer_order_whatever_the_file_order() {
    let root = TestCa::root("cluster.local");
    let policy = root.intermediate("policy CA");
    let issuing = policy.intermediate("issuing CA");
    // Chain file in "wrong" order, with the signing cert and the root in it
    // too, as Istio's cert-chain.pem often has.
    let m = material(&issuing, &[&root, &issuing, &policy], &[&root]);
    let authority = build(m).unwrap();
    assert_eq!(
        authority.chain_after_leaf(),
        &[
            issuing.cert.der.clone(),
            policy.cert.der.clone(),
            root.cert.der.clone()
        ]
    );
    assert_eq!(authority.roots(), std::slice::from_ref(&root.cert.der));
    assert_eq!(authority.signing_cert(), Some(&issuing.cert.der));
}

#[test]
fn a_root_that_signs_directly_has_a_one_element_tail() {
    let root = TestCa::root("cluster.local");
    let authority = build(material(&root, &[], &[&root])).unwrap();
    assert_eq!(
        authority.chain_after_leaf(),
        std::slice::from_ref(&root.cert.der)
    );
    assert_eq!(authority.key_algorithm(), "ECDSA P-256");
}

#[test]
fn several_roots_form_the_bundle() {
    let old = TestCa::root("cluster.local");
    let new = TestCa::root("cluster.local");
    let issuing = new.intermediate("issuing");
    let authority = build(material(&issuing, &[], &[&old, &new])).unwrap();
    assert_eq!(authority.roots().len(), 2);
    assert_eq!(authority.chain_after_leaf().last(), Some(&new.cert.der));
}

#[test]
fn refuses_a_key_that_does_not_match() {
    let root = TestCa::root("cluster.local");
    let other = TestCa::root("cluster.local");
    let mut m = material(&root, &[], &[&root]);
    m.key_pem = other.cert.key.serialize_pem().into_bytes().into();
    assert!(matches!(
        build(m),
        Err(AuthorityError::KeyMismatch { key_path, .. }) if key_path.ends_with("ca-key.pem")
    ));
}

#[test]
fn refuses_a_chain_that_does_not_reach_a_root() {
    let root = TestCa::root("cluster.local");
    let policy = root.intermediate("policy CA");
    let issuing = policy.intermediate("issuing CA");
    // Policy CA missing from the chain.
    let err = build(material(&issuing, &[], &[&root])).unwrap_err();
    assert!(
        matches!(&err, AuthorityError::ChainIncomplete { subject, .. } if subject.contains("issuing CA")),
        "{err}"
    );
    // A complete chain to a root that is not the configured one.
    let stranger = TestCa::root("cluster.local");
    let err = build(material(&issuing, &[&policy, &root], &[&stranger])).unwrap_err();
    assert!(
        matches!(err, AuthorityError::ChainNotToRoot { .. }),
        "{err}"
    );
}

#[test]
fn refuses_overlong_chains() {
    let root = TestCa::root("cluster.local");
    let mut cas = vec![root.intermediate("level 1")];
    for level in 2..=MAX_CHAIN_LEN {
        let next = cas.last().unwrap().intermediate(&format!("level {level}"));
        cas.push(next);
    }
    let signing = cas.last().unwrap();
    let chain: Vec<&TestCa> = cas.iter().collect();
    let err = build(material(signing, &chain, &[&root])).unwrap_err();
    assert!(
        matches!(
            err,
            AuthorityError::ChainTooLong {
                limit: MAX_CHAIN_LEN,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn refuses_a_signing_certificate_for_another_trust_domain() {
    let root = TestCa::root("other.org");
    let err = build(material(&root, &[], &[&root])).unwrap_err();
    assert!(
        matches!(&err, AuthorityError::TrustDomainMismatch { found, expected, .. }
            if found == "other.org" && expected == "cluster.local"),
        "{err}"
    );
}

#[test]
fn refuses_non_ca_and_non_signing_certificates_in_the_chain() {
    let root = TestCa::root("cluster.local");
    let mut params = ca_params("x", "leafy CA", 30);
    params.is_ca = IsCa::ExplicitNoCa;
    let not_ca = root.intermediate_with(params, p256());
    assert!(matches!(
        build(material(&not_ca, &[], &[&root])),
        Err(AuthorityError::NotACa { .. })
    ));
    let mut params = ca_params("x", "no keyCertSign", 30);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let no_sign = root.intermediate_with(params, p256());
    assert!(matches!(
        build(material(&no_sign, &[], &[&root])),
        Err(AuthorityError::NoKeyCertSign { .. })
    ));
}

#[test]
fn refuses_uri_name_constraints() {
    let root = TestCa::root("cluster.local");
    let mut params = ca_params("x", "constrained", 30);
    params.name_constraints = Some(rcgen::NameConstraints {
        permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.org".into())],
        excluded_subtrees: vec![],
    });
    // DNS-only constraints are fine for rustls-webpki.
    let dns_only = root.intermediate_with(params, p256());
    build(material(&dns_only, &[], &[&root])).unwrap();
    // rcgen cannot write URI subtrees; the openssl-made case lives in
    // sigil-tests (plugin_ca.rs). Check the SAN-less path at least parses.
    let _ = SanType::URI("spiffe://cluster.local".try_into().unwrap());
}

#[test]
fn debug_output_names_no_key_material() {
    let root = TestCa::root("cluster.local");
    let key_pem = root.cert.key.serialize_pem();
    let authority = build(material(&root, &[], &[&root])).unwrap();
    let debug = format!("{authority:?}");
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!debug.contains(&body[..20]));
    assert!(debug.contains("ECDSA P-256"));
}
