//! The epoch ticker. Plugin deadlines and yields rely on the engine's epoch
//! advancing: a running guest yields its request thread at every tick, so a tick
//! each millisecond keeps a looping plugin from holding that thread for longer.
//! While no call has run for `IDLE_TICKS`, the ticker sleeps instead, waking once
//! a second (readiness checks that it lives) or when a call starts: an idle host
//! does not wake a thousand times a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

use crate::model::now_ms;

/// The epoch's step while calls run.
const TICK: Duration = Duration::from_millis(1);

/// Ticks without a running call before the ticker sleeps.
const IDLE_TICKS: u32 = 100;

/// How long a sleeping ticker waits before ticking anyway.
const IDLE_TICK: Duration = Duration::from_secs(1);

pub struct Ticker {
    state: Arc<State>,
    thread: Thread,
}

struct State {
    /// Calls running now.
    running: AtomicUsize,
    /// When the ticker last ticked (ms since the Unix epoch).
    last_tick_ms: AtomicI64,
}

impl Ticker {
    /// Tick `engine`'s epoch for as long as the engine lives.
    pub fn start(engine: &Engine) -> Ticker {
        let state = Arc::new(State { running: AtomicUsize::new(0), last_tick_ms: AtomicI64::new(now_millis()) });
        let (weak, ticking) = (engine.weak(), state.clone());
        let handle = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || tick(weak, &ticking))
            .expect("spawn epoch ticker");
        Ticker { state, thread: handle.thread().clone() }
    }

    /// Count a call as running until the guard drops; the first call wakes a
    /// sleeping ticker (the ordering makes sure it sees the count before it sleeps).
    pub fn running(&self) -> Running<'_> {
        if self.state.running.fetch_add(1, Ordering::SeqCst) == 0 {
            self.thread.unpark();
        }
        Running(&self.state)
    }

    /// How long ago the ticker last ticked; deadlines rely on it.
    pub fn since_last_tick(&self) -> Duration {
        let last = self.state.last_tick_ms.load(Ordering::Relaxed);
        Duration::from_millis((now_millis() - last).max(0) as u64)
    }
}

/// A running call, counted until it drops.
pub struct Running<'a>(&'a State);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn tick(engine: EngineWeak, state: &State) {
    let mut idle = 0;
    while let Some(engine) = engine.upgrade() {
        engine.increment_epoch();
        drop(engine);
        state.last_tick_ms.store(now_millis(), Ordering::Relaxed);
        idle = if state.running.load(Ordering::SeqCst) == 0 { idle + 1 } else { 0 };
        if idle >= IDLE_TICKS {
            // A call that starts after the load above unparks this thread, and an
            // unpark before the park makes the park return at once.
            std::thread::park_timeout(IDLE_TICK);
        } else {
            std::thread::sleep(TICK);
        }
    }
}

fn now_millis() -> i64 {
    now_ms().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_sleeps_while_no_call_runs_and_ticks_again_once_one_starts() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap();
        let ticker = Ticker::start(&engine);
        // 100 idle ticks (about 0.1 s), then asleep until a call or a second passes.
        std::thread::sleep(Duration::from_millis(900));
        let asleep = ticker.since_last_tick();
        assert!(asleep >= Duration::from_millis(250), "idle, yet it ticked {asleep:?} ago");
        let call = ticker.running();
        let started = std::time::Instant::now();
        while ticker.since_last_tick() > Duration::from_millis(5) {
            assert!(started.elapsed() < Duration::from_millis(100), "a running call did not wake the ticker");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(300));
        let ticking = ticker.since_last_tick();
        assert!(ticking < Duration::from_millis(100), "a call runs, yet it ticked {ticking:?} ago");
        drop(call);
    }
}
