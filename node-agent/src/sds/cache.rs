//! [`EncodedDefaults`]: each identity's `default` secret encoded once per
//! certificate, not once per stream, so a rotation seen by a thousand
//! streams costs one PEM and protobuf encoding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::google::protobuf::Any;
use sigil_identity::{SpiffeId, X509Svid};
use zeroize::Zeroize as _;

use super::resource::{self, DefaultKey};

/// The encoded `default` of every identity currently served.
///
/// An entry is keyed by a weak reference to its certificate: it never
/// keeps a certificate (or its key) alive, and entries whose certificate
/// is gone are dropped (their bytes zeroized) whenever a new one is
/// encoded.
#[derive(Default)]
pub(super) struct EncodedDefaults {
    entries: Mutex<HashMap<SpiffeId, Entry>>,
}

struct Entry {
    svid: DefaultKey,
    any: Any,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.any.value.zeroize();
    }
}

impl EncodedDefaults {
    /// The `default` secret of `svid`, encoded at most once.
    pub(super) fn get(&self, svid: &Arc<X509Svid>) -> Any {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get(svid.spiffe_id())
            && entry.svid.is(svid)
        {
            return entry.any.clone();
        }
        let any = resource::tls_certificate(svid);
        entries.retain(|_, e| e.svid.is_alive());
        entries.insert(
            svid.spiffe_id().clone(),
            Entry {
                svid: DefaultKey::of(svid),
                any: any.clone(),
            },
        );
        any
    }

    /// Identities with an entry (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
