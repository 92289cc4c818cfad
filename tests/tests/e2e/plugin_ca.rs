//! Plug-in CA material made by openssl ("an enterprise PKI"): two- and
//! three-level hierarchies in Istio's and cert-manager's layouts, CA keys in
//! every common encoding, and each kind of unusable material refused at load
//! with the right [`AuthorityError`] naming the file to fix.

use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use sigil_ca::authority::source;
use sigil_ca::{Authority, AuthorityError, CertIssuer, IssuancePolicy, IssuedChain};
use time::OffsetDateTime;

mod pki;

use pki::{Ca, Pki};

fn load(dir: &Path) -> Result<Authority, AuthorityError> {
    source::load_dir(dir, &td(), OffsetDateTime::now_utc())
}

/// Loads `dir` expecting a refusal.
fn load_err(dir: &Path) -> AuthorityError {
    match load(dir) {
        Ok(authority) => panic!("{} must be refused, got {authority:?}", dir.display()),
        Err(e) => e,
    }
}

/// Asserts the error's message names `dir/file`, so an operator knows what
/// to fix.
fn assert_names(err: &AuthorityError, dir: &Path, file: &str) {
    let path = dir.join(file);
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the message should name {}: {message}",
        path.display()
    );
}

/// Issues an openssl-made P-256 CSR with the authority in `ca_dir`, checks
/// the chain is `[leaf, expected...]` and that `openssl verify -x509_strict
/// -CAfile <root_file> -untrusted <intermediates>` accepts it. Returns the
/// chain (files written into `<pki>/out`).
fn issue_and_verify(pki: &Pki, ca_dir: &Path, root_file: &str, expected: &[&Ca]) -> IssuedChain {
    let authority = load(ca_dir).unwrap_or_else(|e| panic!("load {}: {e}", ca_dir.display()));
    let issuer = CertIssuer::new(Arc::new(authority), IssuancePolicy::default());
    let out = pki.path().join("out");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("mkdir out: {e}"));
    openssl_p256_key(&out, "key.pem");
    openssl_csr(&out, "key.pem", "csr.pem", &[]);
    let chain = issue_file(&issuer, &out, "csr.pem");

    let after_leaf: Vec<&[u8]> = chain.certs()[1..].iter().map(|c| c.as_ref()).collect();
    let expected_ders: Vec<Vec<u8>> = expected.iter().map(|ca| pki.der(ca)).collect();
    let expected_ders: Vec<&[u8]> = expected_ders.iter().map(Vec::as_slice).collect();
    assert_eq!(after_leaf, expected_ders, "chain order after the leaf");

    let files = write_chain(&out, &chain);
    let root = ca_dir.join(root_file);
    assert_openssl_verifies(
        &out,
        &root.display().to_string(),
        files.intermediates.as_deref(),
        &files.leaf,
    );
    // The leaf's AKI names the signing CA's key.
    let leaf_text = x509_text(&out, "leaf.pem");
    let signing_text = x509_text(pki.path(), &expected[0].cert);
    assert_eq!(
        extension(&leaf_text, "X509v3 Authority Key Identifier").map(|e| e.value),
        extension(&signing_text, "X509v3 Subject Key Identifier").map(|e| e.value)
    );
    chain
}

// === hierarchies and layouts ===

#[test]
fn istio_layout_two_levels_issues_a_chain_openssl_verifies() {
    let pki = Pki::new();
    let root = pki.root("root");
    let issuing = pki.intermediate("issuing", &root);
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);

    issue_and_verify(&pki, &dir, "root-cert.pem", &[&issuing, &root]);
}

#[test]
fn istio_layout_without_cert_chain_file_still_reaches_the_root() {
    // cert-chain.pem is optional when the root signs the issuing CA.
    let pki = Pki::new();
    let root = pki.root("root");
    let issuing = pki.intermediate("issuing", &root);
    let dir = pki.istio_dir("cacerts", &issuing, &[], &[&root]);
    std::fs::remove_file(dir.join("cert-chain.pem")).unwrap();

    issue_and_verify(&pki, &dir, "root-cert.pem", &[&issuing, &root]);
}

