//! The merged trust bundles: X.509 roots from the CA's answers plus the
//! JWT authorities of `FetchBundle`.

use std::sync::Arc;

use sigil_identity::{BundleSet, TrustBundle, TrustDomain};
use tokio::time::Instant;

use super::Worker;
use crate::ca_client::CaClientError;

impl Worker {
    pub(super) fn start_fetch(&mut self) {
        if self.fetch.is_some() {
            return;
        }
        let td = self
            .shared
            .settings
            .trust_domain
            .clone()
            .or_else(|| self.roots.keys().next().cloned());
        let Some(td) = td else {
            return; // fetched after the first certificate names the trust domain
        };
        self.last_fetch = Some(Instant::now());
        let fetch = self.shared.signer.fetch_bundle();
        self.fetch = Some(Box::pin(async move { (td, fetch.await) }));
    }

    pub(super) fn fetched(&mut self, td: TrustDomain, result: Result<String, CaClientError>) {
        match result {
            Ok(json) => match TrustBundle::from_spiffe_json(td, json.as_bytes()) {
                Ok(bundle) => self.fetched = Some(bundle),
                Err(e) => tracing::warn!(error = %e, "the CA's SPIFFE bundle is unusable"),
            },
            Err(e) if e.code() == Some(tonic::Code::Unimplemented) => {
                tracing::debug!("the CA serves no bundle service: no JWT authorities");
                self.fetched = None;
            }
            Err(e) => {
                self.shared.metrics.ca_error(e.label());
                tracing::warn!(error = %e, "cannot fetch the CA's bundle");
            }
        }
        self.publish_bundles();
    }

    /// Publishes the merged bundles when they changed.
    pub(super) fn publish_bundles(&self) {
        let mut set = BundleSet::new();
        for (td, roots) in &self.roots {
            let mut bundle = TrustBundle::clone(roots);
            if let Some(fetched) = self.fetched.as_ref().filter(|f| f.trust_domain() == td) {
                for authority in fetched.jwt_authorities() {
                    bundle.upsert_jwt_authority(authority.clone());
                }
            }
            set.insert(bundle);
        }
        if let Some(fetched) = &self.fetched
            && !self.roots.contains_key(fetched.trust_domain())
        {
            set.insert(fetched.clone());
        }
        self.shared.bundles.send_if_modified(|current| {
            if **current == set {
                return false;
            }
            *current = Arc::new(set);
            true
        });
    }
}
