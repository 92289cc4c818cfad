//! A workload's own credential: an X.509-SVID chain with its private key,
//! and a rustls certificate resolver that swaps credentials atomically.
//!
//! - [`PrivateKey`]: PKCS#8 DER, checked at construction, zeroized on
//!   drop, `Debug` prints the algorithm and length only (no `Display`, no
//!   `Serialize`); the bytes are reached through [`PrivateKey::secret_der`];
//! - [`X509Svid`]: a chain (leaf first) and its key; construction checks
//!   the leaf against the X509-SVID rules, reads its SPIFFE ID and notAfter,
//!   and refuses a key that does not match the leaf's public key;
//! - [`CredentialResolver`]: rustls `ResolvesServerCert` *and*
//!   `ResolvesClientCert`; empty until the first [`store`], and then
//!   fails closed (no certificate: the handshake fails), afterwards every
//!   new handshake uses the newest credential while established
//!   connections keep theirs.
//!
//! ```text
//! PEM / DER ─▶ PrivateKey ─┐
//!  chain ──────────────────┴▶ X509Svid::new (leaf rules, key ⇔ leaf) ─▶ CredentialResolver::store
//!                                                                          │ ArcSwapOption<CertifiedKey>
//!                          rustls ServerConfig / ClientConfig ◀── resolve ─┘ (None before the first store)
//! ```
//!
//! Signing keys are loaded with rustls' *ring* provider. The CA's own
//! serving certificate is not an X509-SVID (it names DNS names and IPs,
//! no SPIFFE ID): [`CredentialResolver::store_chain`] serves such a chain
//! with the same key check.
//!
//! [`store`]: CredentialResolver::store

mod error;
mod key;
mod resolver;
mod svid;

#[cfg(test)]
mod tests;

pub use self::error::CredentialError;
pub use self::key::PrivateKey;
pub use self::resolver::CredentialResolver;
pub use self::svid::X509Svid;
