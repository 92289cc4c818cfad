//! mTLS renewal: a caller presenting a valid SVID of this trust domain may
//! renew exactly its current identity.
//!
//! The TLS layer already verified the client chain against the CA's own
//! roots with the shared X509-SVID verifier; this authenticator only turns
//! the verified SPIFFE ID into a [`Caller`].

use futures::future::BoxFuture;
use sigil_identity::TrustDomain;

use super::{Authenticator, AuthnError, Caller, Credentials, Outcome};

/// Authenticates callers by their verified client SVID.
#[derive(Debug, Clone)]
pub struct SvidAuthenticator {
    trust_domain: TrustDomain,
}

impl SvidAuthenticator {
    /// For SVIDs of `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self { trust_domain }
    }
}

impl Authenticator for SvidAuthenticator {
    fn kind(&self) -> &'static str {
        "svid"
    }

    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> BoxFuture<'a, Outcome> {
        let outcome = match credentials.peer {
            None => Outcome::NotMine,
            Some(id) if id.trust_domain() != &self.trust_domain => {
                Outcome::Rejected(AuthnError::Invalid {
                    method: self.kind(),
                    reason: format!(
                        "client SVID {id} is not in trust domain {}",
                        self.trust_domain
                    ),
                })
            }
            Some(id) => Outcome::Authenticated(Caller::new(id.clone(), self.kind())),
        };
        Box::pin(std::future::ready(outcome))
    }
}
