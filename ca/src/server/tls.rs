//! TLS for the gRPC listener: the CA's own serving certificate (hot
//! swappable through identity's `CredentialResolver`), optional client SVIDs, and an accept loop that bounds
//! connections and handshake time.
//!
//! ```text
//! TcpListener ─▶ permit (max_connections) ─▶ worker ─▶ handshake (deadline) ─▶ TlsConn ─▶ tonic
//!                 none left: close at once               too slow: drop          │
//!                                                                ConnInfo { remote, peer SVID }
//! ```
//!
//! Writes to a connection are coalesced (`coalesce`): responses finished
//! between two polls of the connection share one TLS write.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sigil_identity::SpiffeId;
use sigil_identity::credential::{CredentialError, CredentialResolver, PrivateKey};
use sigil_identity::verify::{BundleHandle, IdMatcher, SpiffeClientVerifier, check_leaf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::coalesce::Coalesced;
use crate::issue::ServingCert;

/// Serves `cert` from the next handshake on (established connections keep
/// the certificate they negotiated). The CA's serving certificate names
/// DNS names, not a SPIFFE ID, so it goes in as a plain chain; the key is
/// checked against the leaf.
pub(crate) fn store_serving(
    resolver: &CredentialResolver,
    cert: &ServingCert,
) -> Result<(), CredentialError> {
    let key = PrivateKey::from_pkcs8_der(cert.key.secret_der().to_vec())?;
    resolver.store_chain(cert.chain.clone(), &key)
}

/// The rustls server configuration: h2 only, TLS 1.2 and 1.3, ring.
pub(crate) fn server_config(
    resolver: Arc<CredentialResolver>,
    bundles: BundleHandle,
    trust_domain: sigil_identity::TrustDomain,
) -> Result<rustls::ServerConfig, rustls::Error> {
    // Callers with a bearer token connect without a certificate; one that
    // is sent must be a valid SVID of the CA's trust domain.
    let verifier =
        SpiffeClientVerifier::new(bundles, IdMatcher::TrustDomain(trust_domain)).optional();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_client_cert_verifier(Arc::new(verifier))
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What the gRPC handlers learn about a connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    /// The client's address.
    pub(crate) remote: SocketAddr,
    /// The client's SPIFFE ID, when it authenticated with a valid SVID.
    pub(crate) peer: Option<SpiffeId>,
}

/// An accepted TLS connection, holding its connection-limit permit.
pub(crate) struct TlsConn {
    inner: Coalesced<TlsStream<TcpStream>>,
    info: ConnInfo,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl TlsConn {
    /// Who is on the other end.
    pub(crate) fn info(&self) -> &ConnInfo {
        &self.info
    }
}

/// A TCP connection accepted within the connection bound, not yet
/// handshaken. Detached from the accepting runtime (a plain std socket) so
/// that a worker's runtime can adopt it.
#[derive(Debug)]
pub(crate) struct Accepted {
    stream: std::net::TcpStream,
    remote: SocketAddr,
    permit: OwnedSemaphorePermit,
}

/// Accepts TCP connections, enforces the connection bound, and hands each
/// accepted socket to `dispatch` (which picks a worker). Returns when
/// `shutdown` fires or `dispatch` refuses (the workers are gone).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    max_connections: usize,
    mut dispatch: impl FnMut(Accepted) -> bool,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(client.addr = %remote, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(client.addr = %remote, %error, "cannot detach the socket");
                continue;
            }
        };
        if !dispatch(Accepted {
            stream,
            remote,
            permit,
        }) {
            return;
        }
    }
}

/// Runs the TLS handshake for `accepted` on the current runtime, within
/// `timeout`. Gives up quietly (`None`; the client sees the connection
/// close) on a failed or slow handshake, or when `shutdown` fires.
pub(crate) async fn handshake(
    accepted: Accepted,
    acceptor: TlsAcceptor,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Option<TlsConn> {
    let Accepted {
        stream,
        remote,
        permit,
    } = accepted;
    let stream = match TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(client.addr = %remote, %error, "cannot adopt the socket");
            return None;
        }
    };
    let handshake = tokio::time::timeout(timeout, acceptor.accept(stream));
    let tls = tokio::select! {
        () = shutdown.cancelled() => return None,
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(client.addr = %remote, %error, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(client.addr = %remote, "TLS handshake timed out");
                return None;
            }
        },
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| check_leaf(leaf.as_ref()).ok());
    Some(TlsConn {
        inner: Coalesced::new(tls),
        info: ConnInfo { remote, peer },
        _permit: permit,
    })
}
