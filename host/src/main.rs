/// mimalloc: the service allocates many small, short-lived buffers (requests,
/// JSON, B-tree pages) from several threads; the benchmark showed glibc's malloc
/// and free as a tenth of the server's CPU. Without transparent huge pages
/// (`no_thp`): with them, every page mimalloc purged and reused faulted in a whole
/// 2 MiB page to zero, a tenth of the writer thread's time in the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_host::cli::main()
}
