//! The development authenticator: `Bearer dev:<namespace>:<service-account>`.
//!
//! **No proof of anything.** It exists so the no-config trial CA can be
//! tried without a cluster; configuration validation refuses it on a
//! non-loopback gRPC address, and the server logs a warning when it is
//! configured.

use futures::future::BoxFuture;
use sigil_identity::{SpiffeId, TrustDomain};

use super::{Authenticator, AuthnError, Caller, Credentials, Outcome};

/// The token prefix this authenticator recognises.
pub const DEV_TOKEN_PREFIX: &str = "dev:";

/// Accepts `dev:<namespace>:<service-account>` tokens unverified.
#[derive(Debug, Clone)]
pub struct DevelopmentAuthenticator {
    trust_domain: TrustDomain,
}

impl DevelopmentAuthenticator {
    /// For identities in `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self { trust_domain }
    }
}

impl Authenticator for DevelopmentAuthenticator {
    fn kind(&self) -> &'static str {
        "development"
    }

    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> BoxFuture<'a, Outcome> {
        let outcome = match credentials
            .bearer
            .and_then(|t| t.strip_prefix(DEV_TOKEN_PREFIX))
        {
            None => Outcome::NotMine,
            Some(rest) => {
                let mut parts = rest.split(':');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(ns), Some(sa), None) => {
                        match SpiffeId::kubernetes(&self.trust_domain, ns, sa) {
                            Ok(id) => Outcome::Authenticated(Caller::new(id, self.kind())),
                            Err(e) => Outcome::Rejected(AuthnError::Invalid {
                                method: self.kind(),
                                reason: e.to_string(),
                            }),
                        }
                    }
                    _ => Outcome::Rejected(AuthnError::Invalid {
                        method: self.kind(),
                        reason: "expected dev:<namespace>:<service-account>".to_owned(),
                    }),
                }
            }
        };
        Box::pin(std::future::ready(outcome))
    }
}
