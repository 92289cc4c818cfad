//! Issuance tests: the template, lifetimes, and every refusal.

use std::sync::Arc;
use std::time::Duration;

use ::time::OffsetDateTime;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sigil_identity::{SpiffeId, TrustDomain};
use sigil_test_util::{TestCa, ca_params, p256};
use x509_parser::prelude::*;

use super::*;
use crate::authority::{Authority, Material, SourcedCert};

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn id() -> SpiffeId {
    SpiffeId::parse(ID).unwrap()
}

fn sourced(der: &rustls_pki_types::CertificateDer<'static>, name: &str) -> SourcedCert {
    SourcedCert {
        der: der.clone(),
        path: name.into(),
        index: 0,
    }
}

/// An authority whose signing certificate is `ca` itself (a root).
fn authority_from(ca: &TestCa, now: OffsetDateTime) -> Authority {
    let material = Material {
        signing_cert: sourced(&ca.cert.der, "ca-cert.pem"),
        key_pem: ca.cert.key.serialize_pem().into_bytes().into(),
        key_path: "ca-key.pem".into(),
        chain: Vec::new(),
        roots: vec![sourced(&ca.cert.der, "root-cert.pem")],
        roots_path: "root-cert.pem".into(),
    };
    Authority::from_material(td(), material, now).unwrap()
}

fn issuer() -> CertIssuer {
    let ca = TestCa::root("cluster.local");
    CertIssuer::new(
        Arc::new(authority_from(&ca, OffsetDateTime::now_utc())),
        IssuancePolicy::default(),
    )
}

/// A ztunnel-shaped CSR: rcgen, ECDSA P-256, empty subject, critical URI SAN.
fn csr_for(uri: &str) -> Vec<u8> {
    csr_with(|p| p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())])
}

fn csr_with(edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    csr_with_key(&p256(), edit)
}

fn csr_with_key(key: &KeyPair, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    edit(&mut params);
    params.serialize_request(key).unwrap().der().to_vec()
}

fn issue(issuer: &CertIssuer, csr: &[u8]) -> Result<IssuedChain, IssueError> {
    issuer.issue(IssueRequest {
        csr,
        identity: &id(),
        ttl: None,
    })
}

fn refused(csr: &[u8]) -> IssueError {
    issue(&issuer(), csr).expect_err("must be refused")
}

#[test]
fn issues_an_x509_svid_from_sigils_template() {
    let issuer = issuer();
    let before = OffsetDateTime::now_utc();
    let chain = issue(&issuer, &csr_for(ID)).unwrap();
    assert_eq!(chain.certs().len(), 2, "[leaf, root]");
    assert_eq!(chain.certs()[1], issuer.authority().roots()[0]);
    assert_eq!(chain.spiffe_id(), &id());

    let (_, leaf) = X509Certificate::from_der(chain.certs()[0].as_ref()).unwrap();
    assert!(leaf.subject().as_raw().len() <= 2, "empty subject");
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "SAN must be critical with an empty subject");
    assert_eq!(san.value.general_names, vec![GeneralName::URI(ID)]);
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign() && !ku.value.key_encipherment());
    let eku = leaf.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(!eku.value.code_signing && !eku.value.any);

    // SKI present; AKI equals the issuer's SKI.
    let ski = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("SKI");
    assert!(!ski.is_empty());
    let (_, root) = X509Certificate::from_der(chain.certs()[1].as_ref()).unwrap();
    let root_ski = root
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap();
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("AKI");
    assert_eq!(aki, root_ski);

    // Positive serial of 128 bits.
    assert_eq!(chain.serial().len(), 16);
    assert_eq!(chain.serial()[0] & 0x80, 0, "positive");
    assert_eq!(leaf.raw_serial(), chain.serial());

    // Lifetime: notBefore backdated 60 s; 24 h default.
    let nb = leaf.validity().not_before.to_datetime();
    let na = leaf.validity().not_after.to_datetime();
    assert!(nb <= before - Duration::from_secs(59) && nb >= before - Duration::from_secs(62));
    assert_eq!(na - nb, ::time::Duration::seconds(24 * 3600 + 60));
    assert_eq!(chain.not_after(), na);
}

#[test]
fn every_issuance_gets_a_fresh_serial() {
    let issuer = issuer();
    let key = p256();
    let csr = csr_with_key(&key, |p| {
        p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())]
    });
    let a = issue(&issuer, &csr).unwrap();
    let b = issue(&issuer, &csr).unwrap();
    assert_ne!(a.serial(), b.serial());
}

