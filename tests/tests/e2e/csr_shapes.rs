//! The CSR shapes real clients send are signed, and the leaf comes from
//! Sigil's template whatever the CSR's subject says: istio-agent (RSA-2048,
//! subject `O=""`), ztunnel (rcgen ECDSA P-256, empty subject, critical URI
//! SAN), a plain openssl RSA-2048/SHA-256 request, a SPIRE-style request
//! (subject, no SAN), and the other allowed key types (P-384, Ed25519).

use std::path::Path;

use crate::common::*;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

/// Serializes a CSR for `key` with `subject` and the URI SAN [`ID`] into
/// `dir/csr.pem`.
fn rcgen_csr(dir: &Path, key: &KeyPair, subject: DistinguishedName) -> anyhow::Result<()> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.subject_alt_names = vec![SanType::URI(ID.try_into()?)];
    let csr = params.serialize_request(key)?;
    write(dir, "csr.pem", csr.pem()?);
    Ok(())
}

/// Issues `dir/csr.pem`, checks the chain with `openssl verify -x509_strict`
/// and returns the leaf's `openssl x509 -text`, after checking what every
/// shape shares: empty subject, the one URI SAN, CA:FALSE, the CSR's key.
fn issue_and_check(dir: &Path) -> String {
    let issuer = self_signed_issuer(dir);
    let chain = issue_file(&issuer, dir, "csr.pem");
    assert_chain_verifies(dir, &chain);
    let text = x509_text(dir, "leaf.pem");
    assert_eq!(field(&text, "Subject"), Some(""), "{text}");
    assert_eq!(
        extension(&text, "X509v3 Subject Alternative Name"),
        Some(TextExtension {
            critical: true,
            value: format!("URI:{ID}")
        })
    );
    assert_eq!(
        extension(&text, "X509v3 Basic Constraints").map(|e| e.value),
        Some("CA:FALSE".into())
    );
    assert_eq!(
        public_key_of(dir, "x509", "leaf.pem"),
        public_key_of(dir, "req", "csr.pem"),
        "the leaf certifies the CSR's key"
    );
    text
}

fn key_usage(text: &str) -> Option<TextExtension> {
    extension(text, "X509v3 Key Usage")
}

#[test]
fn istio_agent_rsa2048_csr_with_empty_organization_is_signed() {
    let dir = tempdir();
    let d = dir.path();
    // The key is made by openssl (PKCS#8) and loaded into rcgen with ring.
    let key = KeyPair::from_pem(rsa2048_pkcs8()).unwrap();
    assert!(key.algorithm() == &rcgen::PKCS_RSA_SHA256);
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "");
    rcgen_csr(d, &key, subject).unwrap();

    // Sanity: openssl sees istio-agent's shape.
    let csr_text = openssl(d, &["req", "-in", "csr.pem", "-noout", "-text", "-verify"]);
    assert_eq!(field(&csr_text, "Subject"), Some("O ="), "{csr_text}");
    assert!(csr_text.contains("Public-Key: (2048 bit)"), "{csr_text}");
    assert!(csr_text.contains("sha256WithRSAEncryption"), "{csr_text}");

    let text = issue_and_check(d);
    assert_eq!(
        key_usage(&text),
        Some(TextExtension {
            critical: true,
            value: "Digital Signature, Key Encipherment".into()
        })
    );
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
}

#[test]
fn ztunnel_p256_csr_with_empty_subject_and_critical_san_is_signed() {
    let dir = tempdir();
    let d = dir.path();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    rcgen_csr(d, &key, DistinguishedName::new()).unwrap();

    let csr_text = openssl(d, &["req", "-in", "csr.pem", "-noout", "-text", "-verify"]);
    assert_eq!(field(&csr_text, "Subject"), Some(""), "{csr_text}");
    assert!(
        csr_text.contains("X509v3 Subject Alternative Name: critical"),
        "ztunnel marks the SAN critical: {csr_text}"
    );

    let text = issue_and_check(d);
    assert_eq!(
        key_usage(&text),
        Some(TextExtension {
            critical: true,
            value: "Digital Signature".into()
        })
    );
}

#[test]
fn openssl_rsa2048_sha256_csr_is_signed_with_key_encipherment() {
    let dir = tempdir();
    let d = dir.path();
    write(d, "rsa.pem", rsa2048_pkcs8());
    openssl_csr(d, "rsa.pem", "csr.pem", &["-sha256"]);
    let csr_text = openssl(d, &["req", "-in", "csr.pem", "-noout", "-text"]);
    assert!(csr_text.contains("sha256WithRSAEncryption"), "{csr_text}");

    let text = issue_and_check(d);
    assert_eq!(
        key_usage(&text).unwrap().value,
        "Digital Signature, Key Encipherment"
    );
    // The CA (ECDSA P-256) signs; the CSR's algorithm is not copied.
    assert_eq!(
        field(&text, "Signature Algorithm"),
        Some("ecdsa-with-SHA256")
    );
}

#[test]
fn spire_style_csr_without_san_gets_the_authorized_id_and_no_subject() {
    let dir = tempdir();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-subj",
            "/C=US/O=SPIRE",
            "-out",
            "csr.pem",
        ],
    );
    let csr_text = openssl(d, &["req", "-in", "csr.pem", "-noout", "-text"]);
    assert_eq!(field(&csr_text, "Subject"), Some("C = US, O = SPIRE"));
    assert!(
        !csr_text.contains("Subject Alternative Name"),
        "sanity: no SAN requested"
    );

    // issue_and_check asserts the empty subject and the one URI SAN = ID.
    let text = issue_and_check(d);
    assert!(!text.contains("SPIRE"), "the CSR's subject leaked: {text}");
}

#[test]
fn openssl_p384_and_ed25519_csrs_are_signed() {
    for (name, genpkey) in [
        (
            "P-384",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"][..],
        ),
        ("Ed25519", &["-algorithm", "ED25519"][..]),
    ] {
        let dir = tempdir();
        let d = dir.path();
        let mut args = vec!["genpkey", "-out", "key.pem"];
        args.extend_from_slice(genpkey);
        openssl(d, &args);
        openssl_csr(d, "key.pem", "csr.pem", &[]);
        let text = issue_and_check(d);
        assert_eq!(
            key_usage(&text).unwrap().value,
            "Digital Signature",
            "{name}"
        );
    }
}
