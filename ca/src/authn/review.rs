//! TokenReview authentication, with a cache so renewal storms do not hit
//! the API server.
//!
//! Istio's known bottleneck is one TokenReview per CSR through a client
//! limited to 80 QPS. Sigil caches each *successful* review under the
//! SHA-256 of the token until the token's own `exp` (at most
//! [`MAX_CACHE_TTL`] for tokens without one), in a bounded map.
//!
//! Unauthenticated callers must not be able to drive API-server load:
//!
//! ```text
//! bearer ─▶ JWT-shaped? ── no ─▶ NotMine (never reviewed)
//!            │ yes
//!            ├─ cached success ─────────▶ Authenticated
//!            ├─ failed < FAILED_REVIEW_CACHE_TTL ago ─▶ Rejected (same reason, no review)
//!            ├─ failure budget empty ───▶ Rejected (UNAVAILABLE, no review)
//!            └─ TokenReview
//! ```
//!
//! A failed review is remembered for [`FAILED_REVIEW_CACHE_TTL`] (bounded,
//! [`FAILED_REVIEW_CACHE_SIZE`] tokens), so the same bad token costs one
//! review per window; a token that becomes valid is stuck at most that
//! long. Each failure also takes a token from a bucket of
//! [`FAILED_REVIEW_BURST`] refilled at [`FAILED_REVIEWS_PER_SECOND`]: while
//! it is empty, tokens not already cached are refused as UNAVAILABLE
//! without a review, so a stream of distinct forged tokens costs the API
//! server at most that rate. Callers whose review is cached are not
//! affected; new callers retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use sigil_identity::{SpiffeId, TrustDomain};
use tokio::time::Instant;

use super::{Authenticator, AuthnError, Caller, Credentials, Outcome, looks_like_jwt, peek_expiry};
use crate::k8s::{K8sError, TokenReviewer};

/// The longest a review is cached, whatever the token says.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
/// How long a review of a token without `exp` is cached.
pub const NO_EXPIRY_CACHE_TTL: Duration = Duration::from_secs(300);

/// How long a failed review is remembered (the same token is refused
/// without another review meanwhile).
pub const FAILED_REVIEW_CACHE_TTL: Duration = Duration::from_secs(10);
/// How many failed reviews are remembered.
pub const FAILED_REVIEW_CACHE_SIZE: usize = 4096;
/// Failed reviews allowed in a burst before unknown tokens are refused.
pub const FAILED_REVIEW_BURST: u32 = 50;
/// Failed reviews allowed per second, sustained.
pub const FAILED_REVIEWS_PER_SECOND: u32 = 10;

fn token_key(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Recently failed reviews (token hash → reason), bounded and short-lived.
#[derive(Debug, Default)]
struct FailedReviews {
    entries: HashMap<[u8; 32], (String, Instant)>,
}

impl FailedReviews {
    fn get(&mut self, key: &[u8; 32], now: Instant) -> Option<String> {
        match self.entries.get(key) {
            Some((reason, until)) if *until > now => Some(reason.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: [u8; 32], reason: String, now: Instant) {
        if self.entries.len() >= FAILED_REVIEW_CACHE_SIZE {
            self.entries.retain(|_, (_, until)| *until > now);
        }
        if self.entries.len() >= FAILED_REVIEW_CACHE_SIZE
            && let Some(victim) = self.entries.keys().next().copied()
        {
            self.entries.remove(&victim);
        }
        self.entries
            .insert(key, (reason, now + FAILED_REVIEW_CACHE_TTL));
    }
}

/// A token bucket of failed reviews.
#[derive(Debug)]
struct FailureBudget {
    tokens: f64,
    refilled_at: Instant,
}

impl FailureBudget {
    fn new(now: Instant) -> Self {
        Self {
            tokens: f64::from(FAILED_REVIEW_BURST),
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(FAILED_REVIEWS_PER_SECOND))
            .min(f64::from(FAILED_REVIEW_BURST));
        self.refilled_at = now;
    }

    /// Whether a review of an unknown token may be made now.
    fn allows(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    fn spend(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// What is known of failed reviews.
#[derive(Debug)]
struct Failures {
    recent: FailedReviews,
    budget: FailureBudget,
}

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
        token_key(token)
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
    failures: Mutex<Failures>,
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
            failures: Mutex::new(Failures {
                recent: FailedReviews::default(),
                budget: FailureBudget::new(Instant::now()),
            }),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a failed review of `key` and spends failure budget.
    fn failed(&self, key: [u8; 32], reason: String) -> Outcome {
        let now = Instant::now();
        let mut failures = self.failures();
        failures.recent.insert(key, reason.clone(), now);
        failures.budget.spend(now);
        Outcome::Rejected(AuthnError::Invalid {
            method: self.kind(),
            reason,
        })
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
        let key = token_key(token);
        {
            let mut failures = self.failures();
            let at = Instant::now();
            if let Some(reason) = failures.recent.get(&key, at) {
                return Outcome::Rejected(AuthnError::Invalid {
                    method: self.kind(),
                    reason,
                });
            }
            if !failures.budget.allows(at) {
                return Outcome::Rejected(AuthnError::Unavailable {
                    method: self.kind(),
                    reason: "too many failed token reviews; retry later".to_owned(),
                });
            }
        }
        let reviewed = match self.reviewer.review(token, &self.audiences).await {
            Ok(r) => r,
            Err(K8sError::NotAuthenticated { reason }) => {
                return self.failed(
                    key,
                    if reason.is_empty() {
                        "the API server did not authenticate the token".to_owned()
                    } else {
                        reason
                    },
                );
            }
            // The API server could not decide: retry later.
            Err(e @ (K8sError::Api { .. } | K8sError::Transport(_) | K8sError::Decode(_))) => {
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
            return self.failed(key, "token audiences do not include the CA's".to_owned());
        }
        let identity = match SpiffeId::kubernetes(
            &self.trust_domain,
            &reviewed.namespace,
            &reviewed.service_account,
        ) {
            Ok(id) => id,
            Err(e) => return self.failed(key, e.to_string()),
        };
        let expires_at = peek_expiry(token);
        let caller = Caller {
            identity,
            method: self.kind(),
            pod: reviewed.pod,
            node: reviewed.node,
            expires_at,
            max_ttl: None,
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
            // Not a service-account token (those are JWTs): never sent to
            // the API server.
            Some(token) if looks_like_jwt(token) => Box::pin(self.review(token)),
            _ => Box::pin(std::future::ready(Outcome::NotMine)),
        }
    }
}
