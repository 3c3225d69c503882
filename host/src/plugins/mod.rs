//! Tenant plugins: WebAssembly components run in a sandbox per call.
//!
//! - `wit.rs`: host bindings of the contract in `wit/`.
//! - `engine.rs`: the one Engine (pooling allocator, fuel, epochs) and the Linker.
//! - `sandbox.rs`: a fresh Store per call, limits, bounded output, failure codes.
//! - `ticker.rs`: the epoch ticker, every millisecond while calls run.
//! - `check.rs`: upload checks before compiling; `compile.rs`: bounded compiling.
//! - this file: the registry of loaded plugins and the binding table.
//!
//! Bindings are swapped atomically (arc-swap): a call holds the `Arc` of the
//! binding it started with and finishes on that version; new calls see the new one.

mod check;
mod compile;
mod engine;
mod limits;
mod sandbox;
mod ticker;
mod wit;

pub use check::{CONTRACT, Checked, check};
pub use compile::{Compiler, compile_stdin_to_stdout, engine_args};
pub use engine::engine;
pub use limits::PluginLimits;
pub use sandbox::{CallFailure, CallReport};
/// An action a validator judges (the contract's own enum).
pub use wit::types::Action;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

use crate::error::{Code, Error, Result};
use crate::model::{Binding, Job, JobState, Judgement, Plugin, PluginKind, Stage, now_ms};
use crate::store::{PluginCaps, Store as JobStore};
use sandbox::CallState;
use ticker::Ticker;
use wit::types;

/// A compiled plugin, ready to instantiate.
pub struct LoadedPlugin {
    pub plugin: Plugin,
    pub metrics: crate::metrics::PluginMetrics,
    pre: KindPre,
}

enum KindPre {
    Validator(wit::validator::ValidatorPluginPre<CallState>),
    Tagger(wit::tagger::TaggerPluginPre<CallState>),
    Migrator(wit::migrator::MigratorPluginPre<CallState>),
    AlertPolicy(wit::alert_policy::AlertPolicyPluginPre<CallState>),
}

/// A binding and the plugin it names, as calls use it.
pub struct ActiveBinding {
    pub binding: Binding,
    pub plugin: Arc<LoadedPlugin>,
}

type BindingKey = (String, String, PluginKind, Stage);

/// The binding table, swapped whole: the bindings by key, and which (tenant, kind)
/// have any, so an action can skip judging without scanning the bindings.
#[derive(Default)]
struct BindingTable {
    by_key: HashMap<BindingKey, Arc<ActiveBinding>>,
    kinds: HashSet<(String, PluginKind)>,
}

/// A validator's verdict on an action.
pub enum Verdict {
    Allow,
    Reject { code: String, reason: String },
}

/// Metadata of an upload.
pub struct Upload {
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
}

pub struct PluginHost {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    limits: PluginLimits,
    compiler: Compiler,
    store: Arc<dyn JobStore>,
    loaded: DashMap<(String, String), Arc<LoadedPlugin>>,
    bindings: ArcSwap<BindingTable>,
    /// One permit per pooling-allocator slot: calls beyond them wait their turn.
    slots: tokio::sync::Semaphore,
    ticker: Ticker,
}

fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl PluginHost {
    /// Build the engine, load every stored plugin from its artifact and the bindings.
    pub async fn start(
        store: Arc<dyn JobStore>,
        limits: PluginLimits,
        compiler: Compiler,
    ) -> anyhow::Result<PluginHost> {
        let engine = engine::engine(&limits)?;
        let ticker = Ticker::start(&engine);
        let linker = engine::linker(&engine)?;
        let host = PluginHost {
            engine,
            linker,
            compiler,
            store,
            loaded: DashMap::new(),
            bindings: ArcSwap::from_pointee(BindingTable::default()),
            slots: tokio::sync::Semaphore::new(limits.concurrent_calls as usize),
            ticker,
            limits,
        };
        for plugin in host.store.plugins(None)? {
            host.load(plugin).await?;
        }
        host.refresh_bindings()?;
        Ok(host)
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// How long ago the epoch ticker last ticked; deadlines rely on it.
    pub fn since_last_tick(&self) -> std::time::Duration {
        self.ticker.since_last_tick()
    }

    /// A loaded plugin of a tenant.
    pub fn loaded(&self, tenant: &str, digest: &str) -> Option<Arc<LoadedPlugin>> {
        self.loaded.get(&(tenant.to_owned(), digest.to_owned())).map(|p| p.clone())
    }

    /// Deserialize a stored artifact (recompiling it if this engine cannot use it).
    async fn load(&self, plugin: Plugin) -> anyhow::Result<Arc<LoadedPlugin>> {
        let key = (plugin.tenant.clone(), plugin.digest.clone());
        if let Some(done) = self.loaded.get(&key) {
            return Ok(done.clone());
        }
        let artifact = self.store.plugin_artifact(&plugin.tenant, &plugin.digest)?.unwrap_or_default();
        // SAFETY: artifacts are produced by this binary's own compiler and stored in
        // the host's database; tenants never supply them.
        let component = match unsafe { Component::deserialize(&self.engine, &artifact) } {
            Ok(c) => c,
            Err(_) => {
                let bytes = self.store.plugin_component(&plugin.tenant, &plugin.digest)?.unwrap_or_default();
                let artifact = self.compiler.precompile(&self.engine, &bytes, &self.limits).await?;
                self.store.replace_artifact(&plugin.tenant, &plugin.digest, artifact.clone()).await?;
                unsafe { Component::deserialize(&self.engine, &artifact)? }
            }
        };
        let pre = self.instance_pre(plugin.kind, &component)?;
        let loaded = Arc::new(LoadedPlugin { metrics: crate::metrics::PluginMetrics::new(&plugin), pre, plugin });
        self.loaded.insert(key, loaded.clone());
        Ok(loaded)
    }

    fn instance_pre(&self, kind: PluginKind, component: &Component) -> anyhow::Result<KindPre> {
        let pre = self.linker.instantiate_pre(component)?;
        Ok(match kind {
            PluginKind::Validator => KindPre::Validator(wit::validator::ValidatorPluginPre::new(pre)?),
            PluginKind::Tagger => KindPre::Tagger(wit::tagger::TaggerPluginPre::new(pre)?),
            PluginKind::Migrator => KindPre::Migrator(wit::migrator::MigratorPluginPre::new(pre)?),
            PluginKind::AlertPolicy => KindPre::AlertPolicy(wit::alert_policy::AlertPolicyPluginPre::new(pre)?),
        })
    }

    /// Check, compile (bounded) and store an upload. The same bytes from the same
    /// tenant are the same plugin: the first upload's record is returned.
    /// `caps` are the tenant's plugin quotas: checked before compiling, and again
    /// exactly in the writer.
    pub async fn upload(
        &self,
        tenant: &str,
        upload: Upload,
        bytes: Vec<u8>,
        caps: PluginCaps,
    ) -> Result<(Plugin, bool)> {
        check_name("name", &upload.name)?;
        check_name("version", &upload.version)?;
        let checked = check(&bytes, upload.kind, self.limits.upload_bytes)?;
        let digest = digest_of(&bytes);
        if let Some(existing) = self.store.plugin(tenant, &digest)? {
            return Ok((existing, false));
        }
        let usage = self.store.usage(tenant)?;
        if let Some(max) = caps.plugins.filter(|&max| usage.plugins >= max) {
            let detail = format!("{} of {max} plugins", usage.plugins);
            return Err(crate::limits::exceeded(crate::limits::Holder::Tenant, "max_plugins", detail));
        }
        let artifact = self.compiler.precompile(&self.engine, &bytes, &self.limits).await?;
        // Linking proves the imports resolve before anything is stored.
        let component = unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(Error::internal)?;
        self.instance_pre(upload.kind, &component)
            .map_err(|e| Error::new(Code::PluginInvalid, format!("the component does not link: {e:#}")))?;
        let plugin = Plugin {
            digest,
            tenant: tenant.to_owned(),
            name: upload.name,
            kind: upload.kind,
            version: upload.version,
            size: bytes.len() as u64,
            contract: checked.contract,
            created_at: now_ms(),
        };
        let (plugin, created) = self.store.put_plugin(plugin, bytes, artifact, caps).await?;
        self.load(plugin.clone()).await.map_err(Error::internal)?;
        Ok((plugin, created))
    }

    /// Delete a plugin; refused while a binding names it.
    pub async fn delete(&self, tenant: &str, digest: &str) -> Result<Plugin> {
        let plugin = self.store.delete_plugin(tenant, digest).await?;
        self.loaded.remove(&(tenant.to_owned(), digest.to_owned()));
        Ok(plugin)
    }

    pub async fn bind(&self, binding: Binding, max_bindings: Option<u64>) -> Result<Binding> {
        let binding = self.store.put_binding(binding, max_bindings).await?;
        self.refresh_bindings()?;
        Ok(binding)
    }

    pub async fn unbind(&self, tenant: &str, queue: &str, kind: PluginKind, stage: Stage) -> Result<Binding> {
        let binding = self.store.delete_binding(tenant, queue, kind, stage).await?;
        self.refresh_bindings()?;
        Ok(binding)
    }

    /// Rebuild the binding table from the store and swap it in whole.
    pub fn refresh_bindings(&self) -> Result<()> {
        let mut table = BindingTable::default();
        for binding in self.store.bindings(None)? {
            let Some(plugin) = self.loaded.get(&(binding.tenant.clone(), binding.plugin.clone())).map(|p| p.clone())
            else {
                tracing::error!(target: "sluice::plugins", tenant = %binding.tenant, digest = %binding.plugin, "binding names a plugin that is not loaded");
                continue;
            };
            let key = (binding.tenant.clone(), binding.queue.clone(), binding.kind, binding.stage);
            table.kinds.insert((binding.tenant.clone(), binding.kind));
            table.by_key.insert(key, Arc::new(ActiveBinding { binding, plugin }));
        }
        self.bindings.store(Arc::new(table));
        Ok(())
    }

    /// The binding that applies: the queue's own, else the tenant's `*`.
    pub fn bound(&self, tenant: &str, queue: &str, kind: PluginKind, stage: Stage) -> Option<Arc<ActiveBinding>> {
        let map = &self.bindings.load().by_key;
        if map.is_empty() {
            return None;
        }
        map.get(&(tenant.to_owned(), queue.to_owned(), kind, stage))
            .or_else(|| map.get(&(tenant.to_owned(), "*".to_owned(), kind, stage)))
            .cloned()
    }

    /// Whether any plugin of `kind` is bound in `tenant`, to any queue or stage.
    pub fn binds_any(&self, tenant: &str, kind: PluginKind) -> bool {
        self.bindings.load().kinds.contains(&(tenant.to_owned(), kind))
    }

    /// Run one call in a fresh sandbox, once a slot is free.
    async fn run<T>(&self, body: impl AsyncFnOnce(&mut Store<CallState>) -> wasmtime::Result<T>) -> CallReport<T> {
        let _slot = self.slots.acquire().await.expect("the semaphore is never closed");
        let _running = self.ticker.running();
        sandbox::run(&self.engine, &self.limits, body).await
    }

    /// Judge an action on a job.
    pub async fn validate(
        &self,
        plugin: &LoadedPlugin,
        job: &Job,
        action: Action,
        from: JobState,
        to: JobState,
    ) -> CallReport<Verdict> {
        let KindPre::Validator(pre) = &plugin.pre else { return wrong_kind(plugin) };
        let view = job_view(job);
        let report = self
            .run(async |store: &mut Store<CallState>| {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance
                    .sluice_plugin_validator()
                    .call_validate(&mut *store, &view, action, state(from), state(to))
                    .await
            })
            .await;
        map_report(report, |r| match r {
            Ok(()) => Verdict::Allow,
            Err(types::Rejection { code, reason }) => Verdict::Reject { code, reason },
        })
    }

    /// Tags a tagger adds to a job; `Err` is the plugin refusing the job.
    pub async fn tag(
        &self,
        plugin: &LoadedPlugin,
        job: &Job,
    ) -> CallReport<std::result::Result<Vec<(String, Value)>, String>> {
        let KindPre::Tagger(pre) = &plugin.pre else { return wrong_kind(plugin) };
        let view = job_view(job);
        let report = self
            .run(async |store: &mut Store<CallState>| {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.sluice_plugin_tagger().call_tag(&mut *store, &view).await
            })
            .await;
        map_report(report, |r| {
            r.and_then(|tags| {
                tags.into_iter()
                    .map(|t| {
                        serde_json::from_str::<Value>(&t.value)
                            .map(|v| (t.key.clone(), v))
                            .map_err(|e| format!("tag {}: value is not JSON ({e})", t.key))
                    })
                    .collect()
            })
        })
    }

    /// Move a payload one schema version up (`up`) or down.
    pub async fn migrate(
        &self,
        plugin: &LoadedPlugin,
        payload: &str,
        from: u32,
        up: bool,
    ) -> CallReport<std::result::Result<String, String>> {
        let KindPre::Migrator(pre) = &plugin.pre else { return wrong_kind(plugin) };
        self.run(async |store: &mut Store<CallState>| {
            let instance = pre.instantiate_async(&mut *store).await?;
            let m = instance.sluice_plugin_migrator();
            if up { m.call_up(&mut *store, payload, from).await } else { m.call_down(&mut *store, payload, from).await }
        })
        .await
    }

    /// The alerts a policy wants firing for these statistics.
    pub async fn evaluate(&self, plugin: &LoadedPlugin, stats: &QueueStats) -> CallReport<Vec<PolicyAlert>> {
        let KindPre::AlertPolicy(pre) = &plugin.pre else { return wrong_kind(plugin) };
        use wit::alert_policy::exports::sluice::plugin::alert_policy as ap;
        let input = ap::QueueStats {
            queue: stats.queue.clone(),
            pending: stats.pending,
            processing: stats.processing,
            failed: stats.failed,
            parked: stats.parked,
            stuck: stats.stuck,
            oldest_pending_ms: stats.oldest_pending_ms,
        };
        let report = self
            .run(async |store: &mut Store<CallState>| {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.sluice_plugin_alert_policy().call_evaluate(&mut *store, &input).await
            })
            .await;
        map_report(report, |alerts| {
            alerts
                .into_iter()
                .map(|a| PolicyAlert {
                    name: a.name,
                    severity: match a.severity {
                        ap::Severity::Info => "info",
                        ap::Severity::Warning => "warning",
                        ap::Severity::Critical => "critical",
                    },
                    message: a.message,
                })
                .collect()
        })
    }
}

fn check_name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 128 {
        return Err(Error::validation(format!("{field}: 1 to 128 bytes")));
    }
    Ok(())
}

