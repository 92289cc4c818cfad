//! The manager's one background task: a timer queue of renewal and expiry
//! deadlines, the queue of identities waiting for a CA request, at most
//! `max_in_flight` requests polled inside this same task, the periodic
//! wall-clock jump check, the idle sweep and the bundle refresh.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use sigil_identity::{BundleSet, SpiffeId, TrustBundle, TrustDomain};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::issue::{Failure, Issued, Outcome, issue, scaled, wall};
use super::{
    CLOCK_JUMP_TOLERANCE, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_BUNDLE_REFRESH,
    DEFAULT_CLOCK_CHECK, DEFAULT_IDLE_DROP, DEFAULT_JITTER_FRACTION, DEFAULT_RENEW_FRACTION,
    MIN_BUNDLE_REFETCH, ManagerSettings, Shared,
};
use crate::ca_client::CaClientError;
use crate::source::{IssuedSvid, SvidState};

/// What the handles ask of the worker.
#[derive(Debug)]
pub(crate) enum Command {
    /// A new identity was registered: issue its first certificate.
    Issue(SpiffeId),
    /// A JWT-SVID carried an unknown key ID: fetch the bundle again.
    RefreshBundle,
}

/// One identity's state. The certificate and key live only in `tx`'s
/// value; dropping the entry drops them (the key zeroizes).
pub(crate) struct Entry {
    pub(super) tx: watch::Sender<SvidState>,
    /// The last `watch_x509` call, or the last sweep that saw a watcher.
    pub(super) last_asked: Instant,
    /// notAfter of the valid certificate in `tx`, if any.
    pub(super) not_after: Option<SystemTime>,
    pub(super) rotations: u64,
    /// Consecutive failures.
    pub(super) failures: u32,
    pub(super) last_error: Option<Arc<str>>,
    /// When the valid certificate is due for renewal (`None` while
    /// retrying after a failure, or with no certificate).
    renew_at: Option<SystemTime>,
    /// Tag of the one live renewal timer; older timers are ignored.
    generation: u64,
    /// Queued for, or waiting on, a CA request.
    busy: bool,
    issued: u64,
    version: u64,
}

impl Entry {
    /// A new identity, queued for its first request.
    pub(super) fn new() -> Self {
        Self {
            tx: watch::Sender::new(SvidState::Pending),
            last_asked: Instant::now(),
            not_after: None,
            rotations: 0,
            failures: 0,
            last_error: None,
            renew_at: None,
            generation: 0,
            busy: true,
            issued: 0,
            version: 0,
        }
    }

    /// Withdraws the certificate if it expired by `now`; whether it did.
    pub(super) fn expire_if_due(&mut self, now: SystemTime) -> bool {
        match self.not_after {
            Some(not_after) if not_after <= now => {
                self.not_after = None;
                self.renew_at = None;
                let reason = match &self.last_error {
                    Some(e) => format!("the certificate expired without a successor: {e}"),
                    None => "the certificate expired without a successor".to_owned(),
                };
                self.tx.send_replace(SvidState::Unavailable(reason.into()));
                true
            }
            _ => false,
        }
    }
}

/// Settings with out-of-range values replaced by the defaults.
pub(super) fn clamp(mut s: ManagerSettings) -> ManagerSettings {
    if !(s.renew_fraction > 0.0 && s.renew_fraction <= 1.0) {
        s.renew_fraction = DEFAULT_RENEW_FRACTION;
    }
    if !(s.jitter_fraction >= 0.0 && s.jitter_fraction < s.renew_fraction) {
        s.jitter_fraction = DEFAULT_JITTER_FRACTION.min(s.renew_fraction / 2.0);
    }
    let positive = |d: Duration, default: Duration| if d.is_zero() { default } else { d };
    s.backoff_initial = positive(s.backoff_initial, DEFAULT_BACKOFF_INITIAL);
    s.backoff_max = positive(s.backoff_max, DEFAULT_BACKOFF_MAX).max(s.backoff_initial);
    s.idle_drop = positive(s.idle_drop, DEFAULT_IDLE_DROP);
    s.bundle_refresh = positive(s.bundle_refresh, DEFAULT_BUNDLE_REFRESH);
    s.clock_check = positive(s.clock_check, DEFAULT_CLOCK_CHECK);
    s.max_in_flight = s.max_in_flight.max(1);
    s.jwt_cache_size = s.jwt_cache_size.max(1);
    s
}

