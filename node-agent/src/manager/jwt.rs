//! JWT-SVIDs: cached per (identity, sorted audience set), refreshed when
//! less than half of the lifetime (counted from arrival) remains, bounded
//! in size; concurrent identical requests share one CA call.
//!
//! The cache holds only a weak handle on an in-flight request: when every
//! caller gives up, the request is dropped and the next caller starts a
//! new one. When a refresh fails while the cached token is still valid,
//! the cached token is served, and the CA is asked again only after a
//! backoff (`backoff_initial` doubling per failure, at most a quarter of
//! the token's remaining lifetime). Abandoned requests are evicted before
//! a new slot is added, and live ones count towards the capacity: a cache
//! full of live requests answers [`SourceError::Unavailable`]. Requests
//! with more than [`MAX_AUDIENCES`] audiences, or an audience longer than
//! [`MAX_AUDIENCE_BYTES`], are refused before the cache.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use base64::Engine as _;
use futures::FutureExt as _;
use futures::future::{BoxFuture, WeakShared};
use sigil_identity::SpiffeId;

use super::{Command, MAX_AUDIENCE_BYTES, MAX_AUDIENCES, Shared};
use crate::ca_client::CaClientError;
use crate::source::{JwtSvid, SourceError};

type Key = (SpiffeId, Vec<String>);
type Mint = BoxFuture<'static, Result<JwtSvid, SourceError>>;

/// The longest JOSE header looked at for its `kid`.
const MAX_HEADER_LEN: usize = 4096;

enum Slot {
    Ready {
        svid: JwtSvid,
        refresh_at: SystemTime,
        /// Consecutive failed refreshes (the backoff doubles per failure).
        failures: u32,
    },
    Minting {
        request: WeakShared<Mint>,
        tag: u64,
    },
}

/// The cache (behind the manager's mutex).
pub(super) struct JwtCache {
    slots: HashMap<Key, Slot>,
    capacity: usize,
    tag: u64,
}

impl JwtCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            slots: HashMap::new(),
            capacity,
            tag: 0,
        }
    }

    /// Evicts expired tokens and abandoned requests (every caller gave
    /// up), then the tokens due for refresh first, until the cache fits
    /// `capacity`. Live requests are never evicted.
    fn evict_to(&mut self, now: SystemTime, capacity: usize) {
        if self.slots.len() <= capacity {
            return;
        }
        self.slots.retain(|_, slot| match slot {
            Slot::Ready { svid, .. } => svid.expires_at > now,
            Slot::Minting { request, .. } => request.upgrade().is_some(),
        });
        while self.slots.len() > capacity {
            let oldest = self
                .slots
                .iter()
                .filter_map(|(key, slot)| match slot {
                    Slot::Ready { refresh_at, .. } => Some((*refresh_at, key)),
                    Slot::Minting { .. } => None,
                })
                .min_by_key(|(at, _)| *at)
                .map(|(_, key)| key.clone());
            match oldest {
                Some(key) => {
                    self.slots.remove(&key);
                }
                None => break,
            }
        }
    }

    fn evict(&mut self, now: SystemTime) {
        self.evict_to(now, self.capacity);
    }

    /// Makes room for a new slot under `key` (none needed when it
    /// replaces one); false when the cache is full of live requests.
    fn make_room(&mut self, key: &Key, now: SystemTime) -> bool {
        if self.slots.contains_key(key) {
            return true;
        }
        self.evict_to(now, self.capacity.saturating_sub(1));
        self.slots.len() < self.capacity
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

fn cache(shared: &Shared) -> std::sync::MutexGuard<'_, JwtCache> {
    shared.jwt.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`crate::source::CredentialSource::jwt_svid`] for the manager.
pub(super) fn jwt_svid(
    shared: &Arc<Shared>,
    id: &SpiffeId,
    audiences: &[String],
) -> BoxFuture<'static, Result<JwtSvid, SourceError>> {
    let mut audiences = audiences.to_vec();
    audiences.sort();
    audiences.dedup();
    if let Err(e) = check_audiences(&audiences) {
        return Box::pin(async { Err(e) });
    }
    let key = (id.clone(), audiences);
    let now = shared.clock.now();
    let mut cache = cache(shared);
    let mut stale = None;
    match cache.slots.get(&key) {
        Some(Slot::Ready {
            svid, refresh_at, ..
        }) if now < *refresh_at => {
            shared.metrics.jwt("hit");
            let svid = svid.clone();
            return Box::pin(async move { Ok(svid) });
        }
        Some(Slot::Ready { svid, failures, .. }) if svid.expires_at > now => {
            stale = Some((svid.clone(), *failures))
        }
        Some(Slot::Minting { request, .. }) => {
            if let Some(request) = request.upgrade() {
                shared.metrics.jwt("coalesced");
                return Box::pin(request);
            }
        }
        _ => {}
    }
    if !cache.make_room(&key, now) {
        shared.metrics.jwt("error");
        return Box::pin(async {
            Err(SourceError::Unavailable(
                "too many different JWT-SVID requests in flight; retry later".into(),
            ))
        });
    }
    shared.metrics.jwt("miss");
    cache.tag += 1;
    let tag = cache.tag;
    let mint: Mint = Box::pin(mint(shared.clone(), key.clone(), tag, stale));
    let request = mint.shared();
    if let Some(weak) = request.downgrade() {
        cache
            .slots
            .insert(key, Slot::Minting { request: weak, tag });
    }
    Box::pin(request)
}

