//! The log writer: formatted lines are appended to one in-memory buffer and
//! a background thread writes that buffer out every few milliseconds.
//!
//! A CA server logs every decision, thousands of lines a second under load.
//! Writing each line with its own `write` costs a system call per request,
//! and handing each line to a writer thread through a channel costs an
//! allocation and, whenever the thread sleeps, a wake-up (a context switch
//! on a core that is signing certificates). Here a line costs one short
//! uncontended lock and a copy; the thread wakes on a timer
//! ([`FLUSH_INTERVAL`]) or when the buffer passes [`EARLY_FLUSH_BYTES`],
//! and writes everything gathered with one `write_all`.
//!
//! Nothing is dropped: past [`MAX_BUFFERED_BYTES`] (a stalled stderr) the
//! logging threads wait for the writer. Dropping the [`FlushGuard`] writes
//! what is left and stops the thread; lines logged after that are written
//! directly.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait in memory.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Buffered bytes that wake the writer before its timer.
pub const EARLY_FLUSH_BYTES: usize = 64 * 1024;
/// Buffered bytes past which logging threads wait for the writer.
pub const MAX_BUFFERED_BYTES: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer thread has stopped (the guard dropped).
    closed: bool,
    /// The writer has been asked to wake before its timer.
    wake_requested: bool,
    /// Logging threads waiting for room.
    waiting: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Wakes logging threads waiting for room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where log lines go; cheap to clone. Implements `MakeWriter` through
/// `io::Write for &BatchWriter`-style handles ([`LineSink`]).
#[derive(Clone)]
pub struct BatchWriter<W> {
    shared: Arc<Shared>,
    /// Used directly once the writer thread has stopped.
    direct: Arc<Mutex<W>>,
}

/// Stops the writer thread when dropped, after it wrote everything.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread, writing to `out`.
pub fn start<W>(out: W, thread_name: &str) -> std::io::Result<(BatchWriter<W>, FlushGuard)>
where
    W: Write + Send + 'static,
{
    let shared = Arc::new(Shared::default());
    let direct = Arc::new(Mutex::new(out));
    let thread = {
        let (shared, out) = (shared.clone(), direct.clone());
        std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || run(&shared, &out))?
    };
    Ok((
        BatchWriter {
            shared: shared.clone(),
            direct,
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

impl<W: Write> BatchWriter<W> {
    /// Appends `line` (a whole formatted event).
    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut state = self.shared.lock();
        while !state.closed
            && !state.buf.is_empty()
            && state.buf.len().saturating_add(line.len()) > MAX_BUFFERED_BYTES
        {
            state.waiting += 1;
            state = self
                .shared
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
        if state.closed {
            drop(state);
            let mut out = self.direct.lock().unwrap_or_else(PoisonError::into_inner);
            out.write_all(line)?;
            return out.flush();
        }
        state.buf.extend_from_slice(line);
        // One wake-up per batch, not per line: notifying costs a system
        // call even when nobody waits.
        if state.buf.len() >= EARLY_FLUSH_BYTES && !state.wake_requested {
            state.wake_requested = true;
            drop(state);
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

/// One event's writer, as `tracing_subscriber` asks for it.
pub struct LineSink<'a, W>(&'a BatchWriter<W>);

impl<W: Write> Write for LineSink<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'static> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter<W> {
    type Writer = LineSink<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineSink(self)
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: every [`FLUSH_INTERVAL`] (or sooner when asked),
/// takes the buffer and writes it; after `closed`, writes what is left and
/// returns.
fn run<W: Write>(shared: &Shared, out: &Mutex<W>) {
    let mut batch = Vec::new();
    loop {
        // The output is locked before the buffer is released, so a line
        // written directly after `closed` cannot overtake this batch.
        let (closed, mut out) = {
            let mut state = shared.lock();
            if !state.closed && !state.wake_requested {
                state = shared
                    .wake
                    .wait_timeout(state, FLUSH_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.wake_requested = false;
            std::mem::swap(&mut batch, &mut state.buf);
            if state.waiting > 0 {
                shared.room.notify_all();
            }
            (
                state.closed,
                out.lock().unwrap_or_else(PoisonError::into_inner),
            )
        };
        if !batch.is_empty() {
            // A log that cannot be written (stderr closed) has nowhere to
            // report that either; the lines are dropped, the server goes on.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            // Keep a normal batch's capacity, not a burst's.
            batch.shrink_to(EARLY_FLUSH_BYTES * 2);
        }
        drop(out);
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
