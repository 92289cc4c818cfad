//! One gRPC connection: HTTP/2 (hyper) over an accepted TLS stream, every
//! request handed to the tonic-generated `IstioCertificateService` server
//! with the connection's [`ConnInfo`](super::tls::ConnInfo) and a deadline.
//!
//! tonic's own `transport::Server` would do the same behind more layers:
//! HTTP/1-or-2 detection (the stream is HTTP/2 by ALPN), a router for a
//! single service, error recovery for a service that cannot fail, a span
//! per request. Serving the connection directly cut ≈ 4 points of server
//! CPU per certificate (BENCHMARKS.md); the protobuf codec, gRPC framing
//! and status mapping are still tonic's.
//!
//! Per request: the deadline is the shorter of `server.request_timeout` and
//! the client's `grpc-timeout` (as tonic's server does); past it the request
//! is dropped and answered DEADLINE_EXCEEDED. On `shutdown` the connection
//! sends GOAWAY and finishes the requests it has, then closes.
//!
//! Bounds on the connection's life, each ending in GOAWAY and then a close
//! once its requests are done (at most `request_timeout` later):
//!
//! | bound | setting |
//! |---|---|
//! | HTTP/2 preface and first request after the handshake | `server.preface_timeout` |
//! | no request in progress for | `server.idle_timeout` |
//! | age | `server.max_connection_age` |
//! | unanswered keep-alive PING (connection dropped at once) | `server.keepalive_interval`, `server.keepalive_timeout` |
//!
//! Memory per idle connection is kept small (BENCHMARKS.md, "Idle
//! connections"): HTTP/2 flow-control windows and frame size stay at the
//! specification's defaults, the stream send buffer is bounded, and the
//! coalescing write buffer is released when drained.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::tls::TlsConn;

/// The largest header block a client may send (names, values and HPACK
/// overhead). A bearer token is a few KiB; hyper's default is 16 MiB.
pub(crate) const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// Bytes of response data buffered per stream before the stream waits for
/// the connection (a certificate chain is a few KiB; hyper's default is
/// 400 KiB).
const MAX_SEND_BUF_BYTES: usize = 16 * 1024;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// HTTP/2 streams open at once.
    pub(crate) max_streams: u32,
    /// The longest a request may take; also the grace between GOAWAY and
    /// the close when a connection is ended for its age or idleness.
    pub(crate) request_timeout: Duration,
    /// The longest a connection lives.
    pub(crate) max_age: Duration,
    /// The longest a connection stays open without a request in progress.
    pub(crate) idle_timeout: Duration,
    /// The first request must arrive within this after the handshake.
    pub(crate) preface_timeout: Duration,
    /// Interval between keep-alive PINGs.
    pub(crate) keepalive_interval: Duration,
    /// A PING unanswered for this long drops the connection.
    pub(crate) keepalive_timeout: Duration,
}

/// Requests in progress on a connection, and a signal when that changes.
#[derive(Debug, Default)]
struct Activity {
    open: AtomicUsize,
    changed: Notify,
}

impl Activity {
    /// Counts a request until the returned guard drops.
    fn start(self: &Arc<Self>) -> InProgress {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        InProgress(self.clone())
    }

    /// Resolves when no request has been in progress for `first` (before
    /// the first request: [`Ending::NoRequest`]) or `idle` (after it:
    /// [`Ending::Idle`]).
    async fn idle_for(&self, first: Duration, idle: Duration) -> Ending {
        let mut ending = Ending::NoRequest;
        let mut limit = first;
        loop {
            // Registered before the check, so no change is missed.
            let changed = self.changed.notified();
            if self.open.load(Ordering::SeqCst) > 0 {
                changed.await;
                (ending, limit) = (Ending::Idle, idle);
                continue;
            }
            if tokio::time::timeout(limit, changed).await.is_err() {
                return ending;
            }
            (ending, limit) = (Ending::Idle, idle);
        }
    }
}

/// One request in progress.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Why the server ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The server shuts down: drain without a deadline of our own (the
    /// workers have theirs).
    Shutdown,
    /// `max_age` passed.
    Age,
    /// No request in progress for `idle_timeout`.
    Idle,
    /// No request within `preface_timeout` of the handshake: closed at once
    /// (a client that never sent its preface would not read a GOAWAY).
    NoRequest,
}

