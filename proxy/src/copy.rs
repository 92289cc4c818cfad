//! Bidirectional copy with half-close and an idle timeout.
//!
//! [`copy_with_idle_timeout`] copies both directions in one future (a FIN
//! read on one side is forwarded as a shutdown of the other while the other
//! direction keeps flowing, as [`tokio::io::copy_bidirectional`]) and ends
//! the connection once nothing moved for `idle`.
//!
//! Built for many mostly idle connections:
//! - a direction holds its copy buffer (16 KiB) only while it has bytes to
//!   move: the buffer is allocated when the direction is polled and given
//!   back when a read finds nothing and nothing is left to write, so an idle
//!   connection holds no copy buffers (tokio's copy keeps 8 KiB per
//!   direction for the connection's life); reads fill the buffer's spare
//!   capacity, so a wakeup never zeroes 16 KiB;
//! - activity is a counter bumped per read, not a clock read: a watchdog
//!   wakes every quarter of `idle` and ends the connection after `idle`
//!   with the counter unchanged (so an idle connection ends between `idle`
//!   and `1.25 × idle` after its last byte).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

/// The copy buffer of a busy direction: one full TLS record of plaintext.
const BUF_SIZE: usize = 16 * 1024;

/// How a copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyEnd {
    /// Both sides closed; bytes `a -> b` and `b -> a`.
    Closed(u64, u64),
    /// Nothing moved for the idle timeout.
    Idle,
}

/// One direction's state.
#[derive(Debug, Default)]
struct Half {
    /// Present only while bytes wait to be written (or a read is polled);
    /// never zeroed (reads fill its spare capacity).
    buf: Option<BytesMut>,
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    /// Bytes written so far.
    amt: u64,
    /// Reads that returned bytes (the idle watchdog's activity counter).
    reads: u64,
}

