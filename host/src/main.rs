fn main() -> std::process::ExitCode {
    sluice_host::cli::main()
}
