//! Outbound requests: plaintext HTTP/1.1 (or h2c) from the local
//! application, each forwarded over the one mTLS connection to the remote
//! proxy (HTTP/2 when ALPN chose it, else HTTP/1.1, one request at a time).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HOST, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::headers;
use super::inbound::{connection_end, proxied, switched};
use super::log::{self, Direction, Outcome, Record};
use super::response::{self, Body, UpstreamFailure};
use super::server;
use super::tunnel;
use super::{ConnInfo, Inner};

/// The client side of the mTLS connection to the remote proxy.
enum Upstream {
    /// One request at a time.
    H1(Mutex<http1::SendRequest<Incoming>>),
    /// Multiplexed.
    H2(http2::SendRequest<Incoming>),
}

struct ConnCtx {
    conn: ConnInfo,
    upstream: Upstream,
    requests: AtomicU64,
    tunnel: tunnel::Slot,
}

impl ConnCtx {
    fn peers(&self) -> log::Peers<'_> {
        log::Peers {
            direction: Direction::Outbound,
            source_addr: self.conn.source,
            destination_addr: self.conn.local,
            source_principal: None,
            destination_principal: self.conn.peer.as_ref(),
        }
    }
}

/// Serves one outbound connection over `upstream`.
pub(super) async fn serve<IO, UP>(
    inner: Arc<Inner>,
    conn: ConnInfo,
    upstream: UP,
    upstream_h2: bool,
    io: IO,
    timeouts: server::ConnTimeouts,
    shutdown: &CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    UP: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upstream = TokioIo::new(upstream);
    let timeout = inner.config.request_timeout;
    if upstream_h2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        match tokio::time::timeout(timeout, builder.handshake(upstream)).await {
            Ok(Ok((send, driver))) => {
                run(
                    inner,
                    conn,
                    Upstream::H2(send),
                    driver,
                    io,
                    timeouts,
                    shutdown,
                )
                .await;
            }
            Ok(Err(error)) => tracing::debug!(%error, "upstream HTTP/2 handshake failed"),
            Err(_) => tracing::debug!("upstream HTTP/2 handshake timed out"),
        }
    } else {
        let mut builder = http1::Builder::new();
        builder.max_buf_size(inner.config.max_header_bytes.max(8192));
        match builder.handshake(upstream).await {
            Ok((send, driver)) => {
                run(
                    inner,
                    conn,
                    Upstream::H1(Mutex::new(send)),
                    driver.with_upgrades(),
                    io,
                    timeouts,
                    shutdown,
                )
                .await;
            }
            Err(error) => tracing::debug!(%error, "upstream HTTP/1.1 handshake failed"),
        }
    }
}

/// Serves the downstream connection while driving the upstream one; when
/// the upstream connection ends, the downstream one is drained and closed.
async fn run<IO, D, E>(
    inner: Arc<Inner>,
    conn: ConnInfo,
    upstream: Upstream,
    driver: D,
    io: IO,
    timeouts: server::ConnTimeouts,
    shutdown: &CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let h2 = conn.h2;
    let ctx = Arc::new(ConnCtx {
        conn,
        upstream,
        requests: AtomicU64::new(0),
        tunnel: tunnel::Slot::default(),
    });
    let service = {
        let inner = Arc::clone(&inner);
        let ctx = Arc::clone(&ctx);
        hyper::service::service_fn(move |req| {
            let inner = Arc::clone(&inner);
            let ctx = Arc::clone(&ctx);
            async move { Ok::<_, Infallible>(handle(&inner, &ctx, req).await) }
        })
    };
    let downstream = shutdown.child_token();
    let bytes = inner.counters.bytes(Direction::Outbound);
    let limits = server::Limits::new(&inner.config, timeouts, bytes);
    let serving = server::serve(io, h2, &limits, service, &downstream);
    let mut serving = std::pin::pin!(serving);
    let mut driver = std::pin::pin!(driver);
    let mut upstream_open = true;
    let end = loop {
        tokio::select! {
            end = serving.as_mut() => break end,
            ended = driver.as_mut(), if upstream_open => {
                upstream_open = false;
                if let Err(error) = ended {
                    tracing::debug!(%error, "upstream connection failed");
                }
                // Gone (not handed to an upgrade): drain the downstream.
                if !ctx.tunnel.is_set() {
                    downstream.cancel();
                }
            }
        }
    };
    limits.run_tunnel(&ctx.tunnel).await;
    let served = ctx.requests.load(Ordering::Relaxed);
    connection_end(&inner, &ctx.peers(), end, served);
}

