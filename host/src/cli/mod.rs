//! The `sluice` command line. `serve` runs the service; every other subcommand
//! talks to a running server over its HTTP API, so it works from any machine
//! that can reach the server.

mod admin;
mod alerts;
mod audit;
mod client;
mod jobs;
mod output;
mod plugins;
mod privacy;
mod queues;
mod quotas;
mod work;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::maintenance::MaintenanceConfig;
use crate::plugins::{PluginLimits, compile_stdin_to_stdout};
use crate::server::{ServeConfig, serve};
use crate::store::{FoldPolicy, StoreOptions};
pub use client::{CliError, Client};
use output::Output;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a durable job queue with tenant-supplied WebAssembly policy",
    after_help = "Examples:\n  sluice serve --data ./sluice-data\n  export SLUICE_KEY=$(cat sluice-data/bootstrap-admin.key)\n  sluice tenants create acme\n  sluice --tenant acme jobs add --queue emails --kind send --user u-1 --payload '{\"to\":\"a@b.c\"}'\n  sluice --tenant acme work --queue emails -- ./send-email.sh"
)]
pub struct Cli {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Commands,
}

/// Where the server is and who we are; shared by every client subcommand.
#[derive(Args, Clone)]
struct Connection {
    /// The server's base URL.
    #[arg(long, global = true, env = "SLUICE_URL", default_value = "http://127.0.0.1:7700")]
    url: String,
    /// API key (Bearer).
    #[arg(long, global = true, env = "SLUICE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Tenant to act in, for keys that span tenants (sent as Sluice-Tenant).
    #[arg(long, global = true, env = "SLUICE_TENANT")]
    tenant: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the service on a data folder.
    ///
    /// Example: sluice serve --data ./sluice-data --listen 127.0.0.1:7700
    Serve(ServeArgs),
    /// Tenants (admin keys).
    #[command(subcommand)]
    Tenants(admin::TenantCommand),
    /// API keys: create (the secret is shown once), list, revoke.
    #[command(subcommand)]
    Keys(admin::KeyCommand),
    /// Host administration: pause and resume everything, checkpoints.
    #[command(subcommand)]
    Admin(admin::HostCommand),
    /// Queues: show, configure, pause, resume, reset the failure breaker.
    #[command(subcommand)]
    Queues(queues::QueueCommand),
    /// Jobs: add (one or in bulk), get, list, history, retry, replay, cancel.
    #[command(subcommand)]
    Jobs(jobs::JobCommand),
    /// Run a command once per job of a queue: a worker for any script.
    Work(work::WorkArgs),
    /// Alerts: list, history, acknowledge.
    #[command(subcommand)]
    Alerts(alerts::AlertCommand),
    /// Plugins: upload, list, show, delete, bind, unbind, bindings, check.
    #[command(subcommand)]
    Plugins(plugins::PluginCommand),
    /// The tenant's limits: get, set (admin).
    #[command(subcommand)]
    Limits(quotas::LimitCommand),
    /// The tenant's usage of its limits, or one user's (--user).
    Usage {
        #[arg(long)]
        user: Option<String>,
    },
    /// Legal holds on a job or a user: place, lift.
    #[command(subcommand)]
    Holds(privacy::HoldCommand),
    /// What retention deleted and what legal holds kept.
    Retention,
    /// Users: delete all of a user's data (right to delete).
    #[command(subcommand)]
    Users(privacy::UserCommand),
    /// Deletion receipts: list, show.
    #[command(subcommand)]
    Deletions(privacy::DeletionCommand),
    /// The security audit log (admins and auditors).
    Audit(audit::AuditArgs),
    /// Compile a plugin component from stdin to an artifact on stdout (used by
    /// `serve`, which runs it as a child process bounded in time).
    #[command(hide = true)]
    CompilePlugin(PluginEngineArgs),
}

