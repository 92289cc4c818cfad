//! L7 listeners: HTTP/1.1 and HTTP/2 with hyper; one authorization decision
//! per request.
//!
//! SEAM (issue 16, being built).

use std::net::SocketAddr;

use sigil_identity::SpiffeId;

/// What the listener knows about an accepted (and, inbound, authenticated)
/// connection when it hands it to the HTTP layer.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The verified mTLS peer; `None` for plaintext (PERMISSIVE / DISABLE).
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
#[derive(Debug, Clone)]
pub struct HttpService {
    policies: crate::authz::Policies,
    config: crate::config::HttpConfig,
    metrics: crate::metrics::ProxyMetrics,
}

impl HttpService {
    /// A service deciding with `policies` under the limits of `config`.
    pub fn new(
        policies: crate::authz::Policies,
        config: &crate::config::HttpConfig,
        metrics: crate::metrics::ProxyMetrics,
    ) -> Self {
        Self {
            policies,
            config: config.clone(),
            metrics,
        }
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
        // SEAM: being built.
        let _ = (
            io,
            conn,
            target,
            shutdown,
            &self.policies,
            &self.config,
            &self.metrics,
        );
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
        // SEAM: being built.
        let _ = (io, conn, upstream, upstream_h2, shutdown);
    }
}
