//! Harness for the proxy tests (`proxy_*.rs`): [`MeshUnderTest`], a real CA
//! ([`CaUnderTest`]), one sidecar-mode agent per proxy identity, and two
//! in-process proxies started with `sigil_proxy::start_with_metrics` on
//! `127.0.0.1:0`, each taking its credentials from its agent over SDS:
//!
//! ```text
//! client ─► outbound proxy (CLIENT_ID) ─mTLS─► inbound proxy (SERVER_ID) ─► TCP echo app
//!                                                                        └► HTTP echo app
//!           outbound "spy" listener ───mTLS─► spy server (SERVER_ID): answers the
//!                                              serial of the client certificate it saw
//! ```
//!
//! The spy shows which certificate the outbound proxy presents, a probe
//! handshake ([`MeshUnderTest::inbound_leaf`]) which one the inbound proxy
//! serves. [`MeshUnderTest::sign`] signs leaves with the CA's own key (for
//! peers the CA would never issue to, such as an expired certificate).
//!
//! Its submodules, re-exported here: [`apps`], the TCP and HTTP echo
//! applications; [`http`], a small hyper client; [`peers`], direct TLS clients of the inbound proxy, the
//! `idle_peers` child process and system helpers (open-file limit, RSS).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use sigil_identity::{IdMatcher, SpiffeId, TrustDomain};
use sigil_proxy::{Credentials, ProxyConfig, ProxyMetrics, Running, SdsClient};
use sigil_test_util::TestCert;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::TD;
use super::agent::{self, AgentUnderTest, wait_until, within};
use super::ca::{self, CaUnderTest};

mod apps;
mod http;
mod peers;

pub(crate) use apps::*;
pub(crate) use http::*;
pub(crate) use peers::*;

/// The identity of the inbound proxy (the server side).
pub(crate) const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
/// The identity of the outbound proxy (the client side).
pub(crate) const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
/// The inbound proxy's base policy: mTLS STRICT for its namespace (without
/// a PeerAuthentication, Istio's default is PERMISSIVE: plaintext allowed).
pub(crate) const STRICT: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: default
spec:
  mtls:
    mode: STRICT
"#;

/// Upper bound of the waits in these tests (setup, one exchange).
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// How to build a mesh.
#[derive(Debug, Clone, Default)]
pub(crate) struct MeshOptions {
    /// Both agents' `certificates.ttl` (default: the agent's).
    pub(crate) ttl: Option<Duration>,
    /// Top-level TOML lines of the inbound proxy (e.g. `handshake_timeout`).
    pub(crate) inbound_top: String,
    /// TOML tables of the inbound proxy (e.g. `[http]`), after its listeners
    /// (not `[policy]`: see [`Self::inbound_policy`]).
    pub(crate) inbound_tables: String,
    /// Istio YAML for the inbound proxy, after [`STRICT`].
    pub(crate) inbound_policy: String,
    /// Whether to add the `protocol = "http"` listener pair.
    pub(crate) http: bool,
}

