//! Chain verification: `verify_x509_svid`.

use std::time::Duration;

use rcgen::{ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_test_util::{TestCa, ca_params, p256};

use super::{ID_A, ID_B, TD_A, TD_B, bundle, chain_of, id, leaf_with, other_root, set, td, unix};
use crate::verify::{MAX_CHAIN_BYTES, MAX_CHAIN_LEN, Usage, VerifyError, verify_x509_svid};

fn now() -> UnixTime {
    UnixTime::now()
}

#[test]
fn leaf_signed_by_its_root_verifies_for_both_usages() {
    let root = TestCa::root(TD_A);
    let leaf = root.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&root])]);
    for usage in [Usage::ClientAuth, Usage::ServerAuth] {
        let svid = verify_x509_svid(&chain_of(&[&leaf]), &bundles, now(), usage).unwrap();
        assert_eq!(svid.spiffe_id(), &id(ID_A));
        assert_eq!(svid.not_after(), unix(leaf.params.not_after));
    }
}

#[test]
fn root_intermediate_leaf_verifies() {
    let root = TestCa::root(TD_A);
    let int = root.intermediate("int");
    let leaf = int.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&root])]);
    let chain = chain_of(&[&leaf, &int.cert]);
    let svid = verify_x509_svid(&chain, &bundles, now(), Usage::ServerAuth).unwrap();
    assert_eq!(svid.into_spiffe_id(), id(ID_A));

    // Istio-style chains append the root: harmless.
    let chain = chain_of(&[&leaf, &int.cert, &root.cert]);
    verify_x509_svid(&chain, &bundles, now(), Usage::ServerAuth).unwrap();

    // Without the intermediate there is no path.
    let err = verify_x509_svid(&chain_of(&[&leaf]), &bundles, now(), Usage::ServerAuth);
    assert!(matches!(err, Err(VerifyError::UnknownIssuer { .. })));
}

#[test]
fn the_chain_expires_with_its_earliest_intermediate() {
    // The leaf outlives its intermediate: what verifies stops verifying
    // when the intermediate expires, and callers caching the result (the
    // CA re-checks client SVIDs per connection until `not_after`) must not
    // trust it longer.
    let root = TestCa::root(TD_A);
    let mut params = ca_params("intermediate", "short-lived", 30);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::minutes(20);
    let int = root.intermediate_with(params, p256());
    let leaf = int.leaf(ID_A);
    assert!(leaf.params.not_after > int.cert.params.not_after);
    let bundles = set([bundle(TD_A, &[&root])]);
    let chain = chain_of(&[&leaf, &int.cert]);
    let svid = verify_x509_svid(&chain, &bundles, now(), Usage::ClientAuth).unwrap();
    assert_eq!(svid.not_after(), unix(int.cert.params.not_after));
    // Without intermediates it is the leaf's.
    let direct = root.leaf(ID_A);
    let svid = verify_x509_svid(&chain_of(&[&direct]), &bundles, now(), Usage::ClientAuth).unwrap();
    assert_eq!(svid.not_after(), unix(direct.params.not_after));
}

#[test]
fn empty_chain_is_refused() {
    let err = verify_x509_svid(&[], &set([]), now(), Usage::ServerAuth).unwrap_err();
    assert_eq!(err, VerifyError::EmptyChain);
}

#[test]
fn overlong_and_oversized_chains_are_refused_before_parsing() {
    let root = TestCa::root(TD_A);
    let leaf = root.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&root])]);

    let long = vec![leaf.der.clone(); MAX_CHAIN_LEN + 1];
    let err = verify_x509_svid(&long, &bundles, now(), Usage::ServerAuth).unwrap_err();
    assert_eq!(
        err,
        VerifyError::ChainTooLong {
            len: MAX_CHAIN_LEN + 1,
            max: MAX_CHAIN_LEN
        }
    );

    let big = CertificateDer::from(vec![0u8; MAX_CHAIN_BYTES]);
    let err = verify_x509_svid(&[leaf.der.clone(), big], &bundles, now(), Usage::ServerAuth);
    assert!(matches!(err, Err(VerifyError::ChainTooLarge { max, .. }) if max == MAX_CHAIN_BYTES));
}

#[test]
fn leaf_rules_apply_before_chain_building() {
    let root = TestCa::root(TD_A);
    let leaf = leaf_with(&root, ID_A, |p| p.is_ca = IsCa::NoCa);
    let bundles = set([bundle(TD_A, &[&root])]);
    let err = verify_x509_svid(&chain_of(&[&leaf]), &bundles, now(), Usage::ServerAuth);
    assert_eq!(err, Err(VerifyError::MissingBasicConstraints));
}

#[test]
fn intermediate_without_key_cert_sign_is_refused() {
    let root = TestCa::root(TD_A);
    let mut params = ca_params("intermediate", "no keyCertSign", 30);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    let int = root.intermediate_with(params, p256());
    let leaf = int.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&root])]);
    let err = verify_x509_svid(
        &chain_of(&[&leaf, &int.cert]),
        &bundles,
        now(),
        Usage::ServerAuth,
    );
    assert!(matches!(
        err,
        Err(VerifyError::SigningCertMissingKeyCertSign { .. })
    ));
}

