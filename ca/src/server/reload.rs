//! Hot reload of a plug-in CA directory (for example a mounted Kubernetes
//! Secret, which changes by an atomic symlink swap).
//!
//! Polls the directory's CA files every `reload_interval`; when their
//! contents change, loads and validates the new set off the request path
//! and swaps it in atomically. Requests in flight finish with the issuer
//! they loaded. An invalid new set is refused and logged, and the old
//! authority keeps serving.

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

/// A digest of the CA files' contents (absent files count as empty).
pub(crate) fn fingerprint(dir: &Path) -> Vec<u8> {
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
        let contents = std::fs::read(dir.join(name)).unwrap_or_default();
        ctx.update(name.as_bytes());
        ctx.update(&(contents.len() as u64).to_be_bytes());
        ctx.update(&contents);
    }
    ctx.finish().as_ref().to_vec()
}

/// Watches `dir` until `shutdown`.
pub(crate) async fn watch_dir(
    dir: PathBuf,
    trust_domain: TrustDomain,
    policy: IssuancePolicy,
    interval: Duration,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut last = fingerprint(&dir);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let current = fingerprint(&dir);
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
