//! One server connection: HTTP/1.1 or HTTP/2 (by ALPN, or by the h2c
//! preface), with the `[http]` limits, drained gracefully on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::MAX_CONCURRENT_STREAMS;
use super::prefixed::{Activity, ByteCounters, Prefixed, Sniffed, sniff};
use super::response::Body;
use crate::config::HttpConfig;

/// hyper's smallest accepted HTTP/1 read buffer.
const MIN_BUF_SIZE: usize = 8192;

/// Why a connection ended early.
#[derive(Debug)]
pub(super) enum ConnEnd {
    /// The client sent no request head (nor HTTP/2 preface) in time.
    HeadTimeout,
    /// hyper's error (parse errors were already answered by hyper: 400 / 414 / 431).
    Error(hyper::Error),
}

/// A connection's time bounds, from the listener's configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnTimeouts {
    /// `idle_timeout`.
    pub(super) idle: Duration,
    /// `max_connection_age`.
    pub(super) max_age: Duration,
}

/// The bounds of a server connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits<'a> {
    /// `[http]`.
    pub(super) config: &'a HttpConfig,
    /// A connection on which no byte moved for this long is drained.
    pub(super) idle_timeout: Duration,
    /// A connection is drained once it is this old (it started at
    /// `started`), busy or not: `max_connection_age`.
    pub(super) max_age: Duration,
    /// When the connection was accepted by the HTTP layer.
    pub(super) started: tokio::time::Instant,
    /// Where the downstream connection's bytes are counted.
    pub(super) bytes: &'a ByteCounters,
}

impl<'a> Limits<'a> {
    /// The bounds of a connection accepted now.
    pub(super) fn new(
        config: &'a HttpConfig,
        timeouts: ConnTimeouts,
        bytes: &'a ByteCounters,
    ) -> Self {
        Self {
            config,
            bytes,
            idle_timeout: timeouts.idle,
            max_age: timeouts.max_age,
            started: tokio::time::Instant::now(),
        }
    }

    /// Joins an upgraded connection (if a request switched protocols) until
    /// it closes, goes idle, or the connection reaches its maximum age.
    pub(super) async fn run_tunnel(&self, tunnel: &super::tunnel::Slot) {
        if tokio::time::timeout_at(self.deadline(), tunnel.run(self.idle_timeout))
            .await
            .is_err()
        {
            tracing::debug!("upgraded connection closed at max_connection_age");
        }
    }

    /// When the connection reaches its maximum age.
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        self.started + self.max_age
    }
}

/// Serves `io` with `service` until the peer closes, an error, or
/// `shutdown` (then in-flight requests finish first). `h2`: ALPN chose
/// `h2` (the connection must start with its preface); otherwise the first
/// bytes decide (HTTP/1.1 or h2c prior knowledge).
pub(super) async fn serve<IO, S>(
    io: IO,
    h2: bool,
    limits: &Limits<'_>,
    service: S,
    shutdown: &CancellationToken,
) -> Result<(), ConnEnd>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // The first bytes must come within the head timeout, with ALPN h2 too
    // (a client that completes TLS and then says nothing is cut off).
    let sniffed = tokio::select! {
        sniffed = sniff(io, limits.config.header_read_timeout, limits.bytes.clone()) => sniffed,
        () = shutdown.cancelled() => return Ok(()),
    };
    match sniffed {
        Sniffed::Http1(io) if !h2 => serve_h1(io, limits, service, shutdown).await,
        Sniffed::Http2(io) => serve_h2(io, limits, service, shutdown).await,
        // ALPN said h2 but this is not its preface: nothing to serve.
        Sniffed::Http1(_) | Sniffed::Closed => Ok(()),
        Sniffed::TimedOut => Err(ConnEnd::HeadTimeout),
    }
}

async fn serve_h1<IO, S>(
    io: Prefixed<IO>,
    limits: &Limits<'_>,
    service: S,
    shutdown: &CancellationToken,
) -> Result<(), ConnEnd>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    let config = limits.config;
    let idle = (limits.idle_timeout, io.activity());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(MIN_BUF_SIZE))
        .max_header_size(config.max_header_bytes)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    drive(conn, shutdown, idle, limits.deadline(), |c| {
        c.graceful_shutdown()
    })
    .await
}

async fn serve_h2<IO, S>(
    io: Prefixed<IO>,
    limits: &Limits<'_>,
    service: S,
    shutdown: &CancellationToken,
) -> Result<(), ConnEnd>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let config = limits.config;
    let idle = (limits.idle_timeout, io.activity());
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    drive(conn, shutdown, idle, limits.deadline(), |c| {
        c.graceful_shutdown()
    })
    .await
}

/// Polls `conn`; on `shutdown`, once no byte moved for the idle timeout,
/// or at the connection's maximum age (`deadline`), asks it to finish
/// gracefully (no new requests: GOAWAY on HTTP/2, `Connection: close` on
/// the in-flight HTTP/1.1 response; in-flight requests complete) and polls
/// it to the end.
async fn drive<C>(
    conn: C,
    shutdown: &CancellationToken,
    (idle_timeout, activity): (Duration, Arc<Activity>),
    deadline: tokio::time::Instant,
    graceful: impl FnOnce(Pin<&mut C>),
) -> Result<(), ConnEnd>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => return result.map_err(ConnEnd::Error),
        () = shutdown.cancelled() => {}
        () = activity.idle_for(idle_timeout) => tracing::debug!("idle HTTP connection drained"),
        () = tokio::time::sleep_until(deadline) => {
            tracing::debug!("HTTP connection drained at max_connection_age");
        }
    }
    graceful(conn.as_mut());
    conn.await.map_err(ConnEnd::Error)
}