#[test]
fn ca_false_intermediate_is_refused() {
    let root = TestCa::root(TD_A);
    let mut params = ca_params("intermediate", "not a CA", 30);
    params.is_ca = IsCa::ExplicitNoCa;
    let int = root.intermediate_with(params, p256());
    let leaf = int.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&root])]);
    let err = verify_x509_svid(
        &chain_of(&[&leaf, &int.cert]),
        &bundles,
        now(),
        Usage::ServerAuth,
    );
    // webpki refuses it first (EndEntityUsedAsCa).
    assert_eq!(err, Err(VerifyError::IssuerNotCa));
}

#[test]
fn expired_leaf_is_refused() {
    let root = TestCa::root(TD_A);
    let leaf = leaf_with(&root, ID_A, |p| {
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
        p.not_after = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    });
    let bundles = set([bundle(TD_A, &[&root])]);
    let err = verify_x509_svid(&chain_of(&[&leaf]), &bundles, now(), Usage::ServerAuth);
    assert!(
        matches!(err, Err(VerifyError::Expired { not_after, .. }) if not_after == unix(leaf.params.not_after))
    );
}

#[test]
fn valid_leaf_is_refused_at_a_later_time() {
    let root = TestCa::root(TD_A);
    let leaf = root.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&root])]);
    let later = UnixTime::since_unix_epoch(Duration::from_secs(now().as_secs() + 7200));
    let err = verify_x509_svid(&chain_of(&[&leaf]), &bundles, later, Usage::ServerAuth);
    assert!(matches!(err, Err(VerifyError::Expired { .. })));
}

#[test]
fn not_yet_valid_leaf_is_refused() {
    let root = TestCa::root(TD_A);
    let leaf = leaf_with(&root, ID_A, |p| {
        p.not_before = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    });
    let bundles = set([bundle(TD_A, &[&root])]);
    let err = verify_x509_svid(&chain_of(&[&leaf]), &bundles, now(), Usage::ServerAuth);
    assert!(matches!(err, Err(VerifyError::NotYetValid { .. })));
}

#[test]
fn other_root_of_the_same_trust_domain_is_an_unknown_issuer() {
    let trusted = TestCa::root(TD_A);
    let rogue = other_root(TD_A, "rogue root");
    let leaf = rogue.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&trusted])]);
    let err = verify_x509_svid(&chain_of(&[&leaf]), &bundles, now(), Usage::ServerAuth);
    assert_eq!(
        err,
        Err(VerifyError::UnknownIssuer {
            trust_domain: td(TD_A)
        })
    );
}

#[test]
fn other_root_with_the_same_subject_is_refused_as_a_bad_signature() {
    // webpki finds issuers by subject name: a foreign root that copies the
    // trusted root's name is tried, and its signature does not verify.
    let trusted = TestCa::root(TD_A);
    let rogue = TestCa::root(TD_A);
    assert_eq!(
        trusted.cert.params.distinguished_name,
        rogue.cert.params.distinguished_name
    );
    let leaf = rogue.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&trusted])]);
    let err = verify_x509_svid(&chain_of(&[&leaf]), &bundles, now(), Usage::ServerAuth);
    assert_eq!(err, Err(VerifyError::BadSignature));
}

#[test]
fn tampered_signature_is_refused() {
    let root = TestCa::root(TD_A);
    let mut der = root.leaf(ID_A).der.to_vec();
    // The last byte belongs to the ECDSA signature's `s` integer: flipping it
    // keeps the DER valid and breaks the signature.
    if let Some(last) = der.last_mut() {
        *last ^= 0x01;
    }
    let bundles = set([bundle(TD_A, &[&root])]);
    let err = verify_x509_svid(&[der.into()], &bundles, now(), Usage::ServerAuth);
    assert_eq!(err, Err(VerifyError::BadSignature));
}

#[test]
fn unknown_trust_domain_is_refused() {
    let root_a = TestCa::root(TD_A);
    let root_b = TestCa::root(TD_B);
    let leaf = root_a.leaf(ID_A);
    let bundles = set([bundle(TD_B, &[&root_b])]);
    let err = verify_x509_svid(&chain_of(&[&leaf]), &bundles, now(), Usage::ServerAuth);
    assert_eq!(
        err,
        Err(VerifyError::UnknownTrustDomain {
            trust_domain: td(TD_A)
        })
    );
}

