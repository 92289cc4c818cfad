//! The certificate manager: one entry per identity served on the node,
//! issued and rotated by ONE background task driving ONE timer queue, and
//! exposed to the socket servers as a [`CredentialSource`].
//!
//! ```text
//!  watch_x509(id) ──▶ entries ◀──────────── worker (one task) ──── Signer ──▶ CA
//!    (interest)        │ watch::Sender      │ BinaryHeap of deadlines      (CaSigner: CaClient
//!                      ▼                    │ FuturesUnordered, at most     + token, Node/Sidecar)
//!                 SvidState ◀── publish ────┘ `max_in_flight` CA requests
//!  jwt_svid ──▶ JWT cache (per identity + audience set, coalesced) ──▶ Signer::mint_jwt
//!  watch_bundles ◀── X.509 roots from responses + JWT keys from FetchBundle
//! ```
//!
//! Per identity:
//! - every certificate gets a fresh key ([`crate::keys`]), generated on
//!   the node; keys are dropped (zeroized) with the certificate they
//!   belong to;
//! - renewal at `renew_fraction` of the lifetime minus a random jitter of
//!   up to `jitter_fraction` of it. The lifetime is counted from the moment
//!   the answer arrives to notAfter, not from notBefore: CAs backdate
//!   notBefore for clock skew (Sigil by 60 s), which would make a short
//!   certificate look half-spent on arrival;
//! - on failure, capped exponential backoff with jitter
//!   (`backoff_initial` doubling up to `backoff_max`, each delay drawn
//!   from [delay/2, delay]); the valid certificate keeps being served;
//! - renewal never sooner than `backoff_initial` after issuance (unless
//!   the certificate would expire first); a renewal whose notAfter is not
//!   later than the served one's (a CA capping lifetimes) is a failure
//!   with backoff, the served certificate stays;
//! - at notAfter without a successor the state becomes
//!   [`SvidState::Unavailable`] and a new certificate is requested at
//!   once; a [`SvidState::Ready`] value never holds an expired
//!   certificate (an expiry event is scheduled for every certificate, and
//!   `watch_x509` re-checks on every call);
//! - an identity nobody watches (no live receiver) and nobody asked for
//!   during `idle_drop` is removed, dropping its key.
//!
//! Scheduling runs on tokio's clock; certificate validity on the injected
//! [`Clock`]. Every `clock_check` the worker compares how far both moved;
//! when the wall clock moved more than [`CLOCK_JUMP_TOLERANCE`] beyond the
//! tokio clock (a jump, e.g. after a suspend), every deadline is recomputed
//! from the wall clock: renewals already due run at once, certificates
//! already expired become `Unavailable` (and are renewed at once); the
//! timer heap is rebuilt, so it stays bounded by the identities held. A
//! jump is therefore acted on within `clock_check` (default 5 s).
//!
//! The trust bundle of an SVID is the last element of the CA's answer,
//! parsed as the bundle of the SVID's trust domain (X.509 only, so a JWT
//! key refresh does not re-push every SVID). [`CredentialSource::watch_bundles`]
//! merges those roots with the JWT authorities of the CA's `FetchBundle`,
//! fetched every `bundle_refresh` and when a minted JWT-SVID carries an
//! unknown `kid`; a CA without that service gives bundles without JWT
//! keys, and `jwt_svid` answers [`SourceError::Unavailable`].

mod clock;
mod issue;
mod jwt;
mod metrics;
mod signer;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use sigil_identity::{BundleSet, SpiffeId, TrustDomain};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::clock::{Clock, SystemClock};
pub use self::metrics::{CodeLabel, ManagerMetrics, ReasonLabel, ResultLabel};
pub use self::signer::{CaSigner, Signer, SignerMode};
use self::worker::{Command, Entry};
use crate::keys::KeyAlgorithm;
use crate::source::{CredentialSource, IssuedSvid, JwtSvid, SourceError, SvidState};

/// Default renewal point: half the lifetime (SPIRE, Istio).
pub const DEFAULT_RENEW_FRACTION: f64 = 0.5;
/// Default jitter: renewal up to 10 % of the lifetime earlier.
pub const DEFAULT_JITTER_FRACTION: f64 = 0.1;
/// Default first retry delay after a failure: 1 s.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Default retry delay cap: 60 s (the agent config's default). Short
/// enough that an identity recovers within a minute of the CA's return
/// (ztunnel caps at 150 s); 10,000 identities retrying against a down CA
/// send at most ~170 requests/s, which Sigil's CA absorbs.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Default idle time after which an identity nobody watches is dropped:
/// 10 min (a workload that restarts within that keeps its certificate).
pub const DEFAULT_IDLE_DROP: Duration = Duration::from_secs(600);
/// Default bound on concurrent CA requests (certificates).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
/// Default bound on cached JWT-SVIDs (identity × audience set).
pub const DEFAULT_JWT_CACHE_SIZE: usize = 4096;
/// Default period of `FetchBundle` (JWT authorities): 5 min.
pub const DEFAULT_BUNDLE_REFRESH: Duration = Duration::from_secs(300);
/// Default period of the wall-clock jump check: 5 s.
pub const DEFAULT_CLOCK_CHECK: Duration = Duration::from_secs(5);
/// A wall clock that moved this much more (or less) than tokio's clock
/// between two checks has jumped.
pub const CLOCK_JUMP_TOLERANCE: Duration = Duration::from_secs(2);
/// Most audiences in one JWT-SVID request (the CA's bound: more are
/// refused with [`SourceError::InvalidArgument`] without a CA call).
pub const MAX_AUDIENCES: usize = 16;
/// Longest audience, in bytes (the CA's bound).
pub const MAX_AUDIENCE_BYTES: usize = 256;
/// Minimum time between two `FetchBundle` calls triggered by unknown
/// JWT key IDs.
pub const MIN_BUNDLE_REFETCH: Duration = Duration::from_secs(5);

