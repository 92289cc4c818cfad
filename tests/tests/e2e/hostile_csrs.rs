//! Hostile or unacceptable CSRs made with the `openssl` command line are
//! refused with the exact [`IssueError`], and nothing is signed: weak
//! signature hashes, keys outside the allowlist, requests for CA powers or
//! other names, a tampered self-signature, and PEM input holding more than
//! the one CSR block (also over gRPC: INVALID_ARGUMENT).

use std::path::Path;

use crate::common::*;
use sigil_ca::IssueError;

/// A temp dir with a fresh self-signed issuer.
struct Case {
    dir: tempfile::TempDir,
    issuer: sigil_ca::CertIssuer,
}

impl Case {
    fn new() -> Self {
        let dir = tempdir();
        let issuer = self_signed_issuer(dir.path());
        Self { dir, issuer }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `openssl genpkey <args> -out key.pem`.
    fn genpkey(&self, args: &[&str]) {
        let mut all = vec!["genpkey", "-out", "key.pem"];
        all.extend_from_slice(args);
        openssl(self.dir(), &all);
    }

    /// `openssl req -new -key key.pem -subj / -addext SAN=ID <extra>`, then
    /// issues it and returns the refusal.
    fn refuse_csr(&self, extra: &[&str]) -> IssueError {
        openssl_csr(self.dir(), "key.pem", "csr.pem", extra);
        refusal(&self.issuer, self.dir(), "csr.pem")
    }

    /// Like [`Case::refuse_csr`] with a fresh P-256 key.
    fn refuse_p256_csr(&self, extra: &[&str]) -> IssueError {
        self.genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        self.refuse_csr(extra)
    }

    /// A CSR with an empty subject, a P-256 key and exactly the `-addext`
    /// values given (no default SAN); returns the refusal.
    fn refuse_p256_with_exts(&self, exts: &[&str]) -> IssueError {
        self.genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        let mut args = vec![
            "req", "-new", "-key", "key.pem", "-subj", "/", "-out", "csr.pem",
        ];
        for ext in exts {
            args.extend(["-addext", ext]);
        }
        openssl(self.dir(), &args);
        refusal(&self.issuer, self.dir(), "csr.pem")
    }
}

// === weak signature hashes ===

#[test]
fn sha1_rsa_csr_is_refused_as_weak() {
    let case = Case::new();
    write(case.dir(), "key.pem", rsa2048_pkcs8());
    assert_eq!(
        case.refuse_csr(&["-sha1"]),
        IssueError::WeakSignatureAlgorithm {
            algorithm: "SHA-1 with RSA"
        }
    );
}

#[test]
fn sha1_ecdsa_csr_is_refused_as_weak() {
    let case = Case::new();
    assert_eq!(
        case.refuse_p256_csr(&["-sha1"]),
        IssueError::WeakSignatureAlgorithm {
            algorithm: "ECDSA with SHA-1"
        }
    );
}

#[test]
fn md5_rsa_csr_is_refused_as_weak() {
    // OpenSSL 3.0 still signs a request with `-md5` at the default
    // security level (the level restricts TLS, not `req`).
    let case = Case::new();
    write(case.dir(), "key.pem", rsa2048_pkcs8());
    let err = case.refuse_csr(&["-md5"]);
    let text = openssl(case.dir(), &["req", "-in", "csr.pem", "-noout", "-text"]);
    assert!(text.contains("md5WithRSAEncryption"), "sanity: {text}");
    assert_eq!(
        err,
        IssueError::WeakSignatureAlgorithm {
            algorithm: "MD5 with RSA"
        }
    );
}

// === keys outside the allowlist ===

#[test]
fn p521_key_is_refused_as_unsupported_curve() {
    let case = Case::new();
    case.genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"]);
    assert_eq!(
        case.refuse_csr(&[]),
        IssueError::UnsupportedCurve {
            curve: "1.3.132.0.35".into()
        }
    );
}

#[test]
fn secp256k1_key_is_refused_as_unsupported_curve() {
    let case = Case::new();
    case.genpkey(&[
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:secp256k1",
    ]);
    assert_eq!(
        case.refuse_csr(&[]),
        IssueError::UnsupportedCurve {
            curve: "1.3.132.0.10".into()
        }
    );
}

#[test]
fn rsa_1024_key_is_refused() {
    let case = Case::new();
    case.genpkey(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]);
    assert_eq!(
        case.refuse_csr(&["-sha256"]),
        IssueError::RsaKeySize { bits: 1024 }
    );
}

