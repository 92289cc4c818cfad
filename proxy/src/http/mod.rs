//! L7 listeners: HTTP/1.1 and HTTP/2 with hyper; one authorization decision
//! per request.
//!
//! ```text
//! inbound:  mTLS stream ─► server (h1 | h2 by ALPN | h2c by preface) ─► per request:
//!           strip XFCC ─► JWT (RequestAuthentication) ─► Authorizer ─► 400 / 401 / 403
//!           └─ allow ─► normalized path, hop-by-hop removed, XFCC set ─► pooled HTTP/1.1 client ─► app
//! outbound: plaintext from the app ─► server (h1 | h2c) ─► per request ─► the one mTLS upstream
//!           connection (h2 if ALPN chose it, else HTTP/1.1)
//! ```
//!
//! Limits: request heads above `[http] max_header_bytes` get 431 (hyper's
//! HTTP/1 parser; HTTP/2 header lists), a client that does not send its first
//! bytes (HTTP/2: its preface) or finish an HTTP/1 request head within
//! `header_read_timeout` is disconnected (slowloris; this also bounds how
//! long an idle HTTP/1 keep-alive connection is held), a connection on which
//! nothing moved for the idle timeout is drained, an upstream that does not
//! answer within `request_timeout` gives 504 (no connection: 503, a broken
//! exchange: 502), at most [`MAX_CONCURRENT_STREAMS`] streams per HTTP/2
//! connection. One JSON access
//! log line per request (target `sigil_proxy::access`) and a request counter
//! by direction and decision ([`crate::metrics::ProxyMetrics::requests`]).
//!
//! Towards the local application: HTTP/1.1, except gRPC (an HTTP/2 request
//! with `content-type: application/grpc*`), which goes over HTTP/2 prior
//! knowledge (h2c) with its trailers.
//!
//! HTTP/1.1 protocol upgrades: WebSocket only (Istio enables only
//! `websocket` in Envoy) is forwarded and, on 101, the two connections
//! joined; `Upgrade: h2c` is stripped (as Envoy's HTTP/1 codec does) and the
//! request served as a plain one; any other upgrade gets 403 (Envoy's
//! `upgrade_failed`), so no other protocol becomes an opaque tunnel. Not here: upgrades over HTTP/2 (extended CONNECT),
//! so an outbound connection whose upstream is HTTP/2 drops `Upgrade`.

mod headers;
mod inbound;
mod log;
mod outbound;
mod prefixed;
mod response;
mod server;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sigil_identity::{CredentialResolver, SpiffeId};

use crate::credentials::LocalIdentity;

use crate::authz::Policies;
use crate::config::HttpConfig;

/// Streams per HTTP/2 connection served at once (Envoy's default is 2^31;
/// a bound keeps one connection from holding unbounded upstream requests).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Idle pooled connections to the local application are closed after this.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// What the listener knows about an accepted (and, inbound, authenticated)
/// connection when it hands it to the HTTP layer.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Inbound: the verified mTLS peer (`None` for plaintext: PERMISSIVE /
    /// DISABLE). Outbound: the remote proxy's verified ID, if known (the
    /// access log's destination principal).
    pub peer: Option<SpiffeId>,
    /// The direct peer's address.
    pub source: SocketAddr,
    /// The local address the connection arrived on.
    pub local: SocketAddr,
    /// The TLS SNI, if any.
    pub sni: Option<String>,
    /// Whether ALPN chose `h2`.
    pub h2: bool,
}

/// The HTTP layer of one listener: request parsing with bounded heads and
/// slow-client timeouts, JWT authentication, one authorization decision per
/// request, forwarding, one access log line per request.
///
/// Clones share the upstream connection pool and the counters.
#[derive(Clone)]
pub struct HttpService {
    inner: Arc<Inner>,
    identity: Option<Arc<LocalIdentity>>,
    idle_timeout: std::time::Duration,
    max_connection_age: std::time::Duration,
}