/// The manager's settings (the agent's config maps onto these).
#[derive(Clone, Debug)]
pub struct ManagerSettings {
    /// Algorithm of the generated keys. Default ECDSA P-256.
    pub key_algorithm: KeyAlgorithm,
    /// The trust domain whose `FetchBundle` JWT keys are merged in; `None`:
    /// the trust domain of the first issued SVID.
    pub trust_domain: Option<TrustDomain>,
    /// Requested certificate lifetime; `None`: the CA's default.
    pub requested_ttl: Option<Duration>,
    /// Renew at this fraction of the lifetime, in (0, 1]. Default
    /// [`DEFAULT_RENEW_FRACTION`].
    pub renew_fraction: f64,
    /// Jitter (earlier renewal) up to this fraction of the lifetime, in
    /// [0, renew_fraction). Default [`DEFAULT_JITTER_FRACTION`].
    pub jitter_fraction: f64,
    /// First retry delay. Default [`DEFAULT_BACKOFF_INITIAL`].
    pub backoff_initial: Duration,
    /// Retry delay cap. Default [`DEFAULT_BACKOFF_MAX`].
    pub backoff_max: Duration,
    /// Drop identities unwatched this long. Default [`DEFAULT_IDLE_DROP`].
    pub idle_drop: Duration,
    /// Concurrent CA requests. Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Requested JWT-SVID lifetime; `None`: the CA's default.
    pub jwt_ttl: Option<Duration>,
    /// Cached JWT-SVIDs. Default [`DEFAULT_JWT_CACHE_SIZE`].
    pub jwt_cache_size: usize,
    /// `FetchBundle` period. Default [`DEFAULT_BUNDLE_REFRESH`].
    pub bundle_refresh: Duration,
    /// Wall-clock jump check period. Default [`DEFAULT_CLOCK_CHECK`].
    pub clock_check: Duration,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            key_algorithm: KeyAlgorithm::default(),
            trust_domain: None,
            requested_ttl: None,
            renew_fraction: DEFAULT_RENEW_FRACTION,
            jitter_fraction: DEFAULT_JITTER_FRACTION,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            idle_drop: DEFAULT_IDLE_DROP,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            jwt_ttl: None,
            jwt_cache_size: DEFAULT_JWT_CACHE_SIZE,
            bundle_refresh: DEFAULT_BUNDLE_REFRESH,
            clock_check: DEFAULT_CLOCK_CHECK,
        }
    }
}

impl ManagerSettings {
    /// Checks the bounds; the error names the field and the value.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.renew_fraction > 0.0 && self.renew_fraction <= 1.0) {
            return Err(format!(
                "renew_fraction = {}: must be in (0, 1]",
                self.renew_fraction
            ));
        }
        if !(self.jitter_fraction >= 0.0 && self.jitter_fraction < self.renew_fraction) {
            return Err(format!(
                "jitter_fraction = {}: must be in [0, renew_fraction = {})",
                self.jitter_fraction, self.renew_fraction
            ));
        }
        for (field, value) in [
            ("backoff_initial", self.backoff_initial),
            ("backoff_max", self.backoff_max),
            ("idle_drop", self.idle_drop),
            ("bundle_refresh", self.bundle_refresh),
            ("clock_check", self.clock_check),
        ] {
            if value.is_zero() {
                return Err(format!("{field} = 0: must be positive"));
            }
        }
        if self.backoff_max < self.backoff_initial {
            return Err(format!(
                "backoff_max = {:?}: must be at least backoff_initial = {:?}",
                self.backoff_max, self.backoff_initial
            ));
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight = 0: must be at least 1".into());
        }
        if self.jwt_cache_size == 0 {
            return Err("jwt_cache_size = 0: must be at least 1".into());
        }
        Ok(())
    }
}

/// One identity as `sigil agent status` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityStatus {
    /// The identity.
    pub spiffe_id: SpiffeId,
    /// notAfter of the certificate served now (`None`: none valid).
    pub not_after: Option<SystemTime>,
    /// Renewals (certificates that replaced a previous one).
    pub rotations: u64,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
}