// === timers ===

#[derive(Debug)]
enum Kind {
    Renew { generation: u64 },
    Expire { not_after: SystemTime },
}

#[derive(Debug)]
struct Timer {
    at: Instant,
    seq: u64,
    id: SpiffeId,
    kind: Kind,
}

// Reversed on (at, seq): `BinaryHeap` pops the earliest deadline first.
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl Eq for Timer {}

// === the worker ===

struct Worker {
    shared: Arc<Shared>,
    timers: BinaryHeap<Timer>,
    seq: u64,
    queue: VecDeque<SpiffeId>,
    in_flight: FuturesUnordered<BoxFuture<'static, Outcome>>,
    /// X.509 bundles from the CA's answers, per trust domain.
    roots: HashMap<TrustDomain, Arc<TrustBundle>>,
    /// The last `FetchBundle` answer (`None`: none, or no such service).
    fetched: Option<TrustBundle>,
    fetch: Option<BoxFuture<'static, (TrustDomain, Result<String, CaClientError>)>>,
    last_fetch: Option<Instant>,
    /// (tokio, wall) at the last clock check.
    reference: (Instant, SystemTime),
}

/// The task: runs until `shutdown` (in-flight requests are abandoned).
pub(super) async fn run(
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
) {
    let settings = shared.settings.clone();
    let sweep_period =
        (settings.idle_drop / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut clock_check =
        tokio::time::interval_at(Instant::now() + settings.clock_check, settings.clock_check);
    let mut sweep = tokio::time::interval_at(Instant::now() + sweep_period, sweep_period);
    let mut refresh = tokio::time::interval(settings.bundle_refresh);
    for timer in [&mut clock_check, &mut sweep, &mut refresh] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut worker = Worker {
        reference: (Instant::now(), shared.clock.now()),
        shared,
        timers: BinaryHeap::new(),
        seq: 0,
        queue: VecDeque::new(),
        in_flight: FuturesUnordered::new(),
        roots: HashMap::new(),
        fetched: None,
        fetch: None,
        last_fetch: None,
    };
    loop {
        worker.start_queued();
        let next = worker.timers.peek().map(|t| t.at);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(command) = commands.recv() => worker.command(command),
            Some((id, result)) = worker.in_flight.next(), if !worker.in_flight.is_empty() => {
                worker.finished(id, result);
            }
            (td, result) = poll_fetch(&mut worker.fetch), if worker.fetch.is_some() => {
                worker.fetch = None;
                worker.fetched(td, result);
            }
            () = sleep_until(next), if next.is_some() => worker.fire_due(),
            _ = clock_check.tick() => worker.check_clock(),
            _ = sweep.tick() => worker.sweep(),
            _ = refresh.tick() => worker.start_fetch(),
        }
    }
    tracing::debug!("certificate manager stopped");
}

