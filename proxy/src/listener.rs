//! L4 listeners: inbound (terminate mTLS, forward to the local application)
//! and outbound (accept from the local application, originate mTLS).
//!
//! Each listener bounds its connections with a semaphore (accepting stops
//! while it is full), bounds the TLS handshake by `handshake_timeout`, asks
//! the [`Authorizer`] after an inbound handshake (a denied connection is
//! closed), copies both directions with half-close and an idle timeout, and writes one JSON
//! access log line per connection (target `sigil_proxy::access`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use sigil_identity::{IdMatcher, SpiffeId, TrustDomain, check_leaf};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::authz_seam::{Authorizer, ConnectionAttributes, Decision};
use crate::config::{ListenerConfig, ListenerMode, ProxyConfig};
use crate::copy::{self, CopyEnd};
use crate::credentials::Credentials;
use crate::tls;

/// Errors starting a listener.
#[derive(Debug, thiserror::Error)]
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
    authorizer: Arc<dyn Authorizer>,
    limit: Arc<Semaphore>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
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
        authorizer: Arc<dyn Authorizer>,
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
        Ok(Self {
            listener: tcp,
            side,
            target: listener.target,
            authorizer,
            limit: Arc::new(Semaphore::new(config.max_connections)),
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections forever.
    pub async fn serve(self) {
        let this = Arc::new(self);
        loop {
            let Ok(permit) = Arc::clone(&this.limit).acquire_owned().await else {
                return;
            };
            let (stream, peer) = match this.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let this = Arc::clone(&this);
            tokio::spawn(async move {
                let _permit = permit;
                this.handle(stream, peer).await;
            });
        }
    }

    async fn handle(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        match &self.side {
            Side::Inbound(acceptor) => {
                let accepted =
                    tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await;
                let tls = match accepted {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        return access_log(
                            peer,
                            None,
                            "handshake_failed",
                            Some(&error.to_string()),
                        );
                    }
                    Err(_) => return access_log(peer, None, "handshake_timeout", None),
                };
                let (_, conn) = tls.get_ref();
                let source = conn
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| check_leaf(leaf).ok());
                let attrs = ConnectionAttributes {
                    source_principal: source.clone(),
                    source_addr: peer,
                    destination_addr: local,
                    sni: conn.server_name().map(str::to_owned),
                };
                if let Decision::Deny { policy } = self.authorizer.decide(&attrs) {
                    return access_log(peer, source.as_ref(), "deny", policy.as_deref());
                }
                access_log(peer, source.as_ref(), "allow", None);
                let Ok(upstream) = TcpStream::connect(self.target).await else {
                    return access_log(peer, source.as_ref(), "upstream_connect_failed", None);
                };
                let _ = upstream.set_nodelay(true);
                self.pipe(tls, upstream).await;
            }
            Side::Outbound(connector, name) => {
                let connect = async {
                    let upstream = TcpStream::connect(self.target).await?;
                    let _ = upstream.set_nodelay(true);
                    connector.connect(name.clone(), upstream).await
                };
                let tls = match tokio::time::timeout(self.handshake_timeout, connect).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        return access_log(
                            peer,
                            None,
                            "upstream_handshake_failed",
                            Some(&error.to_string()),
                        );
                    }
                    Err(_) => return access_log(peer, None, "upstream_handshake_timeout", None),
                };
                let remote = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| check_leaf(leaf).ok());
                access_log(peer, remote.as_ref(), "allow", None);
                self.pipe(stream, tls).await;
            }
        }
    }

    async fn pipe<A, B>(&self, a: A, b: B)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        match copy::copy_with_idle_timeout(a, b, self.idle_timeout).await {
            Ok(CopyEnd::Closed(up, down)) => tracing::debug!(up, down, "connection closed"),
            Ok(CopyEnd::Idle) => tracing::debug!("connection idle: closed"),
            Err(error) => tracing::debug!(%error, "connection ended with an error"),
        }
    }
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

fn access_log(peer: SocketAddr, source: Option<&SpiffeId>, decision: &str, detail: Option<&str>) {
    let line = serde_json::json!({
        "source_addr": peer.to_string(),
        "source_principal": source.map(ToString::to_string),
        "decision": decision,
        "detail": detail,
    });
    tracing::info!(target: "sigil_proxy::access", "{line}");
}
