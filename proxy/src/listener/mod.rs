//! Listeners: inbound (terminate mTLS, forward to the local application)
//! and outbound (accept from the local application, originate mTLS).
//!
//! Each listener bounds its connections with a semaphore (accepting stops
//! while it is full), an inbound one the connections each source has
//! before their handshake is done (more are closed at once), and bounds
//! the TLS handshake by `handshake_timeout`.
//! Inbound, the workload port's PeerAuthentication mode decides: STRICT
//! requires the mTLS handshake, PERMISSIVE sniffs the first bytes
//! ([`crate::sniff`]) and serves a ClientHello over mTLS and anything else
//! as plaintext (no peer identity), DISABLE never terminates TLS. A TCP
//! listener then asks the policy in force once for the connection (a denied
//! connection is closed) and copies both directions with half-close and an
//! idle timeout, and closes the connection at `max_connection_age`; an HTTP
//! listener hands the connection to its [`HttpService`] (one decision per
//! request; drained at the same age). One JSON access log line per
//! connection (target `sigil_proxy::access`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use sigil_identity::CredentialResolver;
use sigil_identity::{IdMatcher, SpiffeId, TrustDomain, check_leaf};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::authz::{Policies, PolicyState};
use crate::config::{ListenerConfig, ListenerMode, Protocol, ProxyConfig};
use crate::copy::{self, CopyEnd};
use crate::credentials::Credentials;
use crate::http::{ConnInfo, HttpService};
use crate::metrics::ProxyMetrics;
use crate::policy::{MtlsMode, Reason, Request, Verdict};
use crate::{sniff, tls};

mod access;
mod counted;
mod pending;
mod reason;

use access::AccessLog;
use counted::Counted;
use pending::{PendingBySource, PendingGuard};
pub use reason::handshake_failure_reason;

/// Errors starting a listener.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// Binding the address failed.
    #[error("listener {addr}: bind: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS config could not be built.
    #[error("listener {addr}: tls: {source}")]
    Tls {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: rustls::Error,
    },
    /// An expected ID / trust domain / SNI is invalid.
    #[error("listener {addr}: {field}: invalid value {value:?}")]
    Invalid {
        /// The address.
        addr: SocketAddr,
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
}

enum Side {
    Inbound(TlsAcceptor),
    Outbound(TlsConnector, ServerName<'static>),
}

/// A bound listener, ready to [`Proxy::serve`].
pub struct Proxy {
    listener: TcpListener,
    side: Side,
    target: SocketAddr,
    policies: Policies,
    /// The HTTP layer of a `protocol = "http"` listener.
    http: Option<HttpService>,
    protocol: Protocol,
    http_config: crate::config::HttpConfig,
    resolver: Arc<CredentialResolver>,
    /// This proxy's ID for the access log, parsed once per credential.
    local: crate::credentials::LocalIdentity,
    limit: Arc<Semaphore>,
    /// Inbound connections not through their handshake yet, per source.
    pending: PendingBySource,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    max_connection_age: Duration,
    shutdown_grace: Duration,
    metrics: ProxyMetrics,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Binds `listener` with the shared credentials.
    pub async fn bind(
        config: &ProxyConfig,
        listener: &ListenerConfig,
        creds: &Credentials,
        policies: Policies,
    ) -> Result<Self, ListenerError> {
        let addr = listener.listen;
        let tls12 = config.tls_min_version == "1.2";
        let tls_err = |source| ListenerError::Tls { addr, source };
        let side = match listener.mode {
            ListenerMode::Inbound => Side::Inbound(TlsAcceptor::from(Arc::new(
                tls::server_config(creds, tls12).map_err(tls_err)?,
            ))),
            ListenerMode::Outbound => {
                let matcher = matcher(listener, creds)?;
                let client = tls::client_config(creds, matcher, tls12).map_err(tls_err)?;
                let sni = listener.sni.clone().unwrap_or_else(|| "sigil".to_owned());
                let name =
                    ServerName::try_from(sni.clone()).map_err(|_| ListenerError::Invalid {
                        addr,
                        field: "sni",
                        value: sni,
                    })?;
                Side::Outbound(TlsConnector::from(Arc::new(client)), name)
            }
        };
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenerError::Bind { addr, source })?;
        let mut proxy = Self {
            listener: tcp,
            side,
            target: listener.target,
            http: None,
            protocol: listener.protocol,
            http_config: config.http.clone(),
            policies,
            resolver: creds.resolver(),
            local: crate::credentials::LocalIdentity::new(creds.resolver()),
            limit: Arc::new(Semaphore::new(config.max_connections)),
            pending: PendingBySource::new(config.max_pending_handshakes_per_source),
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            max_connection_age: config.max_connection_age,
            shutdown_grace: config.shutdown_grace,
            metrics: ProxyMetrics::default(),
        };
        proxy.http = proxy.http_service();
        Ok(proxy)
    }

