//! Hot reload of a plug-in CA directory (for example a mounted Kubernetes
//! Secret, which changes by an atomic symlink swap).
//!
//! Polls the directory's CA files every `reload_interval`; when their
//! contents change, loads and validates the new set off the request path
//! and swaps it in atomically. Requests in flight finish with the issuer
//! they loaded. An invalid new set is refused and logged, and the old
//! authority keeps serving.
//!
//! The first fingerprint is taken before the first load (at bind), so a
//! change landing between the load and the watcher's first poll is seen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sigil_identity::TrustDomain;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::metrics::ResultLabel;
use super::state::Shared;
use crate::authority::source::{
    self, CM_CA_CRT, CM_TLS_CRT, CM_TLS_KEY, ISTIO_CA_CERT, ISTIO_CA_KEY, ISTIO_CERT_CHAIN,
    ISTIO_ROOT_CERT,
};
use crate::issue::{CertIssuer, IssuancePolicy};

/// A digest of a plug-in directory's CA files (absent files count as
/// empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint(Vec<u8>);

impl Fingerprint {
    /// Digests the CA files in `dir` as they are now.
    pub(crate) fn of(dir: &Path) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for name in [
            ISTIO_CA_CERT,
            ISTIO_CA_KEY,
            ISTIO_CERT_CHAIN,
            ISTIO_ROOT_CERT,
            CM_TLS_CRT,
            CM_TLS_KEY,
            CM_CA_CRT,
        ] {
            // The key file is among them: its bytes are wiped after hashing.
            let contents =
                zeroize::Zeroizing::new(std::fs::read(dir.join(name)).unwrap_or_default());
            ctx.update(name.as_bytes());
            ctx.update(&(contents.len() as u64).to_be_bytes());
            ctx.update(&contents);
        }
        Self(ctx.finish().as_ref().to_vec())
    }
}

/// Watches `dir` until `shutdown`. `loaded` is the fingerprint taken just
/// *before* the authority in force was read (see `authority::load`), not
/// one taken now: a change that landed between that load and this task's
/// start differs from it and is reloaded at the first poll.
pub(crate) async fn watch_dir(
    dir: PathBuf,
    trust_domain: TrustDomain,
    policy: IssuancePolicy,
    interval: Duration,
    loaded: Fingerprint,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut last = loaded;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let current = {
            let dir = dir.clone();
            match tokio::task::spawn_blocking(move || Fingerprint::of(&dir)).await {
                Ok(current) => current,
                Err(error) => {
                    tracing::error!(%error, "CA directory fingerprint task failed");
                    continue;
                }
            }
        };
        if current == last {
            continue;
        }
        last = current;
        let loaded = {
            let (dir, td) = (dir.clone(), trust_domain.clone());
            tokio::task::spawn_blocking(move || {
                source::load_dir(&dir, &td, OffsetDateTime::now_utc())
            })
            .await
        };
        match loaded {
            Ok(Ok(authority)) => {
                tracing::info!(
                    dir = %dir.display(),
                    key = authority.key_algorithm(),
                    not_after = %authority.not_after(),
                    "plug-in CA reloaded"
                );
                report(&authority, &shared.metrics);
                shared.install(CertIssuer::new(Arc::new(authority), policy.clone()));
                shared
                    .metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
            }
            Ok(Err(error)) => {
                tracing::error!(dir = %dir.display(), %error, "new CA material refused; the previous CA keeps serving");
                shared
                    .metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "rejected" })
                    .inc();
            }
            Err(error) => {
                tracing::error!(%error, "CA reload task failed; the previous CA keeps serving");
            }
        }
    }
}

/// Sets the metrics that describe the loaded authority's material.
pub(crate) fn report(authority: &crate::authority::Authority, metrics: &super::metrics::Metrics) {
    let insecure = !authority.key_file_warnings().is_empty();
    metrics.plugin_key_insecure_mode.set(i64::from(insecure));
}

#[cfg(test)]
mod tests;
