//! Shared harness of the L7 tests: a recording HTTP/1.1 application, the
//! HTTP layer served on plain TCP (or a stream the test provides), clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    unreachable_pub,
    reason = "test helpers outside #[test] fns, not every test file uses every helper"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sigil_identity::SpiffeId;
use sigil_proxy::http::{ConnInfo, HttpService};
use sigil_proxy::jwt::{JwksCache, JwtFilter};
use sigil_proxy::policy::{Authorizer, PathNormalization, PolicyDocuments, Workload};
use sigil_proxy::{HttpConfig, Policies, PolicyState, ProxyMetrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const CLIENT_ID: &str = "spiffe://example.org/ns/default/sa/client";
pub const SERVER_ID: &str = "spiffe://example.org/ns/default/sa/server";

/// What the application saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub version: http::Version,
    pub headers: HeaderMap,
}

type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A recording application (HTTP/1.1 and h2c).
///
/// - `content-type: application/grpc*`: the request body back, with the
///   trailer `grpc-status: 0`;
/// - `/ws` with `Upgrade`: 101, then echoes every byte;
/// - `/hold`: counts itself in `held`, waits until `release()`, then 200;
/// - `/never`: never answers;
/// - `/echo`: answers with the request body;
/// - anything else: 200 with body `<method> <target>`.
#[derive(Clone)]
pub struct App {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections the application accepted.
    pub accepted: Arc<AtomicUsize>,
    /// `/hold` requests currently held, and the most held at once.
    pub held: Arc<AtomicUsize>,
    pub max_held: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

impl App {
    pub async fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (release, _) = watch::channel(false);
        let app = App {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            accepted: Arc::default(),
            held: Arc::default(),
            max_held: Arc::default(),
            release,
        };
        let this = app.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                this.accepted.fetch_add(1, Ordering::SeqCst);
                let this = this.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        app
    }

    async fn answer(&self, mut req: Request<Incoming>) -> Response<AppBody> {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        self.seen.lock().unwrap().push(Seen {
            method: req.method().as_str().to_owned(),
            target: target.clone(),
            version: req.version(),
            headers: req.headers().clone(),
        });
        let grpc = req
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = Full::new(body)
                .with_trailers(async move { Some(Ok(trailers)) })
                .boxed();
            return Response::new(body);
        }
        let full = |b: Bytes| Full::new(b).boxed();
        if target == "/ws" && req.headers().contains_key("upgrade") {
            // Switch protocols, then echo every byte.
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut response = Response::new(full(Bytes::new()));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            response
                .headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            return response;
        }
        match target.as_str() {
            "/hold" => {
                let now = self.held.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_held.fetch_max(now, Ordering::SeqCst);
                let mut rx = self.release.subscribe();
                let _ = rx.wait_for(|r| *r).await;
                self.held.fetch_sub(1, Ordering::SeqCst);
                Response::new(full(Bytes::from_static(b"released")))
            }
            "/never" => std::future::pending().await,
            "/echo" => {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Response::new(full(body))
            }
            _ => Response::new(full(Bytes::from(format!("{} {target}", req.method())))),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn release(&self) {
        self.release.send_replace(true);
    }

    /// Waits until `n` requests are held.
    pub async fn wait_held(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.held.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} requests held",
                self.held.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Istio YAML `yaml` (AuthorizationPolicies and RequestAuthentications)
/// for workload `default` / `app: server`.
pub fn policies(yaml: &str) -> Policies {
    let workload = Workload {
        namespace: "default".to_owned(),
        labels: [("app".to_owned(), "server".to_owned())].into(),
    };
    let mut state = PolicyState::allow_all(workload);
    if !yaml.is_empty() {
        let root = sigil_proxy::policy::DEFAULT_ROOT_NAMESPACE;
        let mut docs = PolicyDocuments::default();
        docs.load_str("test.yaml", yaml).unwrap();
        let jwt_rules: Vec<_> = docs
            .request_authentications_for(root, &state.workload)
            .collect();
        state.jwt = Arc::new(JwtFilter::build(&jwt_rules, &JwksCache::new(None)).unwrap());
        state.authorizer = Authorizer::new(docs.authorization, root, PathNormalization::Base);
    }
    Policies::new(state)
}

/// An HTTP service running `yaml` with `config`, and its metrics.
pub fn service_with(yaml: &str, config: &HttpConfig) -> (HttpService, ProxyMetrics) {
    let metrics = ProxyMetrics::default();
    (
        HttpService::new(policies(yaml), config, metrics.clone()),
        metrics,
    )
}

/// The HTTP layer's inbound side on a plain TCP listener, every connection
/// presented as coming from `peer`.
pub struct Front {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

impl Front {
    pub async fn inbound(svc: HttpService, target: SocketAddr, peer: Option<&str>) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let peer = peer.map(|p| SpiffeId::parse(p).unwrap());
        let (stop, tracker) = (shutdown.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let (stream, source) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let conn = ConnInfo {
                    peer: peer.clone(),
                    source,
                    local: stream.local_addr().unwrap(),
                    sni: None,
                    h2: false,
                };
                let (svc, stop) = (svc.clone(), stop.clone());
                tracker.spawn(async move { svc.serve_inbound(stream, conn, target, stop).await });
            }
        });
        Front {
            addr,
            shutdown,
            tasks,
        }
    }

    /// Cancels and waits for every connection to finish.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
            .await
            .expect("connections drained");
    }
}

/// An answered request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// An HTTP/1.1 client connection to `addr`.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// An h2c (prior knowledge) client connection to `addr`.
pub async fn h2c(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// Sends `req` on `send` and reads the whole answer.
pub async fn send_h1(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Answer {
    send.ready().await.unwrap();
    answer(send.send_request(req).await.unwrap()).await
}

pub async fn answer(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET target` with `Host: app.example` over a new HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, target: &str) -> Answer {
    let mut send = h1(addr).await;
    send_h1(&mut send, request("GET", target)).await
}

pub fn request(method: &str, target: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(target)
        .header("host", "app.example")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Writes `raw` on a new connection and reads until the proxy closes it.
pub async fn raw(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

/// A short `[http]` config for tests.
pub fn http_config(max_header_bytes: usize, header_read_timeout: Duration) -> HttpConfig {
    HttpConfig {
        max_header_bytes,
        header_read_timeout,
        request_timeout: Duration::from_secs(10),
    }
}

/// Asks `addr` to upgrade `/ws` to a WebSocket over a new connection;
/// returns the response head and, on 101, the stream.
pub async fn websocket(addr: SocketAddr) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: app.example\r\nconnection: Upgrade\r\n\
              upgrade: websocket\r\nsec-websocket-version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), stream)
}

/// Writes `msg` on an upgraded stream and reads it back.
pub async fn echo(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf
}