#[test]
fn rsa_key_over_8192_bits_is_refused() {
    // A two-prime 8200-bit key takes ~30 s to generate; five primes take a
    // few seconds and give the same public key shape (n, e).
    let case = Case::new();
    case.genpkey(&[
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:8200",
        "-pkeyopt",
        "rsa_keygen_primes:5",
    ]);
    assert_eq!(
        case.refuse_csr(&["-sha256"]),
        IssueError::RsaKeySize { bits: 8200 }
    );
}

#[test]
fn rsa_exponent_3_is_refused() {
    let case = Case::new();
    case.genpkey(&[
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-pkeyopt",
        "rsa_keygen_pubexp:3",
    ]);
    assert_eq!(
        case.refuse_csr(&["-sha256"]),
        IssueError::RsaExponent {
            exponent: "03".into()
        }
    );
}

#[test]
fn dsa_key_is_refused() {
    let case = Case::new();
    let d = case.dir();
    openssl(
        d,
        &[
            "genpkey",
            "-genparam",
            "-algorithm",
            "DSA",
            "-pkeyopt",
            "dsa_paramgen_bits:2048",
            "-out",
            "params.pem",
        ],
    );
    openssl(
        d,
        &["genpkey", "-paramfile", "params.pem", "-out", "key.pem"],
    );
    let err = case.refuse_csr(&["-sha256"]);
    // openssl signs a DSA request with dsa_with_SHA256, which the signature
    // allowlist refuses before the key allowlist is consulted.
    assert_eq!(
        err,
        IssueError::UnsupportedSignatureAlgorithm {
            oid: "2.16.840.1.101.3.4.3.2".into()
        }
    );
}

// === requests for more than an X509-SVID ===

#[test]
fn csr_asking_for_ca_true_is_refused() {
    let case = Case::new();
    assert_eq!(
        case.refuse_p256_csr(&["-addext", "basicConstraints=critical,CA:TRUE"]),
        IssueError::RequestsCa
    );
}

#[test]
fn csr_asking_for_key_cert_sign_is_refused() {
    let case = Case::new();
    assert_eq!(
        case.refuse_p256_csr(&["-addext", "keyUsage=keyCertSign"]),
        IssueError::RequestsSigningUsage
    );
}

#[test]
fn csr_asking_for_crl_sign_is_refused() {
    let case = Case::new();
    assert_eq!(
        case.refuse_p256_csr(&["-addext", "keyUsage=critical,digitalSignature,cRLSign"]),
        IssueError::RequestsSigningUsage
    );
}

#[test]
fn csr_with_a_dns_san_is_refused() {
    let case = Case::new();
    let san = format!("subjectAltName=URI:{ID},DNS:web.default.svc");
    assert_eq!(
        case.refuse_p256_with_exts(&[&san]),
        IssueError::ForbiddenSan {
            kind: "DNS",
            value: "web.default.svc".into()
        }
    );
}

#[test]
fn csr_with_an_ip_san_is_refused() {
    let case = Case::new();
    let san = format!("subjectAltName=URI:{ID},IP:10.0.0.7");
    assert_eq!(
        case.refuse_p256_with_exts(&[&san]),
        IssueError::ForbiddenSan {
            kind: "IP",
            value: "10.0.0.7".into()
        }
    );
}

#[test]
fn csr_with_two_uri_sans_is_refused() {
    let case = Case::new();
    let san = format!("subjectAltName=URI:{ID},URI:spiffe://cluster.local/ns/default/sa/db");
    assert_eq!(
        case.refuse_p256_with_exts(&[&san]),
        IssueError::MultipleUriSans { count: 2 }
    );
}

#[test]
fn csr_for_another_identity_is_refused() {
    let case = Case::new();
    let other = "spiffe://cluster.local/ns/kube-system/sa/admin";
    let san = format!("subjectAltName=URI:{other}");
    assert_eq!(
        case.refuse_p256_with_exts(&[&san]),
        IssueError::SanMismatch {
            requested: other.into(),
            authorized: id()
        }
    );
}

