//! The one wasmtime Engine of the host, built once: Cranelift, fuel, epoch
//! interruption, async calls and the pooling allocator. A precompiled artifact
//! only fits an engine with the same settings, so both the server and its
//! compiler process build their engine here.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy};

use super::limits::PluginLimits;
use super::sandbox::CallState;
use super::wit;

/// Bytes of each memory and table slot kept mapped between calls.
const KEEP_RESIDENT: usize = 4 << 20;

pub fn engine(limits: &PluginLimits) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let slots = limits.concurrent_calls;
    pool.total_component_instances(slots)
        .total_core_instances(slots * 8)
        .total_memories(slots * 2)
        .total_tables(slots * 4)
        .total_stacks(slots)
        .max_core_instances_per_component(limits.instances as u32)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .table_elements(limits.table_elements)
        // The slot's hard size; the call's limiter enforces `memory_bytes` below it
        // and remembers that it refused.
        .max_memory_size(limits.memory_bytes * 2)
        // Reset a slot by writing back only the pages the last call touched (found
        // with PAGEMAP_SCAN where the kernel has it) instead of unmapping them: a
        // call then takes no page faults on its stack, data and heap.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&config)?)
}

/// The imports every plugin may use: WASI (its sockets disabled in each call's
/// context, and refused at upload anyway) and `sluice:plugin/host`.
pub fn linker(engine: &Engine) -> anyhow::Result<Arc<Linker<CallState>>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wit::host::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)?;
    Ok(Arc::new(linker))
}
