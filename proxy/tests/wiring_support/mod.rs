//! Helpers of the PeerAuthentication and policy-reload tests: one inbound
//! proxy (credentials from files, policy from a YAML file) in front of an
//! echo backend, mTLS and plaintext clients.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    reason = "test helpers: a failure here is a test failure; not every test file uses every helper"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_identity::{
    BundleHandle, BundleSet, IdMatcher, SpiffeServerVerifier, TrustBundle, TrustDomain,
};
use sigil_proxy::{ProxyConfig, ProxyMetrics, Running};
use sigil_test_util::TestCa;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

pub(crate) const TD: &str = "example.org";

/// The label the test workload carries (`app: echo`).
pub(crate) const LABELS: &str = r#"labels = { app = "echo" }"#;

/// An inbound proxy in front of an echo backend.
pub(crate) struct Inbound {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: TestCa,
    pub(crate) backend: SocketAddr,
    pub(crate) addr: SocketAddr,
    pub(crate) policy: PathBuf,
    pub(crate) metrics: ProxyMetrics,
    pub(crate) running: Running,
}

pub(crate) async fn echo_backend() -> SocketAddr {
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

/// The config of an inbound proxy in `dir` forwarding to `backend`, with
/// `top` lines at the top level and `policy` lines in `[policy]`.
pub(crate) fn config(
    dir: &std::path::Path,
    backend: SocketAddr,
    top: &str,
    policy: &str,
) -> ProxyConfig {
    let d = dir.display();
    let text = format!(
        r#"
trust_domain = "{TD}"
{top}
[credentials.files]
cert_chain = "{d}/in.crt"
key = "{d}/in.key"
bundle = "{d}/in.bundle"
[policy]
namespace = "default"
reload_interval = "50ms"
{policy}
[[listeners]]
mode = "inbound"
listen = "127.0.0.1:0"
target = "{backend}"
"#
    );
    ProxyConfig::load(&text, &BTreeMap::<String, String>::new()).unwrap()
}

/// Writes the inbound's credentials into `dir`.
pub(crate) fn write_creds(dir: &std::path::Path, ca: &TestCa) {
    let leaf = ca.leaf("spiffe://example.org/ns/default/sa/server");
    std::fs::write(dir.join("in.crt"), &leaf.pem).unwrap();
    std::fs::write(dir.join("in.key"), leaf.key.serialize_pem()).unwrap();
    std::fs::write(dir.join("in.bundle"), &ca.cert.pem).unwrap();
}

/// An inbound proxy whose policy file holds `yaml(backend port)`, with `top`
/// lines at the top level of its config.
pub(crate) async fn inbound(yaml: impl FnOnce(u16) -> String, top: &str) -> Inbound {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::root(TD);
    write_creds(dir.path(), &ca);
    let backend = echo_backend().await;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, yaml(backend.port())).unwrap();
    let config = config(
        dir.path(),
        backend,
        top,
        &format!("files = [\"{}\"]\n{LABELS}", policy.display()),
    );
    let metrics = ProxyMetrics::default();
    let running = sigil_proxy::start_with_metrics(&config, metrics.clone())
        .await
        .unwrap();
    let addr = running.addrs[0];
    Inbound {
        dir,
        ca,
        backend,
        addr,
        policy,
        metrics,
        running,
    }
}

/// Writes `msg` and reads as many bytes back.
pub(crate) async fn roundtrip(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    Ok(buf)
}

/// An mTLS client of `inbound` presenting a certificate for `id`.
pub(crate) async fn mtls(
    inbound: &Inbound,
    id: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let bundle = TrustBundle::from_pem(
        TrustDomain::new(TD).unwrap(),
        inbound.ca.cert.pem.as_bytes(),
    )
    .unwrap();
    let verifier =
        SpiffeServerVerifier::new(BundleHandle::new(BundleSet::from(bundle)), IdMatcher::Any);
    let leaf = inbound.ca.leaf(id);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_client_auth_cert(
        vec![leaf.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der())),
    )
    .unwrap();
    let tcp = TcpStream::connect(inbound.addr).await?;
    tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("sigil").unwrap(), tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timeout"))?
}

/// The client's default identity.
pub(crate) const CLIENT: &str = "spiffe://example.org/ns/default/sa/client";

/// Whether an mTLS client with `id` gets its bytes echoed.
pub(crate) async fn mtls_served(inbound: &Inbound, id: &str) -> bool {
    match mtls(inbound, id).await {
        Ok(mut tls) => roundtrip(&mut tls, b"over mtls").await.is_ok(),
        Err(_) => false,
    }
}

/// Whether a plaintext client gets its bytes echoed.
pub(crate) async fn plaintext_served(inbound: &Inbound) -> bool {
    let Ok(mut tcp) = TcpStream::connect(inbound.addr).await else {
        return false;
    };
    roundtrip(&mut tcp, b"GET / HTTP/1.1\r\n\r\n").await.is_ok()
}

/// Polls `condition` every 20 ms until it holds or 10 s pass.
pub(crate) async fn eventually<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A PeerAuthentication `name` in `default` with `mode`.
pub(crate) fn peer_auth(name: &str, mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  mtls:\n    mode: {mode}\n"
    )
}
