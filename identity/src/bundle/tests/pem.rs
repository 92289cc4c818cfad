//! PEM bundle tests: round trip, deduplication, and one test per error.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use sigil_test_util::{TestCa, pem_of};

use crate::bundle::{BundleError, MAX_PEM_BUNDLE_LEN, MAX_PEM_CERTIFICATES, TrustBundle};
use crate::spiffe_id::TrustDomain;

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn from_pem(input: &[u8]) -> Result<TrustBundle, BundleError> {
    TrustBundle::from_pem(td(), input)
}

#[test]
fn round_trip_two_roots_in_order() {
    let old = TestCa::root("example.org");
    let new = TestCa::root("example.org");
    let input = format!("{}{}", old.cert.pem, new.cert.pem);

    let bundle = from_pem(input.as_bytes()).unwrap();
    assert_eq!(bundle.trust_domain(), &td());
    assert_eq!(
        bundle.x509_authorities(),
        &[old.cert.der.clone(), new.cert.der.clone()]
    );

    let out = bundle.to_pem();
    // Independent encoder (the `pem` crate via test-util), line endings
    // normalised: the same two blocks in the same order.
    let expected =
        format!("{}{}", pem_of(&old.cert.der), pem_of(&new.cert.der)).replace("\r\n", "\n");
    assert_eq!(out, expected);
    assert!(out.ends_with("-----END CERTIFICATE-----\n"));
    assert_eq!(out.matches("-----BEGIN CERTIFICATE-----\n").count(), 2);
    assert!(out.lines().all(|l| l.len() <= 64));

    // An independent decoder reads the output back to the same DER.
    let decoded: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(out.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(decoded, bundle.x509_authorities());

    assert_eq!(from_pem(out.as_bytes()).unwrap(), bundle);
}

#[test]
fn empty_bundle_encodes_to_empty_string() {
    assert_eq!(TrustBundle::new(td()).to_pem(), "");
}

#[test]
fn duplicate_roots_are_deduplicated() {
    let root = TestCa::root("example.org");
    let other = TestCa::root("example.org");
    let input = format!("{}{}{}", root.cert.pem, other.cert.pem, root.cert.pem);
    let bundle = from_pem(input.as_bytes()).unwrap();
    assert_eq!(
        bundle.x509_authorities(),
        &[root.cert.der.clone(), other.cert.der.clone()]
    );
}

#[test]
fn text_between_blocks_and_crlf_are_accepted() {
    let a = TestCa::root("example.org");
    let b = TestCa::root("example.org");
    let input = format!(
        "# root A\r\nsubject=O=example.org\r\n{}\r\nsome comment\r\n{}trailing text\n",
        a.cert.pem.replace('\n', "\r\n"),
        b.cert.pem
    );
    let bundle = from_pem(input.as_bytes()).unwrap();
    assert_eq!(bundle.x509_authorities().len(), 2);
}

#[test]
fn empty_input_is_refused() {
    assert_eq!(from_pem(b""), Err(BundleError::NoCertificates));
    assert_eq!(from_pem(b"\n\n  \n"), Err(BundleError::NoCertificates));
}

#[test]
fn garbage_is_refused() {
    assert_eq!(
        from_pem(b"this is not a PEM file \x00\xff"),
        Err(BundleError::NoCertificates)
    );
}

#[test]
fn private_key_block_only_is_refused_with_its_label() {
    let root = TestCa::root("example.org");
    let key_pem = root.cert.key.serialize_pem();
    let err = from_pem(key_pem.as_bytes()).unwrap_err();
    assert_eq!(
        err,
        BundleError::NotACertificate {
            index: 0,
            label: "PRIVATE KEY".to_owned()
        }
    );
    // The message names the block and never repeats key material.
    let msg = err.to_string();
    assert!(msg.contains("PEM block 0"), "{msg}");
    let body_line = key_pem.lines().nth(1).unwrap();
    assert!(!msg.contains(body_line));
}

#[test]
fn private_key_after_a_certificate_names_block_1() {
    let root = TestCa::root("example.org");
    let input = format!("{}{}", root.cert.pem, root.cert.key.serialize_pem());
    assert_eq!(
        from_pem(input.as_bytes()),
        Err(BundleError::NotACertificate {
            index: 1,
            label: "PRIVATE KEY".to_owned()
        })
    );
}

#[test]
fn unknown_block_label_is_refused() {
    let root = TestCa::root("example.org");
    let input = format!(
        "{}-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n",
        root.cert.pem
    );
    assert_eq!(
        from_pem(input.as_bytes()),
        Err(BundleError::NotACertificate {
            index: 1,
            label: "FOO".to_owned()
        })
    );
}

#[test]
fn corrupt_certificate_is_refused_with_its_index() {
    let root = TestCa::root("example.org");
    let mut der = root.cert.der.to_vec();
    der.truncate(der.len() / 2);
    let corrupt = pem_of(&CertificateDer::from(der));
    let input = format!("{}{}", root.cert.pem, corrupt);
    assert!(matches!(
        from_pem(input.as_bytes()),
        Err(BundleError::InvalidPemCertificate { index: 1, .. })
    ));
}

#[test]
fn certificate_with_trailing_bytes_is_refused() {
    let root = TestCa::root("example.org");
    let mut der = root.cert.der.to_vec();
    der.extend_from_slice(&[0, 0]);
    let input = pem_of(&CertificateDer::from(der));
    let err = from_pem(input.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, BundleError::InvalidPemCertificate { index: 0, reason } if reason.contains("trailing")),
        "{err:?}"
    );
}

#[test]
fn bad_base64_is_refused_with_its_index() {
    let root = TestCa::root("example.org");
    let input = format!(
        "{}-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        root.cert.pem
    );
    assert!(matches!(
        from_pem(input.as_bytes()),
        Err(BundleError::MalformedPem { index: 1, .. })
    ));
}

#[test]
fn missing_end_line_is_refused() {
    let root = TestCa::root("example.org");
    let cut = root.cert.pem.replace("-----END CERTIFICATE-----", "");
    assert!(matches!(
        from_pem(cut.as_bytes()),
        Err(BundleError::MalformedPem { index: 0, .. })
    ));
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let input = vec![b'A'; MAX_PEM_BUNDLE_LEN + 1];
    assert_eq!(
        from_pem(&input),
        Err(BundleError::InputTooLarge {
            len: MAX_PEM_BUNDLE_LEN + 1,
            limit: MAX_PEM_BUNDLE_LEN
        })
    );
}

#[test]
fn too_many_blocks_are_refused() {
    let root = TestCa::root("example.org");
    let input = root.cert.pem.repeat(MAX_PEM_CERTIFICATES + 1);
    assert_eq!(
        from_pem(input.as_bytes()),
        Err(BundleError::TooManyCertificates {
            count: MAX_PEM_CERTIFICATES + 1,
            limit: MAX_PEM_CERTIFICATES
        })
    );
}