#[test]
fn csr_with_a_flipped_signature_byte_is_refused() {
    let case = Case::new();
    let d = case.dir();
    case.genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    openssl_csr(d, "key.pem", "good.der", &["-outform", "DER"]);
    // The signature BIT STRING is the last field of the DER: its last byte
    // is the low byte of the ECDSA `s` value.
    let mut der = read(d, "good.der");
    *der.last_mut().unwrap() ^= 0x01;
    write(d, "csr.der", &der);

    // openssl agrees the signature is now wrong (OpenSSL 3.0's `req -verify`
    // exits 0 either way, so read what it says) ...
    let verify = |file: &str| {
        let run = openssl_run(
            d,
            &["req", "-in", file, "-inform", "DER", "-noout", "-verify"],
        );
        run.stdout + &run.stderr
    };
    assert!(verify("good.der").contains("self-signature verify OK"));
    let tampered = verify("csr.der");
    assert!(
        tampered.contains("self-signature verify failure"),
        "{tampered}"
    );
    // ... and the untampered one is fine, so the byte flip is the only cause.
    assert!(issue(&case.issuer, &read(d, "good.der")).is_ok());
    assert_eq!(
        refusal(&case.issuer, d, "csr.der"),
        IssueError::CsrSignatureInvalid
    );
}

// === known library bug: fails until sigil-ca is fixed ===
//
// csr.rs `check_key` takes the EC parameters with `Any::as_oid()`, which
// does not check the tag: an explicit-curve SEQUENCE is decoded as an OID
// and reported as UnsupportedCurve with a hex dump, not ExplicitCurve. The
// CSR is still refused (nothing is signed); the variant and message are
// wrong.

#[test]
fn explicit_curve_parameters_are_refused() {
    let case = Case::new();
    openssl(
        case.dir(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-param_enc",
            "explicit",
            "-genkey",
            "-out",
            "key.pem",
        ],
    );
    let err = case.refuse_csr(&[]);
    let text = openssl(case.dir(), &["req", "-in", "csr.pem", "-noout", "-text"]);
    assert!(text.contains("Field Type: prime-field"), "sanity: {text}");
    // Observed: UnsupportedCurve { curve: "02 01 01 30 2c 06 07 2a 86 ..." },
    // the explicit-parameters SEQUENCE read as if it were a curve OID.
    assert_eq!(err, IssueError::ExplicitCurve);
}

// === more than one PEM block ===
//
// `decode_csr` used to read the first PEM block and ignore the rest, so a
// request could carry a second CSR, a certificate or any text after the
// one that was signed. Now exactly one `CERTIFICATE REQUEST` block is
// accepted, with nothing but whitespace around it.

#[test]
fn a_csr_file_with_a_second_block_is_refused() {
    let case = Case::new();
    case.genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    openssl_csr(case.dir(), "key.pem", "csr.pem", &[]);
    openssl(
        case.dir(),
        &[
            "req", "-x509", "-new", "-key", "key.pem", "-subj", "/CN=x", "-days", "1", "-out",
            "cert.pem",
        ],
    );
    let csr = read_string(case.dir(), "csr.pem");
    let cert = read_string(case.dir(), "cert.pem");
    for (name, contents) in [
        ("twice.pem", format!("{csr}{csr}")),
        ("csr-then-cert.pem", format!("{csr}{cert}")),
        ("cert-then-csr.pem", format!("{cert}{csr}")),
        (
            "trailing-text.pem",
            format!("{csr}not part of the request\n"),
        ),
    ] {
        write(case.dir(), name, contents);
        let err = refusal(&case.issuer, case.dir(), name);
        assert!(
            matches!(err, IssueError::CsrMalformed { .. }),
            "{name}: {err:?}"
        );
    }
    // The same CSR alone is issued.
    issue_file(&case.issuer, case.dir(), "csr.pem");
}

#[tokio::test]
async fn two_pem_blocks_are_invalid_argument_over_grpc_and_nothing_is_signed() {
    use crate::common::ID;
    use crate::common::ca::*;

    let server = start(|_| {}).await;
    let mut client = server.client().await;
    let (csr, _key) = new_csr(ID);
    let (other, _key) = new_csr(ID);
    for (what, doubled) in [
        ("the same CSR twice", format!("{csr}{csr}")),
        ("two CSRs", format!("{csr}{other}")),
        (
            "a CSR, then a certificate",
            format!("{csr}{}", server.roots_pem),
        ),
    ] {
        let result = ask(&mut client, &doubled, Some(WEB_TOKEN)).await;
        assert_code(&result, tonic::Code::InvalidArgument, what);
    }
    assert_eq!(server.issued_ok().await, 0.0, "nothing was signed");
    assert_eq!(
        server
            .metric(r#"sigil_ca_certificates_issued_total{outcome="invalid_argument"}"#)
            .await,
        3.0
    );
    ask(&mut client, &csr, Some(WEB_TOKEN)).await.unwrap();
    assert_eq!(server.issued_ok().await, 1.0);
}
