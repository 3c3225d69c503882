//! Where the log's lines go: one shared buffer that request threads append to
//! under a short lock, and the `sluice-log` thread that writes it out every
//! `FLUSH_EVERY`, or sooner once it holds `FLUSH_AT` bytes or an urgent line (the
//! rare ones: audit, storage, warnings; see `logging.rs`), so those reach the
//! file before a crash as promptly as they did when every line woke the thread.
//!
//! A line costs its formatting and one copy: no allocation, no channel, and no
//! wake-up of another thread. (A queue of lines woke the logging thread for
//! nearly every line; measured on the tagger row, those wake-ups and that thread
//! were about 5 % of the server's CPU.) Lossless: a buffer at `CAP` makes the
//! logger wait for the thread, and dropping the guard writes out what is left.
//! A crash loses at most the last `FLUSH_EVERY` of routine lines.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest a line waits in the buffer while the server runs.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// A buffer this full is written out at once.
const FLUSH_AT: usize = 256 << 10;
/// A buffer this full makes loggers wait for the thread.
const CAP: usize = 16 << 20;

struct Shared {
    state: Mutex<State>,
    /// Signalled when the buffer passes `FLUSH_AT`, on an urgent line, and at close.
    flush: Condvar,
    /// How long a routine line may wait in the buffer.
    every: Duration,
    /// Signalled when the thread has taken the buffer.
    room: Condvar,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The buffer holds a line to write at once.
    urgent: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle loggers append to.
#[derive(Clone)]
pub struct LogSink(Arc<Shared>);

/// Closes the sink when dropped: the thread writes out every line and stops.
pub struct SinkGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogSink {
    /// Start the `sluice-log` thread writing into `out`.
    pub fn start(out: impl Write + Send + 'static) -> (LogSink, SinkGuard) {
        Self::start_every(out, FLUSH_EVERY)
    }

    fn start_every(out: impl Write + Send + 'static, every: Duration) -> (LogSink, SinkGuard) {
        let shared = Arc::new(Shared { state: Mutex::default(), flush: Condvar::new(), room: Condvar::new(), every });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-log".into())
            .spawn(move || write_out(&thread_shared, out))
            .expect("spawn the logging thread");
        (LogSink(shared.clone()), SinkGuard { shared, thread: Some(thread) })
    }

    /// Append whole lines; `urgent` ones are written at once, not at the next tick.
    pub fn append(&self, lines: &[u8], urgent: bool) {
        let mut state = self.0.lock();
        while state.buf.len() >= CAP && !state.closed {
            state = self.0.room.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let before = state.buf.len();
        state.buf.extend_from_slice(lines);
        if (urgent && !state.urgent) || (before < FLUSH_AT && state.buf.len() >= FLUSH_AT) {
            self.0.flush.notify_one();
        }
        state.urgent |= urgent;
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.flush.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: take the whole buffer, write it in one call, repeat; after the
/// close, stop at the first empty buffer.
fn write_out(shared: &Shared, mut out: impl Write) {
    let mut taken = Vec::new();
    loop {
        let closed = {
            let (mut state, _) = shared
                .flush
                .wait_timeout_while(shared.lock(), shared.every, |s| s.buf.len() < FLUSH_AT && !s.urgent && !s.closed)
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut state.buf, &mut taken);
            state.urgent = false;
            state.closed
        };
        shared.room.notify_all();
        if taken.is_empty() {
            if closed {
                return;
            }
            continue;
        }
        // Nowhere to report a failed write of the log itself; the lines are dropped.
        let _ = out.write_all(&taken).and_then(|()| out.flush());
        taken.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read after the sink closed.
    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<u8>>>);

    impl Write for Collected {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Every line from every thread arrives whole and in each thread's order,
    /// including lines past the cap and those still buffered at the close.
    #[test]
    fn close_writes_every_line() {
        let out = Collected::default();
        let (sink, guard) = LogSink::start(out.clone());
        let line = vec![b'x'; 1000];
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                let line = line.clone();
                std::thread::spawn(move || {
                    for n in 0..20_000 {
                        let mut text = format!("{t} {n} ").into_bytes();
                        text.extend_from_slice(&line);
                        text.push(b'\n');
                        sink.append(&text, n % 1000 == 0);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0u32; 4];
        for l in text.lines() {
            let mut parts = l.splitn(3, ' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let n: u32 = parts.next().unwrap().parse().unwrap();
            assert_eq!(n, next[t], "thread {t}'s lines out of order");
            assert_eq!(parts.next().unwrap().len(), 1000);
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }

    /// What the sink wrote first, waiting up to 10 s for it.
    fn first_write(out: &Collected) -> Vec<u8> {
        let started = std::time::Instant::now();
        while out.0.lock().unwrap().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(10), "nothing was written");
            std::thread::sleep(Duration::from_millis(1));
        }
        out.0.lock().unwrap().clone()
    }

    /// Lines are written while the sink runs, not only at the close.
    #[test]
    fn lines_are_written_while_running() {
        let out = Collected::default();
        let (sink, _guard) = LogSink::start(out.clone());
        sink.append(b"one line\n", false);
        assert_eq!(first_write(&out), b"one line\n");
    }

    /// An urgent line is written at once and takes the routine lines before it
    /// along; routine lines alone wait for the tick (an hour here).
    #[test]
    fn an_urgent_line_is_written_at_once() {
        let out = Collected::default();
        let (sink, _guard) = LogSink::start_every(out.clone(), Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(50)); // the thread is now waiting out its tick
        sink.append(b"routine\n", false);
        std::thread::sleep(Duration::from_millis(50));
        assert!(out.0.lock().unwrap().is_empty(), "a routine line waits for the tick");
        sink.append(b"urgent\n", true);
        assert_eq!(first_write(&out), b"routine\nurgent\n");
    }
}