#[test]
fn istio_layout_three_levels_chain_is_leaf_issuing_policy_root() {
    let pki = Pki::new();
    let root = pki.root("root");
    let policy = pki.intermediate("policy", &root);
    let issuing = pki.intermediate("issuing", &policy);
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &policy, &root], &[&root]);

    let chain = issue_and_verify(&pki, &dir, "root-cert.pem", &[&issuing, &policy, &root]);
    assert_eq!(chain.certs().len(), 4);
}

#[test]
fn cert_manager_layout_three_levels_chain_is_leaf_issuing_policy_root() {
    let pki = Pki::new();
    let root = pki.root("root");
    let policy = pki.intermediate("policy", &root);
    let issuing = pki.intermediate("issuing", &policy);
    let dir = pki.path().join("tls");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "tls.crt", pki.concat(&[&issuing.cert, &policy.cert]));
    write(&dir, "tls.key", read(pki.path(), &issuing.key));
    write(&dir, "ca.crt", read(pki.path(), &root.cert));

    let chain = issue_and_verify(&pki, &dir, "ca.crt", &[&issuing, &policy, &root]);
    assert_eq!(chain.certs().len(), 4);
}

// === CA key encodings ===

/// A two-level Istio directory whose issuing CA key is `key` (a file in the
/// PKI dir); returns the authority's key algorithm after issuing and
/// verifying a chain, and the leaf's signature algorithm.
fn two_level_with_issuing_key(pki: &Pki, key: &str) -> (String, String) {
    let root = pki.root("root");
    let issuing = pki.sub_ca("issuing", key, &root, "v3_ca");
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);
    let algorithm = load(&dir).map(|a| a.key_algorithm()).unwrap_or_else(|e| {
        panic!("load: {e}");
    });
    issue_and_verify(pki, &dir, "root-cert.pem", &[&issuing, &root]);
    let text = x509_text(&pki.path().join("out"), "leaf.pem");
    let signature = field(&text, "Signature Algorithm").unwrap_or_default();
    (algorithm.to_owned(), signature.to_owned())
}

#[test]
fn pkcs1_rsa_ca_key_loads_and_signs() {
    let pki = Pki::new();
    write(pki.path(), "rsa-pkcs8.pem", rsa2048_pkcs8());
    pki.openssl(&[
        "rsa",
        "-in",
        "rsa-pkcs8.pem",
        "-traditional",
        "-out",
        "issuing-key.pem",
    ]);
    assert!(
        read_string(pki.path(), "issuing-key.pem").starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );

    let (algorithm, signature) = two_level_with_issuing_key(&pki, "issuing-key.pem");
    assert_eq!(algorithm, "RSA");
    assert_eq!(signature, "sha256WithRSAEncryption");
}

#[test]
fn sec1_ec_ca_key_with_ec_parameters_block_loads_and_signs() {
    let pki = Pki::new();
    let key = pki.ec_key("issuing-key.pem");
    let pem = read_string(pki.path(), &key);
    assert!(
        pem.starts_with("-----BEGIN EC PARAMETERS-----"),
        "{pem:.40}"
    );
    assert!(pem.contains("-----BEGIN EC PRIVATE KEY-----"));

    let (algorithm, signature) = two_level_with_issuing_key(&pki, &key);
    assert_eq!(algorithm, "ECDSA P-256");
    assert_eq!(signature, "ecdsa-with-SHA256");
}

#[test]
fn sec1_ec_ca_key_alone_loads_and_signs() {
    let pki = Pki::new();
    pki.openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "issuing-key.pem",
    ]);
    assert!(
        read_string(pki.path(), "issuing-key.pem").starts_with("-----BEGIN EC PRIVATE KEY-----")
    );

    let (algorithm, _) = two_level_with_issuing_key(&pki, "issuing-key.pem");
    assert_eq!(algorithm, "ECDSA P-256");
}

