//! [`BundleHandle`]: a shared, swappable [`BundleSet`] for verifiers.
//!
//! Roots rotate while connections are being accepted: the owner of the trust
//! bundle (the SDS client, the Workload API watcher) calls
//! [`BundleHandle::store`], and every verifier holding a clone of the handle
//! uses the new set from its next handshake on. A handshake reads one
//! snapshot ([`BundleHandle::load`]) and never sees a half-updated set.

use std::sync::{Arc, PoisonError, RwLock};

use crate::bundle::BundleSet;

/// A cheaply clonable, shared handle on the current [`BundleSet`].
#[derive(Debug, Clone, Default)]
pub struct BundleHandle(Arc<RwLock<Arc<BundleSet>>>);

impl BundleHandle {
    /// A handle holding `bundles`.
    pub fn new(bundles: BundleSet) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(bundles))))
    }

    /// A snapshot of the current bundle set.
    pub fn load(&self) -> Arc<BundleSet> {
        // The lock guards a single `Arc` that is only ever replaced whole, so
        // a writer that panicked cannot have left it half-written: a
        // poisoned lock still holds a consistent value.
        let guard = self.0.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Replaces the bundle set; handshakes that already took a snapshot
    /// finish with the old one.
    pub fn store(&self, bundles: BundleSet) {
        let bundles = Arc::new(bundles);
        let mut guard = self.0.write().unwrap_or_else(PoisonError::into_inner);
        *guard = bundles;
    }
}

impl From<BundleSet> for BundleHandle {
    fn from(bundles: BundleSet) -> Self {
        Self::new(bundles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::TrustBundle;
    use crate::spiffe_id::TrustDomain;

    fn one(name: &str) -> BundleSet {
        BundleSet::from(TrustBundle::new(TrustDomain::new(name).unwrap()))
    }

    #[test]
    fn store_replaces_the_set_and_old_snapshots_stay_intact() {
        let handle = BundleHandle::new(one("a.example"));
        let clone = handle.clone();
        let before = handle.load();
        clone.store(one("b.example"));
        assert_eq!(*before, one("a.example"));
        assert_eq!(*handle.load(), one("b.example"));
    }

    #[test]
    fn a_poisoned_lock_still_loads_and_stores() {
        let handle = BundleHandle::new(one("a.example"));
        let inner = Arc::clone(&handle.0);
        let _ = std::thread::spawn(move || {
            let _guard = inner.write().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(handle.0.is_poisoned());
        assert_eq!(*handle.load(), one("a.example"));
        handle.store(one("b.example"));
        assert_eq!(*handle.load(), one("b.example"));
    }
}
