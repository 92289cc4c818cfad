//! The CA's own TLS serving certificate: issued at bind, then renewed by a
//! background task without a restart.
//!
//! ```text
//! issue_serving ─▶ tls::store_serving ─▶ wait ─┬─ half the lifetime passed ───▶ renew
//!                                               ├─ the authority changed ───────▶ renew at once
//!                                               └─ stop ────────────────────────▶ return
//!            a renewal that fails is retried after RETRY_AFTER_FAILURE
//! ```
//!
//! New handshakes get the new certificate; established connections keep
//! the one they negotiated. Waiting uses tokio's clock, so the schedule is
//! tested with paused time (`renew/tests.rs`), which a network test cannot
//! do: `server.server_cert_ttl` is at least a minute in production and
//! paused time does not mix with real sockets.

use std::sync::Arc;
use std::time::Duration;

use sigil_identity::CredentialResolver;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::ServeError;
use super::state::Shared;
use super::tls;
use crate::config::CaConfig;
use crate::issue::{CertIssuer, ServingCert, Ttl};

/// How long after a failed renewal the next attempt is made (not a whole
/// half-life: the current certificate may be close to expiry).
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Issues a serving certificate for `server.dns_names` (IP addresses among
/// them as IP SANs), valid for
/// `server.server_cert_ttl` (cut at the authority's notAfter).
pub(crate) fn issue_serving(
    issuer: &CertIssuer,
    config: &CaConfig,
) -> Result<ServingCert, ServeError> {
    let ttl = Ttl::from_duration(config.server.server_cert_ttl)
        .map_err(|e| ServeError::component("server.server_cert_ttl", e))?;
    issuer
        .issue_serving_cert(&config.server.dns_names, ttl, OffsetDateTime::now_utc())
        .map_err(|e| {
            ServeError::component(
                "cannot issue the serving certificate (server.dns_names, server.server_cert_ttl)",
                e,
            )
        })
}

/// Renews the serving certificate at half its lifetime, and at once when
/// the authority changes (so the chain always leads to a current root);
/// after a failure, retries in [`RETRY_AFTER_FAILURE`]. The future returns
/// when `stop` is cancelled.
///
/// Authority changes are watched from the call, not from the task's first
/// poll: a change made between spawning the task and its first run is not
/// missed.
pub(crate) fn renew_serving_cert(
    shared: Arc<Shared>,
    resolver: Arc<CredentialResolver>,
    config: CaConfig,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let changed = shared.authority_changed.subscribe();
    renew_loop(shared, changed, resolver, config, stop)
}

async fn renew_loop(
    shared: Arc<Shared>,
    mut changed: watch::Receiver<u64>,
    resolver: Arc<CredentialResolver>,
    config: CaConfig,
    stop: CancellationToken,
) {
    let half = config.server.server_cert_ttl / 2;
    let mut wait = half;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            result = changed.changed() => if result.is_err() { return },
        }
        let issuer = shared.issuer.load_full();
        let renewed = issue_serving(&issuer, &config).and_then(|cert| {
            tls::store_serving(&resolver, &cert)
                .map(|()| cert.not_after)
                .map_err(ServeError::from)
        });
        wait = match renewed {
            Ok(not_after) => {
                tracing::info!(%not_after, "serving certificate renewed");
                half
            }
            Err(error) => {
                tracing::error!(%error, retry_in = ?RETRY_AFTER_FAILURE, "cannot renew the serving certificate");
                RETRY_AFTER_FAILURE
            }
        };
    }
}

#[cfg(test)]
pub(crate) mod tests;