#[test]
fn pkcs8_p384_and_rsa_ca_keys_load_and_sign() {
    let pki = Pki::new();
    let key = pki.genpkey(
        "issuing-key.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    assert!(read_string(pki.path(), &key).starts_with("-----BEGIN PRIVATE KEY-----"));
    let (algorithm, signature) = two_level_with_issuing_key(&pki, &key);
    assert_eq!(algorithm, "ECDSA P-384");
    assert_eq!(signature, "ecdsa-with-SHA384");

    let pki = Pki::new();
    write(pki.path(), "issuing-key.pem", rsa2048_pkcs8());
    let (algorithm, signature) = two_level_with_issuing_key(&pki, "issuing-key.pem");
    assert_eq!(algorithm, "RSA");
    assert_eq!(signature, "sha256WithRSAEncryption");
}

// === refusals ===

#[test]
fn rsa_1024_root_in_the_bundle_is_refused() {
    // The chain is sound, but root-cert.pem also carries a 1024-bit RSA root.
    let pki = Pki::new();
    let root = pki.root("root");
    let key = pki.genpkey(
        "weak-key.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    pki.openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &key,
        "-subj",
        "/O=Example Corp/CN=weak-root",
        "-days",
        "365",
        "-config",
        "openssl.cnf",
        "-extensions",
        "v3_ca",
        "-out",
        "weak-root.pem",
    ]);
    let weak = Ca {
        cert: "weak-root.pem".into(),
        key,
    };
    let issuing = pki.intermediate("issuing", &root);
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root, &weak]);

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::WeakRsaKey { path, bits: 1024, subject }
            if *path == dir.join("root-cert.pem") && subject.contains("CN=weak-root")),
        "{err:?}"
    );
    assert_names(&err, &dir, "root-cert.pem");
}

#[test]
fn key_not_matching_the_certificate_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let issuing = pki.intermediate("issuing", &root);
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);
    let other = pki.ec_key("other-key.pem");
    write(&dir, "ca-key.pem", read(pki.path(), &other));

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::KeyMismatch { key_path, cert_path }
            if *key_path == dir.join("ca-key.pem") && *cert_path == dir.join("ca-cert.pem")),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-key.pem");
    assert_names(&err, &dir, "ca-cert.pem");
}

#[test]
fn issuing_certificate_with_ca_false_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let key = pki.ec_key("issuing-key.pem");
    let issuing = pki.sub_ca("issuing", &key, &root, "not_a_ca");
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::NotACa { path, .. } if *path == dir.join("ca-cert.pem")),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-cert.pem");
}

#[test]
fn ca_without_key_cert_sign_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let key = pki.ec_key("issuing-key.pem");
    let issuing = pki.sub_ca("issuing", &key, &root, "no_key_cert_sign");
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::NoKeyCertSign { path, .. } if *path == dir.join("ca-cert.pem")),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-cert.pem");
}

#[test]
fn expired_issuing_ca_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let issuing = pki.dated_ca("issuing", &root, "20200101000000Z", "20210101000000Z");
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);
    assert!(!valid_in(pki.path(), &issuing.cert, 0), "sanity: expired");

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::Expired { path, not_after, .. }
            if *path == dir.join("ca-cert.pem") && not_after == "2021-01-01T00:00:00Z"),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-cert.pem");
}

#[test]
fn not_yet_valid_issuing_ca_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let issuing = pki.dated_ca("issuing", &root, "20400101000000Z", "20410101000000Z");
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::NotYetValid { path, not_before, .. }
            if *path == dir.join("ca-cert.pem") && not_before == "2040-01-01T00:00:00Z"),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-cert.pem");
}

#[test]
fn issuing_ca_with_uri_name_constraints_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let key = pki.ec_key("issuing-key.pem");
    let issuing = pki.sub_ca("issuing", &key, &root, "uri_name_constraints");
    let text = x509_text(pki.path(), &issuing.cert);
    assert!(text.contains("URI:.example.org"), "sanity: {text}");
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::UriNameConstraints { path, .. } if *path == dir.join("ca-cert.pem")),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-cert.pem");
}

