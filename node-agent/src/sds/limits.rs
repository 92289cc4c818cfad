//! [`StreamSlot`]: one of the bounded number of open streams, node-wide
//! ([`SdsSettings::max_streams`](super::SdsSettings::max_streams)) and per
//! identity ([`SdsSettings::max_streams_per_identity`](super::SdsSettings::max_streams_per_identity)),
//! so one workload cannot take every stream of the node.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use sigil_identity::SpiffeId;

use super::Shared;
use super::error::SdsError;

/// Holds a stream slot; dropping it frees the slot (and the identity's).
pub(crate) struct StreamSlot {
    shared: Arc<Shared>,
    identity: Option<SpiffeId>,
}

impl StreamSlot {
    /// Takes a node-wide slot, or fails with `TooManyStreams`.
    pub(super) fn acquire(shared: &Arc<Shared>) -> Result<Self, SdsError> {
        let limit = shared.settings.max_streams;
        shared
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n.wrapping_add(1))
            })
            .map_err(|_| SdsError::TooManyStreams { limit })?;
        shared.metrics.streams_open.inc();
        Ok(Self {
            shared: shared.clone(),
            identity: None,
        })
    }

    /// Counts the slot against `id` too, or fails with
    /// `TooManyIdentityStreams` (the node-wide slot is freed on drop).
    pub(super) fn bind(&mut self, id: &SpiffeId) -> Result<(), SdsError> {
        let limit = self.shared.settings.max_streams_per_identity;
        let mut counts = self
            .shared
            .per_identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = counts.get(id).copied().unwrap_or(0);
        if count >= limit {
            return Err(SdsError::TooManyIdentityStreams {
                id: id.to_string(),
                limit,
            });
        }
        counts.insert(id.clone(), count.saturating_add(1));
        self.identity = Some(id.clone());
        Ok(())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(id) = self.identity.take() {
            let mut counts = self
                .shared
                .per_identity
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&id);
                }
            }
        }
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
        self.shared.metrics.streams_open.dec();
    }
}
