//! TokenReview authentication, with a cache so renewal storms do not hit
//! the API server.
//!
//! Istio's known bottleneck is one TokenReview per CSR through a client
//! limited to 80 QPS. Sigil caches each *successful* review under the
//! SHA-256 of the token until the token's own `exp` (at most
//! [`MAX_CACHE_TTL`] for tokens without one), in a bounded map. Failed
//! reviews are never cached, so a token that becomes valid is not stuck.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use sigil_identity::{SpiffeId, TrustDomain};

use super::{Authenticator, AuthnError, Caller, Credentials, Outcome, peek_expiry};
use crate::k8s::{K8sError, TokenReviewer};

/// The longest a review is cached, whatever the token says.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
/// How long a review of a token without `exp` is cached.
pub const NO_EXPIRY_CACHE_TTL: Duration = Duration::from_secs(300);

/// A bounded cache of successful reviews, keyed by token hash.
#[derive(Debug)]
pub struct ReviewCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], (Caller, SystemTime)>>,
}

impl ReviewCache {
    /// A cache of at most `capacity` reviews.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(token: &str) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }

    /// The cached caller for `token`, if fresh at `now`.
    pub fn get(&self, token: &str, now: SystemTime) -> Option<Caller> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = Self::key(token);
        match entries.get(&key) {
            Some((caller, until)) if *until > now => Some(caller.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Caches `caller` for `token` until `until`.
    pub fn insert(&self, token: &str, caller: Caller, until: SystemTime, now: SystemTime) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, t)| *t > now);
        }
        if entries.len() >= self.capacity {
            // Still full of live entries: drop an arbitrary one. A miss only
            // costs one more review.
            if let Some(victim) = entries.keys().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(Self::key(token), (caller, until));
    }

    /// How many reviews are cached.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Authenticates bearer tokens with a TokenReview.
pub struct TokenReviewAuthenticator {
    trust_domain: TrustDomain,
    reviewer: Arc<dyn TokenReviewer>,
    audiences: Vec<String>,
    cache: ReviewCache,
}

impl std::fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("audiences", &self.audiences)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl TokenReviewAuthenticator {
    /// Reviews tokens for `audiences` through `reviewer`, caching up to
    /// `cache_size` results.
    pub fn new(
        trust_domain: TrustDomain,
        reviewer: Arc<dyn TokenReviewer>,
        audiences: Vec<String>,
        cache_size: usize,
    ) -> Self {
        Self {
            trust_domain,
            reviewer,
            audiences,
            cache: ReviewCache::new(cache_size),
        }
    }

    /// The review cache (for metrics and tests).
    pub fn cache(&self) -> &ReviewCache {
        &self.cache
    }

    async fn review(&self, token: &str) -> Outcome {
        let now = SystemTime::now();
        if let Some(caller) = self.cache.get(token, now) {
            return Outcome::Authenticated(caller);
        }
        let reviewed = match self.reviewer.review(token, &self.audiences).await {
            Ok(r) => r,
            Err(K8sError::NotAuthenticated { reason }) => {
                return Outcome::Rejected(AuthnError::Invalid {
                    method: self.kind(),
                    reason: if reason.is_empty() {
                        "the API server did not authenticate the token".to_owned()
                    } else {
                        reason
                    },
                });
            }
            Err(e) => {
                return Outcome::Rejected(AuthnError::Unavailable {
                    method: self.kind(),
                    reason: e.to_string(),
                });
            }
        };
        if !reviewed.audiences.is_empty()
            && !reviewed
                .audiences
                .iter()
                .any(|a| self.audiences.contains(a))
        {
            return Outcome::Rejected(AuthnError::Invalid {
                method: self.kind(),
                reason: "token audiences do not include the CA's".to_owned(),
            });
        }
        let identity = match SpiffeId::kubernetes(
            &self.trust_domain,
            &reviewed.namespace,
            &reviewed.service_account,
        ) {
            Ok(id) => id,
            Err(e) => {
                return Outcome::Rejected(AuthnError::Invalid {
                    method: self.kind(),
                    reason: e.to_string(),
                });
            }
        };
        let expires_at = peek_expiry(token);
        let caller = Caller {
            identity,
            method: self.kind(),
            pod: reviewed.pod,
            node: reviewed.node,
            expires_at,
        };
        let until = expires_at
            .unwrap_or(now + NO_EXPIRY_CACHE_TTL)
            .min(now + MAX_CACHE_TTL);
        if until > now {
            self.cache.insert(token, caller.clone(), until, now);
        }
        Outcome::Authenticated(caller)
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn kind(&self) -> &'static str {
        "kubernetes-token-review"
    }

    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> BoxFuture<'a, Outcome> {
        match credentials.bearer {
            None => Box::pin(std::future::ready(Outcome::NotMine)),
            Some(token) => Box::pin(self.review(token)),
        }
    }
}
