//! mTLS renewal: a caller presenting a valid SVID of this trust domain may
//! renew exactly its current identity.
//!
//! The TLS layer already verified the client chain against the CA's own
//! roots with the shared X509-SVID verifier; this authenticator only turns
//! the verified SPIFFE ID into a [`Caller`].
//!
//! Renewal must not extend a credential: the caller gets at most
//! [`SvidAuthenticator::with_max_ttl`] (the server sets
//! `issuance.svid_max_ttl`, by default `issuance.default_ttl`), whatever
//! `validity_duration` it asks, so a stolen SVID cannot be turned into
//! certificates of `max_ttl`. The cap is deliberately not the presenting
//! SVID's remaining lifetime: renewal happens near the end of that lifetime,
//! so such a cap would shrink every renewal to nothing; a fixed cap bounds
//! a thief's chain of renewals per step while keeping honest renewal working
//! (revoking the thief is the root rotation's job).

use futures::future::BoxFuture;
use sigil_identity::TrustDomain;

use super::{Authenticator, AuthnError, Caller, Credentials, Outcome};
use crate::issue::{DEFAULT_TTL, Ttl};

/// Authenticates callers by their verified client SVID.
#[derive(Debug, Clone)]
pub struct SvidAuthenticator {
    trust_domain: TrustDomain,
    max_ttl: Ttl,
}

impl SvidAuthenticator {
    /// For SVIDs of `trust_domain`; callers get at most the default TTL
    /// ([`DEFAULT_TTL`]) until [`Self::with_max_ttl`].
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            max_ttl: DEFAULT_TTL,
        }
    }

    /// Callers get certificates of at most `max_ttl`.
    pub fn with_max_ttl(mut self, max_ttl: Ttl) -> Self {
        self.max_ttl = max_ttl;
        self
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
            Some(id) => Outcome::Authenticated(Caller {
                max_ttl: Some(self.max_ttl),
                ..Caller::new(id.clone(), self.kind())
            }),
        };
        Box::pin(std::future::ready(outcome))
    }
}