/// A running mesh (see the module docs). Dropping it stops everything with
/// the test's runtime.
pub(crate) struct MeshUnderTest {
    /// The CA both agents get their certificates from.
    pub(crate) ca: CaUnderTest,
    /// The agent serving [`SERVER_ID`] (sidecar mode).
    pub(crate) server_agent: AgentUnderTest,
    /// The agent serving [`CLIENT_ID`] (sidecar mode).
    pub(crate) client_agent: AgentUnderTest,
    /// The TCP echo application behind the inbound proxy.
    pub(crate) tcp_app: TcpEcho,
    /// The HTTP echo application behind the inbound proxy.
    pub(crate) http_app: SocketAddr,
    /// Inbound TCP listener in front of [`Self::tcp_app`].
    pub(crate) inbound: SocketAddr,
    /// Inbound TCP listener in front of the HTTP echo app (HTTP over an
    /// L4 listener: the proxy copies bytes).
    pub(crate) inbound_tcp_http: SocketAddr,
    /// Inbound `protocol = "http"` listener in front of the HTTP echo app.
    pub(crate) inbound_http: Option<SocketAddr>,
    /// Outbound TCP listener towards [`Self::inbound`] (expects
    /// [`SERVER_ID`]).
    pub(crate) outbound: SocketAddr,
    /// Outbound `protocol = "http"` listener towards
    /// [`Self::inbound_http`].
    pub(crate) outbound_http: Option<SocketAddr>,
    /// Outbound TCP listener towards the spy server: a plaintext connection
    /// to it reads back the serial of the certificate the outbound proxy
    /// presented (see [`Self::outbound_presented`]).
    pub(crate) outbound_spy: SocketAddr,
    /// The inbound proxy's metrics.
    pub(crate) inbound_metrics: ProxyMetrics,
    /// The outbound proxy's metrics.
    pub(crate) outbound_metrics: ProxyMetrics,
    /// [`CLIENT_ID`]'s credentials from its agent (a second SDS client),
    /// for probe handshakes.
    pub(crate) client_creds: Credentials,
    running: Vec<Running>,
    stop: CancellationToken,
    /// Temp files (configs, certificates for `openssl` and `curl`).
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for MeshUnderTest {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Configures a sidecar agent serving `id` (token `dev:<ns>:<sa>`).
fn agent_for(
    id: &'static str,
    ttl: Option<Duration>,
) -> impl FnOnce(&mut sigil_node_agent::config::AgentConfig, &std::path::Path) {
    move |config, dir| {
        let spiffe_id = SpiffeId::parse(id).expect("id");
        let path = spiffe_id.path().to_owned();
        let mut parts = path.trim_start_matches('/').split('/');
        let (Some("ns"), Some(ns), Some("sa"), Some(sa)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            panic!("not a Kubernetes-shaped ID: {id}");
        };
        config.ca.token_file = Some(super::write(dir, "token", format!("dev:{ns}:{sa}")));
        config.attestation.identity = Some(spiffe_id);
        if let Some(ttl) = ttl {
            config.certificates.ttl = Some(ttl);
        }
    }
}

/// A proxy configuration: SDS from `socket`, the top-level lines `top`, the
/// `[[listeners]]` tables `listeners`, then `tables`.
fn proxy_config(socket: &std::path::Path, top: &str, listeners: &str, tables: &str) -> ProxyConfig {
    let text = proxy_config_text(socket, top, listeners, tables);
    ProxyConfig::load(&text, &BTreeMap::<String, String>::new())
        .unwrap_or_else(|e| panic!("proxy config: {e}\n{text}"))
}

fn proxy_config_text(socket: &std::path::Path, top: &str, listeners: &str, tables: &str) -> String {
    format!(
        "trust_domain = \"{TD}\"\n{top}\n[credentials.sds]\nsocket = \"{}\"\n{listeners}\n{tables}\n",
        socket.display()
    )
}

fn listener(mode: &str, target: SocketAddr, extra: &str) -> String {
    format!(
        "[[listeners]]\nmode = \"{mode}\"\nlisten = \"127.0.0.1:0\"\ntarget = \"{target}\"\n{extra}\n"
    )
}

/// `tables` and a `[policy]` table with [`STRICT`] and `policy` (a file
/// in `dir`).
fn with_policy(dir: &std::path::Path, tables: &str, policy: &str) -> String {
    let file = super::write(dir, "inbound-policy.yaml", format!("{STRICT}---\n{policy}"));
    format!("{tables}\n[policy]\nfiles = [\"{}\"]\n", file.display())
}

/// Credentials kept filled by an SDS client of `agent` until `stop`.
fn sds_credentials(agent: &AgentUnderTest, stop: &CancellationToken) -> Credentials {
    let creds = Credentials::empty(TrustDomain::new(TD).expect("td"));
    tokio::spawn(SdsClient::new(agent.sds.clone(), creds.clone()).run(stop.child_token()));
    creds
}

impl MeshUnderTest {
    /// Starts the CA, both agents, the applications, the spy and both
    /// proxies, and waits until a request goes through the mesh.
    pub(crate) async fn start(options: MeshOptions) -> Self {
        let stop = CancellationToken::new();
        let dir = super::tempdir();
        let ca = ca::start(|_| {}).await;
        let server_agent = agent::start(&ca, agent_for(SERVER_ID, options.ttl)).await;
        let client_agent = agent::start(&ca, agent_for(CLIENT_ID, options.ttl)).await;
        let tcp_app = TcpEcho::start(&stop).await;
        let http_app = http_echo(&stop).await;
        let spy = spy_server(sds_credentials(&server_agent, &stop), &stop).await;
        let client_creds = sds_credentials(&client_agent, &stop);

        // The inbound proxy: SERVER_ID.
        let mut inbound_listeners =
            listener("inbound", tcp_app.addr, "") + &listener("inbound", http_app, "");
        if options.http {
            inbound_listeners += &listener("inbound", http_app, "protocol = \"http\"");
        }
        let inbound_tables =
            with_policy(dir.path(), &options.inbound_tables, &options.inbound_policy);
        let inbound_config = proxy_config(
            &server_agent.sds,
            &options.inbound_top,
            &inbound_listeners,
            &inbound_tables,
        );
        let inbound_metrics = ProxyMetrics::default();
        let inbound_running =
            sigil_proxy::start_with_metrics(&inbound_config, inbound_metrics.clone())
                .await
                .unwrap_or_else(|e| panic!("start the inbound proxy: {e}"));
        let inbound = inbound_running.addrs[0];
        let inbound_tcp_http = inbound_running.addrs[1];
        let inbound_http = options.http.then(|| inbound_running.addrs[2]);

        // The outbound proxy: CLIENT_ID, expecting SERVER_ID.
        let expect = format!("expected_id = \"{SERVER_ID}\"");
        let mut outbound_listeners =
            listener("outbound", inbound, &expect) + &listener("outbound", spy, &expect);
        if let Some(inbound_http) = inbound_http {
            outbound_listeners += &listener(
                "outbound",
                inbound_http,
                &format!("{expect}\nprotocol = \"http\""),
            );
        }
        let outbound_config = proxy_config(&client_agent.sds, "", &outbound_listeners, "");
        let outbound_metrics = ProxyMetrics::default();
        let outbound_running =
            sigil_proxy::start_with_metrics(&outbound_config, outbound_metrics.clone())
                .await
                .unwrap_or_else(|e| panic!("start the outbound proxy: {e}"));
        let outbound = outbound_running.addrs[0];
        let outbound_spy = outbound_running.addrs[1];
        let outbound_http = options.http.then(|| outbound_running.addrs[2]);

        let mesh = Self {
            ca,
            server_agent,
            client_agent,
            tcp_app,
            http_app,
            inbound,
            inbound_tcp_http,
            inbound_http,
            outbound,
            outbound_http,
            outbound_spy,
            inbound_metrics,
            outbound_metrics,
            client_creds,
            running: vec![inbound_running, outbound_running],
            stop,
            dir,
        };
        wait_until(
            "a request goes through the mesh, and to the spy",
            LIMIT,
            || async {
                mesh.client_creds.is_ready()
                    && mesh.tcp_roundtrip(b"ready?").await.is_ok()
                    && mesh.outbound_presented().await.is_ok()
            },
        )
        .await;
        mesh
    }

    /// Shuts both proxies down (graceful) and the rest with them.
    pub(crate) async fn stop(mut self) {
        for running in std::mem::take(&mut self.running) {
            within(LIMIT, "a proxy's shutdown", running.shutdown()).await;
        }
    }

    /// One exchange on a new connection through the outbound TCP listener.
    pub(crate) async fn tcp_roundtrip(&self, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(self.outbound).await?;
        roundtrip(&mut stream, msg).await
    }

    /// The leaf the inbound proxy serves now (a probe handshake with
    /// [`CLIENT_ID`]'s credentials that verifies it as [`SERVER_ID`]).
    pub(crate) async fn inbound_leaf(&self) -> std::io::Result<CertificateDer<'static>> {
        let config = sigil_proxy::tls::client_config(
            &self.client_creds,
            IdMatcher::Exact(SpiffeId::parse(SERVER_ID).expect("id")),
            false,
        )
        .map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(self.inbound).await?;
        let tls = tokio::time::timeout(
            LIMIT,
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("sigil").expect("name"), tcp),
        )
        .await
        .map_err(|_| std::io::Error::other("probe handshake timed out"))??;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| std::io::Error::other("no server certificate"))?;
        Ok(leaf.clone().into_owned())
    }

    /// The certificate the outbound proxy presents now, as the spy server
    /// saw (and verified) it.
    pub(crate) async fn outbound_presented(&self) -> std::io::Result<Presented> {
        let mut stream = TcpStream::connect(self.outbound_spy).await?;
        let mut out = String::new();
        tokio::time::timeout(LIMIT, stream.read_to_string(&mut out))
            .await
            .map_err(|_| std::io::Error::other("spy answer timed out"))??;
        let mut fields = out.split_whitespace();
        match (fields.next(), fields.next(), fields.next().map(str::parse)) {
            (Some(serial), Some(id), Some(Ok(not_after))) => Ok(Presented {
                serial: serial.to_owned(),
                id: id.to_owned(),
                not_after,
            }),
            _ => Err(std::io::Error::other(format!("the spy answered {out:?}"))),
        }
    }

    /// Another outbound proxy for [`CLIENT_ID`] (same agent) with one TCP
    /// listener per target, each expecting [`SERVER_ID`]; returns their
    /// addresses, in order, and the running proxy, once it has its
    /// credentials.
    pub(crate) async fn outbound_to(&self, targets: &[SocketAddr]) -> (Vec<SocketAddr>, Running) {
        let expect = format!("expected_id = \"{SERVER_ID}\"");
        let listeners: String = targets
            .iter()
            .map(|t| listener("outbound", *t, &expect))
            .collect();
        let config = proxy_config(&self.client_agent.sds, "", &listeners, "");
        let running = sigil_proxy::start(&config)
            .await
            .unwrap_or_else(|e| panic!("start an outbound proxy: {e}"));
        wait_until("the outbound proxy has its credentials", LIMIT, || async {
            running.ready()
        })
        .await;
        (running.addrs.clone(), running)
    }

    /// Another inbound proxy for [`SERVER_ID`] (same agent, STRICT), in a
    /// process of its own: an L4 listener in front of the TCP app, then an
    /// L7 one in front of the HTTP app; `top` and `tables` as in
    /// [`MeshOptions`].
    pub(crate) async fn separate_inbound(&self, top: &str, tables: &str) -> ProxyProcess {
        let listeners = listener("inbound", self.tcp_app.addr, "")
            + &listener("inbound", self.http_app, "protocol = \"http\"");
        let tables = with_policy(self.dir.path(), tables, "");
        let text = proxy_config_text(&self.server_agent.sds, top, &listeners, &tables);
        let file = super::write(self.dir.path(), "separate-inbound.toml", text);
        ProxyProcess::start(&file).await
    }

    /// Signs `params` (a fresh P-256 key) with the CA's own key: a
    /// certificate that chains to the mesh's root.
    pub(crate) fn sign(&self, params: CertificateParams) -> TestCert {
        let ca_dir = self
            .ca
            .dir
            .as_ref()
            .expect("the CA's dir")
            .path()
            .join("ca");
        let key_pem = std::fs::read_to_string(ca_dir.join("ca-key.pem")).expect("CA key");
        let cert_pem = std::fs::read_to_string(ca_dir.join("ca-cert.pem")).expect("CA cert");
        let ca_key = KeyPair::from_pem(&key_pem).expect("CA key parses");
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, ca_key).expect("CA issuer");
        let key = sigil_test_util::p256();
        let cert = params.signed_by(&key, &issuer).expect("sign");
        TestCert {
            der: cert.der().clone(),
            pem: cert.pem(),
            key,
            params,
        }
    }

    /// A valid leaf for `id` signed by the CA (one hour).
    pub(crate) fn leaf(&self, id: &str) -> TestCert {
        self.sign(sigil_test_util::leaf_params(id))
    }

    /// Writes `cert` (`<name>.crt`, `<name>.key`) and the CA's roots
    /// (`roots.pem`) into [`Self::dir`]; returns the three paths.
    pub(crate) fn write_peer(&self, name: &str, cert: &TestCert) -> [std::path::PathBuf; 3] {
        let dir = self.dir.path();
        [
            super::write(dir, &format!("{name}.crt"), &cert.pem),
            super::write(dir, &format!("{name}.key"), cert.key.serialize_pem()),
            super::write(dir, "roots.pem", &self.ca.roots_pem),
        ]
    }
}