/// What the worker and the handles share.
pub(crate) struct Shared {
    settings: ManagerSettings,
    signer: Arc<dyn Signer>,
    clock: Arc<dyn Clock>,
    metrics: ManagerMetrics,
    entries: Mutex<HashMap<SpiffeId, Entry>>,
    commands: mpsc::UnboundedSender<Command>,
    bundles: watch::Sender<Arc<BundleSet>>,
    jwt: Mutex<jwt::JwtCache>,
    ca_answered: AtomicBool,
    /// The worker's timer heap size (tests: it stays bounded).
    #[cfg(test)]
    timers_held: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The certificate manager; cheap to clone (a handle on shared state).
#[derive(Clone)]
pub struct CertManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("identities", &self.shared.entries().len())
            .finish_non_exhaustive()
    }
}

impl CertManager {
    /// Starts the manager's one background task in `tracker`; it stops
    /// when `shutdown` is cancelled (in-flight CA requests are abandoned,
    /// keys dropped). Out-of-range settings are clamped (validate them
    /// with [`ManagerSettings::validate`] first to report them).
    pub fn start(
        settings: ManagerSettings,
        signer: Arc<dyn Signer>,
        clock: Arc<dyn Clock>,
        metrics: ManagerMetrics,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let settings = worker::clamp(settings);
        let (commands, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            jwt: Mutex::new(jwt::JwtCache::new(settings.jwt_cache_size)),
            settings,
            signer,
            clock,
            metrics,
            entries: Mutex::default(),
            commands,
            bundles: watch::Sender::new(Arc::new(BundleSet::new())),
            ca_answered: AtomicBool::new(false),
            #[cfg(test)]
            timers_held: std::sync::atomic::AtomicUsize::new(0),
        });
        tracker.spawn(worker::run(shared.clone(), receiver, shutdown));
        Self { shared }
    }

    /// Every identity held, ordered by SPIFFE ID.
    pub fn status(&self) -> Vec<IdentityStatus> {
        let mut all: Vec<IdentityStatus> = self
            .shared
            .entries()
            .iter()
            .map(|(id, e)| IdentityStatus {
                spiffe_id: id.clone(),
                not_after: e.not_after,
                rotations: e.rotations,
                last_error: e.last_error.as_deref().map(str::to_owned),
            })
            .collect();
        all.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
        all
    }

    /// Whether no identity is failing without a valid certificate (every
    /// identity is served, or still on its first attempt). For `/readyz`.
    pub fn ready(&self) -> bool {
        !self
            .shared
            .entries()
            .values()
            .any(|e| e.not_after.is_none() && e.failures > 0)
    }

    /// Brings the gauges (identities held, seconds to the earliest expiry)
    /// up to date; the admin listener calls it before every scrape.
    pub fn refresh_metrics(&self) {
        worker::update_gauges(&self.shared, self.shared.clock.now());
    }

    /// Whether the CA has issued a certificate at least once since start.
    pub fn ca_answered(&self) -> bool {
        self.shared.ca_answered.load(Ordering::Relaxed)
    }

    /// Registers interest in `id` and waits for its first `Ready` state
    /// (cold-start measurements). `None` if the manager stopped first.
    pub async fn wait_ready(&self, id: &SpiffeId) -> Option<IssuedSvid> {
        let mut rx = self.watch_x509(id);
        let state = rx
            .wait_for(|s| matches!(s, SvidState::Ready(_)))
            .await
            .ok()?;
        match &*state {
            SvidState::Ready(issued) => Some(issued.clone()),
            _ => None,
        }
    }
}

impl CredentialSource for CertManager {
    fn watch_x509(&self, id: &SpiffeId) -> watch::Receiver<SvidState> {
        let now = self.shared.clock.now();
        let mut entries = self.shared.entries();
        if let Some(entry) = entries.get_mut(id) {
            entry.last_asked = tokio::time::Instant::now();
            // The invariant holds even between the wall clock passing
            // notAfter and the worker's expiry event.
            if entry.expire_if_due(now) {
                self.shared.metrics.failure("expired");
                // Renewed at once by the worker (unless a request is under
                // way), not at the next timer on tokio's clock.
                let _ = self.shared.commands.send(Command::Renew(id.clone()));
            }
            return entry.tx.subscribe();
        }
        let entry = Entry::new();
        let receiver = entry.tx.subscribe();
        entries.insert(id.clone(), entry);
        drop(entries);
        // The worker lives as long as `shared` unless shut down; then
        // nothing issues any more and the state stays Pending.
        let _ = self.shared.commands.send(Command::Issue(id.clone()));
        receiver
    }

    fn watch_bundles(&self) -> watch::Receiver<Arc<BundleSet>> {
        self.shared.bundles.subscribe()
    }

    fn jwt_svid(
        &self,
        id: &SpiffeId,
        audiences: &[String],
    ) -> BoxFuture<'static, Result<JwtSvid, SourceError>> {
        jwt::jwt_svid(&self.shared, id, audiences)
    }
}