#[test]
fn chain_never_verifies_against_another_trust_domains_roots() {
    // B's root signs an ID of trust domain A: both bundles are known, but A's
    // IDs only verify against A's roots.
    let root_a = TestCa::root(TD_A);
    let root_b = TestCa::root(TD_B);
    let forged = root_b.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&root_a]), bundle(TD_B, &[&root_b])]);
    let err = verify_x509_svid(&chain_of(&[&forged]), &bundles, now(), Usage::ServerAuth);
    assert_eq!(
        err,
        Err(VerifyError::UnknownIssuer {
            trust_domain: td(TD_A)
        })
    );
    // B's own IDs still verify.
    let leaf_b = root_b.leaf(ID_B);
    let svid = verify_x509_svid(&chain_of(&[&leaf_b]), &bundles, now(), Usage::ServerAuth);
    assert_eq!(svid.unwrap().spiffe_id(), &id(ID_B));
}

#[test]
fn bundle_with_two_roots_accepts_both_during_rotation() {
    let old = TestCa::root(TD_A);
    let new = TestCa::root(TD_A);
    let old_leaf = old.leaf(ID_A);
    let new_leaf = new.leaf(ID_A);

    let mut overlap = bundle(TD_A, &[&old, &new]);
    let bundles = set([overlap.clone()]);
    for leaf in [&old_leaf, &new_leaf] {
        verify_x509_svid(&chain_of(&[leaf]), &bundles, now(), Usage::ClientAuth).unwrap();
    }

    // Once the old root is retired, its leaves stop verifying (both roots
    // share a subject name, so webpki reports the old leaf's signature).
    assert!(overlap.remove_x509_authority(&old.cert.der));
    let bundles = set([overlap]);
    verify_x509_svid(&chain_of(&[&new_leaf]), &bundles, now(), Usage::ClientAuth).unwrap();
    let err = verify_x509_svid(&chain_of(&[&old_leaf]), &bundles, now(), Usage::ClientAuth);
    assert_eq!(err, Err(VerifyError::BadSignature));
}

#[test]
fn client_only_leaf_is_refused_for_server_auth() {
    let root = TestCa::root(TD_A);
    let leaf = leaf_with(&root, ID_A, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    let bundles = set([bundle(TD_A, &[&root])]);
    let chain = chain_of(&[&leaf]);
    let err = verify_x509_svid(&chain, &bundles, now(), Usage::ServerAuth);
    assert_eq!(
        err,
        Err(VerifyError::RequiredEkuNotFound {
            usage: Usage::ServerAuth
        })
    );
    verify_x509_svid(&chain, &bundles, now(), Usage::ClientAuth).unwrap();
}

#[test]
fn leaf_without_eku_extension_is_fit_for_both_usages() {
    // RFC 5280 §4.2.1.12: no ExtendedKeyUsage means no restriction; the
    // X509-SVID standard only says leaves SHOULD carry the extension.
    let root = TestCa::root(TD_A);
    let leaf = leaf_with(&root, ID_A, |p| p.extended_key_usages.clear());
    let bundles = set([bundle(TD_A, &[&root])]);
    for usage in [Usage::ClientAuth, Usage::ServerAuth] {
        verify_x509_svid(&chain_of(&[&leaf]), &bundles, now(), usage).unwrap();
    }
}

#[test]
fn empty_or_unusable_bundle_fails_closed() {
    let root = TestCa::root(TD_A);
    let leaf = root.leaf(ID_A);
    let chain = chain_of(&[&leaf]);

    let empty = set([bundle(TD_A, &[])]);
    let err = verify_x509_svid(&chain, &empty, now(), Usage::ServerAuth);
    assert_eq!(
        err,
        Err(VerifyError::NoX509Authorities {
            trust_domain: td(TD_A)
        })
    );

    let mut broken = bundle(TD_A, &[&root]);
    broken.add_x509_authority(CertificateDer::from(b"garbage".to_vec()));
    let err = verify_x509_svid(&chain, &set([broken]), now(), Usage::ServerAuth);
    assert!(matches!(err, Err(VerifyError::BadTrustAnchor { .. })));
}

#[test]
fn a_refused_intermediate_lets_webpki_try_another_path() {
    // Two intermediates share subject and key; only one may sign. Offered
    // both, the path through the good one is found.
    let root = TestCa::root(TD_A);
    let key = p256();
    let same_key = rcgen::KeyPair::from_pem(&key.serialize_pem()).unwrap();
    let mut bad_params = ca_params("intermediate", "int", 30);
    bad_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let bad = root.intermediate_with(bad_params, key);
    let good = root.intermediate_with(ca_params("intermediate", "int", 30), same_key);
    let leaf = bad.leaf(ID_A);
    let bundles = set([bundle(TD_A, &[&root])]);

    let chain = chain_of(&[&leaf, &bad.cert, &good.cert]);
    verify_x509_svid(&chain, &bundles, now(), Usage::ServerAuth).unwrap();

    let chain = chain_of(&[&leaf, &bad.cert]);
    let err = verify_x509_svid(&chain, &bundles, now(), Usage::ServerAuth);
    assert!(matches!(
        err,
        Err(VerifyError::SigningCertMissingKeyCertSign { .. })
    ));
}
