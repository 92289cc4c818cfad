//! The admin port of a running CA: `/healthz` and `/readyz` answer 200,
//! `/metrics` exposes the metric families (and counts what happened),
//! `/bundle` is SPIFFE bundle JSON holding the roots, `/root.pem` holds the
//! same roots, and an unknown path is 404.

use crate::common::ca::*;
use crate::common::{ID, td};
use sigil_identity::TrustBundle;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer() {
    let server = start(|_| {}).await;

    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    assert_eq!(server.get("/no-such-path").await.0, 404);

    // One success and one refusal, to see them counted.
    let mut client = server.client().await;
    let (csr, _key) = new_csr(ID);
    ask(&mut client, &csr, Some(WEB_TOKEN)).await.unwrap();
    assert_code(
        &ask(&mut client, &csr, None).await,
        Code::Unauthenticated,
        "no token",
    );

    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for (family, kind) in [
        ("sigil_ca_certificates_issued", "counter"),
        ("sigil_ca_issuance_duration_seconds", "histogram"),
        ("sigil_ca_authentication_failures", "counter"),
        ("sigil_ca_cert_expiry_seconds", "gauge"),
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} {kind}\n")),
            "/metrics lacks {family} ({kind}):\n{metrics}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            r#"sigil_ca_certificates_issued_total{outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"sigil_ca_certificates_issued_total{outcome="unauthenticated"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"sigil_ca_authentication_failures_total{reason="no_credential"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&metrics, "sigil_ca_issuance_duration_seconds_count"),
        2.0
    );
    let expiry = sample(&metrics, "sigil_ca_cert_expiry_seconds");
    assert!(
        expiry > 9.0 * 365.0 * 86_400.0,
        "the self-signed root has ~10 years left, metric says {expiry}"
    );

    let roots = pem_ders(&server.roots_pem);
    assert!(!roots.is_empty());

    let (status, json) = server.get("/bundle").await;
    assert_eq!(status, 200);
    let bundle = TrustBundle::from_spiffe_json(td(), json.as_bytes())
        .unwrap_or_else(|e| panic!("/bundle is not SPIFFE bundle JSON: {e}\n{json}"));
    assert_eq!(bundle.x509_authorities(), &roots[..]);

    let (status, pem) = server.get("/root.pem").await;
    assert_eq!(status, 200);
    assert_eq!(pem_ders(&pem), roots);
    for der in &roots {
        x509_parser::parse_x509_certificate(der).expect("/root.pem parses as X.509");
    }
}

/// KNOWN BUG (fails): the five CA metrics documented in
/// `ca/src/server/metrics.rs` ("registered once") are not all on `/metrics`
/// of a fresh server: an empty labelled family is not exposed, so
/// `sigil_ca_certificates_issued`, `sigil_ca_authentication_failures` and
/// `sigil_ca_authority_reloads` are missing until their first event (the
/// latter until the first plug-in reload, i.e. forever with a self-signed
/// CA). Each series then appears directly at 1, which `increase()`/`rate()`
/// alerts do not see (e.g. the first rejected reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_all_five_families_from_the_start() {
    let server = start(|_| {}).await;
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let missing: Vec<&str> = [
        ("sigil_ca_certificates_issued", "counter"),
        ("sigil_ca_issuance_duration_seconds", "histogram"),
        ("sigil_ca_authentication_failures", "counter"),
        ("sigil_ca_cert_expiry_seconds", "gauge"),
        ("sigil_ca_authority_reloads", "counter"),
    ]
    .into_iter()
    .filter(|(family, kind)| !metrics.contains(&format!("# TYPE {family} {kind}\n")))
    .map(|(family, _)| family)
    .collect();
    assert!(
        missing.is_empty(),
        "a fresh server's /metrics lacks {missing:?}:\n{metrics}"
    );
}
