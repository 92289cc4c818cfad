//! The zero-config self-signed root's lifecycle, checked on disk and with
//! openssl: created once in Istio's layout with a 0600 key, reloaded
//! unchanged on the next start, never created over foreign files, and an
//! ECDSA P-256 ten-year CA for the trust domain whose subject names its key
//! (`CN = Sigil root CA <first 8 bytes of the SKI>`), so two roots of one
//! trust domain never share a subject.

use crate::common::*;
use sigil_ca::AuthorityError;
use sigil_ca::authority::source;
use time::OffsetDateTime;

const ISTIO_FILES: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "cert-chain.pem",
    "root-cert.pem",
];

#[test]
fn create_writes_the_istio_layout_with_a_0600_key() {
    let tmp = tempdir();
    let dir = tmp.path().join("ca");
    let authority = source::create_self_signed(&dir, &td(), OffsetDateTime::now_utc()).unwrap();

    assert_eq!(dir_names(&dir), ISTIO_FILES);
    // No staging directory left next to it.
    assert_eq!(dir_names(tmp.path()), ["ca"]);
    assert_eq!(file_mode(&dir.join("ca-key.pem")), 0o600);
    for cert in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"] {
        assert_eq!(file_mode(&dir.join(cert)), 0o644, "{cert}");
    }
    assert_eq!(file_mode(&dir), 0o700);

    // One self-signed certificate in all three certificate files, the same
    // one the authority signs with and trusts.
    let root = pem_file_ders(&dir, "root-cert.pem");
    assert_eq!(root.len(), 1);
    assert_eq!(pem_file_ders(&dir, "ca-cert.pem"), root);
    assert_eq!(pem_file_ders(&dir, "cert-chain.pem"), root);
    assert_eq!(authority.roots().len(), 1);
    assert_eq!(authority.roots()[0].as_ref(), root[0].as_slice());
    assert_eq!(
        authority.signing_cert().map(|c| c.as_ref().to_vec()),
        Some(root[0].clone())
    );

    // The key is PKCS#8 and openssl agrees it belongs to the certificate.
    let key = read_string(&dir, "ca-key.pem");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(
        openssl(&dir, &["pkey", "-in", "ca-key.pem", "-pubout"]),
        public_key_of(&dir, "x509", "root-cert.pem")
    );
}

#[test]
fn second_start_loads_the_same_root() {
    let tmp = tempdir();
    let dir = tmp.path().join("ca");
    let now = OffsetDateTime::now_utc();
    let (first, created) = source::load_or_create_self_signed(&dir, &td(), now).unwrap();
    assert!(created);
    let files: Vec<Vec<u8>> = ISTIO_FILES.iter().map(|f| read(&dir, f)).collect();

    let (second, created) = source::load_or_create_self_signed(&dir, &td(), now).unwrap();
    assert!(!created, "the existing CA must be loaded, not replaced");
    assert_eq!(first.roots(), second.roots());
    assert_eq!(first.not_after(), second.not_after());
    let again: Vec<Vec<u8>> = ISTIO_FILES.iter().map(|f| read(&dir, f)).collect();
    assert_eq!(files, again, "no file was rewritten");

    // What the reloaded CA issues verifies against the root written on
    // the first start.
    let issuer = sigil_ca::CertIssuer::new(
        std::sync::Arc::new(second),
        sigil_ca::IssuancePolicy::default(),
    );
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    openssl_p256_key(&out, "key.pem");
    openssl_csr(&out, "key.pem", "csr.pem", &[]);
    let chain = issue_file(&issuer, &out, "csr.pem");
    let files = write_chain(&out, &chain);
    let root = dir.join("root-cert.pem").display().to_string();
    assert_openssl_verifies(&out, &root, None, &files.leaf);
}

#[test]
fn a_directory_with_foreign_files_is_never_used() {
    let tmp = tempdir();
    let dir = tmp.path().join("ca");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "notes.txt", "operator's file\n");
    let now = OffsetDateTime::now_utc();

    let err = source::create_self_signed(&dir, &td(), now).unwrap_err();
    assert!(
        matches!(&err, AuthorityError::DirNotEmpty { dir: d } if *d == dir),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );

    let err = source::load_or_create_self_signed(&dir, &td(), now).unwrap_err();
    assert!(
        matches!(&err, AuthorityError::DirNotEmpty { dir: d } if *d == dir),
        "{err:?}"
    );

    assert_eq!(dir_names(&dir), ["notes.txt"]);
    assert_eq!(read_string(&dir, "notes.txt"), "operator's file\n");
    assert_eq!(dir_names(tmp.path()), ["ca"], "no staging directory left");
}