/// Shared by every connection of a listener.
struct Inner {
    policies: Policies,
    config: HttpConfig,
    counters: log::Counters,
    /// Pooled keep-alive HTTP/1.1 connections to the local application.
    client: Client<HttpConnector, hyper::body::Incoming>,
    /// HTTP/2 (prior knowledge) connections to it, for gRPC.
    grpc_client: Client<HttpConnector, hyper::body::Incoming>,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl HttpService {
    /// A service deciding with `policies` under the limits of `config`.
    pub fn new(
        policies: crate::authz::Policies,
        config: &crate::config::HttpConfig,
        metrics: crate::metrics::ProxyMetrics,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.request_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .set_host(false)
            .build(connector.clone());
        let grpc_client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(true)
            .set_host(false)
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                policies,
                counters: log::Counters::new(&metrics),
                config: config.clone(),
                client,
                grpc_client,
            }),
            identity: None,
            idle_timeout: crate::config::DEFAULT_IDLE_TIMEOUT,
            max_connection_age: crate::config::DEFAULT_MAX_CONNECTION_AGE,
        }
    }

    /// Drains a connection once it is `age` old, busy or not (default
    /// [`crate::config::DEFAULT_MAX_CONNECTION_AGE`]): HTTP/2 gets GOAWAY,
    /// an HTTP/1.1 connection closes after its in-flight response (sent with
    /// `Connection: close`), so no request fails; an upgraded (WebSocket)
    /// connection is closed. Clients reconnect, and the new connection gets
    /// the current credentials, roots and policy.
    pub fn with_max_connection_age(mut self, age: std::time::Duration) -> Self {
        self.max_connection_age = age;
        self
    }

    fn timeouts(&self) -> server::ConnTimeouts {
        server::ConnTimeouts {
            idle: self.idle_timeout,
            max_age: self.max_connection_age,
        }
    }

    /// Drains a connection on which no byte moved for `idle` (default
    /// [`crate::config::DEFAULT_IDLE_TIMEOUT`]; in-flight requests finish).
    /// An idle HTTP/1 keep-alive connection is closed sooner, after
    /// `[http] header_read_timeout`.
    pub fn with_idle_timeout(mut self, idle: std::time::Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Names this proxy's own SPIFFE ID (the credential `resolver` presents)
    /// as `By=` in the `x-forwarded-client-cert` header set on inbound
    /// requests from an mTLS peer. Without it the header carries `URI=` only.
    pub fn with_local_identity(mut self, resolver: Arc<CredentialResolver>) -> Self {
        self.identity = Some(Arc::new(LocalIdentity::new(resolver)));
        self
    }

    /// Inbound: serves HTTP/1.1 (or HTTP/2 when `conn.h2`) on `io`,
    /// authenticating and authorizing every request, forwarding allowed ones
    /// to the local application at `target`. On `shutdown`, stops taking new
    /// requests on the connection and returns once in-flight ones finish.
    pub async fn serve_inbound<IO>(
        &self,
        io: IO,
        conn: ConnInfo,
        target: SocketAddr,
        shutdown: tokio_util::sync::CancellationToken,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let local_id = self.identity.as_ref().and_then(|i| i.current());
        let ctx = inbound::ConnCtx::new(conn, target, local_id);
        inbound::serve(Arc::clone(&self.inner), ctx, io, self.timeouts(), &shutdown).await;
    }

    /// Outbound: serves plaintext HTTP from the local application on `io`,
    /// forwarding each request over `upstream`, an established mTLS stream to
    /// the remote proxy (HTTP/2 when `upstream_h2`, ALPN's choice).
    pub async fn serve_outbound<IO, UP>(
        &self,
        io: IO,
        conn: ConnInfo,
        upstream: UP,
        upstream_h2: bool,
        shutdown: tokio_util::sync::CancellationToken,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        UP: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        outbound::serve(
            Arc::clone(&self.inner),
            conn,
            upstream,
            upstream_h2,
            io,
            self.timeouts(),
            &shutdown,
        )
        .await;
    }
}
