//! [`PendingBySource`]: how many inbound connections each source address
//! has that are not through their handshake yet (sniffing, TLS), so one
//! source cannot hold every connection slot with connections that never
//! authenticate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Pending (pre-handshake) connections per source IP, capped.
#[derive(Debug, Clone)]
pub(super) struct PendingBySource {
    max: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PendingBySource {
    /// At most `max` pending connections per source.
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            counts: Arc::default(),
        }
    }

    /// Counts a new connection from `source` as pending until the guard
    /// drops; `None` when `source` already has `max` pending.
    pub(super) fn admit(&self, source: IpAddr) -> Option<PendingGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(source).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PendingGuard {
            source,
            counts: Arc::clone(&self.counts),
        })
    }
}

/// One pending connection; dropping it (handshake done, or the connection
/// ended) frees its place.
#[derive(Debug)]
pub(super) struct PendingGuard {
    source: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_is_capped_and_a_dropped_guard_frees_its_place() {
        let pending = PendingBySource::new(2);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let first = pending.admit(a).unwrap();
        let _second = pending.admit(a).unwrap();
        assert!(pending.admit(a).is_none(), "a third from the same source");
        assert!(pending.admit(b).is_some(), "other sources are not affected");
        drop(first);
        assert!(
            pending.admit(a).is_some(),
            "a finished handshake frees a place"
        );
    }
}
