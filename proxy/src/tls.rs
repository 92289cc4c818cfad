//! rustls configurations built on the shared, atomically swapped material.
//!
//! Both sides present the [`sigil_identity::CredentialResolver`]'s current
//! credential and verify the peer with sigil-identity's SPIFFE verifiers on a
//! [`sigil_identity::BundleHandle`]; TLS 1.3 only unless 1.2 is allowed; ALPN
//! offers `h2` and `http/1.1`; no session resumption (every handshake
//! verifies the peer against the current bundle).

use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};
use sigil_identity::{IdMatcher, SpiffeClientVerifier, SpiffeServerVerifier};

use crate::credentials::Credentials;

/// ALPN protocols offered and accepted.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&TLS13];
static TLS13_AND_12: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];

fn versions(allow_tls12: bool) -> &'static [&'static SupportedProtocolVersion] {
    if allow_tls12 {
        &TLS13_AND_12
    } else {
        &TLS13_ONLY
    }
}

/// The inbound (server) config: requires a client certificate that verifies
/// against the bundles (any SPIFFE ID; authorization decides after). The
/// verifier picks the bundle of the trust domain the peer's own SPIFFE ID
/// names, so peers of federated domains verify against their domain's roots
/// only, and a peer of a domain without a bundle is refused.
pub fn server_config(
    creds: &Credentials,
    allow_tls12: bool,
) -> Result<ServerConfig, rustls::Error> {
    let verifier = SpiffeClientVerifier::new(creds.bundles(), IdMatcher::Any);
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(versions(allow_tls12))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(creds.resolver());
    // No session resumption: a resumed TLS 1.3 session skips the client
    // certificate, so a peer whose certificate expired or whose root left
    // the bundle would keep its identity until the ticket ran out. Every
    // handshake verifies the peer against the current bundle.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The outbound (client) config: the remote proxy must present an ID that
/// `matcher` accepts.
pub fn client_config(
    creds: &Credentials,
    matcher: IdMatcher,
    allow_tls12: bool,
) -> Result<ClientConfig, rustls::Error> {
    let verifier = SpiffeServerVerifier::new(creds.bundles(), matcher);
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(versions(allow_tls12))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(creds.resolver());
    // No resumption either way (see `server_config`).
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
