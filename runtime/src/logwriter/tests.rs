use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::*;

/// An output that records what reached it, in order, and can be stalled.
#[derive(Clone, Default)]
struct Recorder {
    written: Arc<Mutex<Vec<u8>>>,
    writes: Arc<Mutex<usize>>,
    stall: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(gate) = self.stall.lock().unwrap().take() {
            // Blocks until the test opens the gate.
            let _ = gate.recv();
        }
        self.written.lock().unwrap().extend_from_slice(buf);
        *self.writes.lock().unwrap() += 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn line(writer: &BatchWriter<Recorder>, text: &str) {
    let mut sink = tracing_subscriber::fmt::MakeWriter::make_writer(writer);
    sink.write_all(text.as_bytes()).unwrap();
}

#[test]
fn every_line_from_every_thread_arrives_once_in_per_thread_order() {
    let out = Recorder::default();
    let (writer, guard) = start(out.clone(), "test-log").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    line(&writer, &format!("t{t} {i}\n"));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(guard);
    let text = String::from_utf8(out.written.lock().unwrap().clone()).unwrap();
    let mut next = [0usize; 4];
    for l in text.lines() {
        let (t, i) = l.split_once(' ').unwrap();
        let t: usize = t.trim_start_matches('t').parse().unwrap();
        assert_eq!(
            i.parse::<usize>().unwrap(),
            next[t],
            "thread {t} out of order"
        );
        next[t] += 1;
    }
    assert_eq!(next, [5_000; 4], "lines lost");
    // Batched: far fewer writes than lines.
    assert!(*out.writes.lock().unwrap() < 20_000 / 10);
}

#[test]
fn dropping_the_guard_writes_what_is_buffered() {
    let out = Recorder::default();
    let (writer, guard) = start(out.clone(), "test-log").unwrap();
    line(&writer, "last words\n");
    drop(guard);
    assert_eq!(out.written.lock().unwrap().as_slice(), b"last words\n");
}

#[test]
fn lines_after_the_guard_is_dropped_are_written_directly() {
    let out = Recorder::default();
    let (writer, guard) = start(out.clone(), "test-log").unwrap();
    line(&writer, "before\n");
    drop(guard);
    line(&writer, "after\n");
    assert_eq!(out.written.lock().unwrap().as_slice(), b"before\nafter\n");
}

#[test]
fn a_stalled_output_holds_loggers_back_instead_of_dropping_lines() {
    let out = Recorder::default();
    let (gate, stalled) = mpsc::channel();
    *out.stall.lock().unwrap() = Some(stalled);
    let (writer, guard) = start(out.clone(), "test-log").unwrap();
    let chunk = "x".repeat(1024) + "\n";
    // Enough to fill the buffer twice over while the output is stalled.
    let total = 2 * MAX_BUFFERED_BYTES / chunk.len() + 1;
    let (done_tx, done_rx) = mpsc::channel();
    let logger = {
        let writer = writer.clone();
        let chunk = chunk.clone();
        std::thread::spawn(move || {
            for _ in 0..total {
                line(&writer, &chunk);
            }
            done_tx.send(()).unwrap();
        })
    };
    // The logger cannot finish while the output is stalled: it waits for
    // room rather than dropping lines or growing without bound.
    assert!(
        done_rx.recv_timeout(FLUSH_INTERVAL * 10).is_err(),
        "the logger finished although the output was stalled"
    );
    gate.send(()).unwrap();
    done_rx.recv().unwrap();
    logger.join().unwrap();
    drop(guard);
    assert_eq!(out.written.lock().unwrap().len(), total * chunk.len());
}
