//! [`WorkloadCallers`]: the socket servers' [`CallerIdentities`].

use std::sync::Arc;

use futures::future::BoxFuture;
use sigil_identity::SpiffeId;

use super::Registry;
use crate::attest::ProcAttestor;
use crate::peer::{AttestError, CallerIdentities, PeerInfo};

/// Maps socket callers to identities.
///
/// - [`fixed`](Self::fixed) (sidecar mode without an entries file): every
///   caller of the socket gets the one identity, without attestation. The
///   socket's file mode and directory are what restrict callers; no
///   `/proc` is read, so this works when the workload is in another pid
///   namespace (SO_PEERCRED then reports no pid).
/// - [`attested`](Self::attested) (node mode, or sidecar mode with an
///   entries file): the caller is attested and the registry decides.
#[derive(Debug, Clone)]
pub struct WorkloadCallers {
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Mode {
    Attested {
        attestor: Arc<ProcAttestor>,
        registry: Registry,
    },
    Fixed(SpiffeId),
}

impl WorkloadCallers {
    /// Every caller gets `id`.
    pub fn fixed(id: SpiffeId) -> Self {
        Self {
            mode: Mode::Fixed(id),
        }
    }

    /// Callers are attested by `attestor` and matched against `registry`;
    /// failures are counted in the registry's metrics.
    pub fn attested(attestor: ProcAttestor, registry: Registry) -> Self {
        Self {
            mode: Mode::Attested {
                attestor: Arc::new(attestor),
                registry,
            },
        }
    }
}

impl CallerIdentities for WorkloadCallers {
    fn identities(&self, peer: PeerInfo) -> BoxFuture<'static, Result<Vec<SpiffeId>, AttestError>> {
        let mode = self.mode.clone();
        Box::pin(async move {
            match mode {
                Mode::Fixed(id) => Ok(vec![id]),
                Mode::Attested { attestor, registry } => match attestor.attest(peer).await {
                    Ok(attestation) => {
                        let ids = registry.identities(&attestation);
                        tracing::debug!(
                            peer.pid = ?peer.pid,
                            peer.uid = peer.uid,
                            identities = ids.len(),
                            "caller attested"
                        );
                        Ok(ids)
                    }
                    Err(failure) => {
                        registry.metrics().attestation_failed(failure.reason);
                        tracing::debug!(
                            peer.pid = ?peer.pid,
                            peer.uid = peer.uid,
                            reason = failure.reason.as_str(),
                            error = %failure,
                            "caller attestation failed"
                        );
                        Err(failure.into())
                    }
                },
            }
        })
    }

    fn changed(&self) -> BoxFuture<'static, ()> {
        match &self.mode {
            Mode::Fixed(_) => Box::pin(futures::future::pending()),
            Mode::Attested { registry, .. } => {
                // A new receiver has seen the entries in force now; the
                // next applied reload wakes it. A registry that went away
                // (the agent is stopping) changes nothing any more.
                let mut entries = registry.subscribe();
                Box::pin(async move {
                    if entries.changed().await.is_err() {
                        futures::future::pending::<()>().await;
                    }
                })
            }
        }
    }
}