#[test]
fn accepts_p384_and_ed25519_keys_and_spire_style_csrs() {
    let issuer = issuer();
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = sigil_test_util::key_for(alg);
        let csr = csr_with_key(&key, |p| {
            p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())]
        });
        let chain = issue(&issuer, &csr).unwrap();
        let (_, leaf) = X509Certificate::from_der(chain.certs()[0].as_ref()).unwrap();
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }
    // SPIRE-style: a subject, no SAN at all. The identity comes from the
    // authorization decision; the subject is not copied.
    let csr = csr_with(|p| {
        p.distinguished_name.push(DnType::CountryName, "US");
        p.distinguished_name.push(DnType::OrganizationName, "SPIRE");
    });
    let chain = issue(&issuer, &csr).unwrap();
    let (_, leaf) = X509Certificate::from_der(chain.certs()[0].as_ref()).unwrap();
    assert_eq!(leaf.subject().iter_attributes().count(), 0);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names, vec![GeneralName::URI(ID)]);
    // Requested usual extensions are fine (the template decides).
    let csr = csr_with(|p| {
        p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    });
    let chain = issue(&issuer, &csr).unwrap();
    let (_, leaf) = X509Certificate::from_der(chain.certs()[0].as_ref()).unwrap();
    let eku = leaf.extended_key_usage().unwrap().unwrap();
    assert!(!eku.value.code_signing, "requested EKUs are not copied");
}

#[test]
fn accepts_pem_and_der() {
    let issuer = issuer();
    let der = csr_for(ID);
    let pem_csr = ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", der.clone()));
    issue(&issuer, pem_csr.as_bytes()).unwrap();
    let legacy = ::pem::encode(&::pem::Pem::new("NEW CERTIFICATE REQUEST", der.clone()));
    issue(&issuer, legacy.as_bytes()).unwrap();
    issue(&issuer, &der).unwrap();
    let wrong = ::pem::encode(&::pem::Pem::new("CERTIFICATE", der));
    assert!(matches!(
        issue(&issuer, wrong.as_bytes()),
        Err(IssueError::CsrMalformed { .. })
    ));
}

#[test]
fn configured_subject_organization() {
    let ca = TestCa::root("cluster.local");
    let policy = IssuancePolicy {
        subject_organization: Some("cluster.local".into()),
        ..IssuancePolicy::default()
    };
    let issuer = CertIssuer::new(
        Arc::new(authority_from(&ca, OffsetDateTime::now_utc())),
        policy,
    );
    let chain = issue(&issuer, &csr_for(ID)).unwrap();
    let (_, leaf) = X509Certificate::from_der(chain.certs()[0].as_ref()).unwrap();
    assert_eq!(leaf.subject().to_string(), "O=cluster.local");
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(!san.critical, "SAN need not be critical with a subject");
}

// === lifetimes ===

fn lifetime(
    issuer: &CertIssuer,
    ttl: Option<Ttl>,
    now: OffsetDateTime,
) -> Result<IssuedChain, IssueError> {
    issuer.issue_at(
        IssueRequest {
            csr: &csr_for(ID),
            identity: &id(),
            ttl,
        },
        now,
    )
}

#[test]
fn requested_ttl_is_honoured_and_capped_at_the_maximum() {
    let issuer = issuer();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let chain = lifetime(&issuer, Some("1h".parse().unwrap()), now).unwrap();
    assert_eq!(chain.not_after() - now, ::time::Duration::hours(1));
    let chain = lifetime(&issuer, Some("365d".parse().unwrap()), now).unwrap();
    assert_eq!(chain.not_after() - now, ::time::Duration::days(90));
}

#[test]
fn leaf_is_cut_at_the_signing_certificates_not_after() {
    // A signing certificate with one hour left; a 24 h leaf is requested.
    let now = OffsetDateTime::now_utc();
    let mut params = ca_params("cluster.local", "short-lived CA", 1);
    params.not_after = now + ::time::Duration::hours(1);
    let ca = TestCa::self_signed(params, p256());
    let authority = authority_from(&ca, now);
    let signer_not_after = authority.not_after();
    let issuer = CertIssuer::new(Arc::new(authority), IssuancePolicy::default());
    let chain = lifetime(&issuer, Some("24h".parse().unwrap()), now).unwrap();
    assert_eq!(chain.not_after(), signer_not_after);
    let (_, leaf) = X509Certificate::from_der(chain.certs()[0].as_ref()).unwrap();
    assert_eq!(leaf.validity().not_after.to_datetime(), signer_not_after);

    // Once the signing certificate has expired nothing is issued.
    let later = signer_not_after + ::time::Duration::seconds(1);
    assert!(matches!(
        lifetime(&issuer, None, later),
        Err(IssueError::AuthorityNotValid { .. })
    ));
}

