//! Write coalescing for a server connection: the responses that several
//! requests finish between two polls of their connection go out in one TLS
//! write (one `writev`, one packet) instead of one each.
//!
//! HTTP/2 (the `h2` crate) flushes its transport before buffering each DATA
//! frame larger than a few hundred bytes, so every certificate response
//! would otherwise cost its own TLS record, system call and loopback
//! delivery (≈ 10 % of a loaded server's CPU, BENCHMARKS.md).
//! [`Coalesced`] takes writes into a buffer and treats the first flush
//! request of a connection poll as a request to flush *soon*: it wakes its
//! own task and reports success, and the real write happens at the first
//! flush after the task has been polled again (seen by its next read). The
//! workers' single-threaded runtimes run every other ready task (requests
//! finishing on the same connection, adding their frames) before that
//! re-poll. Shutdown and a full buffer always write at once.
//!
//! The contract this relies on, which `h2`'s connection task keeps: each
//! poll of the connection reads until the transport is pending and then
//! flushes. A deferred flush therefore always has a later flush that writes.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered bytes above which a write goes out without waiting.
const HIGH_WATER: usize = 64 * 1024;

/// Capacity kept after the buffer is written out; a larger buffer (e.g.
/// after a certificate response) is released, so that an idle connection
/// holds no more than this (BENCHMARKS.md, "Idle connections").
const RETAINED_CAPACITY: usize = 512;

/// A transport whose writes are coalesced until the owning task is
/// polled again; see the module docs.
#[derive(Debug)]
pub(crate) struct Coalesced<T> {
    inner: T,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed to `inner`.
    written: usize,
    /// A flush was put off and the task woken to finish it.
    deferred: bool,
    /// The task read since the flush was put off, i.e. it is in a new poll.
    read_since: bool,
}

impl<T> Coalesced<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            written: 0,
            deferred: false,
            read_since: false,
        }
    }

    /// The wrapped transport.
    #[cfg(test)]
    fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Hands every buffered byte to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = self.buf.get(self.written..).filter(|r| !r.is_empty()) {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.buf.capacity() > RETAINED_CAPACITY {
            // An idle connection keeps no response-sized buffer.
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room before buffering more: writes out a full buffer.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.len() >= HIGH_WATER {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.read_since = true;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let mut n = 0;
        for slice in bufs {
            self.buf.extend_from_slice(slice);
            n += slice.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() {
            this.deferred = false;
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.deferred {
            // First flush of this poll: finish it in the next one.
            this.deferred = true;
            this.read_since = false;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        if !this.read_since {
            // Still the same poll: keep collecting.
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        self.deferred = false;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// Counts writes; accepts everything.
    #[derive(Default)]
    struct Sink {
        writes: usize,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.bytes.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Sink {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(c: &mut Coalesced<Sink>, cx: &mut Context<'_>, data: &[u8]) {
        assert!(matches!(
            Pin::new(&mut *c).poll_write(cx, data),
            Poll::Ready(Ok(n)) if n == data.len()
        ));
    }

    fn flush(c: &mut Coalesced<Sink>, cx: &mut Context<'_>) {
        assert!(matches!(
            Pin::new(&mut *c).poll_flush(cx),
            Poll::Ready(Ok(()))
        ));
    }

    fn read(c: &mut Coalesced<Sink>, cx: &mut Context<'_>) {
        let mut space = [0u8; 8];
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut *c).poll_read(cx, &mut buf).is_pending());
    }

    #[test]
    fn flushes_of_one_poll_become_one_write_in_the_next() {
        let waker = Arc::new(CountingWaker::default());
        let w = waker.clone().into();
        let mut cx = Context::from_waker(&w);
        let mut c = Coalesced::new(Sink::default());

        // Poll 1: read, then three frames each followed by a flush.
        read(&mut c, &mut cx);
        for frame in [b"one ".as_slice(), b"two ", b"three"] {
            write(&mut c, &mut cx, frame);
            flush(&mut c, &mut cx);
        }
        assert_eq!(c.get_ref().writes, 0, "nothing written within the poll");
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "woke itself once");

        // Poll 2: a flush before the read is still the old poll's.
        flush(&mut c, &mut cx);
        assert_eq!(c.get_ref().writes, 0);
        read(&mut c, &mut cx);
        flush(&mut c, &mut cx);
        assert_eq!(c.get_ref().writes, 1, "one write for all three frames");
        assert_eq!(c.get_ref().bytes, b"one two three");

        // Nothing buffered: a flush neither writes nor wakes.
        flush(&mut c, &mut cx);
        assert_eq!(c.get_ref().writes, 1);
        assert_eq!(waker.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn shutdown_and_a_full_buffer_write_at_once() {
        let waker = Arc::new(CountingWaker::default());
        let w = waker.clone().into();
        let mut cx = Context::from_waker(&w);
        let mut c = Coalesced::new(Sink::default());

        let big = vec![7u8; HIGH_WATER];
        write(&mut c, &mut cx, &big);
        write(&mut c, &mut cx, b"more");
        assert_eq!(c.get_ref().writes, 1, "a full buffer goes out first");

        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.get_ref().writes, 2);
        assert_eq!(c.get_ref().bytes.len(), HIGH_WATER + 4);
    }

    #[test]
    fn vectored_writes_are_taken_whole() {
        let waker = Arc::new(CountingWaker::default());
        let w = waker.into();
        let mut cx = Context::from_waker(&w);
        let mut c = Coalesced::new(Sink::default());
        let slices = [IoSlice::new(b"head"), IoSlice::new(b"-body")];
        assert!(matches!(
            Pin::new(&mut c).poll_write_vectored(&mut cx, &slices),
            Poll::Ready(Ok(9))
        ));
        read(&mut c, &mut cx);
        flush(&mut c, &mut cx); // defers
        read(&mut c, &mut cx);
        flush(&mut c, &mut cx); // writes
        assert_eq!(c.get_ref().bytes, b"head-body");
    }
}
