//! [`CredentialResolver`]: the credential rustls presents, swapped
//! atomically, failing closed until the first one is stored.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

use super::error::CredentialError;
use super::key::PrivateKey;
use super::svid::{X509Svid, certified_key};

/// The certificate and key rustls presents, as a server
/// ([`ResolvesServerCert`]) and as a client ([`ResolvesClientCert`]).
///
/// Empty at first: a server then resolves no certificate (rustls aborts
/// the handshake) and a client sends none. Each [`Self::store`] takes
/// effect from the next handshake on; established connections keep the
/// certificate they negotiated. Lock-free on the handshake path.
#[derive(Debug, Default)]
pub struct CredentialResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl CredentialResolver {
    /// An empty resolver: fails closed until [`Self::store`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `svid` from the next handshake on.
    pub fn store(&self, svid: &X509Svid) {
        self.current.store(Some(svid.certified_key().clone()));
    }

    /// Serves a chain that is not an X509-SVID (e.g. a server certificate
    /// naming DNS names) with its leaf's `key`, from the next handshake on.
    /// The key must match the leaf; on error the current credential stays.
    pub fn store_chain(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKey,
    ) -> Result<(), CredentialError> {
        self.current.store(Some(certified_key(chain, key)?));
        Ok(())
    }

    /// The credential in use, if one was stored.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CredentialResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for CredentialResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}
