//! Workload attestation: who is the process at the other end of a socket?
//!
//! ```text
//! PeerInfo {pid, uid, gid, start_time}  (SO_PEERCRED + /proc at accept, from the socket listener)
//!   -> /proc/<pid>/stat               same start time as at accept, or refused (pid reused)
//!   -> /proc/<pid>/stat, status       start time, uids, gids (must agree with SO_PEERCRED)
//!   -> /proc/<pid>/exe                unix:path
//!   -> /proc/<pid>/cgroup -> PodLookup (Kubernetes mode) k8s:ns, k8s:sa, k8s:pod-*, k8s:container-name
//!   -> /proc/<pid>/stat, status again: same start time, uids, gids, or the caller is refused
//! ```
//!
//! Two checks stop a recycled pid from inheriting an identity: the start
//! time recorded when the connection was accepted must still be the pid's
//! (a connection that outlived its creator is refused), and the second
//! read must agree with the first (if the process exits while it is being
//! examined and another takes its pid, the start time differs or the entry
//! is gone). Failures map to `Unavailable` for clients (they
//! retry); the selectors feed the [`registry`](crate::registry).
//!
//! What is not done: the executable's hash (`unix:sha256`) is not computed,
//! and a process whose `exe` link the agent cannot read (another user's,
//! without CAP_SYS_PTRACE) simply gets no `unix:path` selector, so entries
//! that require one do not match it.

mod cgroup;
mod error;
mod k8s;
mod procfs;
mod selector;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

pub use cgroup::{PodContainer, parse_cgroup};
pub use error::{AttestFailure, FailureReason};
pub use k8s::{
    DEFAULT_API_TIMEOUT, DEFAULT_MAX_CACHED_PODS, DEFAULT_MISS_REFRESH_INTERVAL,
    DEFAULT_POD_CACHE_TTL, KubePodLookup, LookupError, PodInfo, PodLookup, PodLookupSettings,
};
pub use selector::{SELECTOR_TYPES, Selector, SelectorError};

pub(crate) use procfs::process_start_time;

use crate::peer::PeerInfo;
use procfs::{ProcEntry, ProcIdentity};

/// Default proc root.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// Settings of [`ProcAttestor`].
#[derive(Debug, Clone)]
pub struct AttestSettings {
    /// Where process entries are read ([`DEFAULT_PROC_ROOT`]; a fake tree
    /// in tests; the host's `/proc` mounted elsewhere in a container).
    pub proc_root: PathBuf,
}

impl Default for AttestSettings {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from(DEFAULT_PROC_ROOT),
        }
    }
}

/// The pod a caller runs in (Kubernetes mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// Its namespace.
    pub namespace: String,
    /// Its service account.
    pub service_account: String,
}

/// What attestation found out about a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// Every selector of the caller, sorted.
    pub selectors: BTreeSet<Selector>,
    /// Its pod, in Kubernetes mode when it runs in one.
    pub pod: Option<PodIdentity>,
}

/// Attests callers from `/proc`, and in Kubernetes mode through a
/// [`PodLookup`].
#[derive(Clone)]
pub struct ProcAttestor {
    settings: AttestSettings,
    pods: Option<Arc<dyn PodLookup>>,
}

impl std::fmt::Debug for ProcAttestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcAttestor")
            .field("settings", &self.settings)
            .field("kubernetes", &self.pods.is_some())
            .finish()
    }
}

impl ProcAttestor {
    /// Unix selectors only.
    pub fn new(settings: AttestSettings) -> Self {
        Self {
            settings,
            pods: None,
        }
    }

    /// Unix selectors, and Kubernetes selectors for processes in a pod,
    /// resolved through `pods`.
    pub fn kubernetes(settings: AttestSettings, pods: Arc<dyn PodLookup>) -> Self {
        Self {
            settings,
            pods: Some(pods),
        }
    }

