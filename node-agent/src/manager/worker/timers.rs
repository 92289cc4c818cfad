//! The timer queue: renewal and expiry deadlines on tokio's clock, the
//! wall-clock jump check that recomputes them, and the idle sweep.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::{Duration, SystemTime};

use sigil_identity::SpiffeId;
use tokio::time::Instant;

use super::{Entry, Worker, update_gauges};
use crate::manager::CLOCK_JUMP_TOLERANCE;

#[derive(Debug)]
pub(super) enum Kind {
    Renew { generation: u64 },
    Expire { not_after: SystemTime },
}

#[derive(Debug)]
pub(super) struct Timer {
    pub(super) at: Instant,
    seq: u64,
    id: SpiffeId,
    kind: Kind,
}

// Reversed on (at, seq): `BinaryHeap` pops the earliest deadline first.
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl Eq for Timer {}

impl Worker {
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The tokio instant at which the wall clock reads `at` (now if past).
    pub(super) fn instant_of(&self, at: SystemTime) -> Instant {
        let now = Instant::now();
        let ahead = at
            .duration_since(self.shared.clock.now())
            .unwrap_or_default();
        now.checked_add(ahead)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
    }

    pub(super) fn push(&mut self, at: Instant, id: SpiffeId, kind: Kind) {
        let seq = self.next_seq();
        self.timers.push(Timer { at, seq, id, kind });
    }

    /// Marks `entry` for a request at once (unless one is queued or
    /// running): a new generation (its pending renewal timer goes stale)
    /// and a place in the queue.
    pub(super) fn renew_now(&mut self, id: &SpiffeId, entry: &mut Entry) {
        if entry.busy {
            return;
        }
        entry.generation = self.next_seq();
        entry.busy = true;
        self.queue.push_back(id.clone());
    }

    pub(super) fn fire_due(&mut self) {
        let now = Instant::now();
        let shared = self.shared.clone();
        let wall_now = shared.clock.now();
        let mut again = Vec::new();
        {
            let mut entries = shared.entries();
            while self.timers.peek().is_some_and(|t| t.at <= now) {
                let Some(timer) = self.timers.pop() else {
                    break;
                };
                let Some(entry) = entries.get_mut(&timer.id) else {
                    continue;
                };
                match timer.kind {
                    Kind::Renew { generation } => {
                        if entry.generation == generation && !entry.busy {
                            entry.busy = true;
                            self.queue.push_back(timer.id);
                        }
                    }
                    Kind::Expire { not_after } => {
                        if entry.not_after != Some(not_after) {
                            continue; // a newer certificate, with its own timer
                        }
                        if entry.expire_if_due(wall_now) {
                            shared.metrics.failure("expired");
                            tracing::warn!(spiffe_id = %timer.id, "certificate expired without a successor");
                            self.renew_now(&timer.id, entry);
                        } else {
                            // The tokio clock ran ahead of the wall clock.
                            again.push((timer.id, not_after));
                        }
                    }
                }
            }
        }
        for (id, not_after) in again {
            let at = self
                .instant_of(not_after)
                .max(now + Duration::from_millis(1));
            self.push(at, id, Kind::Expire { not_after });
        }
    }

    pub(super) fn check_clock(&mut self) {
        let (t0, w0) = self.reference;
        let t1 = Instant::now();
        let w1 = self.shared.clock.now();
        self.reference = (t1, w1);
        let mono = t1.duration_since(t0).as_secs_f64();
        let wall = match w1.duration_since(w0) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        let drift = wall - mono;
        if drift.abs() > CLOCK_JUMP_TOLERANCE.as_secs_f64() {
            tracing::info!(
                drift_seconds = drift,
                "wall clock jumped; recomputing every deadline"
            );
            self.reschedule_all(w1);
        }
        update_gauges(&self.shared, w1);
    }

    /// After a clock jump: expired certificates withdrawn (and renewed at
    /// once), renewal and expiry timers recomputed from the wall clock (due
    /// ones run now). The heap is rebuilt: only the backoff retries (delays
    /// on tokio's clock, still right) are kept, so repeated jumps leave at
    /// most two timers per identity instead of adding two each time.
    pub(super) fn reschedule_all(&mut self, now: SystemTime) {
        let shared = self.shared.clone();
        let mut entries = shared.entries();
        let mut fresh = Vec::new();
        for (id, entry) in entries.iter_mut() {
            if entry.expire_if_due(now) {
                shared.metrics.failure("expired");
                self.renew_now(id, entry);
                continue;
            }
            if let Some(not_after) = entry.not_after {
                fresh.push((id.clone(), not_after, Kind::Expire { not_after }));
            }
            if let (false, Some(renew_at)) = (entry.busy, entry.renew_at) {
                let generation = self.next_seq();
                entry.generation = generation;
                fresh.push((id.clone(), renew_at, Kind::Renew { generation }));
            }
        }
        let kept: Vec<Timer> = std::mem::take(&mut self.timers)
            .into_vec()
            .into_iter()
            .filter(|timer| match timer.kind {
                Kind::Renew { generation } => entries
                    .get(&timer.id)
                    .is_some_and(|e| e.generation == generation && !e.busy && e.renew_at.is_none()),
                Kind::Expire { .. } => false,
            })
            .collect();
        drop(entries);
        self.timers = BinaryHeap::from(kept);
        for (id, at, kind) in fresh {
            let at = self.instant_of(at);
            self.push(at, id, kind);
        }
    }

    /// Drops identities nobody watched for `idle_drop`.
    pub(super) fn sweep(&mut self) {
        let now = Instant::now();
        let idle = self.shared.settings.idle_drop;
        let mut entries = self.shared.entries();
        entries.retain(|id, entry| {
            if entry.tx.receiver_count() > 0 {
                entry.last_asked = now;
            }
            let keep = entry.busy || now.duration_since(entry.last_asked) < idle;
            if !keep {
                tracing::debug!(spiffe_id = %id, "identity unused; dropped with its key");
            }
            keep
        });
        drop(entries);
        update_gauges(&self.shared, self.shared.clock.now());
    }
}
