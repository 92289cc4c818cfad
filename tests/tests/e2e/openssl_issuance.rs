//! An openssl-made CSR, signed by a self-signed Sigil authority, checked
//! field by field with the `openssl` command line (`verify -x509_strict`,
//! `x509 -text`, `-purpose`, `-checkend`) and a second parser — never with
//! the code that built the certificate.

use crate::common::*;
use x509_parser::prelude::{FromDer, X509Certificate};

/// `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes`
/// with an empty subject and the URI SAN [`ID`], written to `dir/csr.pem`
/// (`-outform` as given).
fn openssl_p256_csr(dir: &std::path::Path, outform: &str) {
    let san = format!("subjectAltName=URI:{ID}");
    openssl(
        dir,
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
            "/",
            "-addext",
            &san,
            "-outform",
            outform,
            "-out",
            "csr.pem",
        ],
    );
}

#[test]
fn openssl_p256_csr_is_signed_and_chain_verifies_x509_strict() {
    let dir = tempdir();
    let d = dir.path();
    let issuer = self_signed_issuer(d);
    openssl_p256_csr(d, "PEM");

    let chain = issue_file(&issuer, d, "csr.pem");

    // [leaf, root]: the self-signed root signs directly, and is the file
    // the CA wrote.
    assert_eq!(chain.certs().len(), 2);
    let root_file = pem_file_ders(&d.join("ca"), "root-cert.pem");
    assert_eq!(root_file.len(), 1);
    assert_eq!(chain.certs()[1].as_ref(), root_file[0].as_slice());
    assert_eq!(chain.spiffe_id().to_string(), ID);
    // Every PEM element ends with a newline (real clients split on it).
    assert!(chain.pem_certs().iter().all(|p| p.ends_with("-----\n")));

    let files = assert_chain_verifies(d, &chain);
    assert!(files.intermediates.is_none());

    // Negative control: the same leaf does not verify against another root,
    // so the check above is not vacuous.
    let other = tempdir();
    let _ = self_signed_issuer(other.path());
    std::fs::copy(other.path().join("ca/root-cert.pem"), d.join("other.pem"))
        .expect("copy other root");
    let run = openssl_run(
        d,
        &["verify", "-x509_strict", "-CAfile", "other.pem", "leaf.pem"],
    );
    assert!(!run.ok, "a leaf verified against an unrelated root");
    assert!(
        run.stderr
            .contains("unable to get local issuer certificate"),
        "{}",
        run.stderr
    );
}

#[test]
fn leaf_as_printed_by_openssl_is_an_x509_svid() {
    let dir = tempdir();
    let d = dir.path();
    let issuer = self_signed_issuer(d);
    openssl_p256_csr(d, "PEM");
    let chain = issue_file(&issuer, d, "csr.pem");
    write_chain(d, &chain);
    let text = x509_text(d, "leaf.pem");
    let root_text = x509_text(d, "root.pem");

    assert!(text.contains("Version: 3 (0x2)"), "{text}");
    // Empty subject; the issuer is the root's subject.
    assert_eq!(field(&text, "Subject"), Some(""), "{text}");
    assert_eq!(
        field(&text, "Issuer"),
        Some(
            format!(
                "O = cluster.local, CN = Sigil root CA {}",
                crate::self_signed::ski_prefix(&root_text)
            )
            .as_str()
        )
    );
    assert_eq!(field(&text, "Issuer"), field(&root_text, "Subject"));

    // Exactly one SAN, the URI, critical because the subject is empty.
    let san = extension(&text, "X509v3 Subject Alternative Name").expect("SAN");
    assert_eq!(
        san,
        TextExtension {
            critical: true,
            value: format!("URI:{ID}")
        }
    );
    assert_eq!(
        extension(&text, "X509v3 Basic Constraints"),
        Some(TextExtension {
            critical: true,
            value: "CA:FALSE".into()
        })
    );
    // An EC key: digitalSignature only (no keyEncipherment).
    assert_eq!(
        extension(&text, "X509v3 Key Usage"),
        Some(TextExtension {
            critical: true,
            value: "Digital Signature".into()
        })
    );
    assert_eq!(
        extension(&text, "X509v3 Extended Key Usage").map(|e| e.value),
        Some("TLS Web Server Authentication, TLS Web Client Authentication".into())
    );
    let ski = extension(&text, "X509v3 Subject Key Identifier").expect("SKI");
    assert!(!ski.critical);
    let aki = extension(&text, "X509v3 Authority Key Identifier").expect("AKI");
    let root_ski = extension(&root_text, "X509v3 Subject Key Identifier").expect("root SKI");
    assert_eq!(
        aki.value.trim_start_matches("keyid:"),
        root_ski.value,
        "the leaf's AKI names the root's key"
    );
    assert_ne!(ski.value, root_ski.value);
    // Nothing else: exactly these six extensions.
    let ext_count = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("X509v3 ") && !l.starts_with("X509v3 extensions:"))
        .count();
    assert_eq!(ext_count, 6, "{text}");

    // A positive 128-bit serial, as reported.
    let serial = serial_hex(d, "leaf.pem");
    assert_eq!(serial.len(), 32, "serial {serial}");
    assert!(
        matches!(serial.as_bytes()[0], b'4'..=b'7'),
        "serial {serial} must have its top bit clear and use all 128 bits"
    );
    let reported: String = chain.serial().iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(serial, reported);

    // ~24 h: still valid in 23h58m, expired in 24h02m.
    assert!(valid_in(d, "leaf.pem", 24 * 3600 - 120));
    assert!(!valid_in(d, "leaf.pem", 24 * 3600 + 120));
    // notBefore is backdated by the 60 s clock-skew allowance (second parser).
    let (_, parsed) = X509Certificate::from_der(chain.certs()[0].as_ref()).expect("parse leaf");
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
    assert_eq!(not_before, chain.not_before().unix_timestamp());
    assert_eq!(not_after - not_before, 24 * 3600 + 60);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now - not_before - 60).abs() <= 30,
        "notBefore {not_before}, now {now}"
    );

    // The CSR contributed its key, and the CA signed with ECDSA P-256.
    assert_eq!(
        public_key_of(d, "x509", "leaf.pem"),
        public_key_of(d, "req", "csr.pem")
    );
    assert_eq!(
        field(&text, "Signature Algorithm"),
        Some("ecdsa-with-SHA256")
    );
}

