//! End-to-end L4 tests on loopback: client -> outbound proxy -> inbound
//! proxy -> echo backend over mTLS, refusals of bad peers, rotation of the
//! credential files, half-close.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure here is a test failure"
)]

#[path = "l4_support/mod.rs"]
mod l4_support;

use std::time::Duration;

use l4_support::{
    DENY_ALL, TD, config_with, direct, direct_with, mesh, mesh_with, refused, roundtrip, start,
    write_creds,
};
use rustls::pki_types::CertificateDer;
use sigil_identity::check_leaf;
use sigil_test_util::{TestCa, leaf_params, p256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn client_outbound_inbound_echo_over_mtls() {
    let mesh = mesh("").await;
    let mut client = TcpStream::connect(mesh.outbound).await.unwrap();
    assert_eq!(
        roundtrip(&mut client, b"hello mesh").await.unwrap(),
        b"hello mesh"
    );
}

#[tokio::test]
async fn half_close_reaches_the_backend_and_the_reply_still_arrives() {
    let mesh = mesh("").await;
    let mut client = TcpStream::connect(mesh.outbound).await.unwrap();
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, b"last words");
}

#[tokio::test]
async fn a_valid_direct_peer_is_served() {
    let mesh = mesh("").await;
    let leaf = mesh.ca.leaf("spiffe://example.org/ns/x/sa/y");
    assert!(!refused(&mesh, Some(&leaf)).await);
}

#[tokio::test]
async fn bad_peers_are_refused() {
    let mesh = mesh("").await;
    // No certificate.
    assert!(refused(&mesh, None).await, "no certificate");
    // Another trust domain.
    let other = TestCa::root("other.org");
    assert!(
        refused(&mesh, Some(&other.leaf("spiffe://other.org/ns/x/sa/y"))).await,
        "other trust domain"
    );
    // Expired.
    let mut params = leaf_params("spiffe://example.org/ns/x/sa/y");
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    assert!(
        refused(&mesh, Some(&mesh.ca.sign(params, p256()))).await,
        "expired"
    );
    // Self-signed look-alike with the same SPIFFE ID.
    let fake_ca = TestCa::root(TD);
    assert!(
        refused(
            &mesh,
            Some(&fake_ca.leaf("spiffe://example.org/ns/default/sa/client"))
        )
        .await,
        "look-alike"
    );
}

#[tokio::test]
async fn a_denied_connection_is_closed_after_the_handshake() {
    let mesh = mesh(DENY_ALL).await;
    let mut client = TcpStream::connect(mesh.outbound).await.unwrap();
    assert!(roundtrip(&mut client, b"hello").await.is_err());
    // The inbound counted one denied connection (the log line is written
    // when the task ends, just after the close).
    for _ in 0..100 {
        if mesh.metrics.connections("inbound", "deny") == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no denied connection counted");
}

fn served_id(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let leaf: &CertificateDer<'_> = &tls.get_ref().1.peer_certificates().unwrap()[0];
    check_leaf(leaf).unwrap().to_string()
}

#[tokio::test]
async fn rotation_new_handshakes_use_new_files_established_connections_stay() {
    let mesh = mesh("").await;
    let client_leaf = mesh.ca.leaf("spiffe://example.org/ns/x/sa/y");
    let mut before = direct(&mesh, Some(&client_leaf)).await.unwrap();
    assert_eq!(
        served_id(&before),
        "spiffe://example.org/ns/default/sa/server"
    );
    let mut long_lived = TcpStream::connect(mesh.outbound).await.unwrap();
    assert_eq!(roundtrip(&mut long_lived, b"one").await.unwrap(), b"one");

    write_creds(
        &mesh.dir,
        "in",
        &mesh.ca,
        &mesh.ca.leaf("spiffe://example.org/ns/default/sa/server-v2"),
    );
    let mut rotated = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = direct(&mesh, Some(&client_leaf)).await.unwrap();
        if served_id(&after) == "spiffe://example.org/ns/default/sa/server-v2" {
            rotated = true;
            break;
        }
    }
    assert!(
        rotated,
        "the inbound proxy never served the new certificate"
    );
    assert_eq!(
        roundtrip(&mut before, b"still here").await.unwrap(),
        b"still here"
    );
    assert_eq!(roundtrip(&mut long_lived, b"two").await.unwrap(), b"two");
}

