//! The admin port of a running CA: `/healthz` and `/readyz` answer 200,
//! `/metrics` exposes the metric families (and counts what happened),
//! `/bundle` is SPIFFE bundle JSON holding the roots, `/root.pem` holds the
//! same roots, and an unknown path is 404.
//!
//! The admin listener's bounds (issue 14, 1f): a client that sends part of
//! a header (slowloris) is closed at `server.admin_header_timeout`, one
//! that goes silent at `server.admin_idle_timeout`; beyond
//! `server.admin_max_connections`, new connections are closed while the
//! open ones are served. `/readyz` is 503 once the signing certificate has
//! expired (1i).

use std::time::{Duration, Instant};

use crate::common::ca::*;
use crate::common::{ID, td, tempdir, write};
use crate::raw_conn::wait_closed;
use sigil_ca::config::AuthoritySource;
use sigil_identity::TrustBundle;
use sigil_test_util::{TestCa, ca_params, p256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_header_is_cut_off_at_the_header_timeout() {
    let server = start(|c| {
        c.server.admin_header_timeout = Duration::from_millis(300);
    })
    .await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(server.admin).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    wait_closed(&mut slow, WAIT).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.get("/healthz").await.0, 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_admin_connection_is_closed_at_the_idle_timeout() {
    let server = start(|c| {
        c.server.admin_header_timeout = Duration::from_secs(3600);
        c.server.admin_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut silent = TcpStream::connect(server.admin).await.unwrap();
    wait_closed(&mut silent, WAIT).await;
}

/// `GET /healthz` on an open connection, keeping it open: the status
/// (the whole response is read).
async fn healthz_on(stream: &mut TcpStream) -> u16 {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(n, 1, "closed before answering");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_beyond_the_cap_are_closed_and_open_ones_served() {
    let server = start(|c| {
        c.server.admin_max_connections = 2;
        c.server.admin_header_timeout = Duration::from_secs(3600);
        c.server.admin_idle_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut first = TcpStream::connect(server.admin).await.unwrap();
    let mut second = TcpStream::connect(server.admin).await.unwrap();
    // Both are accepted and served before the third arrives.
    assert_eq!(healthz_on(&mut first).await, 200);
    assert_eq!(healthz_on(&mut second).await, 200);
    let mut third = TcpStream::connect(server.admin).await.unwrap();
    wait_closed(&mut third, WAIT).await;
    assert_eq!(healthz_on(&mut first).await, 200, "open ones still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_once_the_signing_certificate_has_expired() {
    // A plug-in CA valid for three more seconds (whole seconds in X.509).
    let mut params = ca_params("cluster.local", "short-lived", 1);
    let not_after = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        + time::Duration::seconds(3);
    params.not_after = not_after;
    let ca = TestCa::self_signed(params, p256());
    let tmp = tempdir();
    let dir = tmp.path().join("cacerts");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "ca-key.pem", ca.cert.key.serialize_pem());
    write(&dir, "ca-cert.pem", &ca.cert.pem);
    write(&dir, "root-cert.pem", &ca.cert.pem);
    let server = start(move |c| {
        c.authority.source = AuthoritySource::Files;
        c.authority.dir = dir;
    })
    .await;
    assert_eq!(server.get("/readyz").await.0, 200);

    // No event marks an expiry: wait for the clock to pass notAfter.
    let left = (not_after + time::Duration::seconds(1) - time::OffsetDateTime::now_utc())
        .try_into()
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(left).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(server.get("/healthz").await.0, 200, "alive, not ready");
}