    /// The HTTP layer of a `protocol = "http"` listener, recording into
    /// this listener's metrics.
    fn http_service(&self) -> Option<HttpService> {
        (self.protocol == Protocol::Http).then(|| {
            HttpService::new(
                self.policies.clone(),
                &self.http_config,
                self.metrics.clone(),
            )
            .with_local_identity(Arc::clone(&self.resolver))
            .with_idle_timeout(self.idle_timeout)
            .with_max_connection_age(self.max_connection_age)
        })
    }

    /// Records into `metrics` (default: unregistered counters).
    pub fn with_metrics(mut self, metrics: ProxyMetrics) -> Self {
        self.metrics = metrics;
        self.http = self.http_service();
        self
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections until `shutdown` is cancelled; then
    /// stops accepting, lets established connections finish for up to
    /// `shutdown_grace`, and drops the rest.
    pub async fn serve(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let tracker = TaskTracker::new();
        let force = CancellationToken::new();
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = Arc::clone(&this.limit).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = this.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let this = Arc::clone(&this);
            let force = force.clone();
            let drain = shutdown.clone();
            tracker.spawn(async move {
                let _permit = permit;
                tokio::select! {
                    () = this.handle(stream, peer, drain) => {}
                    () = force.cancelled() => {}
                }
            });
        }
        tracker.close();
        if tokio::time::timeout(this.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::info!(
                remaining = tracker.len(),
                "shutdown grace over: dropping connections"
            );
            force.cancel();
            tracker.wait().await;
        }
    }

    async fn handle(&self, stream: TcpStream, peer: SocketAddr, shutdown: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let mut log = AccessLog {
            direction: match self.side {
                Side::Inbound(_) => "inbound",
                Side::Outbound(..) => "outbound",
            },
            source_addr: peer,
            destination_addr: self.target,
            source_principal: None,
            destination_principal: None,
            mtls: true,
            decision: "allow",
            policy: None,
            detail: None,
            bytes_sent: 0,
            bytes_received: 0,
            opened: tokio::time::Instant::now(),
        };
        let _open = self.metrics.open();
        match &self.side {
            Side::Inbound(acceptor) => match self.pending.admit(peer.ip()) {
                Some(pending) => {
                    self.inbound(acceptor, stream, pending, &mut log, shutdown)
                        .await;
                }
                None => log.fail(
                    "too_many_pending_handshakes",
                    "max_pending_handshakes_per_source".to_owned(),
                ),
            },
            Side::Outbound(connector, name) => {
                self.outbound(connector, name, stream, &mut log, shutdown)
                    .await;
            }
        }
        self.metrics.finished(
            log.direction,
            log.decision,
            log.bytes_received,
            log.bytes_sent,
        );
        log.emit();
    }

