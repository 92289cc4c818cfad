//! Helpers of the L4 tests (`l4_e2e.rs`, `l4_limits.rs`): credentials in a
//! temporary directory, an echo backend, an outbound -> inbound proxy pair
//! ([`mesh`]), direct mTLS clients of the inbound.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    reason = "test helpers: a failure here is a test failure; not every test file uses every helper"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_identity::{
    BundleHandle, BundleSet, IdMatcher, SpiffeServerVerifier, TrustBundle, TrustDomain,
};
use sigil_proxy::{ProxyConfig, ProxyMetrics};
use sigil_test_util::{TestCa, TestCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

pub(crate) const TD: &str = "example.org";
pub(crate) const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

pub(crate) fn write_creds(dir: &Path, name: &str, ca: &TestCa, leaf: &TestCert) {
    std::fs::write(dir.join(format!("{name}.crt")), &leaf.pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), leaf.key.serialize_pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.bundle")), &ca.cert.pem).unwrap();
}

pub(crate) fn config_with(
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

pub(crate) async fn start(config: &ProxyConfig) -> SocketAddr {
    start_with(config, ProxyMetrics::default()).await
}

pub(crate) async fn start_with(config: &ProxyConfig, metrics: ProxyMetrics) -> SocketAddr {
    // The daemon's tasks live as long as the test's runtime.
    let running = sigil_proxy::start_with_metrics(config, metrics)
        .await
        .unwrap();
    let addr = running.addrs[0];
    std::mem::forget(running);
    addr
}

pub(crate) struct Mesh {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) ca: TestCa,
    pub(crate) inbound: SocketAddr,
    pub(crate) outbound: SocketAddr,
    /// The inbound proxy's metrics.
    pub(crate) metrics: ProxyMetrics,
}

pub(crate) async fn mesh(policy: &str) -> Mesh {
    mesh_with(policy, "", "spiffe://example.org/ns/default/sa/server", "").await
}

/// A mesh whose inbound runs the Istio policy YAML `policy` (none when
/// empty) and has the top-level lines `inbound_top`, whose outbound expects
/// `expected_id` and has the top-level lines `outbound_top`.
pub(crate) async fn mesh_with(
    policy: &str,
    inbound_top: &str,
    expected_id: &str,
    outbound_top: &str,
) -> Mesh {
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

pub(crate) async fn roundtrip(
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

/// A direct mTLS client to the inbound proxy, trusting `example.org`,
/// presenting `cert` (or nothing).
pub(crate) async fn direct(
    mesh: &Mesh,
    cert: Option<&TestCert>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    direct_with(mesh, cert, false, &[]).await
}

/// [`direct`], TLS 1.2 only if `tls12_only`, offering `alpn`.
pub(crate) async fn direct_with(
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

pub(crate) async fn refused(mesh: &Mesh, cert: Option<&TestCert>) -> bool {
    match direct(mesh, cert).await {
        Err(_) => true,
        Ok(mut tls) => roundtrip(&mut tls, b"ping").await.is_err(),
    }
}

/// An Istio DENY policy matching every connection.
pub(crate) const DENY_ALL: &str = r#"
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