/// Plugin engine settings; a precompiled artifact only fits the same settings.
#[derive(Args, Clone)]
struct PluginEngineArgs {
    /// Plugin calls that may run at once.
    #[arg(long, default_value_t = 200)]
    plugin_concurrent_calls: u32,
    /// Memory one plugin call may use, in MiB.
    #[arg(long, default_value_t = 64)]
    plugin_memory_mib: usize,
    /// Table elements per plugin table.
    #[arg(long, default_value_t = 20_000)]
    plugin_table_elements: usize,
    /// Core instances one plugin may create.
    #[arg(long, default_value_t = 50)]
    plugin_instances: usize,
}

impl PluginEngineArgs {
    fn limits(&self) -> PluginLimits {
        PluginLimits {
            concurrent_calls: self.plugin_concurrent_calls,
            memory_bytes: self.plugin_memory_mib << 20,
            table_elements: self.plugin_table_elements,
            instances: self.plugin_instances,
            ..PluginLimits::default()
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Folder holding the database file and the bootstrap key.
    #[arg(long, env = "SLUICE_DATA", default_value = "sluice-data")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Requests served at once (long-polling claims count while they wait); one
    /// more is answered at once with 503 OVERLOADED and Retry-After.
    #[arg(long, env = "SLUICE_MAX_IN_FLIGHT", default_value_t = crate::api::overload::DEFAULT_MAX_IN_FLIGHT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_in_flight: usize,
    /// Threads serving requests and plugin calls. The default is one per core
    /// less one, at least one: the writer thread keeps a core busy under load, and
    /// a request thread more than the cores left only adds switches between them.
    #[arg(long, env = "SLUICE_WORKERS", value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,
    /// redb page cache, in MiB. It should hold the hot index pages, the job_uuid
    /// index's above all (random keys): with a million jobs stored, the default
    /// keeps inserts near their empty-store rate.
    #[arg(long, default_value_t = StoreOptions::default().cache_bytes >> 20)]
    cache_mib: usize,
    /// Fold the journal into the database file once it holds this many MiB ...
    #[arg(long, default_value_t = FoldPolicy::default().bytes >> 20)]
    fold_mib: u64,
    /// ... or at the first write this long after the last fold.
    #[arg(long, default_value_t = FoldPolicy::default().interval.as_millis() as u64)]
    fold_interval_ms: u64,
    /// How often the rescuer looks for expired leases, in ms.
    #[arg(long, default_value_t = 250)]
    rescue_interval_ms: u64,
    /// How often the scheduler looks for due jobs, in ms.
    #[arg(long, default_value_t = 100)]
    schedule_interval_ms: u64,
    /// How often the stuck detector looks for jobs past their timeouts, in ms.
    #[arg(long, default_value_t = 1000)]
    stuck_interval_ms: u64,
    /// How often alerts are evaluated, in ms.
    #[arg(long, default_value_t = 1000)]
    alert_interval_ms: u64,
    /// A webhook destination tenants may use: `host` (any port) or `host:port`.
    /// Repeat it. Nothing is allowed by default; loopback only when listed.
    #[arg(long = "webhook-allow")]
    webhook_allow: Vec<String>,
    /// A JSON file of alert thresholds to apply at start:
    /// [{"tenant": "acme", "queue": "emails", "alerts": {"depth": {"fire_above": 1000, "clear_below": 500, "for_ms": 60000}}}]
    #[arg(long)]
    alert_rules: Option<PathBuf>,
    /// A JSON file of the limits every tenant has unless an admin sets its own:
    /// {"max_pending": 100000, "insert_rate": {"per_second": 1000, "burst": 2000}, "user": {...}}
    #[arg(long)]
    limits: Option<PathBuf>,
    /// How often the retention cleaner runs, in ms.
    #[arg(long, default_value_t = 5000)]
    retention_interval_ms: u64,
    /// The length of one retention day, in seconds. Shorten it only for drills and tests.
    #[arg(long, default_value_t = 86_400)]
    retention_day_seconds: u64,
    /// How often the eraser looks for deletions to erase from the files, in ms.
    #[arg(long, default_value_t = 1000)]
    erase_interval_ms: u64,
    #[command(flatten)]
    engine: PluginEngineArgs,
    /// Wall-clock limit of one plugin call, in ms.
    #[arg(long, default_value_t = 1000)]
    plugin_deadline_ms: u64,
    /// Fuel (about one unit per wasm instruction) of one plugin call.
    #[arg(long, default_value_t = 500_000_000)]
    plugin_fuel: u64,
    /// Output (stdout, stderr, log) kept per plugin call, in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    plugin_output_bytes: usize,
    /// Largest plugin upload, in MiB.
    #[arg(long, default_value_t = 32)]
    plugin_upload_mib: usize,
    /// Longest compilation of a plugin upload, in seconds.
    #[arg(long, default_value_t = 120)]
    plugin_compile_timeout_s: u64,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Commands::Serve(args) = cli.command {
        return run_server(args);
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let conn = cli.conn;
    let client = Client::new(&conn.url, conn.key.clone(), conn.tenant.clone());
    let out = Output { json: conn.json };
    let result = match cli.command {
        Commands::Serve(_) => unreachable!("served above"),
        Commands::Tenants(c) => runtime.block_on(admin::tenants(&client, out, c)),
        Commands::Keys(c) => runtime.block_on(admin::keys(&client, out, c)),
        Commands::Queues(c) => runtime.block_on(queues::run(&client, out, c)),
        Commands::Admin(c) => runtime.block_on(admin::host(&client, out, c)),
        Commands::Jobs(c) => runtime.block_on(jobs::run(&client, out, c)),
        Commands::Work(args) => runtime.block_on(work::run(client, args)),
        Commands::Plugins(c) => runtime.block_on(plugins::run(&client, out, c)),
        Commands::Alerts(c) => runtime.block_on(alerts::run(&client, out, c)),
        Commands::Limits(c) => runtime.block_on(quotas::limits(&client, out, c)),
        Commands::Usage { user } => runtime.block_on(quotas::usage(&client, out, user)),
        Commands::Holds(c) => runtime.block_on(privacy::holds(&client, out, c)),
        Commands::Retention => runtime.block_on(privacy::retention(&client, out)),
        Commands::Users(c) => runtime.block_on(privacy::users(&client, out, c)),
        Commands::Deletions(c) => runtime.block_on(privacy::deletions(&client, out, c)),
        Commands::Audit(args) => runtime.block_on(audit::run(&client, out, args)),
        Commands::CompilePlugin(args) => {
            return match compile_stdin_to_stdout(&args.limits()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e:#}");
                    ExitCode::from(1)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_server(args: ServeArgs) -> ExitCode {
    let _log = crate::logging::init();
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |cores| cores.get().saturating_sub(1)).max(1),
        |n| n as usize,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let config = ServeConfig {
        data_dir: args.data,
        listen: args.listen,
        store: StoreOptions {
            cache_bytes: args.cache_mib << 20,
            fold: FoldPolicy {
                bytes: args.fold_mib << 20,
                interval: std::time::Duration::from_millis(args.fold_interval_ms),
            },
        },
        maintenance: MaintenanceConfig {
            rescue_interval: std::time::Duration::from_millis(args.rescue_interval_ms),
            schedule_interval: std::time::Duration::from_millis(args.schedule_interval_ms),
            stuck_interval: std::time::Duration::from_millis(args.stuck_interval_ms),
            alert_interval: std::time::Duration::from_millis(args.alert_interval_ms),
            retention_interval: std::time::Duration::from_millis(args.retention_interval_ms),
            retention_day: std::time::Duration::from_secs(args.retention_day_seconds.max(1)),
            erase_interval: std::time::Duration::from_millis(args.erase_interval_ms),
        },
        plugins: PluginLimits {
            deadline: std::time::Duration::from_millis(args.plugin_deadline_ms),
            fuel: args.plugin_fuel,
            output_bytes: args.plugin_output_bytes,
            upload_bytes: args.plugin_upload_mib << 20,
            compile_timeout: std::time::Duration::from_secs(args.plugin_compile_timeout_s),
            ..args.engine.limits()
        },
        webhook_allow: args.webhook_allow,
        alert_rules: args.alert_rules,
        limits: args.limits,
        max_in_flight: args.max_in_flight,
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Parse a JSON argument, naming the flag when it is not JSON.
fn json_arg(flag: &str, text: &str) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Usage(format!("{flag}: not valid JSON ({e})")))
}
