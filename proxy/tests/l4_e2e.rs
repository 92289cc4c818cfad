//! End-to-end L4 tests on loopback: client -> outbound proxy -> inbound
//! proxy -> echo backend over mTLS, refusals of bad peers, rotation of the
//! credential files, half-close.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns: a failure here is a test failure"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_identity::{
    BundleHandle, BundleSet, IdMatcher, SpiffeServerVerifier, TrustBundle, TrustDomain, check_leaf,
};
use sigil_proxy::{ProxyConfig, ProxyMetrics};
use sigil_test_util::{TestCa, TestCert, leaf_params, p256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

const TD: &str = "example.org";
const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

fn write_creds(dir: &Path, name: &str, ca: &TestCa, leaf: &TestCert) {
    std::fs::write(dir.join(format!("{name}.crt")), &leaf.pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), leaf.key.serialize_pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.bundle")), &ca.cert.pem).unwrap();
}

fn config_with(
    dir: &Path,
    name: &str,
    mode: &str,
    target: SocketAddr,
    extra: &str,
    top: &str,
) -> ProxyConfig {
    let d = dir.display();
    let text = format!(
        r#"
trust_domain = "{TD}"
{top}
[credentials.files]
cert_chain = "{d}/{name}.crt"
key = "{d}/{name}.key"
bundle = "{d}/{name}.bundle"
poll_interval = "50ms"
[[listeners]]
mode = "{mode}"
listen = "127.0.0.1:0"
target = "{target}"
{extra}
"#
    );
    ProxyConfig::load(&text, &BTreeMap::<String, String>::new()).unwrap()
}

async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

async fn start(config: &ProxyConfig) -> SocketAddr {
    start_with(config, ProxyMetrics::default()).await
}

async fn start_with(config: &ProxyConfig, metrics: ProxyMetrics) -> SocketAddr {
    // The daemon's tasks live as long as the test's runtime.
    let running = sigil_proxy::start_with_metrics(config, metrics)
        .await
        .unwrap();
    let addr = running.addrs[0];
    std::mem::forget(running);
    addr
}

struct Mesh {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    ca: TestCa,
    inbound: SocketAddr,
    outbound: SocketAddr,
    /// The inbound proxy's metrics.
    metrics: ProxyMetrics,
}

async fn mesh(policy: &str) -> Mesh {
    mesh_with(policy, "", "spiffe://example.org/ns/default/sa/server", "").await
}

/// A mesh whose inbound runs the Istio policy YAML `policy` (none when
/// empty) and has the top-level lines `inbound_top`, whose outbound expects
/// `expected_id` and has the top-level lines `outbound_top`.
async fn mesh_with(policy: &str, inbound_top: &str, expected_id: &str, outbound_top: &str) -> Mesh {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let ca = TestCa::root(TD);
    write_creds(
        &dir,
        "in",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/server"),
    );
    write_creds(
        &dir,
        "out",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/client"),
    );
    let backend = echo_backend().await;
    let metrics = ProxyMetrics::default();
    let mut inbound_top = inbound_top.to_owned();
    if !policy.is_empty() {
        let file = dir.join("policy.yaml");
        std::fs::write(&file, policy).unwrap();
        inbound_top.push_str(&format!("\n[policy]\nfiles = [\"{}\"]\n", file.display()));
    }
    let inbound = start_with(
        &config_with(&dir, "in", "inbound", backend, "", &inbound_top),
        metrics.clone(),
    )
    .await;
    let outbound = start(&config_with(
        &dir,
        "out",
        "outbound",
        inbound,
        &format!("expected_id = \"{expected_id}\""),
        outbound_top,
    ))
    .await;
    Mesh {
        _dir: tmp,
        dir,
        ca,
        inbound,
        outbound,
        metrics,
    }
}

async fn roundtrip(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    Ok(buf)
}

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

/// A direct mTLS client to the inbound proxy, trusting `example.org`,
/// presenting `cert` (or nothing).
async fn direct(
    mesh: &Mesh,
    cert: Option<&TestCert>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    direct_with(mesh, cert, false, &[]).await
}

/// [`direct`], TLS 1.2 only if `tls12_only`, offering `alpn`.
async fn direct_with(
    mesh: &Mesh,
    cert: Option<&TestCert>,
    tls12_only: bool,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let bundle =
        TrustBundle::from_pem(TrustDomain::new(TD).unwrap(), mesh.ca.cert.pem.as_bytes()).unwrap();
    let verifier =
        SpiffeServerVerifier::new(BundleHandle::new(BundleSet::from(bundle)), IdMatcher::Any);
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(if tls12_only {
        TLS12_ONLY
    } else {
        rustls::DEFAULT_VERSIONS
    })
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(mesh.inbound).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("sigil").unwrap(), tcp)
        .await
}

