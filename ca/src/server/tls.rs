//! TLS for the gRPC listener: the CA's own serving certificate (hot
//! swappable through identity's `CredentialResolver`), optional client
//! SVIDs, and an accept loop that bounds connections (in all, and per
//! source address) and handshake time.
//!
//! ```text
//! TcpListener ─▶ permits (max_connections, ─▶ worker ─▶ handshake ─▶ TlsConn ─▶ tonic
//!                max_connections_per_ip)               (deadline)       │
//!                 none left: close at once             too slow: drop   ConnInfo { remote, client chain }
//! ```
//!
//! A client SVID is verified at the handshake *and again on every request*
//! ([`ConnInfo::peer`]) against the current client bundle at the current
//! time, so an SVID that expired, or whose root a hot reload removed,
//! stops working on connections that are already open. There is no TLS
//! session resumption (no session cache, no tickets): every connection
//! presents and verifies its chain in a full handshake.
//!
//! Writes to a connection are coalesced (`coalesce`): responses finished
//! between two polls of the connection share one TLS write.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_identity::credential::{CredentialError, CredentialResolver};
use sigil_identity::verify::{
    BundleHandle, IdMatcher, SpiffeClientVerifier, Usage, VerifyError, verify_x509_svid,
};
use sigil_identity::{BundleSet, SpiffeId};
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
    resolver.store_chain(cert.chain.clone(), &cert.key)
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
    // No resumption: a resumed session would bring back a client chain
    // without verifying it again (and a ticket outlives the bundle it was
    // verified against). Every connection makes a full handshake.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.ticketer = Arc::new(NoTickets);
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Issues no session tickets (rustls's default, stated here so that the
/// configuration says it in one place).
#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// What the gRPC handlers learn about a connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The client's address.
    pub(crate) remote: SocketAddr,
    /// The client's certificate chain (leaf first) as presented at the
    /// handshake, if it sent one.
    chain: Option<Box<[CertificateDer<'static>]>>,
    /// The last successful verification of `chain`, reused while the
    /// bundle is the same and the leaf has not expired.
    verified: Mutex<Option<Verified>>,
}

/// A verification of a connection's client chain.
#[derive(Debug)]
struct Verified {
    /// The bundle set it was verified against (compared by pointer: the
    /// handle swaps in a new `Arc` on every change).
    bundles: Arc<BundleSet>,
    /// When the verified chain expires (leaf or intermediate, earliest).
    not_after: UnixTime,
    /// The verified SPIFFE ID.
    id: SpiffeId,
}

impl ConnInfo {
    /// A connection from `remote` that presented `chain` (leaf first).
    pub(crate) fn new(remote: SocketAddr, chain: Option<Box<[CertificateDer<'static>]>>) -> Self {
        Self {
            remote,
            chain: chain.filter(|c| !c.is_empty()),
            verified: Mutex::new(None),
        }
    }

    /// The client's SPIFFE ID, its chain verified against `bundles` (the
    /// current client bundle) at `now`; `None` when it sent no
    /// certificate. A chain that no longer verifies (expired, or its root
    /// was removed) is an error: the caller is not authenticated.
    pub(crate) fn peer(
        &self,
        bundles: &BundleHandle,
        now: UnixTime,
    ) -> Result<Option<SpiffeId>, VerifyError> {
        let Some(chain) = &self.chain else {
            return Ok(None);
        };
        let current = bundles.load();
        let mut cached = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = cached.as_ref()
            && Arc::ptr_eq(&v.bundles, &current)
            && now.as_secs() <= v.not_after.as_secs()
        {
            return Ok(Some(v.id.clone()));
        }
        *cached = None;
        let svid = verify_x509_svid(chain, &current, now, Usage::ClientAuth)?;
        let not_after = svid.not_after();
        let id = svid.into_spiffe_id();
        *cached = Some(Verified {
            bundles: current,
            not_after,
            id: id.clone(),
        });
        Ok(Some(id))
    }
}

/// An accepted TLS connection, holding its connection-limit permits.
pub(crate) struct TlsConn {
    // Dropped first (fields drop in order): the permits are free again
    // before the client sees the socket close.
    _permit: ConnPermit,
    inner: Coalesced<TlsStream<TcpStream>>,
    info: Arc<ConnInfo>,
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
    pub(crate) fn info(&self) -> &Arc<ConnInfo> {
        &self.info
    }
}

/// Connections open per source address, for `server.max_connections_per_ip`.
#[derive(Debug, Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// Counts one more connection from `ip` unless it has `max` already.
    fn try_acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One connection counted against its source address; uncounted on drop.
#[derive(Debug)]
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What an open connection holds against the connection bounds.
#[derive(Debug)]
struct ConnPermit {
    _total: OwnedSemaphorePermit,
    _per_ip: Option<IpSlot>,
}

/// A TCP connection accepted within the connection bounds, not yet
/// handshaken. Detached from the accepting runtime (a plain std socket) so
/// that a worker's runtime can adopt it.
#[derive(Debug)]
pub(crate) struct Accepted {
    stream: std::net::TcpStream,
    remote: SocketAddr,
    permit: ConnPermit,
}

/// The accept loop's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AcceptLimits {
    /// Connections open at once (`server.max_connections`).
    pub(crate) max_connections: usize,
    /// Connections open at once from one address; 0 = unbounded
    /// (`server.max_connections_per_ip`).
    pub(crate) max_per_ip: usize,
}

/// Accepts TCP connections, enforces the connection bounds, and hands each
/// accepted socket to `dispatch` (which picks a worker). Returns when
/// `shutdown` fires or `dispatch` refuses (the workers are gone).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    limits: AcceptLimits,
    mut dispatch: impl FnMut(Accepted) -> bool,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
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
        let Ok(total) = permits.clone().try_acquire_owned() else {
            tracing::debug!(client.addr = %remote, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let slot = if limits.max_per_ip == 0 {
            None
        } else if let Some(slot) = per_ip.try_acquire(remote.ip(), limits.max_per_ip) {
            Some(slot)
        } else {
            tracing::debug!(client.addr = %remote, "per-address connection limit reached; closing");
            drop(stream);
            continue;
        };
        let permit = ConnPermit {
            _total: total,
            _per_ip: slot,
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
///
/// The handshake's state (the rustls connection and the TCP stream being
/// handshaken, its timer) is boxed and freed when the handshake ends: a
/// connection's task awaits this and then serves the connection for its
/// whole life, and an unboxed handshake would size that task for the
/// handshake (BENCHMARKS.md, "Idle connections").
pub(crate) fn handshake(
    accepted: Accepted,
    acceptor: TlsAcceptor,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Pin<Box<impl Future<Output = Option<TlsConn>> + Send + '_>> {
    Box::pin(run_handshake(accepted, acceptor, timeout, shutdown))
}

async fn run_handshake(
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
    // Kept to verify again on every request (the verifier accepted it
    // against the bundle of the handshake's moment).
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect());
    Some(TlsConn {
        inner: Coalesced::new(tls),
        info: Arc::new(ConnInfo::new(remote, chain)),
        _permit: permit,
    })
}