/// A certificate the outbound proxy presented to the spy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Presented {
    /// Its serial number, lowercase hex.
    pub(crate) serial: String,
    /// Its URI SANs, comma-separated.
    pub(crate) id: String,
    /// Its notAfter, Unix seconds.
    pub(crate) not_after: i64,
}

/// The serial number of a certificate, lowercase hex.
pub(crate) fn serial_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `msg` and reads back as many bytes (an echo), within [`LIMIT`].
pub(crate) async fn roundtrip(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("echo timed out"))??;
    if buf != msg {
        return Err(std::io::Error::other(format!(
            "echo mismatch: sent {msg:?}, got {buf:?}"
        )));
    }
    Ok(buf)
}

/// The spy: an mTLS server with `creds` (the proxy's own TLS config) that
/// writes `<serial> <URI SANs> <notAfter>` of the peer's leaf and closes.
async fn spy_server(creds: Credentials, stop: &CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the spy");
    let addr = listener.local_addr().expect("spy addr");
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((tcp, _)) = accepted else { continue };
            // A new config per connection: empty credentials fail the
            // handshake until the SDS client filled them.
            let Ok(config) = sigil_proxy::tls::server_config(&creds, false) else {
                continue;
            };
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                let Ok(Ok(mut tls)) = tokio::time::timeout(LIMIT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let answer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|leaf| {
                        let (_, not_after) = ca::validity(leaf);
                        let ids = ca::uri_sans(leaf).join(",");
                        format!("{} {ids} {not_after}", serial_of(leaf))
                    })
                    .unwrap_or_default();
                let _ = tls.write_all(format!("{answer}\n").as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}