impl Half {
    /// Moves bytes `reader -> writer` until the reader would block with
    /// nothing buffered (`Pending`, buffer released) or the reader's EOF was
    /// forwarded as a shutdown (`Ready(Ok(()))`).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.cap && !self.read_done {
                let buf = self
                    .buf
                    .get_or_insert_with(|| BytesMut::with_capacity(BUF_SIZE));
                buf.clear();
                match tokio_util::io::poll_read_buf(reader.as_mut(), cx, buf) {
                    Poll::Ready(Ok(n)) => {
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.pos = 0;
                            self.cap = n;
                            self.reads = self.reads.wrapping_add(1);
                        }
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        // Nothing to move: give the buffer back, and flush
                        // what was written before sleeping.
                        self.buf = None;
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let pending = self
                    .buf
                    .as_deref()
                    .and_then(|buf| buf.get(self.pos..self.cap))
                    .unwrap_or_default();
                let n = ready!(writer.as_mut().poll_write(cx, pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write zero bytes into writer",
                    )));
                }
                self.pos += n;
                self.amt += n as u64;
                self.need_flush = true;
            }
            if self.pos == self.cap && self.read_done {
                self.buf = None;
                if self.need_flush {
                    ready!(writer.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copies `a <-> b` with half-close until both sides closed, an error, or
/// `idle` without a byte in either direction.
pub async fn copy_with_idle_timeout<A, B>(mut a: A, mut b: B, idle: Duration) -> io::Result<CopyEnd>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Half::default();
    let mut b_to_a = Half::default();
    // The watchdog looks every quarter of `idle`; `idle` without activity
    // is four looks in a row with the counter unchanged.
    let tick = (idle / 4).max(Duration::from_millis(1));
    let looks = u32::try_from(idle.as_nanos().div_ceil(tick.as_nanos().max(1))).unwrap_or(u32::MAX);
    let mut quiet_looks = 0u32;
    let mut seen = 0u64;
    let watchdog = tokio::time::sleep(tick);
    tokio::pin!(watchdog);
    poll_fn(|cx| {
        let ab = a_to_b.poll_copy(cx, Pin::new(&mut a), Pin::new(&mut b));
        let ba = b_to_a.poll_copy(cx, Pin::new(&mut b), Pin::new(&mut a));
        match (ab, ba) {
            (Poll::Ready(Err(error)), _) | (_, Poll::Ready(Err(error))) => {
                return Poll::Ready(Err(error));
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => {
                return Poll::Ready(Ok(CopyEnd::Closed(a_to_b.amt, b_to_a.amt)));
            }
            _ => {}
        }
        while watchdog.as_mut().poll(cx).is_ready() {
            let activity = a_to_b.reads.wrapping_add(b_to_a.reads);
            if activity == seen {
                quiet_looks = quiet_looks.saturating_add(1);
                if quiet_looks >= looks {
                    return Poll::Ready(Ok(CopyEnd::Idle));
                }
            } else {
                seen = activity;
                quiet_looks = 0;
            }
            let next = watchdog.deadline() + tick;
            watchdog.as_mut().reset(next);
        }
        Poll::Pending
    })
    .await
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
        tokio::time::sleep(Duration::from_millis(12_600)).await;
        assert!(
            task.is_finished(),
            "ended within 1.25 x the idle timeout of the last byte"
        );
        assert_eq!(task.await.unwrap().unwrap(), CopyEnd::Idle);
    }

    #[tokio::test]
    async fn half_close_forwards_fin_while_the_other_way_flows() {
        let (a, mut a_peer) = duplex(1024);
        let (b, mut b_peer) = duplex(1024);
        let task = tokio::spawn(copy_with_idle_timeout(a, b, Duration::from_secs(10)));
        a_peer.write_all(b"request").await.unwrap();
        a_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request", "the FIN follows the bytes");
        b_peer
            .write_all(b"answer after the client's FIN")
            .await
            .unwrap();
        b_peer.shutdown().await.unwrap();
        let mut back = Vec::new();
        a_peer.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"answer after the client's FIN");
        assert_eq!(task.await.unwrap().unwrap(), CopyEnd::Closed(7, 29));
    }

    #[tokio::test]
    async fn large_transfers_arrive_whole_in_both_directions() {
        let (a, a_peer) = duplex(4096);
        let (b, b_peer) = duplex(4096);
        let task = tokio::spawn(copy_with_idle_timeout(a, b, Duration::from_secs(10)));
        let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let (mut a_read, mut a_write) = tokio::io::split(a_peer);
        let (mut b_read, mut b_write) = tokio::io::split(b_peer);
        let w1 = tokio::spawn(async move {
            a_write.write_all(&up2).await.unwrap();
            a_write.shutdown().await.unwrap();
        });
        let w2 = tokio::spawn(async move {
            b_write.write_all(&down2).await.unwrap();
            b_write.shutdown().await.unwrap();
        });
        let mut got_up = Vec::new();
        let mut got_down = Vec::new();
        let (r1, r2) = tokio::join!(
            b_read.read_to_end(&mut got_up),
            a_read.read_to_end(&mut got_down)
        );
        r1.unwrap();
        r2.unwrap();
        w1.await.unwrap();
        w2.await.unwrap();
        assert!(got_up == up && got_down == down, "bytes intact both ways");
        assert_eq!(
            task.await.unwrap().unwrap(),
            CopyEnd::Closed(200_000, 300_000)
        );
    }

    #[tokio::test]
    async fn both_peers_gone_ends_the_copy() {
        let (a, a_peer) = duplex(64);
        let (b, b_peer) = duplex(64);
        let task = tokio::spawn(copy_with_idle_timeout(a, b, Duration::from_secs(10)));
        drop(a_peer);
        drop(b_peer);
        assert!(matches!(
            task.await.unwrap(),
            Ok(CopyEnd::Closed(0, 0)) | Err(_)
        ));
    }

    #[test]
    fn an_idle_direction_holds_no_buffer() {
        let mut half = Half::default();
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        let (mut reader, _keep) = duplex(64);
        let (mut writer, _keep2) = duplex(64);
        assert!(
            half.poll_copy(&mut cx, Pin::new(&mut reader), Pin::new(&mut writer))
                .is_pending()
        );
        assert!(half.buf.is_none(), "nothing to move: no buffer held");
    }

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