async fn mint(
    shared: Arc<Shared>,
    key: Key,
    tag: u64,
    stale: Option<(JwtSvid, u32)>,
) -> Result<JwtSvid, SourceError> {
    let (id, audiences) = key.clone();
    let answer = shared
        .signer
        .mint_jwt(&id, audiences.clone(), shared.settings.jwt_ttl)
        .await;
    let now = shared.clock.now();
    let outcome = match answer {
        Ok(mut minted) if minted.spiffe_id == id.to_string() && minted.expires_at > now => {
            let token = std::mem::take(&mut *minted.token);
            let svid = JwtSvid::new(id.clone(), audiences, minted.expires_at, token);
            if !kid_known(&shared, &svid) {
                // The worker rate-limits these refreshes.
                let _ = shared.commands.send(Command::RefreshBundle);
            }
            Ok(svid)
        }
        Ok(minted) => {
            shared.metrics.jwt("error");
            Err(SourceError::Unavailable(format!(
                "the CA minted an unusable JWT-SVID (for {}, expiring {:?})",
                minted.spiffe_id, minted.expires_at
            )))
        }
        Err(e) => {
            shared.metrics.jwt("error");
            shared.metrics.ca_error(e.label());
            Err(source_error(&e))
        }
    };
    let mut cache = cache(&shared);
    let mine = matches!(cache.slots.get(&key), Some(Slot::Minting { tag: t, .. }) if *t == tag);
    if !mine {
        return outcome;
    }
    match outcome {
        Ok(svid) => {
            let half = svid.expires_at.duration_since(now).unwrap_or_default() / 2;
            cache.slots.insert(
                key,
                Slot::Ready {
                    svid: svid.clone(),
                    refresh_at: now + half,
                    failures: 0,
                },
            );
            cache.evict(now);
            Ok(svid)
        }
        Err(e) => match stale.filter(|(s, _)| s.expires_at > now) {
            Some((svid, failures)) => {
                tracing::debug!(spiffe_id = %id, error = %e, "JWT-SVID refresh failed; serving the cached one");
                // Not again at every request while the CA is down: the
                // next attempt after a backoff, well before expiry.
                let failures = failures.saturating_add(1);
                let remaining = svid.expires_at.duration_since(now).unwrap_or_default();
                let settings = &shared.settings;
                let doubling = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
                let delay = settings
                    .backoff_initial
                    .saturating_mul(doubling)
                    .min(settings.backoff_max)
                    .min(remaining / 4);
                cache.slots.insert(
                    key,
                    Slot::Ready {
                        svid: svid.clone(),
                        refresh_at: now + delay,
                        failures,
                    },
                );
                Ok(svid)
            }
            None => {
                cache.slots.remove(&key);
                Err(e)
            }
        },
    }
}

/// The audiences of a request (sorted, deduplicated), within the CA's
/// bounds, so a request the CA would refuse costs no CA call and no slot.
fn check_audiences(audiences: &[String]) -> Result<(), SourceError> {
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(SourceError::InvalidArgument(
            "a JWT-SVID needs at least one non-empty audience".into(),
        ));
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(SourceError::InvalidArgument(format!(
            "{} audiences: at most {MAX_AUDIENCES} allowed",
            audiences.len()
        )));
    }
    if let Some(long) = audiences.iter().find(|a| a.len() > MAX_AUDIENCE_BYTES) {
        return Err(SourceError::InvalidArgument(format!(
            "an audience of {} bytes: at most {MAX_AUDIENCE_BYTES} allowed",
            long.len()
        )));
    }
    Ok(())
}

/// Whether the token's `kid` is among the JWT authorities known for its
/// trust domain (a token without a readable `kid` counts as known: there
/// is nothing to refresh for).
fn kid_known(shared: &Shared, svid: &JwtSvid) -> bool {
    let Some(kid) = kid_of(svid.expose_secret()) else {
        return true;
    };
    shared
        .bundles
        .borrow()
        .get(svid.spiffe_id.trust_domain())
        .is_some_and(|b| b.jwt_authorities().iter().any(|a| a.key_id() == kid))
}

/// The `kid` of a compact JWS's header.
pub(super) fn kid_of(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    if header.len() > MAX_HEADER_LEN {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&json).ok()?;
    value.get("kid")?.as_str().map(str::to_owned)
}

fn source_error(e: &CaClientError) -> SourceError {
    match e.code() {
        Some(tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => {
            SourceError::PermissionDenied(e.to_string())
        }
        Some(tonic::Code::InvalidArgument) => SourceError::InvalidArgument(e.to_string()),
        Some(tonic::Code::Unimplemented) => SourceError::Unavailable(
            "the CA does not mint JWT-SVIDs (no sigil.v1.IdentityService)".into(),
        ),
        _ => SourceError::Unavailable(e.to_string()),
    }
}
