//! L7 over mTLS: HTTP/2 chosen by ALPN on the inbound side, and
//! application -> outbound HTTP layer -> mTLS (h2 or HTTP/1.1 by ALPN) ->
//! inbound HTTP layer -> application, with per-request decisions.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a failure here is a test failure"
)]

mod l7_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use l7_support::*;
use rustls::pki_types::ServerName;
use sigil_identity::{IdMatcher, SpiffeId, check_leaf};
use sigil_proxy::http::ConnInfo;
use sigil_proxy::{FileCredentials, FilesConfig, HttpConfig, tls};
use sigil_test_util::TestCa;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const DENY_ADMIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin"]
"#;

fn creds(dir: &Path, name: &str, ca: &TestCa, id: &str) -> FileCredentials {
    let leaf = ca.leaf(id);
    let path = |ext: &str| dir.join(format!("{name}.{ext}"));
    std::fs::write(path("crt"), &leaf.pem).unwrap();
    std::fs::write(path("key"), leaf.key.serialize_pem()).unwrap();
    std::fs::write(path("bundle"), &ca.cert.pem).unwrap();
    let config = FilesConfig {
        cert_chain: path("crt"),
        key: path("key"),
        bundle: path("bundle"),
        poll_interval: Duration::from_secs(1),
    };
    FileCredentials::load(&config, "example.org").unwrap()
}

struct Mesh {
    _dir: tempfile::TempDir,
    app: App,
    inbound: SocketAddr,
    client_creds: FileCredentials,
    metrics: sigil_proxy::ProxyMetrics,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The application behind an inbound HTTP layer on mTLS, running `yaml`.
async fn mesh(yaml: &str) -> Mesh {
    mesh_with(yaml, &HttpConfig::default()).await
}

/// [`mesh`] with `config`.
async fn mesh_with(yaml: &str, config: &HttpConfig) -> Mesh {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::root("example.org");
    let server = creds(tmp.path(), "server", &ca, SERVER_ID);
    let client_creds = creds(tmp.path(), "client", &ca, CLIENT_ID);
    let app = App::start().await;
    let (svc, metrics) = service_with(yaml, config);
    let svc = svc.with_local_identity(server.credentials().resolver());
    let acceptor = TlsAcceptor::from(Arc::new(
        tls::server_config(server.credentials(), false).unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbound = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (stop, tracker, target) = (shutdown.clone(), tasks.clone(), app.addr);
    tasks.spawn(async move {
        loop {
            let (tcp, source) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted.unwrap(),
            };
            let (acceptor, svc, stop) = (acceptor.clone(), svc.clone(), stop.clone());
            tracker.spawn(async move {
                let local = tcp.local_addr().unwrap();
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, session) = tls.get_ref();
                let conn = ConnInfo {
                    peer: session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| check_leaf(c).ok()),
                    source,
                    local,
                    sni: session.server_name().map(str::to_owned),
                    h2: session.alpn_protocol() == Some(b"h2"),
                };
                svc.serve_inbound(tls, conn, target, stop).await;
            });
        }
    });
    Mesh {
        _dir: tmp,
        app,
        inbound,
        client_creds,
        metrics,
        shutdown,
        tasks,
    }
}

