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
