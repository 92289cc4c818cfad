//! What the worker does with a CA answer: publish the certificate and
//! schedule its renewal and expiry, or back off after a failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sigil_identity::SpiffeId;
use tokio::time::Instant;

use super::Worker;
use super::timers::Kind;
use crate::manager::issue::{Failure, Issued, scaled, wall};
use crate::source::{IssuedSvid, SvidState};

/// The shortest remaining lifetime of a certificate the manager serves.
const MIN_LIFETIME: Duration = Duration::from_secs(1);

impl Worker {
    pub(super) fn finished(&mut self, id: SpiffeId, result: Result<Issued, Failure>) {
        let shared = self.shared.clone();
        let now = shared.clock.now();
        let mut entries = shared.entries();
        let Some(entry) = entries.get_mut(&id) else {
            return; // dropped meanwhile
        };
        entry.busy = false;
        let generation = self.next_seq();
        entry.generation = generation;
        // A certificate with (almost) nothing left to live is refused like
        // a failed request: served, it would expire and be renewed at once,
        // again and again (a CA at its own notAfter issues such).
        let result = result.and_then(|issued| {
            let left = wall(issued.svid.not_after())
                .duration_since(now)
                .unwrap_or_default();
            if left < MIN_LIFETIME {
                Err(Failure {
                    reason: "too_short",
                    code: None,
                    message: format!(
                        "the CA issued a certificate valid for only {left:?} more (less than {MIN_LIFETIME:?})"
                    ),
                })
            } else {
                Ok(issued)
            }
        });
        let issued = match result {
            Ok(issued) => issued,
            Err(failure) => {
                entry.failures = entry.failures.saturating_add(1);
                let message: Arc<str> = failure.message.into();
                if entry.failures == 1 {
                    tracing::warn!(spiffe_id = %id, error = %message, "certificate request failed; retrying with backoff");
                } else {
                    tracing::debug!(spiffe_id = %id, error = %message, failures = entry.failures, "certificate request failed again");
                }
                entry.last_error = Some(message.clone());
                entry.renew_at = None;
                shared.metrics.failure(failure.reason);
                if let Some(code) = failure.code {
                    shared.metrics.ca_error(code);
                }
                if entry.not_after.is_none() {
                    entry.tx.send_replace(SvidState::Unavailable(message));
                }
                let delay = self.backoff(entry.failures);
                drop(entries);
                self.push(Instant::now() + delay, id, Kind::Renew { generation });
                return;
            }
        };
        let not_after = wall(issued.svid.not_after());
        // Counted from arrival, not notBefore (backdated by the CA).
        let lifetime = not_after.duration_since(now).unwrap_or_default();
        // Floored at backoff_initial: never a burst of renewals of short
        // certificates. A certificate shorter than twice that is renewed
        // at half its lifetime rather than after expiring.
        let mut floor = shared.settings.backoff_initial.min(lifetime / 2);
        // A renewal that expires no later than the certificate it replaces
        // (the CA caps lifetimes, e.g. at its own notAfter) is served (a
        // fresh key, a valid certificate), but the next renewals are paced
        // by backoff, so a shrinking lifetime cannot become a renewal loop.
        // The backoff may fall after notAfter: renewing sooner would only
        // get the same notAfter again; the expiry event then withdraws the
        // certificate and asks at once.
        if entry.not_after.is_some_and(|current| not_after <= current) {
            entry.capped = entry.capped.saturating_add(1);
            shared.metrics.failure("capped");
            if entry.capped == 1 {
                tracing::warn!(
                    spiffe_id = %id,
                    not_after = %humantime::format_rfc3339_seconds(not_after),
                    "the CA issued a certificate expiring no later than the previous one \
                     (its lifetime is capped, e.g. by the CA's own certificate); \
                     renewing with backoff"
                );
            }
            floor = floor.max(self.backoff(entry.capped));
        } else {
            entry.capped = 0;
        }
        let renew_at = now + self.renew_delay(lifetime).max(floor);
        let td = id.trust_domain().clone();
        let (bundle, bundle_changed) = match self.roots.get(&td) {
            Some(known) if **known == issued.bundle => (known.clone(), false),
            _ => (Arc::new(issued.bundle), true),
        };
        if entry.issued > 0 {
            entry.rotations += 1;
            shared.metrics.rotations.inc();
        }
        entry.issued += 1;
        entry.version += 1;
        entry.failures = 0;
        entry.last_error = None;
        entry.not_after = Some(not_after);
        entry.renew_at = Some(renew_at);
        entry.tx.send_replace(SvidState::Ready(IssuedSvid {
            svid: Arc::new(issued.svid),
            bundle: bundle.clone(),
            version: entry.version,
        }));
        tracing::debug!(spiffe_id = %id, ?not_after, "certificate issued");
        if bundle_changed {
            // A root rotation: every other identity of the trust domain
            // gets the new bundle (and a new version).
            for (other, e) in entries.iter_mut() {
                if other.trust_domain() != &td || other == &id {
                    continue;
                }
                let version = e.version + 1;
                let changed = e.tx.send_if_modified(|state| match state {
                    SvidState::Ready(issued) => {
                        issued.bundle = bundle.clone();
                        issued.version = version;
                        true
                    }
                    _ => false,
                });
                if changed {
                    e.version = version;
                }
            }
        }
        drop(entries);
        shared.ca_answered.store(true, Ordering::Relaxed);
        let renew = self.instant_of(renew_at);
        let expire = self.instant_of(not_after);
        self.push(renew, id.clone(), Kind::Renew { generation });
        self.push(expire, id, Kind::Expire { not_after });
        if bundle_changed {
            self.roots.insert(td, bundle);
            self.publish_bundles();
        }
        if self.last_fetch.is_none() {
            self.start_fetch();
        }
    }

    /// `renew_fraction` of `lifetime` minus up to `jitter_fraction` of it.
    pub(super) fn renew_delay(&self, lifetime: Duration) -> Duration {
        let s = &self.shared.settings;
        let jitter = scaled(lifetime, s.jitter_fraction * rand::random::<f64>());
        scaled(lifetime, s.renew_fraction).saturating_sub(jitter)
    }

    /// Delay before retry number `failures` (1-based): the initial delay
    /// doubled per failure, capped, drawn from [delay/2, delay].
    pub(super) fn backoff(&self, failures: u32) -> Duration {
        let s = &self.shared.settings;
        let doubling = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        let delay = s
            .backoff_initial
            .saturating_mul(doubling)
            .min(s.backoff_max);
        delay / 2 + scaled(delay / 2, rand::random::<f64>())
    }
}
