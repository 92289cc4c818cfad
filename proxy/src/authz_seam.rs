//! The seam between the data plane and the authorization engine.
//!
//! The listeners describe each connection as [`ConnectionAttributes`] and
//! ask an [`Authorizer`] for a [`Decision`]; the Istio policy engine
//! implements the trait. [`AllowAll`] is the stand-in until it does.

use std::net::SocketAddr;

use sigil_identity::SpiffeId;

/// What the data plane knows about a connection when it asks for a decision.
#[derive(Debug, Clone)]
pub struct ConnectionAttributes {
    /// The peer's verified SPIFFE ID (`None` for plaintext).
    pub source_principal: Option<SpiffeId>,
    /// The peer's address.
    pub source_addr: SocketAddr,
    /// The local address the connection arrived on.
    pub destination_addr: SocketAddr,
    /// The SNI the client sent, if any.
    pub sni: Option<String>,
}

/// An authorization decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the connection through.
    Allow,
    /// Refuse it; `policy` names the policy that decided, if any.
    Deny {
        /// The deciding policy (`namespace/name`), if one decided.
        policy: Option<String>,
    },
}

/// Decides whether a connection may proceed.
pub trait Authorizer: Send + Sync {
    /// The decision for `req`.
    fn decide(&self, req: &ConnectionAttributes) -> Decision;
}

/// Allows every connection (tests; the default until policies exist).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn decide(&self, _req: &ConnectionAttributes) -> Decision {
        Decision::Allow
    }
}
