//! PeerAuthentication on an inbound listener: STRICT, PERMISSIVE (mTLS and
//! plaintext on the same port, told apart by sniffing), DISABLE, port-level
//! overrides, and the sniffing timeout.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failure here is a test failure"
)]

mod wiring_support;

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use wiring_support::{CLIENT, inbound, mtls, mtls_served, peer_auth, plaintext_served, roundtrip};

#[tokio::test]
async fn strict_refuses_plaintext_and_serves_mtls() {
    let proxy = inbound(|_| peer_auth("strict", "STRICT"), "").await;
    assert!(
        !plaintext_served(&proxy).await,
        "plaintext on a STRICT port"
    );
    assert!(mtls_served(&proxy, CLIENT).await, "mTLS on a STRICT port");
}

#[tokio::test]
async fn permissive_serves_plaintext_and_mtls_on_the_same_port() {
    let proxy = inbound(|_| peer_auth("permissive", "PERMISSIVE"), "").await;
    assert!(plaintext_served(&proxy).await, "plaintext");
    assert!(mtls_served(&proxy, CLIENT).await, "mTLS");
    // The plaintext bytes reached the backend unchanged, several messages.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(roundtrip(&mut tcp, b"one").await.unwrap(), b"one");
    assert_eq!(roundtrip(&mut tcp, b"two").await.unwrap(), b"two");
}

#[tokio::test]
async fn no_policy_at_all_is_permissive() {
    let proxy = inbound(|_| String::new(), "").await;
    assert!(plaintext_served(&proxy).await, "plaintext");
    assert!(mtls_served(&proxy, CLIENT).await, "mTLS");
}

/// Istio: `principals: ["*"]` requires an authenticated peer, so plaintext
/// on a PERMISSIVE port matches no rule of the ALLOW policy.
#[tokio::test]
async fn a_plaintext_peer_has_no_principal() {
    let proxy = inbound(
        |_| {
            format!(
                "{}---\n{}",
                peer_auth("permissive", "PERMISSIVE"),
                r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: authenticated-only
  namespace: default
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["*"]
"#
            )
        },
        "",
    )
    .await;
    assert!(mtls_served(&proxy, CLIENT).await, "mTLS has a principal");
    assert!(!plaintext_served(&proxy).await, "plaintext has none");
    assert!(
        wiring_support::eventually(|| async { proxy.metrics.connections("inbound", "deny") == 1 })
            .await,
        "the plaintext connection is counted as denied"
    );
}

#[tokio::test]
async fn disable_passes_plaintext_and_does_not_terminate_tls() {
    let proxy = inbound(|_| peer_auth("off", "DISABLE"), "").await;
    assert!(plaintext_served(&proxy).await, "plaintext");
    // The ClientHello goes to the echo backend as bytes: it comes back
    // instead of a ServerHello and the handshake fails.
    assert!(mtls(&proxy, CLIENT).await.is_err(), "TLS is not terminated");
}

fn workload_strict_with_port(port: u16, mode: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: echo
  namespace: default
spec:
  selector:
    matchLabels:
      app: echo
  mtls:
    mode: STRICT
  portLevelMtls:
    {port}:
      mode: {mode}
"#
    )
}

#[tokio::test]
async fn port_level_mtls_applies_to_the_workload_port() {
    // STRICT workload-wide, PERMISSIVE on the target port: plaintext served.
    let on_target = inbound(|port| workload_strict_with_port(port, "PERMISSIVE"), "").await;
    assert!(plaintext_served(&on_target).await, "port override applies");
    assert!(mtls_served(&on_target, CLIENT).await);
    // The same override on another port leaves the target STRICT.
    let elsewhere = inbound(
        |port| workload_strict_with_port(port.wrapping_add(1), "PERMISSIVE"),
        "",
    )
    .await;
    assert!(!plaintext_served(&elsewhere).await, "other port: STRICT");
    // A port-level DISABLE on the target port wins over STRICT.
    let disabled = inbound(|port| workload_strict_with_port(port, "DISABLE"), "").await;
    assert!(plaintext_served(&disabled).await);
    assert!(mtls(&disabled, CLIENT).await.is_err());
}

#[tokio::test]
async fn a_silent_client_on_a_permissive_port_is_closed_after_the_handshake_timeout() {
    let proxy = inbound(
        |_| peer_auth("permissive", "PERMISSIVE"),
        r#"handshake_timeout = "300ms""#,
    )
    .await;
    let start = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the proxy closes a silent client: {read:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "not before the timeout: {:?}",
        start.elapsed()
    );
    assert!(
        wiring_support::eventually(|| async {
            proxy.metrics.connections("inbound", "handshake_timeout") == 1
        })
        .await
    );
    // The listener still serves others.
    assert!(plaintext_served(&proxy).await);
}

/// HTTP listener: the PeerAuthentication mode applies as on TCP, then each
/// request is decided (the plaintext one without a principal).
#[tokio::test]
async fn an_http_listener_decides_each_request_with_or_without_a_peer() {
    let proxy = wiring_support::inbound_http(
        |_| {
            format!(
                "{}---\n{}",
                peer_auth("permissive", "PERMISSIVE"),
                r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: authenticated-or-public
  namespace: default
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["*"]
  - to:
    - operation:
        paths: ["/public"]
"#
            )
        },
        "",
    )
    .await;
    let (status, body) = wiring_support::mtls_get(&proxy, CLIENT, "/private", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("/private xfcc="), "{body}");
    assert!(
        body.contains(&format!("URI={CLIENT}")),
        "the peer reaches the app: {body}"
    );

    let (status, _) = wiring_support::plaintext_get(&proxy, "/private")
        .await
        .unwrap();
    assert_eq!(status, 403, "plaintext has no principal");
    let (status, body) = wiring_support::plaintext_get(&proxy, "/public")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "/public xfcc=-", "no client certificate to forward");

    // ALPN h2 is honoured.
    let tls = wiring_support::mtls_alpn(&proxy, CLIENT, &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = wiring_support::http_client(tls, true).await;
    let (status, _) = h2.get("http://echo.default/private", &[]).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_http_listener_on_a_strict_port_refuses_plaintext() {
    let proxy = wiring_support::inbound_http(|_| peer_auth("strict", "STRICT"), "").await;
    assert!(wiring_support::plaintext_get(&proxy, "/").await.is_err());
    let (status, _) = wiring_support::mtls_get(&proxy, CLIENT, "/", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
}
