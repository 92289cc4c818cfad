//! Harness for the CA server tests (`ca_server_*.rs`): starts the real
//! [`CaServer`] on loopback (`127.0.0.1:0` for both listeners, the authority
//! in a temp dir), talks to it with the real node-agent [`CaClient`], makes
//! CSRs with rcgen and reads the admin port with a minimal HTTP/1.1 client.
//!
//! Its submodules, re-exported here: [`jwt`] mints honest and malicious JWTs
//! with ring ECDSA P-256 keys; [`kube`] holds stub Kubernetes dependencies,
//! among them a [`GatedReviewer`] whose TokenReviews wait until the test
//! opens a gate.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_ca::config::{AuthenticatorConfig, CaConfig};
use sigil_ca::server::{Bound, CaServer, ServeError, ServerDeps};
use sigil_identity::verify::{Usage, VerifiedSvid, verify_x509_svid};
use sigil_identity::{BundleSet, SpiffeId, TrustBundle, TrustDomain};
use sigil_node_agent::ca_client::{CaClient, CaClientConfig, CaClientError, CsrRequest};
use sigil_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::TD;

mod jwt;
mod kube;

pub(crate) use jwt::*;
pub(crate) use kube::*;

/// The issuer of the test Kubernetes service-account JWTs.
pub(crate) const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The ztunnel identity used as node agent.
pub(crate) const ZTUNNEL: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
/// The development token of [`super::ID`].
pub(crate) const WEB_TOKEN: &str = "dev:default:web";
/// Upper bound for every "wait until" loop in these tests.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
pub(crate) fn k8s_id(ns: &str, sa: &str) -> String {
    format!("spiffe://{TD}/ns/{ns}/sa/{sa}")
}

// === starting the server ===

/// A running CA server. Dropping it cancels its shutdown token.
pub(crate) struct CaUnderTest {
    /// The gRPC (TLS) address.
    pub(crate) grpc: SocketAddr,
    /// The admin (HTTP) address.
    pub(crate) admin: SocketAddr,
    /// `Bound::roots_pem()` at start.
    pub(crate) roots_pem: String,
    /// Cancel to shut the server down.
    pub(crate) shutdown: CancellationToken,
    /// The `Bound::run` task.
    pub(crate) handle: Option<JoinHandle<Result<(), ServeError>>>,
    /// The temp dir holding the authority (kept alive with the server).
    pub(crate) dir: Option<tempfile::TempDir>,
}

impl Drop for CaUnderTest {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl CaUnderTest {
    /// A client connected over TLS with the server's roots.
    pub(crate) async fn client(&self) -> CaClient {
        client(self.grpc, &self.roots_pem).await
    }

    /// A raw tonic client (for requests `CaClient` cannot express).
    pub(crate) async fn raw(&self) -> IstioCertificateServiceClient<Channel> {
        raw_client(self.grpc, &self.roots_pem).await
    }

    /// `GET path` on the admin port: (status, body).
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// The value of the metric sample `series` (name and labels exactly as
    /// exposed, e.g. `sigil_ca_certificates_issued_total{outcome="ok"}`),
    /// 0 when absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics: {body}");
        sample(&body, series)
    }

    /// `sigil_ca_certificates_issued_total{outcome="ok"}`.
    pub(crate) async fn issued_ok(&self) -> f64 {
        self.metric(r#"sigil_ca_certificates_issued_total{outcome="ok"}"#)
            .await
    }
}

/// A configuration for tests: both listeners on `127.0.0.1:0`, the
/// authority (self-signed) under `dir/ca`, only the development
/// authenticator, a short drain.
pub(crate) fn test_config(dir: &Path) -> CaConfig {
    let mut config = CaConfig::default();
    config.server.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.shutdown_grace = Duration::from_secs(5);
    config.authority.dir = dir.join("ca");
    config.authenticators = vec![AuthenticatorConfig::Development];
    config
}

/// Starts a server with [`test_config`] adjusted by `configure`.
pub(crate) async fn start(configure: impl FnOnce(&mut CaConfig)) -> CaUnderTest {
    start_with_deps(configure, ServerDeps::default()).await
}

/// [`start`] with explicit dependencies.
pub(crate) async fn start_with_deps(
    configure: impl FnOnce(&mut CaConfig),
    deps: ServerDeps,
) -> CaUnderTest {
    let dir = super::tempdir();
    let mut config = test_config(dir.path());
    configure(&mut config);
    let bound = CaServer::bind(config, deps)
        .await
        .unwrap_or_else(|e| panic!("CaServer::bind: {e}"));
    run(bound, Some(dir))
}

/// Runs a bound server in a task.
pub(crate) fn run(bound: Bound, dir: Option<tempfile::TempDir>) -> CaUnderTest {
    let grpc = bound.grpc_addr().expect("grpc addr");
    let admin = bound.admin_addr().expect("admin addr");
    let roots_pem = bound.roots_pem();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(bound.run(shutdown.clone()));
    CaUnderTest {
        grpc,
        admin,
        roots_pem,
        shutdown,
        handle: Some(handle),
        dir,
    }
}

// === clients ===

/// Client settings for the server at `addr` (serving name `localhost`).
pub(crate) fn client_config(addr: SocketAddr, roots_pem: &str) -> CaClientConfig {
    CaClientConfig::new(
        format!("https://{addr}"),
        roots_pem.as_bytes().to_vec(),
        "localhost",
    )
}

/// A connected [`CaClient`].
pub(crate) async fn client(addr: SocketAddr, roots_pem: &str) -> CaClient {
    CaClient::connect(&client_config(addr, roots_pem))
        .await
        .unwrap_or_else(|e| panic!("connect to the CA at {addr}: {e}"))
}

/// A raw tonic client over TLS, no client certificate.
pub(crate) async fn raw_client(
    addr: SocketAddr,
    roots_pem: &str,
) -> IstioCertificateServiceClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(roots_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("raw connect");
    IstioCertificateServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// Sends `csr` with `token` (no TTL, no impersonation).
pub(crate) async fn ask(
    client: &mut CaClient,
    csr: &str,
    token: Option<&str>,
) -> Result<Vec<String>, CaClientError> {
    client
        .create_certificate(CsrRequest {
            csr_pem: csr,
            token,
            ..CsrRequest::default()
        })
        .await
}

/// The gRPC code of a call's result (`Ok` for success); panics on a
/// non-status error.
pub(crate) fn code_of<T>(result: &Result<T, CaClientError>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(CaClientError::Status { code, .. }) => *code,
        Err(other) => panic!("expected a gRPC status, got {other}"),
    }
}

/// Asserts the call failed with exactly `code`.
pub(crate) fn assert_code<T: std::fmt::Debug>(
    result: &Result<T, CaClientError>,
    code: Code,
    what: &str,
) {
    match result {
        Err(CaClientError::Status { code: got, message }) => {
            assert_eq!(*got, code, "{what}: wrong code (message: {message})");
        }
        Err(other) => panic!("{what}: expected {code:?}, got a non-status error: {other}"),
        Ok(chain) => panic!("{what}: expected {code:?}, but a chain was issued: {chain:?}"),
    }
}

// === CSRs ===

/// A ztunnel-shaped CSR: fresh rcgen P-256 key, empty subject, URI SAN `id`.
pub(crate) fn new_csr(id: &str) -> (String, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    (csr_for_key(id, &key, DistinguishedName::new()), key)
}

/// A CSR for `key` with `subject` and the one URI SAN `id`.
pub(crate) fn csr_for_key(id: &str, key: &KeyPair, subject: DistinguishedName) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.subject_alt_names = vec![SanType::URI(id.try_into().expect("URI SAN"))];
    params
        .serialize_request(key)
        .expect("serialize CSR")
        .pem()
        .expect("CSR PEM")
}

