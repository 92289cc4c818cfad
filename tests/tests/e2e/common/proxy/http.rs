//! A small HTTP client for the proxy tests: HTTP/1.1 or HTTP/2 (prior
//! knowledge, or ALPN h2 over TLS) with hyper over any stream, and the HTTP
//! echo app's JSON report read back.

use std::net::SocketAddr;

use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::LIMIT;

/// One client connection.
pub(crate) enum HttpClient {
    /// HTTP/1.1 (keep-alive).
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    /// HTTP/2.
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// A response: status and body.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The status code.
    pub(crate) status: u16,
    /// The body.
    pub(crate) body: Bytes,
}

impl Reply {
    /// The HTTP echo app's report in the body (fails the test otherwise).
    pub(crate) fn report(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not the app's report ({e}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The values of the request header `name` the HTTP echo app received.
pub(crate) fn app_header(report: &serde_json::Value, name: &str) -> Vec<String> {
    report["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().expect("a value").to_owned())
        .collect()
}

impl HttpClient {
    /// A client over `io`: HTTP/2 when `h2`, else HTTP/1.1.
    pub(crate) async fn over<IO>(io: IO, h2: bool) -> std::io::Result<Self>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok(Self::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok(Self::H1(sender))
        }
    }

    /// A plaintext client of `addr`.
    pub(crate) async fn connect(addr: SocketAddr, h2: bool) -> std::io::Result<Self> {
        Self::over(TcpStream::connect(addr).await?, h2).await
    }

    /// Sends `request` and reads the whole response, within [`super::LIMIT`].
    pub(crate) async fn send(
        &mut self,
        mut request: Request<Full<Bytes>>,
    ) -> std::io::Result<Reply> {
        if let Self::H1(_) = self {
            // HTTP/1.1 in origin form (the Host header names the app).
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *request.uri_mut() = path.parse().map_err(std::io::Error::other)?;
        }
        let exchange = async {
            let response = match self {
                Self::H1(sender) => {
                    sender.ready().await.map_err(std::io::Error::other)?;
                    sender.send_request(request).await
                }
                Self::H2(sender) => {
                    sender.ready().await.map_err(std::io::Error::other)?;
                    sender.send_request(request).await
                }
            }
            .map_err(std::io::Error::other)?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            Ok(Reply {
                status: parts.status.as_u16(),
                body,
            })
        };
        tokio::time::timeout(LIMIT, exchange)
            .await
            .map_err(|_| std::io::Error::other("HTTP exchange timed out"))?
    }

    /// `GET path` with `headers`.
    pub(crate) async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Reply> {
        self.send(request("GET", path, headers, "")).await
    }
}

/// A request for `http://app<path>` (`Host: app`, plus `headers`) with
/// `body`.
pub(crate) fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://app{path}"))
        .header("host", "app");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a request")
}
