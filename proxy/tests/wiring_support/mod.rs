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

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
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
    config_listener(dir, backend, top, policy, "")
}

/// [`config`] with `listener` lines in the listener's table.
pub(crate) fn config_listener(
    dir: &std::path::Path,
    backend: SocketAddr,
    top: &str,
    policy: &str,
    listener: &str,
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
{listener}
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
    inbound_with(yaml, top, "", echo_backend().await, "").await
}

/// An HTTP inbound proxy (`protocol = "http"`) in front of [`http_app`].
pub(crate) async fn inbound_http(yaml: impl FnOnce(u16) -> String, top: &str) -> Inbound {
    inbound_with(yaml, top, "", http_app().await, r#"protocol = "http""#).await
}

/// [`inbound_http`] with `policy` lines added to `[policy]`.
pub(crate) async fn inbound_http_policy(yaml: impl FnOnce(u16) -> String, policy: &str) -> Inbound {
    inbound_with(yaml, "", policy, http_app().await, r#"protocol = "http""#).await
}

async fn inbound_with(
    yaml: impl FnOnce(u16) -> String,
    top: &str,
    policy_lines: &str,
    backend: SocketAddr,
    listener: &str,
) -> Inbound {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::root(TD);
    write_creds(dir.path(), &ca);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, yaml(backend.port())).unwrap();
    let config = config_listener(
        dir.path(),
        backend,
        top,
        &format!(
            "files = [\"{}\"]\n{LABELS}\n{policy_lines}",
            policy.display()
        ),
        listener,
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
    mtls_alpn(inbound, id, &[]).await
}

/// [`mtls`] offering `alpn`.
pub(crate) async fn mtls_alpn(
    inbound: &Inbound,
    id: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let bundle = TrustBundle::from_pem(
        TrustDomain::new(TD).unwrap(),
        inbound.ca.cert.pem.as_bytes(),
    )
    .unwrap();
    let verifier =
        SpiffeServerVerifier::new(BundleHandle::new(BundleSet::from(bundle)), IdMatcher::Any);
    let leaf = inbound.ca.leaf(id);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
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
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
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

/// An HTTP/1.1 application answering 200 with `<path> xfcc=<the
/// x-forwarded-client-cert header or ->`.
pub(crate) async fn http_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let xfcc = req
                            .headers()
                            .get("x-forwarded-client-cert")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned();
                        let body = format!("{} xfcc={xfcc}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// An HTTP/1.1 (or HTTP/2 when `h2`) client on `io`.
pub(crate) async fn http_client<IO>(io: IO, h2: bool) -> HttpClient
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        HttpClient::H2(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        HttpClient::H1(sender)
    }
}

/// A client connection.
pub(crate) enum HttpClient {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl HttpClient {
    /// GET `path` with `headers`: the status and the body; `Err` when the
    /// connection failed.
    pub(crate) async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let mut builder = hyper::Request::get(path).header("host", "echo.default");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(Bytes::new())).unwrap();
        let exchange = async {
            let response = match self {
                HttpClient::H1(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(request).await
                }
                HttpClient::H2(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(request).await
                }
            }
            .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| "timeout".to_owned())?
    }
}

/// One GET over a new plaintext connection to `inbound`.
pub(crate) async fn plaintext_get(inbound: &Inbound, path: &str) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(inbound.addr)
        .await
        .map_err(|e| e.to_string())?;
    http_client(tcp, false).await.get(path, &[]).await
}

/// One GET over a new mTLS connection to `inbound` as `id`.
pub(crate) async fn mtls_get(
    inbound: &Inbound,
    id: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let tls = mtls(inbound, id).await.map_err(|e| e.to_string())?;
    http_client(tls, false).await.get(path, headers).await
}