// === chains ===

/// The DER certificates of a PEM text (x509-parser's PEM reader).
pub(crate) fn pem_ders(pem: &str) -> Vec<CertificateDer<'static>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| CertificateDer::from(p.expect("PEM block").contents))
        .collect()
}

/// The URI SANs of a certificate.
pub(crate) fn uri_sans(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    cert.subject_alternative_name()
        .expect("SAN extension parses")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// notBefore and notAfter of a certificate, Unix seconds.
pub(crate) fn validity(der: &[u8]) -> (i64, i64) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

/// Now, Unix seconds.
pub(crate) fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
    .expect("fits")
}

/// Checks the response shape real clients depend on and returns the
/// verified SVID: every element one PEM ending with `\n`, the leaf first
/// (one URI SAN, `id`), the last element equal to `roots_pem` (all roots),
/// and the chain verifying with `verify_x509_svid` against that bundle for
/// both TLS roles.
pub(crate) fn check_chain(chain: &[String], roots_pem: &str, id: &str) -> VerifiedSvid {
    assert!(chain.len() >= 2, "leaf and bundle at least: {chain:?}");
    for (i, element) in chain.iter().enumerate() {
        assert!(
            element.starts_with("-----BEGIN CERTIFICATE-----\n"),
            "element {i} is not a PEM certificate: {element:?}"
        );
        assert!(
            element.ends_with("-----END CERTIFICATE-----\n"),
            "element {i} lacks the trailing newline: {element:?}"
        );
    }
    for (i, element) in chain[..chain.len() - 1].iter().enumerate() {
        assert_eq!(
            pem_ders(element).len(),
            1,
            "element {i} holds one certificate"
        );
    }
    let last = chain.last().expect("last element");
    assert_eq!(
        last, roots_pem,
        "the last element is the whole trust bundle"
    );
    let roots = pem_ders(last);
    assert!(!roots.is_empty(), "the bundle holds roots");

    let certs: Vec<CertificateDer<'static>> = chain[..chain.len() - 1]
        .iter()
        .flat_map(|p| pem_ders(p))
        .collect();
    assert_eq!(
        uri_sans(&certs[0]),
        vec![id.to_owned()],
        "the leaf's URI SAN"
    );
    let bundles = BundleSet::from(TrustBundle::with_x509_authorities(
        TrustDomain::new(TD).expect("td"),
        roots,
    ));
    let mut verified = None;
    for usage in [Usage::ClientAuth, Usage::ServerAuth] {
        let svid = verify_x509_svid(&certs, &bundles, UnixTime::now(), usage)
            .unwrap_or_else(|e| panic!("the issued chain does not verify for {usage:?}: {e}"));
        assert_eq!(svid.spiffe_id(), &SpiffeId::parse(id).expect("id"));
        verified = Some(svid);
    }
    verified.expect("verified")
}

// === admin HTTP ===

/// `GET path` over a fresh HTTP/1.1 connection: (status, body). Handles
/// `Content-Length`, chunked and read-to-close bodies.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect admin");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"));
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// The value of `series` in a Prometheus text exposition, 0 when absent.
pub(crate) fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad sample {v:?} for {series}"))
        })
        .unwrap_or(0.0)
}