async fn poll_fetch<T>(fetch: &mut Option<BoxFuture<'static, T>>) -> T {
    match fetch {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Worker {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The tokio instant at which the wall clock reads `at` (now if past).
    fn instant_of(&self, at: SystemTime) -> Instant {
        let now = Instant::now();
        let ahead = at
            .duration_since(self.shared.clock.now())
            .unwrap_or_default();
        now.checked_add(ahead)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
    }

    fn push(&mut self, at: Instant, id: SpiffeId, kind: Kind) {
        let seq = self.next_seq();
        self.timers.push(Timer { at, seq, id, kind });
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Issue(id) => {
                if self.shared.entries().contains_key(&id) {
                    self.queue.push_back(id);
                }
            }
            Command::RefreshBundle => {
                let recent = self
                    .last_fetch
                    .is_some_and(|t| t.elapsed() < MIN_BUNDLE_REFETCH);
                if !recent {
                    self.start_fetch();
                }
            }
        }
    }

    fn start_queued(&mut self) {
        while self.in_flight.len() < self.shared.settings.max_in_flight
            && let Some(id) = self.queue.pop_front()
        {
            if self.shared.entries().contains_key(&id) {
                self.in_flight
                    .push(Box::pin(issue(self.shared.clone(), id)));
            }
        }
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        let wall_now = self.shared.clock.now();
        let mut again = Vec::new();
        {
            let mut entries = self.shared.entries();
            while self.timers.peek().is_some_and(|t| t.at <= now) {
                let Some(timer) = self.timers.pop() else {
                    break;
                };
                let Some(entry) = entries.get_mut(&timer.id) else {
                    continue;
                };
                match timer.kind {
                    Kind::Renew { generation } => {
                        if entry.generation == generation && !entry.busy {
                            entry.busy = true;
                            self.queue.push_back(timer.id);
                        }
                    }
                    Kind::Expire { not_after } => {
                        if entry.not_after != Some(not_after) {
                            continue; // a newer certificate, with its own timer
                        }
                        if entry.expire_if_due(wall_now) {
                            self.shared.metrics.failure("expired");
                            tracing::warn!(spiffe_id = %timer.id, "certificate expired without a successor");
                        } else {
                            // The tokio clock ran ahead of the wall clock.
                            again.push((timer.id, not_after));
                        }
                    }
                }
            }
        }
        for (id, not_after) in again {
            let at = self
                .instant_of(not_after)
                .max(now + Duration::from_millis(1));
            self.push(at, id, Kind::Expire { not_after });
        }
    }

    fn finished(&mut self, id: SpiffeId, result: Result<Issued, Failure>) {
        let shared = self.shared.clone();
        let now = shared.clock.now();
        let mut entries = shared.entries();
        let Some(entry) = entries.get_mut(&id) else {
            return; // dropped meanwhile
        };
        entry.busy = false;
        let generation = self.next_seq();
        entry.generation = generation;
        let issued = match result {
            Ok(issued) => issued,
            Err(failure) => {
                entry.failures = entry.failures.saturating_add(1);
                let message: Arc<str> = failure.message.into();
                if entry.failures == 1 {
                    tracing::warn!(spiffe_id = %id, error = %message, "certificate request failed; retrying with backoff");
                } else {
                    tracing::debug!(spiffe_id = %id, error = %message, failures = entry.failures, "certificate request failed again");
                }
                entry.last_error = Some(message.clone());
                entry.renew_at = None;
                shared.metrics.failure(failure.reason);
                if let Some(code) = failure.code {
                    shared.metrics.ca_error(code);
                }
                if entry.not_after.is_none() {
                    entry.tx.send_replace(SvidState::Unavailable(message));
                }
                let delay = self.backoff(entry.failures);
                drop(entries);
                self.push(Instant::now() + delay, id, Kind::Renew { generation });
                return;
            }
        };
        let not_after = wall(issued.svid.not_after());
        // Counted from arrival, not notBefore (backdated by the CA).
        let lifetime = not_after.duration_since(now).unwrap_or_default();
        let renew_at = now + self.renew_delay(lifetime);
        let td = id.trust_domain().clone();
        let (bundle, bundle_changed) = match self.roots.get(&td) {
            Some(known) if **known == issued.bundle => (known.clone(), false),
            _ => (Arc::new(issued.bundle), true),
        };
        if entry.issued > 0 {
            entry.rotations += 1;
            shared.metrics.rotations.inc();
        }
        entry.issued += 1;
        entry.version += 1;
        entry.failures = 0;
        entry.last_error = None;
        entry.not_after = Some(not_after);
        entry.renew_at = Some(renew_at);
        entry.tx.send_replace(SvidState::Ready(IssuedSvid {
            svid: Arc::new(issued.svid),
            bundle: bundle.clone(),
            version: entry.version,
        }));
        tracing::debug!(spiffe_id = %id, ?not_after, "certificate issued");
        if bundle_changed {
            // A root rotation: every other identity of the trust domain
            // gets the new bundle (and a new version).
            for (other, e) in entries.iter_mut() {
                if other.trust_domain() != &td || other == &id {
                    continue;
                }
                let version = e.version + 1;
                let changed = e.tx.send_if_modified(|state| match state {
                    SvidState::Ready(issued) => {
                        issued.bundle = bundle.clone();
                        issued.version = version;
                        true
                    }
                    _ => false,
                });
                if changed {
                    e.version = version;
                }
            }
        }
        drop(entries);
        shared.ca_answered.store(true, Ordering::Relaxed);
        let renew = self.instant_of(renew_at);
        let expire = self.instant_of(not_after);
        self.push(renew, id.clone(), Kind::Renew { generation });
        self.push(expire, id, Kind::Expire { not_after });
        if bundle_changed {
            self.roots.insert(td, bundle);
            self.publish_bundles();
        }
        if self.last_fetch.is_none() {
            self.start_fetch();
        }
    }

    /// `renew_fraction` of `lifetime` minus up to `jitter_fraction` of it.
    fn renew_delay(&self, lifetime: Duration) -> Duration {
        let s = &self.shared.settings;
        let jitter = scaled(lifetime, s.jitter_fraction * rand::random::<f64>());
        scaled(lifetime, s.renew_fraction).saturating_sub(jitter)
    }

    /// Delay before retry number `failures` (1-based): the initial delay
    /// doubled per failure, capped, drawn from [delay/2, delay].
    fn backoff(&self, failures: u32) -> Duration {
        let s = &self.shared.settings;
        let doubling = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        let delay = s
            .backoff_initial
            .saturating_mul(doubling)
            .min(s.backoff_max);
        delay / 2 + scaled(delay / 2, rand::random::<f64>())
    }

    fn check_clock(&mut self) {
        let (t0, w0) = self.reference;
        let t1 = Instant::now();
        let w1 = self.shared.clock.now();
        self.reference = (t1, w1);
        let mono = t1.duration_since(t0).as_secs_f64();
        let wall = match w1.duration_since(w0) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        let drift = wall - mono;
        if drift.abs() > CLOCK_JUMP_TOLERANCE.as_secs_f64() {
            tracing::info!(
                drift_seconds = drift,
                "wall clock jumped; recomputing every deadline"
            );
            self.reschedule_all(w1);
        }
        update_gauges(&self.shared, w1);
    }

    /// After a clock jump: expired certificates withdrawn, renewal and
    /// expiry timers recomputed from the wall clock (due ones run now).
    fn reschedule_all(&mut self, now: SystemTime) {
        let shared = self.shared.clone();
        let mut timers = Vec::new();
        {
            let mut entries = shared.entries();
            for (id, entry) in entries.iter_mut() {
                if entry.expire_if_due(now) {
                    shared.metrics.failure("expired");
                    continue;
                }
                if let Some(not_after) = entry.not_after {
                    timers.push((id.clone(), not_after, Kind::Expire { not_after }));
                }
                if let (false, Some(renew_at)) = (entry.busy, entry.renew_at) {
                    let generation = self.next_seq();
                    entry.generation = generation;
                    timers.push((id.clone(), renew_at, Kind::Renew { generation }));
                }
            }
        }
        for (id, at, kind) in timers {
            let at = self.instant_of(at);
            self.push(at, id, kind);
        }
    }

    /// Drops identities nobody watched for `idle_drop`.
    fn sweep(&mut self) {
        let now = Instant::now();
        let idle = self.shared.settings.idle_drop;
        let mut entries = self.shared.entries();
        entries.retain(|id, entry| {
            if entry.tx.receiver_count() > 0 {
                entry.last_asked = now;
            }
            let keep = entry.busy || now.duration_since(entry.last_asked) < idle;
            if !keep {
                tracing::debug!(spiffe_id = %id, "identity unused; dropped with its key");
            }
            keep
        });
        drop(entries);
        update_gauges(&self.shared, self.shared.clock.now());
    }

    // === bundles ===

    fn start_fetch(&mut self) {
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

    fn fetched(&mut self, td: TrustDomain, result: Result<String, CaClientError>) {
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
    fn publish_bundles(&self) {
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

/// Sets the gauges from the entries: identities held, seconds until the
/// earliest notAfter (0 with none).
pub(super) fn update_gauges(shared: &Shared, now: SystemTime) {
    let entries = shared.entries();
    let metrics = &shared.metrics;
    metrics
        .identities
        .set(i64::try_from(entries.len()).unwrap_or(i64::MAX));
    let earliest = entries.values().filter_map(|e| e.not_after).min();
    let seconds = earliest
        .and_then(|t| t.duration_since(now).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    metrics.earliest_expiry_seconds.set(seconds);
}
