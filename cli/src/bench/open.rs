//! Open loop: requests sent at a constant rate on a fixed schedule,
//! whatever the answers do, each timed from its *scheduled* send time.
//!
//! Request `i` is due at `start + i ÷ rate` ([`scheduled_at`]). A pacer
//! thread sleeps until each due time (`std::thread::sleep`: sub-millisecond
//! precision, where tokio's timer has 1 ms steps that would add up to a
//! millisecond to every request) and spawns the request onto the load
//! tool's single-threaded runtime. If the pacer falls behind it sends
//! what is due at once, and latency still counts from the due time, so a
//! slow load tool or server cannot hide its stalls (no coordinated
//! omission). Each request is its own task: a slow answer never delays
//! the next send. Requests are spread round-robin over `--connections`
//! HTTP/2 connections and use CSRs generated before the start.
//!
//! At most `--max-outstanding` requests are in flight; a request due while
//! that many are is not sent and counts as an error, so the schedule never
//! waits for the server. Requests due during `--warmup` are sent but not
//! counted; the report covers the `--duration` after it, waiting for the
//! last answers (bounded by the client's request timeout).

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sigil_node_agent::ca_client::{CaClientError, CsrRequest};
use tokio_util::task::TaskTracker;

use super::report::{Failures, OpenReport, Percentiles};
use super::{CaBenchArgs, Target, failure_label};

/// The lowest and highest `--rate` accepted (requests per second).
const RATE_RANGE: (f64, f64) = (0.1, 1_000_000.0);

/// How long to wait for the last answers after the schedule ends: the
/// client's request timeout (10 s) and a margin. Requests still
/// unanswered then count as errors.
const DRAIN: Duration = Duration::from_secs(11);

/// Refuses a `--rate` outside [`RATE_RANGE`] (or not a number).
pub(super) fn check_rate(rate: f64) -> anyhow::Result<()> {
    let (low, high) = RATE_RANGE;
    if !(low..=high).contains(&rate) {
        bail!("--rate must be between {low} and {high} requests per second, not {rate}");
    }
    Ok(())
}

/// When request `index` is due, from the start of the schedule.
pub(super) fn scheduled_at(index: u64, rate: f64) -> Duration {
    Duration::try_from_secs_f64(index as f64 / rate).unwrap_or(Duration::MAX)
}

/// How many requests are due in the first `span` of the schedule: those
/// with `scheduled_at(i) < span`.
pub(super) fn due_within(span: Duration, rate: f64) -> u64 {
    (span.as_secs_f64() * rate).ceil() as u64
}

/// The schedule of one run: requests `0..warmup` are the warm-up,
/// `warmup..total` are measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Plan {
    pub(super) rate: f64,
    pub(super) warmup: u64,
    pub(super) total: u64,
}

impl Plan {
    pub(super) fn new(rate: f64, warmup: Duration, duration: Duration) -> Self {
        Self {
            rate,
            warmup: due_within(warmup, rate),
            total: due_within(warmup.saturating_add(duration), rate),
        }
    }

    pub(super) fn measured(&self, index: u64) -> bool {
        index >= self.warmup
    }

    pub(super) fn measured_count(&self) -> u64 {
        self.total.saturating_sub(self.warmup)
    }
}

/// What the request tasks record.
#[derive(Default)]
struct Recorder {
    /// Due time to answer, measured requests answered with a certificate.
    latencies: Vec<Duration>,
    /// Due time to the request task starting, measured requests.
    lags: Vec<Duration>,
    ok: u64,
    completed_in_window: u64,
    failures: Failures,
    warmup_failures: u64,
}

