//! The admin HTTP server (default 127.0.0.1:15014).
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once the authority is loaded and the gRPC listener serves; 503 before, while draining, and while the signing certificate is expired or not yet valid |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//! | `GET /bundle` | the trust bundle as SPIFFE bundle JSON |
//! | `GET /root.pem` | the trust bundle as PEM (all current roots) |
//!
//! Served over HTTP/1.1 by [`serve`], with bounds of its own so that the
//! port cannot be held by idle or slow clients:
//!
//! | bound | setting | beyond it |
//! |---|---|---|
//! | connections open at once | `server.admin_max_connections` | new connections are closed at once |
//! | a request's headers, from the connection or the previous response | `server.admin_header_timeout` | the connection is closed (slowloris) |
//! | no byte read or written | `server.admin_idle_timeout` | the connection is closed |

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::state::Shared;
use crate::authority::Authority;

/// The admin routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/bundle", get(bundle))
        .route("/root.pem", get(root_pem))
        .with_state(shared)
}

/// The admin listener's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdminLimits {
    /// Connections open at once.
    pub(crate) max_connections: usize,
    /// Deadline for a request's headers.
    pub(crate) header_timeout: Duration,
    /// A connection without I/O for this long is closed.
    pub(crate) idle_timeout: Duration,
}

/// How long connections may take to finish their response at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown`, then lets open
/// connections finish their current response (at most [`SHUTDOWN_GRACE`]).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: AdminLimits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
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
        let (router, shutdown) = (router.clone(), shutdown.clone());
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, router, limits, shutdown).await;
        });
    }
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: AdminLimits,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = Tracked {
        inner: stream,
        started,
        last: activity.clone(),
    };
    let service = hyper::service::service_fn(move |request| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.oneshot(request).await.into_response()) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let idle = async {
        loop {
            let last = started + Duration::from_millis(activity.load(Ordering::Relaxed));
            let deadline = last + limits.idle_timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        result = &mut connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        }
        () = idle => tracing::debug!("admin connection idle; closing"),
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        }
    }
}

/// A socket that records when it last moved a byte (milliseconds since
/// `started`).
struct Tracked {
    inner: TcpStream,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if !shared.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    let issuer = shared.issuer.load();
    if !authority_valid_at(issuer.authority(), OffsetDateTime::now_utc()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the signing certificate is expired or not yet valid\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// Whether `authority` can sign at `now` (the rule issuance applies: from
/// its notBefore, until before its notAfter).
fn authority_valid_at(authority: &Authority, now: OffsetDateTime) -> bool {
    authority.not_before() <= now && now < authority.not_after()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let not_after = shared.issuer.load().authority().not_after();
    let left = (not_after - OffsetDateTime::now_utc()).whole_seconds();
    shared.metrics.ca_expiry.set(left);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn bundle(State(shared): State<Arc<Shared>>) -> Response {
    match shared.bundle().to_spiffe_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode the trust bundle");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the bundle\n",
            )
                .into_response()
        }
    }
}

async fn root_pem(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        shared.bundle().to_pem(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use sigil_identity::TrustDomain;
    use time::Duration;

    use super::*;
    use crate::authority::source;

    #[test]
    fn readiness_needs_an_authority_valid_now() {
        let dir = tempfile::tempdir().unwrap();
        let created = OffsetDateTime::now_utc();
        let authority =
            source::create_self_signed(&dir.path().join("ca"), &TrustDomain::default(), created)
                .unwrap();
        assert!(authority_valid_at(&authority, created));
        assert!(
            !authority_valid_at(&authority, authority.not_before() - Duration::seconds(1)),
            "not yet valid"
        );
        assert!(
            !authority_valid_at(&authority, authority.not_after()),
            "expired at notAfter"
        );
        assert!(!authority_valid_at(
            &authority,
            authority.not_after() + Duration::days(1)
        ));
    }
}
