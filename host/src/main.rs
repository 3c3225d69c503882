/// mimalloc: the service allocates many small, short-lived buffers (requests,
/// JSON, B-tree pages) from several threads; the benchmark showed glibc's malloc
/// and free as a tenth of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_host::cli::main()
}
