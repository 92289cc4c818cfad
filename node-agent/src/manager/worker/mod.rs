//! The manager's one background task: a timer queue of renewal and expiry
//! deadlines, the queue of identities waiting for a CA request, at most
//! `max_in_flight` requests polled inside this same task, the periodic
//! wall-clock jump check, the idle sweep and the bundle refresh.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use sigil_identity::{SpiffeId, TrustBundle, TrustDomain};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::issue::{Outcome, issue};
use super::{
    DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_BUNDLE_REFRESH, DEFAULT_CLOCK_CHECK,
    DEFAULT_IDLE_DROP, DEFAULT_JITTER_FRACTION, DEFAULT_RENEW_FRACTION, MIN_BUNDLE_REFETCH,
    ManagerSettings, Shared,
};
use crate::ca_client::CaClientError;
use crate::source::SvidState;

mod bundles;
mod issuance;
mod timers;

use self::timers::Timer;

/// What the handles ask of the worker.
#[derive(Debug)]
pub(crate) enum Command {
    /// A new identity was registered: issue its first certificate.
    Issue(SpiffeId),
    /// A certificate was withdrawn as expired outside the worker: request
    /// a new one at once unless a request is queued or running.
    Renew(SpiffeId),
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
    /// Consecutive renewals whose notAfter did not move later (a CA
    /// capping lifetimes): their renewals are paced by backoff.
    capped: u32,
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
            capped: 0,
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
        #[cfg(test)]
        worker
            .shared
            .timers_held
            .store(worker.timers.len(), std::sync::atomic::Ordering::Relaxed);
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
    fn command(&mut self, command: Command) {
        match command {
            Command::Issue(id) => {
                if self.shared.entries().contains_key(&id) {
                    self.queue.push_back(id);
                }
            }
            Command::Renew(id) => {
                let shared = self.shared.clone();
                if let Some(entry) = shared.entries().get_mut(&id) {
                    self.renew_now(&id, entry);
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