#[test]
fn issuing_ca_for_another_trust_domain_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let key = pki.ec_key("issuing-key.pem");
    let issuing = pki.sub_ca("issuing", &key, &root, "other_trust_domain");
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::TrustDomainMismatch { path, found, expected }
            if *path == dir.join("ca-cert.pem") && found == "other.org" && expected == TD),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-cert.pem");
}

#[test]
fn chain_missing_the_policy_ca_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let policy = pki.intermediate("policy", &root);
    let issuing = pki.intermediate("issuing", &policy);
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::ChainIncomplete { path, subject, issuer }
            if *path == dir.join("ca-cert.pem")
                && subject.contains("CN=issuing")
                && issuer.contains("CN=policy")),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-cert.pem");
}

#[test]
fn chain_ending_in_another_root_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let other_root = pki.root("other-root");
    let issuing = pki.intermediate("issuing", &root);
    // The chain file carries the real root, but root-cert.pem trusts another.
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&other_root]);

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::ChainNotToRoot { path, subject, roots }
            if *path == dir.join("cert-chain.pem")
                && subject.contains("CN=root")
                && *roots == dir.join("root-cert.pem")),
        "{err:?}"
    );
    assert_names(&err, &dir, "cert-chain.pem");
    assert_names(&err, &dir, "root-cert.pem");
}

#[test]
fn empty_root_file_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let issuing = pki.intermediate("issuing", &root);
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[]);
    assert!(read(&dir, "root-cert.pem").is_empty());

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::NoCertificate { path } if *path == dir.join("root-cert.pem")),
        "{err:?}"
    );
    assert_names(&err, &dir, "root-cert.pem");
}

#[test]
fn missing_ca_key_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let issuing = pki.intermediate("issuing", &root);
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);
    std::fs::remove_file(dir.join("ca-key.pem")).unwrap();

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::MissingFile { path } if *path == dir.join("ca-key.pem")),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-key.pem");
}

#[test]
fn garbage_ca_key_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let issuing = pki.intermediate("issuing", &root);
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);
    write(&dir, "ca-key.pem", "this is not a key\n");

    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::BadKey { path, .. } if *path == dir.join("ca-key.pem")),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-key.pem");
}

// === known library bugs: fail until sigil-ca is fixed ===
//
// A 1024-bit RSA CA in the chain is refused, but never as WeakRsaKey (the
// variant documented for it): the signing key is rejected by ring while
// loading (BadKey, "Could not parse key pair"), and a 1024-bit RSA CA
// higher up is not found as an issuer because ring will not verify its
// signature (ChainIncomplete, "no issuer found" although it is in the
// chain file). Only a weak root outside the path reaches WeakRsaKey.

#[test]
fn rsa_1024_issuing_ca_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let key = pki.genpkey(
        "weak-key.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let issuing = pki.sub_ca("issuing", &key, &root, "v3_ca");
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &root], &[&root]);

    // Observed: BadKey { path: ".../ca-key.pem", source: Rejected("Could not
    // parse key pair") }: ring refuses to load the 1024-bit key before the
    // certificate's key size is checked.
    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::WeakRsaKey { path, bits: 1024, subject }
            if *path == dir.join("ca-cert.pem") && subject.contains("issuing")),
        "{err:?}"
    );
    assert_names(&err, &dir, "ca-cert.pem");
}

#[test]
fn rsa_1024_policy_ca_is_refused() {
    let pki = Pki::new();
    let root = pki.root("root");
    let key = pki.genpkey(
        "weak-key.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let policy = pki.sub_ca("policy", &key, &root, "v3_ca");
    let issuing = pki.intermediate("issuing", &policy);
    let dir = pki.istio_dir("cacerts", &issuing, &[&issuing, &policy, &root], &[&root]);

    // Observed: ChainIncomplete { path: ".../ca-cert.pem", subject:
    // "O=Example Corp, CN=issuing", issuer: "O=Example Corp, CN=policy" }.
    let err = load_err(&dir);
    assert!(
        matches!(&err, AuthorityError::WeakRsaKey { path, bits: 1024, subject }
            if *path == dir.join("cert-chain.pem") && subject.contains("CN=policy")),
        "{err:?}"
    );
    assert_names(&err, &dir, "cert-chain.pem");
}