async fn refused(mesh: &Mesh, cert: Option<&TestCert>) -> bool {
    match direct(mesh, cert).await {
        Err(_) => true,
        Ok(mut tls) => roundtrip(&mut tls, b"ping").await.is_err(),
    }
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

/// An Istio DENY policy matching every connection.
const DENY_ALL: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: default
spec:
  action: DENY
  rules:
  - {}
"#;

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
async fn a_peer_that_never_finishes_the_handshake_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::root(TD);
    write_creds(
        tmp.path(),
        "in",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/server"),
    );
    let backend = echo_backend().await;
    let inbound = start(&config_with(
        tmp.path(),
        "in",
        "inbound",
        backend,
        "",
        r#"handshake_timeout = "200ms""#,
    ))
    .await;
    let mut silent = TcpStream::connect(inbound).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the proxy closes a silent peer: {read:?}"
    );
}

#[tokio::test]
async fn config_with_both_or_no_credential_source_is_refused() {
    let text = |creds: &str| format!("trust_domain = \"{TD}\"\n{creds}\n");
    let env = BTreeMap::<String, String>::new();
    let none = ProxyConfig::load(&text("[credentials]"), &env).unwrap_err();
    assert!(none.to_string().contains("credentials"), "{none}");
    let both = ProxyConfig::load(
        &text("[credentials.sds]\nsocket = \"/s\"\n[credentials.files]\ncert_chain = \"c\"\nkey = \"k\"\nbundle = \"b\""),
        &env,
    )
    .unwrap_err();
    assert!(both.to_string().contains("exactly one"), "{both}");
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

#[tokio::test]
async fn sniffing_tells_a_client_hello_from_plaintext() {
    use sigil_proxy::sniff::{Protocol, sniff};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    assert_eq!(
        sniff(&accepted, Duration::from_secs(2)).await.unwrap(),
        Protocol::Plaintext
    );

    let mesh = mesh("").await;
    let hello = tokio::spawn({
        let ca = TestCa::root(TD);
        async move {
            let leaf = ca.leaf("spiffe://example.org/ns/x/sa/y");
            let fake = Mesh {
                inbound: addr,
                ..mesh
            };
            let _ = direct(&fake, Some(&leaf)).await;
        }
    });
    let (accepted, _) = listener.accept().await.unwrap();
    assert_eq!(
        sniff(&accepted, Duration::from_secs(2)).await.unwrap(),
        Protocol::Tls
    );
    // Peeking consumed nothing: the first byte is still the record type.
    let mut first = [0u8; 1];
    assert_eq!(accepted.peek(&mut first).await.unwrap(), 1);
    assert_eq!(first[0], 0x16);
    hello.abort();
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drops_connections_after_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::root(TD);
    write_creds(
        tmp.path(),
        "in",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/server"),
    );
    write_creds(
        tmp.path(),
        "out",
        &ca,
        &ca.leaf("spiffe://example.org/ns/default/sa/client"),
    );
    let backend = echo_backend().await;
    let inbound = start(&config_with(tmp.path(), "in", "inbound", backend, "", "")).await;
    let config = config_with(
        tmp.path(),
        "out",
        "outbound",
        inbound,
        "",
        r#"shutdown_grace = "200ms""#,
    );
    let running = sigil_proxy::start(&config).await.unwrap();
    let outbound = running.addrs[0];
    let mut established = TcpStream::connect(outbound).await.unwrap();
    assert_eq!(roundtrip(&mut established, b"up").await.unwrap(), b"up");

    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("shutdown completes after the grace");
    assert!(
        TcpStream::connect(outbound).await.is_err(),
        "no longer listening"
    );
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), established.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the connection was dropped: {read:?}"
    );
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
