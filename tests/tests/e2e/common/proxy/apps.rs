//! The applications behind the inbound proxy: a TCP echo that counts its
//! connections (and allocates a buffer only while data flows, so 10k idle
//! connections cost it little), and an HTTP echo (hyper, HTTP/1.1 and h2)
//! that answers 200 with a JSON report of the request it received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The TCP echo application.
#[derive(Debug, Clone)]
pub(crate) struct TcpEcho {
    /// Its address.
    pub(crate) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl TcpEcho {
    /// Starts it on `127.0.0.1:0` until `stop`.
    pub(crate) async fn start(stop: &CancellationToken) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the echo app");
        let addr = listener.local_addr().expect("echo addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(echo(stream));
            }
        });
        Self { addr, accepted }
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Echoes until the peer half-closes (then half-closes back). The buffer
/// exists only while bytes are readable.
async fn echo(mut stream: TcpStream) {
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stream.try_read(&mut buf) {
                Ok(0) => {
                    let _ = stream.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
    }
}

/// Starts the HTTP echo application on `127.0.0.1:0` until `stop`. Every
/// request gets 200 and a JSON body: `method`, `uri`, `path`, `version` (`HTTP/1.1`,
/// `HTTP/2.0`), `headers` (`[[name, value], ...]` in received order) and
/// `body` (lossy UTF-8).
pub(crate) async fn http_echo(stop: &CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the HTTP app");
    let addr = listener.local_addr().expect("http app addr");
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(report))
                    .await;
            });
        }
    });
    addr
}

async fn report(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: Vec<[String; 2]> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            [
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ]
        })
        .collect();
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "path": parts.uri.path(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
