//! The admin listener every daemon runs: `/healthz`, `/readyz`,
//! `/metrics`, plus the daemon's own routes, over plain HTTP/1 on a
//! (normally loopback) address.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 while the daemon's readiness check says so, 503 otherwise |
//! | `GET /metrics` | the daemon's Prometheus / OpenMetrics text |
//!
//! Every connection is bounded, so a client that opens connections and
//! sends nothing cannot lock the probes out:
//!
//! ```text
//! TcpListener ─▶ permit (max_connections)? ─ none left ─▶ close at once
//!                    │
//!                    ▼
//!       hyper http1 ─ headers not read within header_read_timeout ─▶ close
//!                    │
//!                    └─ no byte read or written for idle_timeout ─▶ graceful close
//! ```
//!
//! [`serve`] returns when its shutdown token fires, after in-flight
//! requests finished (each connection gets `header_read_timeout` to do so).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default most admin connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default deadline for a request's headers (also bounds how long a new
/// connection may stay silent).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a connection may stay without traffic.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The bounds on admin connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminLimits {
    /// The most connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive.
    pub header_read_timeout: Duration,
    /// How long a connection may go without reading or writing a byte.
    pub idle_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The probe routes: `/healthz` (always 200), `/readyz` (200 while
/// `ready()` is true, else 503) and `/metrics` (`metrics()`, as
/// OpenMetrics text). Merge the daemon's own routes into the result.
pub fn router<R, M>(ready: R, metrics: M) -> Router
where
    R: Fn() -> bool + Send + Sync + 'static,
    M: Fn() -> String + Send + Sync + 'static,
{
    let ready = Arc::new(ready);
    let metrics = Arc::new(metrics);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move { readyz(ready()) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics(),
                    )
                        .into_response()
                }
            }),
        )
}

fn readyz(ready: bool) -> Response {
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` fires, then
/// lets in-flight requests finish and returns. Every connection task is
/// tracked; none outlives this future.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: AdminLimits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "admin accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(client.addr = %remote, "admin connection limit reached; closing");
            drop(stream);
            continue;
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            connection(stream, remote, app, limits, shutdown).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: AdminLimits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    loop {
        let idle_until = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(client.addr = %remote, %error, "admin connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(idle_until) => {
                if activity.last() + limits.idle_timeout > Instant::now() {
                    continue; // traffic since: wait again
                }
                tracing::debug!(client.addr = %remote, "admin connection idle; closing");
            }
            () = shutdown.cancelled() => {}
        }
        break;
    }
    conn.as_mut().graceful_shutdown();
    // A request in flight may finish; a silent peer cannot hold us.
    let _ = tokio::time::timeout(limits.header_read_timeout, conn).await;
}

/// When a connection last moved a byte, as milliseconds since it opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// An I/O stream that records its activity.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