#[test]
fn root_as_printed_by_openssl_is_a_ten_year_p256_ca_for_the_trust_domain() {
    let tmp = tempdir();
    let dir = tmp.path().join("ca");
    let authority = source::create_self_signed(&dir, &td(), OffsetDateTime::now_utc()).unwrap();
    assert_eq!(authority.key_algorithm(), "ECDSA P-256");
    let text = x509_text(&dir, "root-cert.pem");

    assert!(text.contains("NIST CURVE: P-256"), "{text}");
    assert_eq!(
        field(&text, "Signature Algorithm"),
        Some("ecdsa-with-SHA256")
    );
    assert_eq!(
        field(&text, "Subject"),
        Some(
            format!(
                "O = cluster.local, CN = Sigil root CA {}",
                ski_prefix(&text)
            )
            .as_str()
        )
    );
    assert_eq!(field(&text, "Issuer"), field(&text, "Subject"));
    assert_eq!(
        extension(&text, "X509v3 Basic Constraints"),
        Some(TextExtension {
            critical: true,
            value: "CA:TRUE".into()
        })
    );
    let key_usage = extension(&text, "X509v3 Key Usage").unwrap();
    assert!(key_usage.critical);
    assert!(
        key_usage.value.contains("Certificate Sign") && key_usage.value.contains("CRL Sign"),
        "{key_usage:?}"
    );
    assert_eq!(
        extension(&text, "X509v3 Subject Alternative Name").map(|e| e.value),
        Some("URI:spiffe://cluster.local".into())
    );
    assert!(extension(&text, "X509v3 Subject Key Identifier").is_some());

    let serial = serial_hex(&dir, "root-cert.pem");
    assert_eq!(serial.len(), 32, "128-bit serial: {serial}");

    // Ten years (3650 days): valid a day short of that, not a day past it.
    assert!(valid_in(&dir, "root-cert.pem", 3649 * 86_400));
    assert!(!valid_in(&dir, "root-cert.pem", 3651 * 86_400));

    // openssl accepts it as a strict trust anchor.
    let out = openssl(
        &dir,
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            "root-cert.pem",
            "root-cert.pem",
        ],
    );
    assert_eq!(out.trim(), "root-cert.pem: OK");
}

/// The first 8 bytes of the Subject Key Identifier `openssl x509 -text`
/// printed, as lowercase hex without colons.
pub(crate) fn ski_prefix(text: &str) -> String {
    let ski = extension(text, "X509v3 Subject Key Identifier").expect("SKI");
    let hex: String = ski
        .value
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex[..16].to_owned()
}

#[test]
fn two_roots_of_one_trust_domain_have_different_subjects_and_each_chain_verifies() {
    let tmp = tempdir();
    let now = OffsetDateTime::now_utc();
    let mut subjects = Vec::new();
    for name in ["first", "second"] {
        let dir = tmp.path().join(name);
        let authority = source::create_self_signed(&dir.join("ca"), &td(), now).unwrap();
        let text = x509_text(&dir.join("ca"), "root-cert.pem");
        subjects.push(field(&text, "Subject").unwrap().to_owned());

        // What it issues still verifies strictly to its own root.
        let issuer = sigil_ca::CertIssuer::new(
            std::sync::Arc::new(authority),
            sigil_ca::IssuancePolicy::default(),
        );
        openssl_p256_key(&dir, "key.pem");
        openssl_csr(&dir, "key.pem", "csr.pem", &[]);
        let chain = issue_file(&issuer, &dir, "csr.pem");
        let files = assert_chain_verifies(&dir, &chain);
        let leaf_text = x509_text(&dir, &files.leaf);
        assert_eq!(field(&leaf_text, "Issuer"), field(&text, "Subject"));
    }
    assert_ne!(
        subjects[0], subjects[1],
        "one trust domain, two roots, two subjects"
    );
    // And a leaf of the first does not verify under the second root.
    let first = tmp.path().join("first");
    let second_root = tmp.path().join("second/ca/root-cert.pem");
    let run = openssl_run(
        &first,
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            &second_root.display().to_string(),
            "leaf.pem",
        ],
    );
    assert!(!run.ok, "{} {}", run.stdout, run.stderr);
}