/// Serves `conn` until the client closes it or `shutdown` fires (then
/// drains).
///
/// A plain function returning the future, not an `async fn`: the HTTP/2
/// connection (which owns the TLS stream) is built here and boxed, so the
/// connection's task holds neither a moved-from copy of `conn` nor of the
/// request handler (an `async fn` keeps its arguments for its whole life),
/// a few KiB less per idle connection (BENCHMARKS.md).
pub(crate) fn serve<S>(
    conn: TlsConn,
    service: S,
    limits: ConnLimits,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Shared by every request of the connection: one reference count each,
    // not a copy of the peer's chain.
    let info = conn.info().clone();
    let activity = Arc::new(Activity::default());
    let requests = activity.clone();
    let handler = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let in_progress = requests.start();
        let deadline = deadline(request.headers(), limits.request_timeout);
        request.extensions_mut().insert(info.clone());
        let call = service.clone().oneshot(request);
        async move {
            let _in_progress = in_progress;
            match tokio::time::timeout(deadline, call).await {
                Ok(response) => response,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the request took longer than its deadline ({deadline:?})"
                ))
                .into_http()),
            }
        }
    });
    let connection = Box::pin(
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_streams)
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            .max_send_buf_size(MAX_SEND_BUF_BYTES)
            .keep_alive_interval(limits.keepalive_interval)
            .keep_alive_timeout(limits.keepalive_timeout)
            .serve_connection(TokioIo::new(conn), handler),
    );
    drive(connection, activity, limits, shutdown)
}

/// Runs `connection` within the connection bounds.
async fn drive<C>(
    mut connection: Pin<Box<C>>,
    activity: Arc<Activity>,
    limits: ConnLimits,
    shutdown: CancellationToken,
) where
    C: Future<Output = Result<(), hyper::Error>> + GracefulShutdown,
{
    let ending = tokio::select! {
        result = &mut connection => {
            log_end(result);
            return;
        }
        () = shutdown.cancelled() => Ending::Shutdown,
        () = tokio::time::sleep(limits.max_age) => Ending::Age,
        ending = activity.idle_for(limits.preface_timeout, limits.idle_timeout) => ending,
    };
    if ending == Ending::NoRequest {
        tracing::debug!("no request after the handshake in time; closing");
        return;
    }
    tracing::debug!(?ending, "closing the connection (GOAWAY)");
    connection.as_mut().start_graceful_shutdown();
    if ending == Ending::Shutdown {
        log_end(connection.await);
        return;
    }
    tokio::select! {
        result = &mut connection => log_end(result),
        () = shutdown.cancelled() => log_end(connection.await),
        () = tokio::time::sleep(limits.request_timeout) => {
            tracing::debug!("requests outlived the grace after GOAWAY; closing");
        }
    }
}

/// hyper's `graceful_shutdown`, for [`drive`] to be generic over the
/// connection's (unnameable) service type.
trait GracefulShutdown {
    fn start_graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulShutdown for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn start_graceful_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        // A client that resets or misbehaves: its business, not the
        // server's. Logged at debug so a hostile client cannot flood logs.
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// The shorter of `server_timeout` and the client's `grpc-timeout`; an
/// unparsable header is ignored, as tonic does.
fn deadline(headers: &HeaderMap, server_timeout: Duration) -> Duration {
    headers
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(server_timeout, |client| client.min(server_timeout))
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), per the
/// gRPC over HTTP/2 specification.
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = (text.get(..split)?, text.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_follows_the_specification() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            "",
            "S",
            "10",
            "10s",
            "123456789S",
            "-1S",
            "+1S",
            "1.5S",
            " 1S",
            "1é",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_deadline_is_the_shorter_of_server_and_client() {
        let server = Duration::from_secs(10);
        let mut headers = HeaderMap::new();
        assert_eq!(deadline(&headers, server), server);
        headers.insert("grpc-timeout", http::HeaderValue::from_static("2S"));
        assert_eq!(deadline(&headers, server), Duration::from_secs(2));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("1H"));
        assert_eq!(deadline(&headers, server), server);
        headers.insert("grpc-timeout", http::HeaderValue::from_static("soon"));
        assert_eq!(deadline(&headers, server), server);
    }
}