fn wrong_kind<T>(plugin: &LoadedPlugin) -> CallReport<T> {
    CallReport {
        result: Err(CallFailure {
            code: Code::Internal,
            reason: format!("plugin is a {}", plugin.plugin.kind.as_str()),
        }),
        fuel: 0,
        duration: std::time::Duration::ZERO,
        output: String::new(),
    }
}

fn map_report<A, B>(report: CallReport<A>, f: impl FnOnce(A) -> B) -> CallReport<B> {
    CallReport { result: report.result.map(f), fuel: report.fuel, duration: report.duration, output: report.output }
}

fn state(s: JobState) -> types::State {
    match s {
        JobState::Pending => types::State::Pending,
        JobState::Processing => types::State::Processing,
        JobState::Completed => types::State::Completed,
        JobState::Failed => types::State::Failed,
        JobState::Abandoned => types::State::Abandoned,
    }
}

fn job_view(job: &Job) -> types::Job {
    types::Job {
        job_uuid: job.job_uuid.to_string(),
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        payload: job.payload.get().to_owned(),
        schema_version: job.schema_version,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        tags: serde_json::to_string(&job.tags).expect("a JSON map serialises"),
        stage: job.stage.as_str().to_owned(),
        progress: job.progress.as_ref().map(|p| serde_json::json!({ "step": p.step, "data": p.data }).to_string()),
    }
}

/// Queue statistics as an alert policy receives them.
#[derive(Clone, Debug, Default)]
pub struct QueueStats {
    pub queue: String,
    pub pending: u64,
    pub processing: u64,
    pub failed: u64,
    pub parked: u64,
    pub stuck: u64,
    pub oldest_pending_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyAlert {
    pub name: String,
    pub severity: &'static str,
    pub message: String,
}

/// The history record of a call.
pub fn judgement<T>(
    plugin: &Plugin,
    report: &CallReport<T>,
    outcome: &str,
    code: Option<String>,
    reason: Option<String>,
) -> Judgement {
    Judgement {
        digest: plugin.digest.clone(),
        kind: plugin.kind,
        outcome: outcome.to_owned(),
        code,
        reason,
        fuel: report.fuel,
        duration_us: report.duration.as_micros() as u64,
        output: report.output.clone(),
    }
}
