//! `sluice serve`: open the data folder, start the writer, the maintenance loops
//! and the HTTP server; stop gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerting;
use crate::api::{self, App};
use crate::auth::Keyring;
use crate::checkpoints::Checkpoints;
use crate::maintenance::retention_cleaner::RetentionReports;
use crate::maintenance::{self, MaintenanceConfig};
use crate::plugins::{Compiler, PluginHost, PluginLimits};
use crate::queue::QueueService;
use crate::store::{RedbStore, Store, StoreOptions};
use crate::webhooks::Webhooks;

/// Name of the database file inside the data folder.
pub const DB_FILE: &str = "sluice.redb";
/// Where the first start leaves the bootstrap admin key.
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap-admin.key";

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub store: StoreOptions,
    pub maintenance: MaintenanceConfig,
    pub plugins: PluginLimits,
    /// Webhook destinations tenants may use: `host` or `host:port`.
    pub webhook_allow: Vec<String>,
    /// A JSON file of alert thresholds applied at start:
    /// `[{"tenant": "acme", "queue": "emails", "alerts": {"depth": {...}}}]`.
    pub alert_rules: Option<PathBuf>,
    /// A JSON file of the limits every tenant gets unless an admin sets its own
    /// (`{"max_pending": 100000, "insert_rate": {"per_second": 1000, "burst": 2000}, ...}`).
    pub limits: Option<PathBuf>,
    /// Requests served at once; one more is answered 503 `OVERLOADED`.
    pub max_in_flight: usize,
}

/// The host's default tenant limits, from the `--limits` file (none: unlimited).
fn default_limits(path: Option<&std::path::Path>) -> anyhow::Result<crate::limits::Limits> {
    let Some(path) = path else { return Ok(crate::limits::Limits::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let limits: crate::limits::Limits =
        serde_json::from_str(&text).with_context(|| format!("{} is not a limits object", path.display()))?;
    limits.check().with_context(|| format!("limits in {}", path.display()))?;
    Ok(limits)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRuleEntry {
    tenant: String,
    queue: String,
    alerts: crate::model::AlertRules,
}

/// Apply the thresholds of the configuration file (queues are created if needed).
async fn apply_alert_rules(queue: &QueueService, path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let entries: Vec<AlertRuleEntry> =
        serde_json::from_str(&text).with_context(|| format!("{} is not a list of alert rules", path.display()))?;
    let actor = crate::model::Actor::host("configuration");
    for entry in entries {
        let mut config = queue.store().queue(&entry.tenant, &entry.queue)?.map(|q| q.config).unwrap_or_default();
        config.alerts = entry.alerts;
        queue
            .configure_queue(&entry.tenant, &entry.queue, config, &actor)
            .await
            .with_context(|| format!("alert rules for {}/{} in {}", entry.tenant, entry.queue, path.display()))?;
    }
    Ok(())
}

pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data folder {}", config.data_dir.display()))?;
    let data = cap_std::fs::Dir::open_ambient_dir(&config.data_dir, cap_std::ambient_authority())
        .with_context(|| format!("cannot open data folder {}", config.data_dir.display()))?;
    let db_path = config.data_dir.join(DB_FILE);
    let store: Arc<dyn Store> = Arc::new(
        RedbStore::open_in(&data, DB_FILE, &config.store)
            .with_context(|| format!("cannot open {}", db_path.display()))?,
    );
    crate::metrics::handle();
    let keyring = Keyring::load(store.clone())?;
    if let Some(secret) = keyring.bootstrap().await? {
        write_secret(&data, BOOTSTRAP_KEY_FILE, &secret)?;
    }
    let key_path = config.data_dir.join(BOOTSTRAP_KEY_FILE);
    let compiler = Compiler::Subprocess(std::env::current_exe().context("cannot find the sluice binary")?);
    let plugins = Arc::new(
        PluginHost::start(store.clone(), config.plugins.clone(), compiler).await.context("cannot load plugins")?,
    );
    let queue = Arc::new(QueueService::new(store.clone(), plugins, default_limits(config.limits.as_deref())?));
    let loop_health = Arc::new(maintenance::LoopHealth::default());
    if let Some(path) = &config.alert_rules {
        apply_alert_rules(&queue, path).await?;
    }
    let checkpoints = Arc::new(Checkpoints::open(&data, store.clone()).context("cannot open the checkpoints folder")?);
    let alerting = Arc::new(Alerting::new(queue.clone(), Webhooks::new(config.webhook_allow.clone())));
    let retention = Arc::new(RetentionReports::default());
    let app = Arc::new(App {
        queue: queue.clone(),
        keyring,
        loops: loop_health.clone(),
        checkpoints: checkpoints.clone(),
        alerting: alerting.clone(),
        retention: retention.clone(),
    });
    let stop = CancellationToken::new();
    let services = maintenance::Services { alerting, checkpoints, retention };
    let loops = maintenance::start(queue.clone(), services, &config.maintenance, loop_health, stop.clone());

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(target: "sluice::server", listen = %addr, data = %config.data_dir.display(), bootstrap_key = %key_path.display(), "sluice is serving");
    eprintln!("sluice listening on http://{addr}");
    if key_path.exists() {
        eprintln!("bootstrap admin key: {}", key_path.display());
    }
    let storage_failed = CancellationToken::new();
    tokio::spawn(watch_storage(store.clone(), storage_failed.clone()));
    let shutdown = {
        let storage_failed = storage_failed.clone();
        async move {
            tokio::select! {
                _ = crate::signal::stop_requested() => {}
                _ = storage_failed.cancelled() => {}
            }
        }
    };
    let in_flight = api::overload::InFlight::new(config.max_in_flight);
    crate::http::serve(listener, api::router(app, in_flight), shutdown).await?;
    stop.cancel();
    for handle in loops {
        let _ = handle.await;
    }
    if let Err(e) = store.fold_journal().await {
        tracing::error!(target: "sluice::server", error = %e, "the journal could not be folded into the database file; the next start replays it");
    }
    if let Some(reason) = store.writer_stats().failure {
        anyhow::bail!("storage failed ({reason}); restart sluice to recover from the last durable commit");
    }
    tracing::info!(target: "sluice::server", "sluice stopped");
    Ok(())
}

/// Write a secret readable by its owner only, through the data folder's handle.
fn write_secret(dir: &cap_std::fs::Dir, name: &str, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = cap_std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use cap_std::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = dir.open_with(name, &options).with_context(|| format!("cannot write {name}"))?;
    writeln!(file, "{secret}")?;
    Ok(())
}

/// After a storage failure redb refuses every write: stop serving, so that a
/// supervisor restarts the host on the last durable state.
async fn watch_storage(store: Arc<dyn Store>, failed: CancellationToken) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if let Some(reason) = store.writer_stats().failure {
            tracing::error!(target: "sluice::server", error = %reason, "storage failed; stopping");
            failed.cancel();
            return;
        }
    }
}