#[test]
fn not_before_is_not_earlier_than_the_signers() {
    let now = OffsetDateTime::now_utc();
    let mut params = ca_params("cluster.local", "brand new CA", 1);
    params.not_before = now - ::time::Duration::seconds(10);
    let ca = TestCa::self_signed(params, p256());
    let authority = authority_from(&ca, now);
    let signer_nb = authority.not_before();
    let issuer = CertIssuer::new(Arc::new(authority), IssuancePolicy::default());
    let chain = lifetime(&issuer, None, now).unwrap();
    assert_eq!(chain.not_before(), signer_nb);
}

#[test]
fn zero_or_negative_ttl_is_refused() {
    assert_eq!(
        Ttl::from_secs(0).map_err(IssueError::from),
        Err(IssueError::InvalidTtl(TtlError::NotPositive { seconds: 0 }))
    );
    assert_eq!(
        Ttl::from_secs(-3600).map_err(IssueError::from),
        Err(IssueError::InvalidTtl(TtlError::NotPositive {
            seconds: -3600
        }))
    );
}

// === refusals ===

#[test]
fn refuses_a_csr_for_another_identity() {
    let other = "spiffe://cluster.local/ns/other/sa/web";
    assert_eq!(
        refused(&csr_for(other)),
        IssueError::SanMismatch {
            requested: other.into(),
            authorized: id()
        }
    );
    let other_sa = "spiffe://cluster.local/ns/default/sa/admin";
    assert!(matches!(
        refused(&csr_for(other_sa)),
        IssueError::SanMismatch { .. }
    ));
    let other_td = "spiffe://evil.org/ns/default/sa/web";
    assert!(matches!(
        refused(&csr_for(other_td)),
        IssueError::SanMismatch { .. }
    ));
    let not_spiffe = "https://cluster.local/ns/default/sa/web";
    assert!(matches!(
        refused(&csr_for(not_spiffe)),
        IssueError::SanMismatch { .. }
    ));
}

#[test]
fn refuses_extra_sans() {
    let two = csr_with(|p| {
        p.subject_alt_names = vec![
            SanType::URI(ID.try_into().unwrap()),
            SanType::URI(
                "spiffe://cluster.local/ns/default/sa/other"
                    .try_into()
                    .unwrap(),
            ),
        ]
    });
    assert_eq!(refused(&two), IssueError::MultipleUriSans { count: 2 });
    let same_twice = csr_with(|p| {
        p.subject_alt_names = vec![
            SanType::URI(ID.try_into().unwrap()),
            SanType::URI(ID.try_into().unwrap()),
        ]
    });
    assert_eq!(
        refused(&same_twice),
        IssueError::MultipleUriSans { count: 2 }
    );
    let dns = csr_with(|p| {
        p.subject_alt_names = vec![
            SanType::URI(ID.try_into().unwrap()),
            SanType::DnsName("web.default.svc".try_into().unwrap()),
        ]
    });
    assert_eq!(
        refused(&dns),
        IssueError::ForbiddenSan {
            kind: "DNS",
            value: "web.default.svc".into()
        }
    );
    let ip = csr_with(|p| {
        p.subject_alt_names = vec![
            SanType::URI(ID.try_into().unwrap()),
            SanType::IpAddress("10.0.0.1".parse().unwrap()),
        ]
    });
    assert_eq!(
        refused(&ip),
        IssueError::ForbiddenSan {
            kind: "IP",
            value: "10.0.0.1".into()
        }
    );
    let email =
        csr_with(|p| p.subject_alt_names = vec![SanType::Rfc822Name("a@b.c".try_into().unwrap())]);
    assert_eq!(
        refused(&email),
        IssueError::ForbiddenSan {
            kind: "email",
            value: "a@b.c".into()
        }
    );
}