#[test]
fn openssl_purpose_is_tls_client_and_server_and_never_a_ca() {
    let dir = tempdir();
    let d = dir.path();
    let issuer = self_signed_issuer(d);
    openssl_p256_csr(d, "PEM");
    let chain = issue_file(&issuer, d, "csr.pem");
    write_chain(d, &chain);

    let purposes = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-purpose"]);
    for (purpose, expected) in [
        ("SSL client", "Yes"),
        ("SSL server", "Yes"),
        ("SSL client CA", "No"),
        ("SSL server CA", "No"),
        ("CRL signing", "No"),
        ("S/MIME signing", "No"),
    ] {
        assert_eq!(
            field(&purposes, &format!("{purpose} ")),
            Some(expected),
            "{purpose} in\n{purposes}"
        );
    }
    // The leaf cannot act as an issuer: a certificate signed with its key
    // is refused by `openssl verify` (CA:FALSE, no keyCertSign).
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
            "sub-key.pem",
            "-subj",
            "/CN=sub",
            "-out",
            "sub.csr",
        ],
    );
    openssl(
        d,
        &[
            "x509", "-req", "-in", "sub.csr", "-CA", "leaf.pem", "-CAkey", "key.pem", "-days", "1",
            "-out", "sub.pem",
        ],
    );
    let run = openssl_run(
        d,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "leaf.pem",
            "sub.pem",
        ],
    );
    assert!(!run.ok, "a certificate issued by the leaf verified");
    assert!(
        run.stderr.contains("invalid CA certificate"),
        "{}",
        run.stderr
    );
}

#[test]
fn der_encoded_openssl_csr_is_accepted() {
    let dir = tempdir();
    let d = dir.path();
    let issuer = self_signed_issuer(d);
    openssl_p256_csr(d, "DER");
    assert!(
        !read(d, "csr.pem").starts_with(b"-----"),
        "sanity: the CSR is DER"
    );
    let chain = issue_file(&issuer, d, "csr.pem");
    assert_chain_verifies(d, &chain);
}

#[test]
fn reissuing_one_csr_gives_fresh_serials_and_each_verifies() {
    let dir = tempdir();
    let d = dir.path();
    let issuer = self_signed_issuer(d);
    openssl_p256_csr(d, "PEM");
    let first = issue_file(&issuer, d, "csr.pem");
    let second = issue_file(&issuer, d, "csr.pem");
    assert_ne!(
        first.serial(),
        second.serial(),
        "one key, two serials (rcgen would derive the serial from the key)"
    );
    assert_eq!(first.serial().len(), 16);
    assert_eq!(second.serial().len(), 16);
    write_chain(d, &first);
    let serial_one = serial_hex(d, "leaf.pem");
    assert_chain_verifies(d, &second);
    assert_ne!(serial_one, serial_hex(d, "leaf.pem"));
}
