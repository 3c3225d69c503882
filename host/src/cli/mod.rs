//! The `sluice` command line. `serve` runs the service; the other subcommands
//! talk to a running server over its HTTP API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::maintenance::MaintenanceConfig;
use crate::server::{ServeConfig, serve};
use crate::store::StoreOptions;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Sluice: a durable job queue with tenant-supplied WebAssembly policy")]
pub struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the service on a data folder.
    ///
    /// Example: sluice serve --data ./sluice-data --listen 127.0.0.1:7700
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Folder holding the database file and the bootstrap key.
    #[arg(long, env = "SLUICE_DATA", default_value = "sluice-data")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// redb page cache, in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mib: usize,
    /// How often the rescuer looks for expired leases, in ms.
    #[arg(long, default_value_t = 250)]
    rescue_interval_ms: u64,
    /// How often the scheduler looks for due jobs, in ms.
    #[arg(long, default_value_t = 100)]
    schedule_interval_ms: u64,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().json().flatten_event(true).with_current_span(false).with_env_filter(filter).init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => {
            init_logging();
            let config = ServeConfig {
                data_dir: args.data,
                listen: args.listen,
                store: StoreOptions { cache_bytes: args.cache_mib << 20 },
                maintenance: MaintenanceConfig {
                    rescue_interval: std::time::Duration::from_millis(args.rescue_interval_ms),
                    schedule_interval: std::time::Duration::from_millis(args.schedule_interval_ms),
                },
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