    /// Inbound: the PeerAuthentication mode of the workload port (read from
    /// the policy in force when the connection arrived) says whether TLS is
    /// required (STRICT), told apart from plaintext by the first bytes
    /// (PERMISSIVE) or not terminated at all (DISABLE: bytes, a ClientHello
    /// included, go to the application as they are). Sniffing and the
    /// handshake together get `handshake_timeout`; until the handshake is
    /// done the connection counts as `pending` for its source.
    async fn inbound(
        &self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
        pending: PendingGuard,
        log: &mut AccessLog,
        shutdown: CancellationToken,
    ) {
        log.destination_principal = self.local_id();
        let local = stream.local_addr().unwrap_or(log.source_addr);
        let state = self.policies.current();
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let terminate = match state.mtls_mode(self.target.port()) {
            MtlsMode::Strict => true,
            MtlsMode::Disable => false,
            // UNSET never survives composition; treat it as Istio's default.
            MtlsMode::Permissive | MtlsMode::Unset => {
                match sniff::sniff(&stream, self.handshake_timeout).await {
                    Ok(sniff::Protocol::Tls) => true,
                    Ok(sniff::Protocol::Plaintext) => false,
                    Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                        self.metrics.handshake_failed(log.direction, "timeout");
                        return log.fail("handshake_timeout", "no bytes".to_owned());
                    }
                    Err(error) => {
                        self.metrics.handshake_failed(log.direction, "other");
                        return log.fail("handshake_failed", error.to_string());
                    }
                }
            }
        };
        let mut conn = ConnInfo {
            peer: None,
            source: log.source_addr,
            local,
            sni: None,
            h2: false,
        };
        if !terminate {
            drop(pending);
            log.mtls = false;
            return self.admit(stream, conn, &state, log, shutdown).await;
        }
        let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                let reason = handshake_failure_reason(&error);
                self.metrics.handshake_failed(log.direction, reason);
                return log.fail("handshake_failed", format!("{reason}: {error}"));
            }
            Err(_) => {
                self.metrics.handshake_failed(log.direction, "timeout");
                return log.fail("handshake_timeout", String::new());
            }
        };
        drop(pending);
        let (_, session) = tls.get_ref();
        conn.peer = peer_id(session.peer_certificates());
        conn.sni = session.server_name().map(str::to_owned);
        conn.h2 = session.alpn_protocol() == Some(b"h2");
        log.source_principal = conn.peer.clone();
        self.admit(tls, conn, &state, log, shutdown).await;
    }

    /// An accepted inbound connection (mTLS or plaintext): HTTP listeners
    /// hand it to the HTTP layer (one decision per request); TCP listeners
    /// decide once for the connection and close a denied one.
    async fn admit<IO>(
        &self,
        io: IO,
        conn: ConnInfo,
        state: &PolicyState,
        log: &mut AccessLog,
        shutdown: CancellationToken,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Some(http) = &self.http {
            log.detail = Some("http".to_owned());
            return http.serve_inbound(io, conn, self.target, shutdown).await;
        }
        let request = Request {
            peer: conn.peer,
            source_ip: conn.source.ip(),
            remote_ip: None,
            destination_ip: conn.local.ip(),
            destination_port: self.target.port(),
            sni: conn.sni,
            http: None,
        };
        match state.authorize(&request) {
            Ok(decision) if decision.verdict == Verdict::Allow => {}
            Ok(decision) => {
                log.decision = "deny";
                log.detail = Some(decision.to_string());
                log.policy = match decision.reason {
                    Reason::Policy(p) => Some(format!("{}/{}", p.namespace, p.name)),
                    _ => None,
                };
                return;
            }
            Err(error) => return log.fail("deny", error.to_string()),
        }
        // An application that never answers the SYN is bounded as a
        // handshake is.
        let connect = tokio::time::timeout(self.handshake_timeout, TcpStream::connect(self.target));
        let upstream = match connect.await {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(error)) => return log.fail("upstream_connect_failed", error.to_string()),
            Err(_) => return log.fail("upstream_connect_timeout", String::new()),
        };
        let _ = upstream.set_nodelay(true);
        self.pipe(io, upstream, log).await;
    }

    /// Outbound: originate mTLS to the remote proxy, then copy bytes (TCP)
    /// or hand both ends to the HTTP layer.
    async fn outbound(
        &self,
        connector: &TlsConnector,
        name: &ServerName<'static>,
        stream: TcpStream,
        log: &mut AccessLog,
        shutdown: CancellationToken,
    ) {
        log.source_principal = self.local_id();
        let local = stream.local_addr().unwrap_or(log.source_addr);
        // Connecting and the handshake together get `handshake_timeout`.
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let upstream =
            match tokio::time::timeout_at(deadline, TcpStream::connect(self.target)).await {
                Ok(Ok(upstream)) => upstream,
                Ok(Err(error)) => return log.fail("upstream_connect_failed", error.to_string()),
                Err(_) => return log.fail("upstream_connect_timeout", String::new()),
            };
        let _ = upstream.set_nodelay(true);
        let tls = match tokio::time::timeout_at(deadline, connector.connect(name.clone(), upstream))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                let reason = handshake_failure_reason(&error);
                self.metrics.handshake_failed(log.direction, reason);
                return log.fail("upstream_handshake_failed", format!("{reason}: {error}"));
            }
            Err(_) => {
                self.metrics.handshake_failed(log.direction, "timeout");
                return log.fail("upstream_handshake_timeout", String::new());
            }
        };
        let session = tls.get_ref().1;
        log.destination_principal = peer_id(session.peer_certificates());
        if let Some(http) = &self.http {
            let upstream_h2 = session.alpn_protocol() == Some(b"h2");
            let conn = ConnInfo {
                peer: log.destination_principal.clone(),
                source: log.source_addr,
                local,
                sni: None,
                h2: false,
            };
            log.detail = Some("http".to_owned());
            return http
                .serve_outbound(stream, conn, tls, upstream_h2, shutdown)
                .await;
        }
        self.pipe(stream, tls, log).await;
    }

    /// The SPIFFE ID of the credential currently presented.
    fn local_id(&self) -> Option<SpiffeId> {
        self.local.current()
    }

    /// Copies `downstream <-> upstream`; the bytes moved are counted on the
    /// downstream side, so a connection that ends idle or in error still
    /// reports what it carried.
    async fn pipe<A, B>(&self, downstream: A, upstream: B, log: &mut AccessLog)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let mut downstream = Counted::new(downstream);
        // At its maximum age (from the accept) the connection is closed,
        // busy or not: the decision it got at connect time, its peer's
        // certificate and roots are not kept forever.
        let copy = copy::copy_with_idle_timeout(&mut downstream, upstream, self.idle_timeout);
        let end = tokio::time::timeout_at(log.opened + self.max_connection_age, copy).await;
        log.bytes_received = downstream.read;
        log.bytes_sent = downstream.written;
        match end {
            Ok(Ok(CopyEnd::Closed(..))) => {}
            Ok(Ok(CopyEnd::Idle)) => log.detail = Some("idle_timeout".to_owned()),
            Ok(Err(error)) => log.detail = Some(error.to_string()),
            Err(_) => log.detail = Some("max_connection_age".to_owned()),
        }
    }
}

fn peer_id(chain: Option<&[CertificateDer<'static>]>) -> Option<SpiffeId> {
    check_leaf(chain?.first()?).ok()
}

fn matcher(listener: &ListenerConfig, creds: &Credentials) -> Result<IdMatcher, ListenerError> {
    let addr = listener.listen;
    if let Some(id) = &listener.expected_id {
        let id = SpiffeId::parse(id).map_err(|_| ListenerError::Invalid {
            addr,
            field: "expected_id",
            value: id.clone(),
        })?;
        return Ok(IdMatcher::Exact(id));
    }
    if let Some(td) = &listener.expected_trust_domain {
        let td = TrustDomain::new(td).map_err(|_| ListenerError::Invalid {
            addr,
            field: "expected_trust_domain",
            value: td.clone(),
        })?;
        return Ok(IdMatcher::TrustDomain(td));
    }
    Ok(IdMatcher::TrustDomain(creds.trust_domain().clone()))
}
