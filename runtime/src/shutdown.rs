//! Graceful shutdown: one signal (SIGTERM or SIGINT) cancels one
//! [`CancellationToken`]; components stop accepting work, and [`drain`]
//! waits for their tracked tasks within a grace period.
//!
//! ```text
//! SIGTERM / SIGINT ─▶ wait_for_signal ─▶ token.cancel()
//!                                           │ listeners stop accepting,
//!                                           │ connections shut down gracefully
//!                                           ▼
//!                  drain(tracker, grace) ─┬─ every task done ───▶ Drained::Complete
//!                                         └─ grace period over ─▶ Drained::TimedOut (the rest are dropped)
//! ```

use std::io;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The signal that asked for shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (what Kubernetes and systemd send).
    Terminate,
}

/// Waits for SIGINT or SIGTERM. Fails only if the handlers cannot be
/// installed.
pub async fn wait_for_signal() -> io::Result<Signal> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let received = tokio::select! {
        _ = terminate.recv() => Signal::Terminate,
        _ = interrupt.recv() => Signal::Interrupt,
    };
    tracing::info!(signal = ?received, "shutdown signal received");
    Ok(received)
}

/// Cancels `token` on SIGINT or SIGTERM, from a task tracked by `tracker`
/// (which also ends it when `token` is cancelled another way). The signal
/// handlers are installed before this returns, so a signal arriving right
/// after is not missed.
pub fn cancel_on_signal(token: &CancellationToken, tracker: &TaskTracker) -> io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let token = token.clone();
    tracker.spawn(async move {
        let received = tokio::select! {
            () = token.cancelled() => return,
            _ = terminate.recv() => Signal::Terminate,
            _ = interrupt.recv() => Signal::Interrupt,
        };
        tracing::info!(signal = ?received, "shutdown signal received");
        token.cancel();
    });
    Ok(())
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every tracked task finished within the grace period.
    Complete,
    /// The grace period ran out with `remaining` tasks still running.
    TimedOut {
        /// Tasks still running.
        remaining: usize,
    },
}

/// Closes `tracker` (no new tasks) and waits up to `grace` for its tasks.
/// Tasks still running after that are left to be dropped with the runtime.
pub async fn drain(tracker: &TaskTracker, grace: Duration) -> Drained {
    tracker.close();
    match tokio::time::timeout(grace, tracker.wait()).await {
        Ok(()) => Drained::Complete,
        Err(_) => {
            let remaining = tracker.len();
            tracing::warn!(
                remaining,
                ?grace,
                "shutdown grace period over; dropping tasks"
            );
            Drained::TimedOut { remaining }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tasks_within_the_grace_period() {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let s = stop.clone();
        tracker.spawn(async move {
            s.cancelled().await;
            // An in-flight request finishing after the signal.
            let _ = finish_rx.await;
        });
        stop.cancel();
        let drained = tokio::spawn({
            let tracker = tracker.clone();
            async move { drain(&tracker, Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        let _ = finish_tx.send(());
        assert_eq!(drained.await.unwrap(), Drained::Complete);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_the_grace_period() {
        let tracker = TaskTracker::new();
        tracker.spawn(std::future::pending::<()>());
        let started = tokio::time::Instant::now();
        let drained = drain(&tracker, Duration::from_secs(5)).await;
        assert_eq!(drained, Drained::TimedOut { remaining: 1 });
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn cancel_on_signal_ends_with_the_token() {
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        cancel_on_signal(&token, &tracker).unwrap();
        token.cancel();
        assert_eq!(
            drain(&tracker, Duration::from_secs(10)).await,
            Drained::Complete
        );
    }
}
