//! Registration entries: which SPIFFE IDs a caller with given selectors
//! may hold, from a TOML file that is hot reloaded, and
//! [`WorkloadCallers`], the [`CallerIdentities`](crate::peer::CallerIdentities)
//! the socket servers use (attestation + entries).
//!
//! Reloading polls the file every `poll_interval` and compares its content
//! with what was last read. A changed file is validated as a whole; a file
//! that fails (unreadable, bad TOML, bad SPIFFE ID, another trust domain,
//! unknown selector type, duplicate entry) is refused with an error naming
//! the entry and field, logged once at `warn`, counted in
//! `registration_reload_errors_total`, and the previous entries stay in
//! force. At startup there is no previous set: [`Registry::load`] fails.
//!
//! Kubernetes mode ([`DefaultEntry::Kubernetes`]): a caller in a pod that
//! matches **no** explicit entry gets `spiffe://<td>/ns/<ns>/sa/<sa>`, as
//! Istio does. Explicit entries take precedence: when one matches, the
//! default is not added, so an operator can give a pod a narrower or a
//! different identity. A host process (no pod) gets no default.
//!
//! Order: identities are returned in file order (the first matching entry
//! is the default SVID for SDS `default` and the Workload API).

mod callers;
mod entries;
mod error;
mod metrics;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sigil_identity::{SpiffeId, TrustDomain};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use callers::WorkloadCallers;
pub use entries::{Entry, MAX_ENTRIES, MAX_SELECTORS_PER_ENTRY, RegistrationEntries};
pub use error::RegistryError;
pub use metrics::{ReasonLabel, RegistryMetrics};

use crate::attest::Attestation;

/// Default interval between two reads of the entries file.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Largest entries file read.
pub const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// What a caller in a pod gets when no explicit entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultEntry {
    /// `spiffe://<td>/ns/<ns>/sa/<sa>` (Kubernetes mode).
    Kubernetes,
    /// Nothing: only explicit entries give identities.
    #[default]
    None,
}

/// Settings of [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// The entries file; `None`: no explicit entries (only the default
    /// entry, if any).
    pub path: Option<PathBuf>,
    /// The agent's trust domain: every entry's ID must be in it.
    pub trust_domain: TrustDomain,
    /// How often the file is re-read ([`DEFAULT_POLL_INTERVAL`]).
    pub poll_interval: Duration,
    /// The default entry ([`DefaultEntry::None`]).
    pub default_entry: DefaultEntry,
}

impl RegistrySettings {
    /// No file, no default entry, in `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            path: None,
            trust_domain,
            poll_interval: DEFAULT_POLL_INTERVAL,
            default_entry: DefaultEntry::None,
        }
    }
}

/// What a reload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new set is in force, with this many entries.
    Applied(usize),
    /// The file is as last read (valid or not); nothing was done.
    Unchanged,
}

/// What was last read, so an unchanged file is neither re-parsed nor
/// re-reported.
#[derive(Debug, PartialEq, Eq)]
enum LastRead {
    Content(Vec<u8>),
    Error(RegistryError),
}

#[derive(Debug)]
struct Inner {
    settings: RegistrySettings,
    metrics: RegistryMetrics,
    current: watch::Sender<Arc<RegistrationEntries>>,
    last: Mutex<Option<LastRead>>,
}

