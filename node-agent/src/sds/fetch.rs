//! `FetchSecrets`: one request, one response with every named resource.
//!
//! A resource that is not there yet (the first certificate is being
//! issued, or the CA is unreachable and the last one expired) is waited
//! for up to [`SdsSettings::fetch_timeout`](super::SdsSettings::fetch_timeout),
//! then the call fails with `Unavailable`: a stale or expired certificate
//! is never answered.

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::Shared;
use super::error::SdsError;
use super::resource::{DEFAULT_RESOURCE, Names, ROOTCA_RESOURCE};
use super::view::{Batch, CallerView};
use crate::source::SvidState;

impl Shared {
    /// Answers `request` for the caller `view` describes.
    pub(super) async fn fetch(
        &self,
        mut view: CallerView,
        request: &DiscoveryRequest,
    ) -> Result<DiscoveryResponse, SdsError> {
        let names = Names::parse(
            &request.type_url,
            &request.resource_names,
            self.settings.max_resource_names,
        )?;
        if names.is_empty() {
            return Err(SdsError::NoResourceNames);
        }
        let deadline = tokio::time::sleep(self.settings.fetch_timeout);
        tokio::pin!(deadline);
        loop {
            let (batch, missing) = self.collect(&mut view, names);
            if let Some(missing) = missing {
                tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return Err(SdsError::ShuttingDown),
                    () = &mut deadline => return Err(missing),
                    changed = view.svid.changed() => changed.map_err(|_| SdsError::ShuttingDown)?,
                    changed = view.bundles.changed() => changed.map_err(|_| SdsError::ShuttingDown)?,
                }
                continue;
            }
            return Ok(self.response(batch.resources));
        }
    }

    /// The requested resources available now, and what the call would
    /// fail with if one is missing.
    fn collect(&self, view: &mut CallerView, names: Names) -> (Batch, Option<SdsError>) {
        let now = view.snapshot();
        let mut batch = Batch::default();
        let mut missing = None;
        if names.default {
            match &now.svid {
                SvidState::Ready(issued) => batch.push_default(&self.encoded, &issued.svid),
                SvidState::Pending => {
                    missing = Some(SdsError::NotReady {
                        resource: DEFAULT_RESOURCE,
                        reason: format!("the certificate of {} is being issued", view.id),
                    });
                }
                SvidState::Unavailable(reason) => {
                    missing = Some(SdsError::NotReady {
                        resource: DEFAULT_RESOURCE,
                        reason: reason.to_string(),
                    });
                }
            }
        }
        if names.root_ca {
            match view.root_pem(&now) {
                Some(pem) => batch.push_root(pem),
                None => {
                    missing = missing.or(Some(SdsError::NotReady {
                        resource: ROOTCA_RESOURCE,
                        reason: format!("no trust bundle for {} yet", view.id.trust_domain()),
                    }));
                }
            }
        }
        (batch, missing)
    }
}