/// State shared by the pacer, the request tasks and the progress line.
struct Shared {
    recorder: Mutex<Recorder>,
    outstanding: AtomicUsize,
    max_outstanding: AtomicUsize,
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn record(&self, f: impl FnOnce(&mut Recorder)) {
        f(&mut self.recorder.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn fail(&self, measured: bool, label: impl FnOnce() -> String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.record(|r| {
            if measured {
                r.failures.add(label());
            } else {
                r.warmup_failures += 1;
            }
        });
    }
}

/// The measured window: answers received in it make the achieved rate.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

pub(super) async fn run(args: &CaBenchArgs, rate: f64, target: Target) -> anyhow::Result<()> {
    let plan = Plan::new(rate, args.warmup, args.duration);
    let shared = Arc::new(Shared {
        recorder: Mutex::new(Recorder {
            latencies: Vec::with_capacity(capacity(plan.measured_count())),
            lags: Vec::with_capacity(capacity(plan.measured_count())),
            ..Recorder::default()
        }),
        outstanding: AtomicUsize::new(0),
        max_outstanding: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let tracker = TaskTracker::new();
    let handle = tokio::runtime::Handle::current();
    let cpu_start = process_cpu_time();
    let start = Instant::now();
    let window_start = start + args.warmup;
    let window = Window {
        start: window_start,
        end: window_start + args.duration,
    };
    let progress = tokio::spawn(progress(shared.clone(), start));
    let pacer = Pacer {
        plan,
        start,
        limit: args.max_outstanding,
        window,
        target: Arc::new(target),
        shared: shared.clone(),
        tracker: tracker.clone(),
        handle,
    };
    let pacer = tokio::task::spawn_blocking(move || pacer.run());
    pacer.await.context("the pacer thread failed")?;
    tracker.close();
    let drained = tokio::time::timeout(DRAIN, tracker.wait()).await.is_ok();
    progress.abort();
    let tool_cores = cpu_start
        .zip(process_cpu_time())
        .map(|(from, to)| to.saturating_sub(from).as_secs_f64() / start.elapsed().as_secs_f64());

    let mut recorder = std::mem::take(
        &mut *shared
            .recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let answered = recorder.ok + recorder.failures.total();
    let unanswered = plan.measured_count().saturating_sub(answered);
    if !drained && unanswered > 0 {
        recorder.failures.add_n(
            format!("unanswered {}s after the schedule", DRAIN.as_secs()),
            unanswered,
        );
    }
    let errors = recorder.failures.total();
    let report = OpenReport {
        addr: &args.addr,
        rate,
        warmup: args.warmup,
        duration: args.duration,
        connections: args.connections,
        scheduled: plan.measured_count(),
        ok: recorder.ok,
        completed_in_window: recorder.completed_in_window,
        failures: recorder.failures,
        warmup_failures: recorder.warmup_failures,
        latency: Percentiles::of(&mut recorder.latencies),
        send_lag: Percentiles::of(&mut recorder.lags),
        max_outstanding: shared.max_outstanding.load(Ordering::Relaxed),
        tool_cores,
    };
    report.write(&mut std::io::stdout().lock())?;
    if errors > 0 {
        bail!("{errors} measured requests failed");
    }
    Ok(())
}

/// Vectors are reserved for the measured requests, up to a bound (a long
/// run at a high rate grows them as it goes).
fn capacity(count: u64) -> usize {
    usize::try_from(count.min(1 << 22)).unwrap_or(0)
}

/// CPU time this process's live threads have used (Linux
/// `/proc/self/task/*/schedstat`); `None` where that does not exist.
fn process_cpu_time() -> Option<Duration> {
    let mut nanos: u64 = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread may end between listing and reading.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let used: u64 = text.split_whitespace().next()?.parse().ok()?;
        nanos = nanos.saturating_add(used);
    }
    Some(Duration::from_nanos(nanos))
}

/// The pacer: sends every request of `plan` at its due time (or at once
/// when late), on `handle`'s runtime, never more than `limit` outstanding.
struct Pacer {
    plan: Plan,
    start: Instant,
    limit: usize,
    window: Window,
    target: Arc<Target>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    handle: tokio::runtime::Handle,
}

impl Pacer {
    /// Runs the whole schedule (blocking: call it on a thread of its own).
    fn run(&self) {
        for index in 0..self.plan.total {
            let Some(due) = self.start.checked_add(scheduled_at(index, self.plan.rate)) else {
                break;
            };
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            self.send(index, due);
        }
    }

    /// Spawns request `index`, due at `due`, unless `limit` are outstanding.
    fn send(&self, index: u64, due: Instant) {
        let (limit, shared) = (self.limit, &self.shared);
        let measured = self.plan.measured(index);
        let in_flight = shared.outstanding.fetch_add(1, Ordering::Relaxed);
        if in_flight >= limit {
            shared.outstanding.fetch_sub(1, Ordering::Relaxed);
            shared.fail(measured, || format!("not sent: {limit} outstanding"));
            return;
        }
        shared
            .max_outstanding
            .fetch_max(in_flight + 1, Ordering::Relaxed);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let n = usize::try_from(index).unwrap_or_default();
        let Some(client) = self.target.client(n) else {
            shared.outstanding.fetch_sub(1, Ordering::Relaxed);
            shared.fail(measured, || "no connection".to_owned());
            return;
        };
        let (target, shared, window) = (self.target.clone(), shared.clone(), self.window);
        self.tracker.spawn_on(
            async move {
                let lag = Instant::now().saturating_duration_since(due);
                let result = send(client, &target, n).await;
                let done = Instant::now();
                shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                match result {
                    Ok(()) => {
                        shared.ok.fetch_add(1, Ordering::Relaxed);
                        let in_window = (window.start..window.end).contains(&done);
                        shared.record(|r| {
                            r.completed_in_window += u64::from(in_window);
                            if measured {
                                r.ok += 1;
                                r.latencies.push(done.saturating_duration_since(due));
                                r.lags.push(lag);
                            }
                        });
                    }
                    Err(error) => {
                        if measured {
                            shared.record(|r| r.lags.push(lag));
                        }
                        shared.fail(measured, || failure_label(&error));
                    }
                }
            },
            &self.handle,
        );
    }
}

async fn send(
    mut client: sigil_node_agent::ca_client::CaClient,
    target: &Target,
    n: usize,
) -> Result<(), CaClientError> {
    client
        .create_certificate(CsrRequest {
            csr_pem: target.csr(n),
            token: Some(&target.token),
            ..CsrRequest::default()
        })
        .await
        .map(drop)
}

/// Once a second on stderr: sent, answered, failed, in flight.
async fn progress(shared: Arc<Shared>, start: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = 0;
    loop {
        ticker.tick().await;
        let ok = shared.ok.load(Ordering::Relaxed);
        let _ = writeln!(
            std::io::stderr(),
            "[{:>4.0}s] sent {}, issued {ok} ({} /s), errors {}, in flight {}",
            start.elapsed().as_secs_f64(),
            shared.sent.load(Ordering::Relaxed),
            ok - last,
            shared.errors.load(Ordering::Relaxed),
            shared.outstanding.load(Ordering::Relaxed),
        );
        last = ok;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_at_equal_steps_from_the_start() {
        assert_eq!(scheduled_at(0, 2000.0), Duration::ZERO);
        assert_eq!(scheduled_at(1, 2000.0), Duration::from_micros(500));
        assert_eq!(scheduled_at(4000, 2000.0), Duration::from_secs(2));
        assert_eq!(scheduled_at(3, 0.5), Duration::from_secs(6));
    }

    #[test]
    fn due_within_counts_the_requests_before_the_end_of_a_span() {
        // 0, 0.5 ms, ..., 999.5 ms: 2000 requests in the first second.
        assert_eq!(due_within(Duration::from_secs(1), 2000.0), 2000);
        assert_eq!(due_within(Duration::ZERO, 2000.0), 0);
        // 0, 1/3 s and 2/3 s are within 1 s; the one due at 1 s is not,
        // but it is within 1.001 s.
        assert_eq!(due_within(Duration::from_secs(1), 3.0), 3);
        assert_eq!(due_within(Duration::from_millis(1001), 3.0), 4);
    }

    #[test]
    fn the_plan_puts_the_warm_up_first_and_measures_the_rest() {
        let plan = Plan::new(2500.0, Duration::from_secs(2), Duration::from_secs(20));
        assert_eq!((plan.warmup, plan.total), (5_000, 55_000));
        assert_eq!(plan.measured_count(), 50_000);
        assert!(!plan.measured(4_999));
        assert!(plan.measured(5_000));
        // The first measured request is due at the end of the warm-up,
        // the last warm-up request before it.
        assert_eq!(scheduled_at(plan.warmup, plan.rate), Duration::from_secs(2));
        assert!(scheduled_at(plan.warmup - 1, plan.rate) < Duration::from_secs(2));
        assert!(scheduled_at(plan.total - 1, plan.rate) < Duration::from_secs(22));
    }

    #[test]
    fn awkward_rates_keep_the_plan_consistent() {
        for rate in [0.1, 1.0, 7.0, 333.3, 4321.5, 999_999.0] {
            let plan = Plan::new(rate, Duration::from_millis(1500), Duration::from_secs(3));
            let warmup = Duration::from_millis(1500);
            if plan.warmup > 0 {
                assert!(scheduled_at(plan.warmup - 1, rate) < warmup, "{rate}");
            }
            assert!(scheduled_at(plan.warmup, rate) >= warmup, "{rate}");
            assert!(plan.total >= plan.warmup);
        }
    }

    #[test]
    fn rates_out_of_range_are_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e6] {
            let err = check_rate(rate).unwrap_err().to_string();
            assert!(err.contains("--rate"), "{err}");
        }
        check_rate(5000.0).unwrap();
    }
}