/// The registration entries in force; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// Reads and validates the entries file (if any). Fails when it is
    /// invalid: at startup there is no previous set to keep.
    pub fn load(
        settings: RegistrySettings,
        metrics: RegistryMetrics,
    ) -> Result<Self, RegistryError> {
        let (entries, last) = match &settings.path {
            Some(path) => {
                let content = read_file(path)?;
                let entries = parse_content(&content, &settings.trust_domain)?;
                (entries, Some(LastRead::Content(content)))
            }
            None => (RegistrationEntries::default(), None),
        };
        metrics.entries.set(to_i64(entries.len()));
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                metrics,
                current: watch::Sender::new(Arc::new(entries)),
                last: Mutex::new(last),
            }),
        })
    }

    /// The entries in force.
    pub fn entries(&self) -> Arc<RegistrationEntries> {
        Arc::clone(&self.inner.current.borrow())
    }

    /// Notified whenever a new set comes into force.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RegistrationEntries>> {
        self.inner.current.subscribe()
    }

    /// The metrics this registry reports to.
    pub fn metrics(&self) -> &RegistryMetrics {
        &self.inner.metrics
    }

    /// The identities a caller with `attestation` may hold, in a stable
    /// order: explicit entries in file order, else the default entry.
    pub fn identities(&self, attestation: &Attestation) -> Vec<SpiffeId> {
        let mut ids = self.entries().matching(&attestation.selectors);
        if ids.is_empty()
            && self.inner.settings.default_entry == DefaultEntry::Kubernetes
            && let Some(pod) = &attestation.pod
        {
            match SpiffeId::kubernetes(
                &self.inner.settings.trust_domain,
                &pod.namespace,
                &pod.service_account,
            ) {
                Ok(id) => ids.push(id),
                Err(error) => tracing::warn!(
                    k8s.namespace = %pod.namespace,
                    k8s.service_account = %pod.service_account,
                    %error,
                    "no default identity for the pod"
                ),
            }
        }
        ids
    }

    /// Re-reads the file now. A changed, valid file comes into force; a
    /// changed, invalid one is refused (counted; the previous set stays);
    /// an unchanged one (valid or not) is left alone.
    pub async fn reload(&self) -> Result<ReloadOutcome, RegistryError> {
        let Some(path) = self.inner.settings.path.clone() else {
            return Ok(ReloadOutcome::Unchanged);
        };
        let read = tokio::task::spawn_blocking(move || read_file(&path))
            .await
            .map_err(|e| RegistryError::Read {
                path: self.inner.settings.path.clone().unwrap_or_default(),
                reason: format!("BUG: the read task failed: {e}"),
            })
            .and_then(|read| read);
        let seen = match &read {
            Ok(content) => LastRead::Content(content.clone()),
            Err(error) => LastRead::Error(error.clone()),
        };
        {
            let mut last = self
                .inner
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.as_ref() == Some(&seen) {
                return Ok(ReloadOutcome::Unchanged);
            }
            *last = Some(seen);
        }
        let parsed =
            read.and_then(|content| parse_content(&content, &self.inner.settings.trust_domain));
        match parsed {
            Ok(entries) => {
                let count = entries.len();
                self.inner.metrics.entries.set(to_i64(count));
                self.inner.current.send_replace(Arc::new(entries));
                Ok(ReloadOutcome::Applied(count))
            }
            Err(error) => {
                self.inner.metrics.reload_errors.inc();
                Err(error)
            }
        }
    }

    /// Re-reads the file every `poll_interval` until `cancel` fires.
    pub async fn watch(self, cancel: CancellationToken) {
        if self.inner.settings.path.is_none() {
            return;
        }
        let mut interval = tokio::time::interval(self.inner.settings.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the file was read by `load`.
        interval.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = interval.tick() => {}
            }
            match self.reload().await {
                Ok(ReloadOutcome::Applied(entries)) => {
                    tracing::info!(entries, "registration entries reloaded");
                }
                Ok(ReloadOutcome::Unchanged) => {}
                Err(error) => tracing::warn!(
                    %error,
                    "registration entries refused; the previous entries stay in force"
                ),
            }
        }
    }

    /// Spawns [`watch`](Self::watch) into `tracker`.
    pub fn spawn_watcher(&self, tracker: &TaskTracker, cancel: CancellationToken) {
        tracker.spawn(self.clone().watch(cancel));
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, RegistryError> {
    let read_error = |e: std::io::Error| RegistryError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_FILE_SIZE {
        return Err(RegistryError::TooLarge {
            path: path.to_owned(),
            size,
            max: MAX_FILE_SIZE,
        });
    }
    std::fs::read(path).map_err(read_error)
}

fn parse_content(
    content: &[u8],
    trust_domain: &TrustDomain,
) -> Result<RegistrationEntries, RegistryError> {
    let text = std::str::from_utf8(content)
        .map_err(|e| RegistryError::Syntax(format!("the file is not UTF-8: {e}")))?;
    RegistrationEntries::parse(text, trust_domain)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