#[tokio::test]
async fn the_outbound_refuses_an_inbound_with_an_unexpected_id() {
    let mesh = mesh_with("", "", "spiffe://example.org/ns/default/sa/other", "").await;
    let mut client = TcpStream::connect(mesh.outbound).await.unwrap();
    assert!(roundtrip(&mut client, b"hello").await.is_err());
}

#[tokio::test]
async fn tls12_only_when_configured_and_alpn_is_negotiated() {
    let strict = mesh("").await;
    let leaf = strict.ca.leaf("spiffe://example.org/ns/x/sa/y");
    let tls12 = direct_with(&strict, Some(&leaf), true, &[]).await;
    assert!(tls12.is_err(), "TLS 1.2 refused by default");
    let tls13 = direct_with(&strict, Some(&leaf), false, &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls13.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        tls13.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    let lax = mesh_with(
        "",
        r#"tls_min_version = "1.2""#,
        "spiffe://example.org/ns/default/sa/server",
        "",
    )
    .await;
    let leaf = lax.ca.leaf("spiffe://example.org/ns/x/sa/y");
    let mut tls12 = direct_with(&lax, Some(&leaf), true, &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(tls12.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        roundtrip(&mut tls12, b"over 1.2").await.unwrap(),
        b"over 1.2"
    );
}

#[tokio::test]
async fn connections_are_bounded_the_next_waits_for_a_free_slot() {
    let mesh = mesh_with(
        "",
        "",
        "spiffe://example.org/ns/default/sa/server",
        "max_connections = 1",
    )
    .await;
    let mut first = TcpStream::connect(mesh.outbound).await.unwrap();
    assert_eq!(roundtrip(&mut first, b"1").await.unwrap(), b"1");
    let mut second = TcpStream::connect(mesh.outbound).await.unwrap();
    second.write_all(b"2").await.unwrap();
    let mut buf = [0u8; 1];
    let waiting =
        tokio::time::timeout(Duration::from_millis(300), second.read_exact(&mut buf)).await;
    assert!(
        waiting.is_err(),
        "the second connection is not served while the first holds the slot"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"2");
}

#[path = "wiring_support/mod.rs"]
mod wiring_support;

/// `protocol = "http"` on both proxies: the outbound serves the application's
/// HTTP and forwards each request over its mTLS connection; the inbound
/// decides each request and forwards it with the peer's identity.
#[tokio::test]
async fn http_listeners_carry_requests_client_outbound_inbound_app() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = TestCa::root(TD);
    write_creds(
        dir,
        "in",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/server"),
    );
    write_creds(
        dir,
        "out",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/client"),
    );
    let app = wiring_support::http_app().await;
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        DENY_ALL.replace(
            "  - {}",
            "  - to:\n    - operation:\n        paths: [\"/admin\"]",
        ),
    )
    .unwrap();
    let http = r#"protocol = "http""#;
    let inbound = start(&config_with(
        dir,
        "in",
        "inbound",
        app,
        http,
        &format!("[policy]\nfiles = [\"{}\"]", policy.display()),
    ))
    .await;
    let outbound = start(&config_with(
        dir,
        "out",
        "outbound",
        inbound,
        &format!("{http}\nexpected_id = \"spiffe://example.org/ns/default/sa/server\""),
        "",
    ))
    .await;
    let tcp = TcpStream::connect(outbound).await.unwrap();
    let mut client = wiring_support::http_client(tcp, false).await;
    let (status, body) = client.get("/hello", &[]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("URI=spiffe://example.org/ns/default/sa/client"),
        "the inbound names the outbound's identity: {body}"
    );
    // Same connection, next request: denied by the inbound's policy.
    assert_eq!(client.get("/admin", &[]).await.unwrap().0, 403);
    assert_eq!(client.get("/again", &[]).await.unwrap().0, 200);
}
