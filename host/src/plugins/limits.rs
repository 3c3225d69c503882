//! Limits on plugins, with documented defaults (`sluice serve --help` sets them).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct PluginLimits {
    /// Wall-clock time one call may take, guest code and host calls alike. Default 1 s.
    pub deadline: Duration,
    /// Fuel (roughly, wasm instructions) one call may burn. Default 500,000,000.
    pub fuel: u64,
    /// Linear memory one call's instance may grow to, in bytes. Default 64 MiB.
    pub memory_bytes: usize,
    /// Table elements per table. Default 20,000.
    pub table_elements: usize,
    /// Core instances a component may create. Default 50.
    pub instances: usize,
    /// Output kept per call (stdout, stderr and host.log together), in bytes. Default 16 KiB.
    pub output_bytes: usize,
    /// Largest component upload, in bytes. Default 32 MiB.
    pub upload_bytes: usize,
    /// Longest compilation of an upload; the compiler process is killed then. Default 120 s.
    pub compile_timeout: Duration,
    /// Calls that may run at once (slots of the pooling allocator). Default 200.
    pub concurrent_calls: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            deadline: Duration::from_secs(1),
            fuel: 500_000_000,
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            instances: 50,
            output_bytes: 16 << 10,
            upload_bytes: 32 << 20,
            compile_timeout: Duration::from_secs(120),
            concurrent_calls: 200,
        }
    }
}
