//! One plugin call's sandbox: a fresh wasmtime Store with its own WASI context (no
//! environment, no stdin, no preopened directory, no network), a resource limiter
//! that remembers what it refused, and bounded capture of everything the plugin
//! writes. Nothing survives the call.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::PluginLimits;
use super::wit::host;
use crate::error::Code;

/// Everything one call's Store holds.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    output: Output,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl host::Host for CallState {
    fn log(&mut self, level: host::Level, message: String) {
        let level = match level {
            host::Level::Debug => "debug",
            host::Level::Info => "info",
            host::Level::Warn => "warn",
            host::Level::Error => "error",
        };
        self.output.append(&format!("[{level}] {message}\n"));
    }
}

impl super::wit::types::Host for CallState {}

/// A plugin's output, kept up to a cap; the rest is counted and dropped, so a
/// plugin that floods its output neither traps nor grows the host.
#[derive(Clone)]
pub struct Output(Arc<Mutex<Captured>>);

struct Captured {
    text: String,
    cap: usize,
    dropped: u64,
}

impl Output {
    fn new(cap: usize) -> Output {
        Output(Arc::new(Mutex::new(Captured { text: String::new(), cap, dropped: 0 })))
    }

    fn append(&self, chunk: &str) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = c.cap.saturating_sub(c.text.len());
        let mut take = chunk.len().min(room);
        while !chunk.is_char_boundary(take) {
            take -= 1;
        }
        c.text.push_str(&chunk[..take]);
        c.dropped += (chunk.len() - take) as u64;
    }

    /// The kept text, with a note of how much was dropped.
    pub fn take(&self) -> String {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if c.dropped > 0 { format!("{}\n[{} more bytes of output dropped]", c.text, c.dropped) } else { c.text.clone() }
    }
}

impl IsTerminal for Output {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Output {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for Output {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(&String::from_utf8_lossy(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Caps memory, tables and instances, and remembers a refusal: a guest that is
/// refused memory usually aborts, and the host must still report `PLUGIN_LIMIT`.
struct CallLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    refused: Option<String>,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.refused.get_or_insert(format!(
                "memory: the plugin asked for {desired} bytes, the limit is {}",
                self.memory_bytes
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.refused
                .get_or_insert(format!("table: {desired} elements asked, the limit is {}", self.table_elements));
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.instances * 4
    }

    fn memories(&self) -> usize {
        self.instances
    }
}

/// A fresh Store for one call, with fuel, the deadline and the limiter armed.
pub fn new_store(engine: &wasmtime::Engine, limits: &PluginLimits) -> Store<CallState> {
    let output = Output::new(limits.output_bytes);
    let mut wasi = WasiCtx::builder();
    wasi.stdout(output.clone()).stderr(output.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    let state = CallState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limiter: CallLimiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            instances: limits.instances,
            refused: None,
        },
        output,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_fuel(limits.fuel).expect("fuel is enabled");
    // Yield to the executor every tick (ticker.rs: each millisecond while calls
    // run), so a spinning guest never holds a runtime thread, and stop the guest
    // once the deadline has passed.
    let started = Instant::now();
    let deadline = limits.deadline;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if started.elapsed() >= deadline { Ok(UpdateDeadline::Interrupt) } else { Ok(UpdateDeadline::Yield(1)) }
    });
    store
}

/// Why a call failed, as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallFailure {
    pub code: Code,
    pub reason: String,
}

/// What one call did, whatever its outcome.
pub struct CallReport<T> {
    pub result: Result<T, CallFailure>,
    pub fuel: u64,
    pub duration: Duration,
    pub output: String,
}

/// Run `body` in a fresh Store under every limit, and classify how it ended.
pub async fn run<T>(
    engine: &wasmtime::Engine,
    limits: &PluginLimits,
    body: impl AsyncFnOnce(&mut Store<CallState>) -> wasmtime::Result<T>,
) -> CallReport<T> {
    let mut store = new_store(engine, limits);
    let started = Instant::now();
    // The host-side deadline covers time blocked in host calls (a clock wait),
    // which epoch interruption cannot see; a little slack lets the epoch fire first.
    let outcome = tokio::time::timeout(limits.deadline + Duration::from_millis(50), body(&mut store)).await;
    let duration = started.elapsed();
    let fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    let state = store.data();
    let result = match outcome {
        Ok(Ok(value)) => Ok(value),
        Err(_) => Err(CallFailure {
            code: Code::PluginTimeout,
            reason: format!(
                "deadline: the call was still blocked in a host call after {} ms",
                limits.deadline.as_millis()
            ),
        }),
        Ok(Err(error)) => Err(classify(&error, state.limiter.refused.as_deref(), limits)),
    };
    CallReport { result, fuel, duration, output: state.output.take() }
}

fn classify(error: &wasmtime::Error, refused: Option<&str>, limits: &PluginLimits) -> CallFailure {
    if let Some(refused) = refused {
        return CallFailure { code: Code::PluginLimit, reason: refused.to_owned() };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallFailure {
            code: Code::PluginTimeout,
            reason: format!("fuel: the call burned its {} units of fuel", limits.fuel),
        },
        Some(Trap::Interrupt) => CallFailure {
            code: Code::PluginTimeout,
            reason: format!("deadline: the call ran longer than {} ms", limits.deadline.as_millis()),
        },
        Some(trap) => CallFailure { code: Code::PluginTrap, reason: format!("trap: {trap}") },
        None => CallFailure { code: Code::PluginTrap, reason: format!("{error:#}") },
    }
}