#[test]
fn refuses_ca_and_signing_requests() {
    let ca = csr_with(|p| {
        p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    assert_eq!(refused(&ca), IssueError::RequestsCa);
    for usage in [KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign] {
        let csr = csr_with(|p| {
            p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature, usage];
        });
        assert_eq!(refused(&csr), IssueError::RequestsSigningUsage);
    }
}

#[test]
fn refuses_unknown_critical_extensions_but_ignores_non_critical_ones() {
    let mut ext =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
    ext.set_criticality(true);
    let critical = csr_with(|p| {
        p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
        p.custom_extensions = vec![ext];
    });
    assert_eq!(
        refused(&critical),
        IssueError::UnsupportedCriticalExtension {
            oid: "1.3.6.1.4.1.99999.1".into()
        }
    );
    let benign = csr_with(|p| {
        p.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 2],
            vec![0x05, 0x00],
        )];
    });
    issue(&issuer(), &benign).unwrap();
}

#[test]
fn refuses_a_second_extension_request_attribute() {
    // The second attribute tries to smuggle a CA:true BasicConstraints past a
    // parser that reads only the first.
    let bc_ca_true = vec![
        0x31, 0x13, // SET OF values
        0x30, 0x11, // Extensions SEQUENCE
        0x30, 0x0f, // Extension
        0x06, 0x03, 0x55, 0x1d, 0x13, // basicConstraints
        0x01, 0x01, 0xff, // critical
        0x04, 0x05, 0x30, 0x03, 0x01, 0x01, 0xff, // OCTET STRING { SEQUENCE { TRUE } }
    ];
    let attr = rcgen::Attribute {
        oid: &[1, 2, 840, 113549, 1, 9, 14],
        values: bc_ca_true,
    };
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
    let csr = params
        .serialize_request_with_attributes(&p256(), vec![attr])
        .unwrap();
    assert_eq!(refused(csr.der()), IssueError::DuplicateExtensionRequest);
}

#[test]
fn refuses_a_bad_signature() {
    let mut csr = csr_for(ID);
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    assert_eq!(refused(&csr), IssueError::CsrSignatureInvalid);

    // A valid CSR's signature spliced onto another CSR's body.
    let a = csr_for(ID);
    let b = csr_for(ID);
    let (_, pa) = X509CertificationRequest::from_der(&a).unwrap();
    let (_, pb) = X509CertificationRequest::from_der(&b).unwrap();
    let sig_a = pa.signature_value.data.to_vec();
    let sig_b = pb.signature_value.data.to_vec();
    if sig_a.len() == sig_b.len() {
        let pos = b
            .windows(sig_b.len())
            .position(|w| w == sig_b.as_slice())
            .unwrap();
        let mut spliced = b.clone();
        spliced[pos..pos + sig_a.len()].copy_from_slice(&sig_a);
        assert_eq!(refused(&spliced), IssueError::CsrSignatureInvalid);
    }
}

#[test]
fn refuses_garbage_and_oversized_input() {
    for garbage in [
        &b""[..],
        b"hello",
        b"\x30\x03\x02\x01\x00",
        b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        assert!(
            matches!(refused(garbage), IssueError::CsrMalformed { .. }),
            "{garbage:?}"
        );
    }
    let mut trailing = csr_for(ID);
    trailing.push(0);
    assert!(matches!(
        refused(&trailing),
        IssueError::CsrMalformed { .. }
    ));
    let big = vec![b'A'; DEFAULT_MAX_CSR_BYTES + 1];
    assert_eq!(
        refused(&big),
        IssueError::CsrTooLarge {
            size: DEFAULT_MAX_CSR_BYTES + 1,
            limit: DEFAULT_MAX_CSR_BYTES
        }
    );
}

#[test]
fn refuses_identities_outside_the_trust_domain() {
    let issuer = issuer();
    let foreign = SpiffeId::parse("spiffe://other.org/ns/default/sa/web").unwrap();
    let err = issuer
        .issue(IssueRequest {
            csr: &csr_for(foreign.to_string().as_str()),
            identity: &foreign,
            ttl: None,
        })
        .unwrap_err();
    assert!(matches!(err, IssueError::WrongTrustDomain { .. }));
    let td_id = td().id();
    let err = issuer
        .issue(IssueRequest {
            csr: &csr_with(|_| {}),
            identity: &td_id,
            ttl: None,
        })
        .unwrap_err();
    assert!(matches!(err, IssueError::TrustDomainIdentity { .. }));
}

#[test]
fn chain_pem_has_one_block_per_certificate_with_trailing_newlines() {
    let chain = issue(&issuer(), &csr_for(ID)).unwrap();
    let pems = chain.pem_certs();
    assert_eq!(pems.len(), 2);
    for p in &pems {
        assert!(p.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(p.ends_with("-----END CERTIFICATE-----\n"));
        assert!(!p.contains('\r'));
    }
    assert_eq!(chain.to_pem(), pems.concat());
}

mod hardening;
