//! Bidirectional copy with half-close and an idle timeout.
//!
//! [`copy_with_idle_timeout`] runs [`tokio::io::copy_bidirectional`] (which
//! forwards a FIN in one direction while the other keeps flowing) over
//! wrappers that record the time of the last byte read or written; a
//! watchdog ends the connection once nothing moved for `idle`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyEnd {
    /// Both sides closed; bytes `a -> b` and `b -> a`.
    Closed(u64, u64),
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Milliseconds since `start` of the last activity.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies `a <-> b` with half-close until both sides closed, an error, or
/// `idle` without a byte in either direction.
pub async fn copy_with_idle_timeout<A, B>(a: A, b: B, idle: Duration) -> io::Result<CopyEnd>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut a = Tracked {
        inner: a,
        activity: Arc::clone(&activity),
    };
    let mut b = Tracked {
        inner: b,
        activity: Arc::clone(&activity),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let wait = idle.saturating_sub(activity.idle_for());
        if wait.is_zero() {
            return Ok(CopyEnd::Idle);
        }
        tokio::select! {
            done = &mut copy => {
                let (ab, ba) = done?;
                return Ok(CopyEnd::Closed(ab, ba));
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_connection_ends_active_one_does_not() {
        let (a, mut a_peer) = duplex(64);
        let (b, mut b_peer) = duplex(64);
        let task = tokio::spawn(copy_with_idle_timeout(a, b, Duration::from_secs(10)));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            a_peer.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            b_peer.read_exact(&mut one).await.unwrap();
        }
        assert!(
            !task.is_finished(),
            "traffic every 6 s keeps a 10 s idle timeout away"
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(task.await.unwrap().unwrap(), CopyEnd::Idle);
    }
}
