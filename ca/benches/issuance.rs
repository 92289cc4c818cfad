//! Issuance throughput against the crypto floor, measured in one run.
//!
//! - `floor/ecdsa_p256_verify_plus_sign`: one ECDSA P-256 signature check
//!   plus one ECDSA P-256 signature with ring — the cryptography an issuance
//!   cannot avoid (check the CSR's self-signature, sign the certificate).
//! - `issue/csr_ecdsa_p256`, `issue/csr_rsa_2048`: the whole pipeline,
//!   CSR bytes in, signed `[leaf, root]` chain out, with a P-256 CA key.
//!
//! Because this VM's speed drifts by several percent between criterion's
//! groups, the bench also prints an *interleaved* comparison: 200 rounds that
//! alternate a block of floor operations with a block of issuances, median
//! per-operation time of each, and their ratio. That ratio is the figure
//! BENCHMARKS.md reports.
//!
//! Run: `cargo bench -p sigil-ca --bench issuance`. The RSA-2048 CSR key is
//! made at run time with the `openssl` command (ring cannot generate RSA
//! keys); the bench stops with a message when it is missing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark setup: a failure aborts the run"
)]
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use sigil_ca::authority::source;
use sigil_ca::{CertIssuer, IssuancePolicy, IssueRequest};
use sigil_identity::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

fn csr(key: &KeyPair, subject_o: Option<&str>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(o) = subject_o {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.subject_alt_names = vec![SanType::URI(ID.try_into().unwrap())];
    params.serialize_request(key).unwrap().der().to_vec()
}

fn rsa_2048_key() -> KeyPair {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("the RSA bench needs the `openssl` command (apt-get install openssl)");
    assert!(out.status.success(), "openssl genpkey failed");
    KeyPair::from_pem(std::str::from_utf8(&out.stdout).unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    // The floor: what ring needs for one verify + one sign on P-256.
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let signer = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    // A message the size of a leaf's TBSCertificate.
    let message = vec![0x5a_u8; 420];
    let sig = signer.sign(&rng, &message).unwrap();
    let verifier = UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        signer.public_key().as_ref().to_vec(),
    );

    let mut floor = c.benchmark_group("floor");
    floor.throughput(Throughput::Elements(1));
    floor.bench_function("ecdsa_p256_verify_plus_sign", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&message), black_box(sig.as_ref()))
                .unwrap();
            black_box(signer.sign(&rng, black_box(&message)).unwrap());
        })
    });
    floor.finish();

    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::new("cluster.local").unwrap();
    let authority =
        source::create_self_signed(&dir.path().join("ca"), &td, OffsetDateTime::now_utc()).unwrap();
    let issuer = CertIssuer::new(Arc::new(authority), IssuancePolicy::default());
    let id = SpiffeId::parse(ID).unwrap();
    // ztunnel's shape: P-256, empty subject. istio-agent's: RSA-2048, O="".
    let p256_csr = csr(&KeyPair::generate().unwrap(), None);
    let rsa_csr = csr(&rsa_2048_key(), Some(""));

    let floor_op = || {
        verifier
            .verify(black_box(&message), black_box(sig.as_ref()))
            .unwrap();
        black_box(signer.sign(&rng, black_box(&message)).unwrap());
    };
    for (name, csr) in [("csr_ecdsa_p256", &p256_csr), ("csr_rsa_2048", &rsa_csr)] {
        let issue_op = || {
            black_box(
                issuer
                    .issue(IssueRequest {
                        csr: black_box(csr),
                        identity: &id,
                        ttl: None,
                    })
                    .unwrap(),
            );
        };
        let (floor_us, issue_us, ratio) = interleaved(&floor_op, &issue_op);
        eprintln!(
            "interleaved {name}: floor {floor_us:.1} us/op ({:.0}/s), issuance {issue_us:.1} us/op ({:.0}/s), issuance rate / floor rate = {:.1}% (median of per-round ratios)",
            1e6 / floor_us,
            1e6 / issue_us,
            100.0 * ratio
        );
    }

    let mut issue = c.benchmark_group("issue");
    issue.throughput(Throughput::Elements(1));
    for (name, csr) in [("csr_ecdsa_p256", &p256_csr), ("csr_rsa_2048", &rsa_csr)] {
        issue.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    issuer
                        .issue(IssueRequest {
                            csr: black_box(csr),
                            identity: &id,
                            ttl: None,
                        })
                        .unwrap(),
                )
            })
        });
    }
    issue.finish();
}

/// Alternates blocks of `a` and `b` (order swapped every round). Returns
/// the median microseconds per operation of each, and the median over rounds
/// of `time(a) / time(b)`: adjacent blocks share the machine's momentary
/// speed, so the per-round ratio cancels drift that separate runs cannot.
fn interleaved(a: &dyn Fn(), b: &dyn Fn()) -> (f64, f64, f64) {
    const ROUNDS: usize = 200;
    const BLOCK: u32 = 25;
    let time = |f: &dyn Fn()| {
        let start = std::time::Instant::now();
        for _ in 0..BLOCK {
            f();
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(BLOCK)
    };
    let (mut ta, mut tb, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (x, y) = if round % 2 == 0 {
            let x = time(a);
            (x, time(b))
        } else {
            let y = time(b);
            (time(a), y)
        };
        ta.push(x);
        tb.push(y);
        ratio.push(x / y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut ta), median(&mut tb), median(&mut ratio))
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sample_size(100);
    targets = bench
}
criterion_main!(benches);