async fn handle(inner: &Inner, ctx: &ConnCtx, req: Request<Incoming>) -> Response<Body> {
    ctx.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let mut requested = log::Requested::new(&parts);
    let mut record = Record::new();
    let response = match headers::host(&parts) {
        Ok(host) => {
            host.clone_into(&mut requested.host);
            forward(inner, ctx, parts, body, &requested.host, &mut record).await
        }
        Err(error) => {
            record.fail(Outcome::BadRequest, error.as_str());
            response::bad_request(error.as_str())
        }
    };
    requested.finish(&inner.counters, &ctx.peers(), response.status(), &record);
    response
}

async fn forward(
    inner: &Inner,
    ctx: &ConnCtx,
    mut parts: http::request::Parts,
    body: Incoming,
    host: &str,
    record: &mut Record,
) -> Response<Body> {
    if let Some(refused) = response::refuse_head(&parts, inner.config.max_header_bytes, record) {
        return refused;
    }
    let Some(target) = parts.uri.path_and_query().cloned() else {
        record.fail(Outcome::BadRequest, "no origin-form target");
        return response::bad_request("invalid path: not origin-form");
    };
    let upstream_h2 = matches!(ctx.upstream, Upstream::H2(_));
    let uri = if upstream_h2 {
        // HTTP/2 carries the host as `:authority`.
        let Ok(authority) = Authority::try_from(host) else {
            record.fail(Outcome::BadRequest, "no host");
            return response::bad_request("invalid host");
        };
        parts.headers.remove(HOST);
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
        uri.path_and_query = Some(target);
        Uri::from_parts(uri)
    } else {
        // Exactly the one host (absolute-form included) as `Host`.
        match HeaderValue::try_from(host) {
            Ok(value) if !value.is_empty() => {
                parts.headers.insert(HOST, value);
            }
            _ => {
                parts.headers.remove(HOST);
            }
        }
        Uri::from_parts({
            let mut uri = http::uri::Parts::default();
            uri.path_and_query = Some(target);
            uri
        })
    };
    let Ok(uri) = uri else {
        record.fail(Outcome::BadRequest, "invalid target");
        return response::bad_request("invalid target");
    };
    parts.uri = uri;
    parts.version = if upstream_h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    // Upgrades (WebSocket only) need HTTP/1.1 on the upstream too.
    let upgrade = match tunnel::requested(&parts) {
        tunnel::Asked::Refused => {
            record.fail(Outcome::Deny, tunnel::UPGRADE_FAILED);
            return response::upgrade_refused();
        }
        tunnel::Asked::WebSocket(value) if !upstream_h2 => Some(value),
        tunnel::Asked::WebSocket(_) | tunnel::Asked::Nothing => None,
    };
    let downstream_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());
    headers::remove_hop_by_hop(&mut parts.headers, upstream_h2);
    if let Some(upgrade) = upgrade {
        tunnel::restore(&mut parts.headers, upgrade);
    }
    let request = Request::from_parts(parts, body);
    let exchange = async {
        match &ctx.upstream {
            Upstream::H1(sender) => {
                let sent = {
                    let mut sender = sender.lock().await;
                    sender.ready().await?;
                    sender.send_request(request)
                };
                sent.await
            }
            Upstream::H2(sender) => {
                let mut sender = sender.clone();
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    };
    match tokio::time::timeout(inner.config.request_timeout, exchange).await {
        Ok(Ok(mut response)) => {
            if ctx.tunnel.switch(downstream_upgrade, &mut response) {
                switched(response)
            } else {
                proxied(response)
            }
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "upstream request failed");
            record.detail = Some(UpstreamFailure::Exchange.as_str().to_owned());
            response::upstream_failure(UpstreamFailure::Exchange)
        }
        Err(_) => {
            record.detail = Some(UpstreamFailure::Timeout.as_str().to_owned());
            response::upstream_failure(UpstreamFailure::Timeout)
        }
    }
}
