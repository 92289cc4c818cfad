//! A stream whose first bytes were already read (to tell an HTTP/2
//! prior-knowledge preface from HTTP/1.1): replays them, then reads on,
//! noting when bytes last moved (for the idle timeout) and counting them
//! (the `proxy_bytes` metric: received from and sent to the downstream
//! peer, request and response heads, bodies, and upgraded tunnels).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where a stream's bytes are counted.
#[derive(Debug, Clone, Default)]
pub(super) struct ByteCounters {
    /// Bytes read from the downstream peer.
    pub(super) received: Counter,
    /// Bytes written to it.
    pub(super) sent: Counter,
}

fn count(counter: &Counter, n: usize) {
    counter.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
}

/// What the first bytes of a connection said.
pub(super) enum Sniffed<IO> {
    /// HTTP/1 (or anything that is not the HTTP/2 preface).
    Http1(Prefixed<IO>),
    /// The HTTP/2 preface (h2c prior knowledge).
    Http2(Prefixed<IO>),
    /// The peer closed or failed before saying anything useful.
    Closed,
    /// The peer was too slow to say anything useful.
    TimedOut,
}

/// Reads until the bytes received either differ from the HTTP/2 preface or
/// hold all of it, for at most `timeout` (a slow client is cut off here as
/// it would be by the HTTP/1 head timeout). Bytes are counted in `bytes`.
pub(super) async fn sniff<IO>(mut io: IO, timeout: Duration, bytes: ByteCounters) -> Sniffed<IO>
where
    IO: AsyncRead + Unpin,
{
    // Small: a request head read past this is read on by hyper, and the
    // buffer is freed once replayed.
    let mut buf = BytesMut::with_capacity(256);
    let read = async {
        loop {
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            let n = buf.len().min(H2_PREFACE.len());
            if buf.get(..n) != H2_PREFACE.get(..n) {
                return true;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
        }
    };
    let sniffed = tokio::time::timeout(timeout, read).await;
    count(&bytes.received, buf.len());
    match sniffed {
        Ok(true) => {}
        Ok(false) => return Sniffed::Closed,
        Err(_) => return Sniffed::TimedOut,
    }
    let h2 = buf.starts_with(H2_PREFACE);
    let io = Prefixed {
        prefix: buf.freeze(),
        io,
        activity: Arc::new(Activity::new(bytes)),
    };
    if h2 {
        Sniffed::Http2(io)
    } else {
        Sniffed::Http1(io)
    }
}

/// `io` with `prefix` read first.
#[derive(Debug)]
pub(super) struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Prefixed<IO> {
    /// When bytes last moved on this stream.
    pub(super) fn activity(&self) -> Arc<Activity> {
        Arc::clone(&self.activity)
    }
}

/// When bytes last moved on a stream, and how many.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    bytes: ByteCounters,
}

impl Activity {
    fn new(bytes: ByteCounters) -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            bytes,
        }
    }

    fn received(&self, n: usize) {
        count(&self.bytes.received, n);
        self.touch();
    }

    fn sent(&self, n: usize) {
        count(&self.bytes.sent, n);
        self.touch();
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Returns once no byte has moved for `idle`.
    pub(super) async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            if self.prefix.is_empty() {
                // Release the shared allocation for the connection's life.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.activity.received(n);
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.activity.sent(n);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.activity.sent(n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn sniffed(input: &'static [u8]) -> (&'static str, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(input).await.unwrap();
        drop(client);
        let (kind, io) = match sniff(server, Duration::from_secs(5), ByteCounters::default()).await
        {
            Sniffed::Http1(io) => ("h1", io),
            Sniffed::Http2(io) => ("h2", io),
            Sniffed::Closed => return ("closed", Vec::new()),
            Sniffed::TimedOut => return ("timed out", Vec::new()),
        };
        let mut io = io;
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        (kind, all)
    }

    #[tokio::test]
    async fn http1_is_replayed_whole() {
        let req = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(sniffed(req).await, ("h1", req.to_vec()));
    }

    #[tokio::test]
    async fn the_h2_preface_is_recognized_and_replayed() {
        let input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04";
        assert_eq!(sniffed(input).await, ("h2", input.to_vec()));
    }

    #[tokio::test]
    async fn bytes_are_counted_both_ways_prefix_included() {
        let (mut client, server) = tokio::io::duplex(4096);
        let bytes = ByteCounters::default();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let Sniffed::Http1(mut io) = sniff(server, Duration::from_secs(5), bytes.clone()).await
        else {
            panic!("not http1");
        };
        let mut head = [0u8; 18];
        io.read_exact(&mut head).await.unwrap();
        io.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        client.write_all(b"body").await.unwrap();
        let mut body = [0u8; 4];
        io.read_exact(&mut body).await.unwrap();
        assert_eq!(bytes.received.get(), 22);
        assert_eq!(bytes.sent.get(), 17);
    }

    #[tokio::test]
    async fn a_preface_cut_short_is_a_close() {
        assert_eq!(sniffed(b"PRI * HTTP").await.0, "closed");
        assert_eq!(sniffed(b"").await.0, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn idleness_counts_from_the_last_byte_moved() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET").await.unwrap();
        let Sniffed::Http1(mut io) =
            sniff(server, Duration::from_secs(1), ByteCounters::default()).await
        else {
            panic!("not http1");
        };
        let activity = io.activity();
        let idle = Duration::from_secs(10);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(6)).await;
        io.write_all(b"x").await.unwrap();
        activity.idle_for(idle).await;
        assert_eq!(started.elapsed(), Duration::from_secs(16));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_off_at_the_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let sniffed = sniff(server, Duration::from_secs(3), ByteCounters::default()).await;
        assert!(matches!(sniffed, Sniffed::TimedOut));
    }
}
