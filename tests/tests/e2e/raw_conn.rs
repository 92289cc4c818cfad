//! Raw connections to the CA's gRPC port for the connection-level tests:
//! a TLS handshake and nothing else, an HTTP/2 connection with its preface
//! and no request, and waiting for the server to close a socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::common::ca::pem_ders;

/// A rustls client configuration trusting `roots_pem`, offering `h2`,
/// with rustls's default session resumption (in-memory cache, tickets).
pub(crate) fn tls_config(roots_pem: &str) -> Arc<ClientConfig> {
    tls_config_with(roots_pem, rustls::ALL_VERSIONS)
}

/// [`tls_config`] limited to `versions`.
pub(crate) fn tls_config_with(
    roots_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_ders(roots_pem) {
        roots.add(der).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A TLS connection to `addr` (server name `localhost`), handshake done,
/// nothing sent.
pub(crate) async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"))
}

/// An HTTP/2 connection over `tls`: the client preface and SETTINGS are
/// sent, no request. The task ends when the connection does.
pub(crate) async fn h2_idle(
    tls: TlsStream<TcpStream>,
) -> (
    hyper::client::conn::http2::SendRequest<String>,
    JoinHandle<Result<(), hyper::Error>>,
) {
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

/// Reads until the server closes the connection (EOF or an error); panics
/// if it stays open for `limit`.
pub(crate) async fn wait_closed(stream: &mut (impl AsyncRead + Unpin), limit: Duration) {
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open for {limit:?}"
    );
}