    /// Attests `peer`: its selectors, or why it cannot be identified.
    pub async fn attest(&self, peer: PeerInfo) -> Result<Attestation, AttestFailure> {
        let pid = peer.pid.filter(|pid| *pid > 0).ok_or_else(|| {
            AttestFailure::new(
                FailureReason::NoPid,
                "the kernel reported no pid for the caller",
            )
        })?;
        let entry = ProcEntry::new(&self.settings.proc_root, pid);
        let before = entry.identity().await?;
        // The process must be the one that opened the connection: a
        // connection can outlive its creator (passed on, or inherited by a
        // child) and the pid then be reused by an unrelated process.
        if peer.start_time != Some(before.start_time) {
            return Err(AttestFailure::new(
                FailureReason::Changed,
                match peer.start_time {
                    Some(_) => format!(
                        "pid {pid} is no longer the process that opened the connection (the pid was reused)"
                    ),
                    None => {
                        format!("pid {pid}: the start time of the connection's process is unknown")
                    }
                },
            ));
        }
        if before.effective_uid() != peer.uid || before.effective_gid() != peer.gid {
            return Err(AttestFailure::new(
                FailureReason::CredentialsMismatch,
                format!(
                    "pid {pid}: /proc says uid {} gid {}, SO_PEERCRED said uid {} gid {}",
                    before.effective_uid(),
                    before.effective_gid(),
                    peer.uid,
                    peer.gid
                ),
            ));
        }
        let mut selectors = unix_selectors(&before);
        if let Some(exe) = entry.exe().await {
            // A replaced binary shows as `<path> (deleted)`; that path is
            // not the file on disk, so it gets no selector.
            let path = exe.to_string_lossy();
            if !path.ends_with(" (deleted)") {
                selectors.insert(Selector::new("unix:path", path));
            }
        }
        let pod = match &self.pods {
            Some(pods) => {
                self.pod_selectors(&entry, pid, pods.as_ref(), &mut selectors)
                    .await?
            }
            None => None,
        };
        let after = entry
            .identity()
            .await
            .map_err(|failure| match failure.reason {
                FailureReason::ProcessGone => AttestFailure::new(
                    FailureReason::Changed,
                    format!("pid {pid} exited while it was attested"),
                ),
                _ => failure,
            })?;
        if after != before {
            return Err(AttestFailure::new(
                FailureReason::Changed,
                format!("pid {pid} changed while it was attested (recycled, or new credentials)"),
            ));
        }
        Ok(Attestation { selectors, pod })
    }

    async fn pod_selectors(
        &self,
        entry: &ProcEntry,
        pid: i32,
        pods: &dyn PodLookup,
        selectors: &mut BTreeSet<Selector>,
    ) -> Result<Option<PodIdentity>, AttestFailure> {
        let cgroup = entry.cgroup().await?;
        let found = parse_cgroup(&cgroup).map_err(|e| {
            AttestFailure::new(FailureReason::ProcUnreadable, format!("pid {pid}: {e}"))
        })?;
        let Some(found) = found else {
            return Ok(None);
        };
        let pod = pods
            .pod(&found.pod_uid)
            .await
            .map_err(|e| AttestFailure::new(FailureReason::Kubernetes, e.to_string()))?
            .ok_or_else(|| {
                AttestFailure::new(
                    FailureReason::Kubernetes,
                    format!("pid {pid}: pod {} is not known on this node", found.pod_uid),
                )
            })?;
        selectors.insert(Selector::new("k8s:ns", &pod.namespace));
        selectors.insert(Selector::new("k8s:sa", &pod.service_account));
        selectors.insert(Selector::new("k8s:pod-uid", &pod.uid));
        selectors.insert(Selector::new("k8s:pod-name", &pod.name));
        for (key, value) in &pod.labels {
            selectors.insert(Selector::new("k8s:pod-label", format!("{key}:{value}")));
        }
        if let Some(id) = &found.container_id
            && let Some((name, _)) = pod.containers.iter().find(|(_, c)| c == id)
        {
            selectors.insert(Selector::new("k8s:container-name", name));
        }
        Ok(Some(PodIdentity {
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
        }))
    }
}

fn unix_selectors(identity: &ProcIdentity) -> BTreeSet<Selector> {
    let mut selectors = BTreeSet::new();
    selectors.insert(Selector::new("unix:uid", identity.effective_uid()));
    selectors.insert(Selector::new("unix:gid", identity.effective_gid()));
    for gid in &identity.groups {
        selectors.insert(Selector::new("unix:supplementary-gid", gid));
    }
    selectors
}