impl Mesh {
    /// An mTLS connection to the inbound side as the client, offering `alpn`.
    async fn connect(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let server = SpiffeId::parse(SERVER_ID).unwrap();
        let mut config = tls::client_config(
            self.client_creds.credentials(),
            IdMatcher::Exact(server),
            false,
        )
        .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.inbound).await.unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("sigil").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// An outbound HTTP layer on plain TCP whose connections each go to the
    /// inbound side over one mTLS connection offering `alpn`.
    async fn outbound(&self, alpn: &'static [u8]) -> (SocketAddr, sigil_proxy::ProxyMetrics) {
        let (svc, metrics) = service_with("", &HttpConfig::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let this = MeshDialer {
            inbound: self.inbound,
            creds: self.client_creds.clone(),
        };
        // Its own shutdown: the inbound side can go away alone.
        let (stop, tracker) = (CancellationToken::new(), self.tasks.clone());
        self.tasks.spawn(async move {
            loop {
                let (app_side, source) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let (svc, stop, this) = (svc.clone(), stop.clone(), this.clone());
                tracker.spawn(async move {
                    let upstream = this.dial(alpn).await;
                    let upstream_h2 = upstream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let conn = ConnInfo {
                        peer: SpiffeId::parse(SERVER_ID).ok(),
                        source,
                        local: app_side.local_addr().unwrap(),
                        sni: None,
                        h2: false,
                    };
                    svc.serve_outbound(app_side, conn, upstream, upstream_h2, stop)
                        .await;
                });
            }
        });
        (addr, metrics)
    }
}

#[derive(Clone)]
struct MeshDialer {
    inbound: SocketAddr,
    creds: FileCredentials,
}

impl MeshDialer {
    async fn dial(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let server = SpiffeId::parse(SERVER_ID).unwrap();
        let mut config =
            tls::client_config(self.creds.credentials(), IdMatcher::Exact(server), false).unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.inbound).await.unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("sigil").unwrap(), tcp)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn http2_over_mtls_with_alpn_h2_is_authorized_per_request() {
    let mesh = mesh(DENY_ADMIN).await;
    let tls = mesh.connect(b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = |path: &str| {
        let mut send = send.clone();
        let req = Request::get(format!("https://app.example{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        async move { answer(send.send_request(req).await.unwrap()).await }
    };
    let (ok, denied) = tokio::join!(get("/x?y=1"), get("/admin"));
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, "GET /x?y=1");
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.body, "RBAC: access denied");

    let seen = mesh.app.seen();
    assert_eq!(seen.len(), 1);
    // The application speaks HTTP/1.1 and sees the :authority as Host, and
    // both identities in XFCC.
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(seen[0].headers["host"], "app.example");
    assert_eq!(
        seen[0].headers["x-forwarded-client-cert"],
        format!("By={SERVER_ID};URI={CLIENT_ID}").as_str()
    );
    assert_eq!(mesh.metrics.requests("inbound", "allow"), 1);
    assert_eq!(mesh.metrics.requests("inbound", "deny"), 1);
}

#[tokio::test]
async fn http1_over_mtls_with_alpn_http11() {
    let mesh = mesh("").await;
    let tls = mesh.connect(b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let answer = send_h1(&mut send, request("GET", &format!("/k{i}"))).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(mesh.app.seen().len(), 3);
}

async fn through_the_mesh(alpn: &'static [u8]) {
    let mesh = mesh(DENY_ADMIN).await;
    let (outbound, out_metrics) = mesh.outbound(alpn).await;

    // HTTP/1.1 from the application, several requests on one connection.
    let mut send = h1(outbound).await;
    let ok = send_h1(&mut send, request("GET", "/hello")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, "GET /hello");
    let denied = send_h1(&mut send, request("GET", "/admin")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.body, "RBAC: access denied");
    let body = Bytes::from(vec![7u8; 1 << 20]);
    let echo = Request::post("/echo")
        .header("host", "app.example")
        .body(Full::new(body.clone()))
        .unwrap();
    let echoed = send_h1(&mut send, echo).await;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(echoed.body.len(), body.len());

    // h2c (prior knowledge) from the application, concurrent streams.
    let h2 = h2c(outbound).await;
    let mut concurrent = Vec::new();
    for i in 0..10 {
        let mut h2 = h2.clone();
        concurrent.push(tokio::spawn(async move {
            let req = Request::get(format!("http://app.example/c{i}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            answer(h2.send_request(req).await.unwrap()).await
        }));
    }
    for (i, request) in concurrent.into_iter().enumerate() {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, format!("GET /c{i}"));
    }

    let seen = mesh.app.seen();
    assert_eq!(seen.len(), 12);
    assert!(seen.iter().all(|s| s.headers["host"] == "app.example"));
    assert!(seen.iter().all(|s| s.headers["x-forwarded-client-cert"]
        == format!("By={SERVER_ID};URI={CLIENT_ID}").as_str()));
    assert_eq!(out_metrics.requests("outbound", "allow"), 13);
    // The application's 1 MiB echo crossed the outbound both ways.
    for flow in ["received", "sent"] {
        let counted = out_metrics.bytes("outbound", flow);
        assert!(counted > 1 << 20, "outbound {flow}: {counted}");
    }
    assert_eq!(mesh.metrics.requests("inbound", "deny"), 1);
}

#[tokio::test]
async fn app_to_outbound_to_inbound_to_app_over_h2() {
    through_the_mesh(b"h2").await;
}

#[tokio::test]
async fn app_to_outbound_to_inbound_to_app_over_http11() {
    through_the_mesh(b"http/1.1").await;
}

#[tokio::test]
async fn an_outbound_connection_whose_upstream_dies_is_closed() {
    let mesh = mesh("").await;
    let (outbound, _) = mesh.outbound(b"http/1.1").await;
    let mut send = h1(outbound).await;
    assert_eq!(
        send_h1(&mut send, request("GET", "/")).await.status,
        StatusCode::OK
    );
    // The inbound side goes away: the outbound connection is drained and
    // closed rather than left answering 502 forever.
    mesh.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !send.is_closed() {
            if send.ready().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the outbound connection closes");
}

#[tokio::test]
async fn an_h2_client_that_never_sends_its_preface_is_cut_off() {
    let config = http_config(60 * 1024, Duration::from_millis(300));
    let mesh = mesh_with("", &config).await;
    let mut tls = mesh.connect(b"h2").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
    )
    .await
    .expect("the proxy closes a silent h2 connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(mesh.metrics.requests("inbound", "header_timeout"), 1);
}

#[tokio::test]
async fn websockets_cross_the_mesh_over_http11_only() {
    let mesh = mesh("").await;
    let (outbound, _) = mesh.outbound(b"http/1.1").await;
    let (head, mut ws) = websocket(outbound).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        echo(&mut ws, b"hello through two proxies").await,
        b"hello through two proxies"
    );
    // Another protocol is refused by the outbound already (as Envoy's
    // upgrade_failed), never tunnelled.
    let refused = raw(
        outbound,
        b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade, close\r\nupgrade: foo\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");

    // Over an HTTP/2 upstream the upgrade cannot be carried: the request
    // arrives as a plain GET.
    let (outbound, _) = mesh.outbound(b"h2").await;
    let (head, _) = websocket(outbound).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
