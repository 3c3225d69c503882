//! Test a plugin with `cargo test`: build it for wasm32-wasip2, load it into the
//! real Sluice host engine under the production limits, and call it as the host
//! would, with the fuel and time each call used.
//!
//! ```no_run
//! use sluice_sdk::testing::{Harness, job};
//! use sluice_sdk::testing::host::{model::{JobState, PluginKind}, plugins::{Action, Verdict}};
//!
//! let harness = Harness::build(env!("CARGO_MANIFEST_DIR"), PluginKind::Validator);
//! let outcome = harness.validate(&job("emails", serde_json::json!({"to": "a@b.c"})), Action::Complete, JobState::Processing, JobState::Completed);
//! assert!(matches!(outcome.result, Ok(Verdict::Allow)));
//! println!("fuel used: {}", outcome.fuel);
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub use sluice_host as host;
use sluice_host::model::{Job, JobState, PluginKind, Stage, Tenant, now_ms};
use sluice_host::plugins::{
    Action, CallReport, Compiler, LoadedPlugin, PluginHost, PluginLimits, PolicyAlert, QueueStats, Upload, Verdict,
};
use sluice_host::store::{NewJob, PluginCaps, RedbStore, Store, StoreOptions};

/// The tenant plugins belong to inside the harness.
const TENANT: &str = "harness";

/// One plugin loaded in a private host engine (with an in-memory store).
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    host: PluginHost,
    plugin: Arc<LoadedPlugin>,
}

/// Make sure rustup has the wasm32-wasip2 target (plugins build for it).
pub fn ensure_wasm_target() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let has = installed
        .as_ref()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip2"));
    if !has {
        let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status().expect("run rustup");
        assert!(status.success(), "rustup target add wasm32-wasip2 failed");
    }
}

/// Build every component crate of the cargo manifest (a crate or a workspace) for
/// wasm32-wasip2 in release mode; returns each crate's `.wasm` by crate name.
pub fn build_components(manifest: &Path) -> HashMap<String, PathBuf> {
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format=json", "--manifest-path"])
        .arg(manifest)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(output.status.success(), "building {} for wasm32-wasip2 failed", manifest.display());
    let mut built = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        for file in message["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str()) {
            if file.ends_with(".wasm") {
                let name = message["target"]["name"].as_str().unwrap_or_default().replace('-', "_");
                built.insert(name, PathBuf::from(file));
            }
        }
    }
    built
}

impl Harness {
    /// Build the plugin crate in `crate_dir` and load it.
    pub fn build(crate_dir: impl AsRef<Path>, kind: PluginKind) -> Harness {
        let manifest = crate_dir.as_ref().join("Cargo.toml");
        let built = build_components(&manifest);
        assert_eq!(built.len(), 1, "expected one component from {}, got {built:?}", manifest.display());
        Harness::load(built.values().next().expect("one component"), kind)
    }

    /// Load a built component under the production limits.
    pub fn load(wasm: impl AsRef<Path>, kind: PluginKind) -> Harness {
        Harness::with_limits(wasm, kind, PluginLimits::default())
    }

    /// Load a built component under other limits.
    pub fn with_limits(wasm: impl AsRef<Path>, kind: PluginKind, limits: PluginLimits) -> Harness {
        let bytes = std::fs::read(wasm.as_ref()).unwrap_or_else(|e| panic!("read {}: {e}", wasm.as_ref().display()));
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let (host, plugin) = runtime.block_on(async {
            let store: Arc<dyn Store> =
                Arc::new(RedbStore::in_memory(&StoreOptions::default()).expect("in-memory store"));
            store.create_tenant(Tenant { id: TENANT.into(), created_at: now_ms() }).await.expect("tenant");
            let host = PluginHost::start(store, limits, Compiler::InProcess).await.expect("plugin engine");
            let upload = Upload { name: "under-test".into(), kind, version: "0.0.0".into() };
            let (plugin, _) = host
                .upload(TENANT, upload, bytes, PluginCaps::default())
                .await
                .unwrap_or_else(|e| panic!("the upload checks refused it: {e}"));
            let loaded = host.loaded(TENANT, &plugin.digest).expect("loaded");
            (host, loaded)
        });
        Harness { runtime, host, plugin }
    }

    /// The plugin's digest (the SHA-256 of the component).
    pub fn digest(&self) -> &str {
        &self.plugin.plugin.digest
    }

    /// Ask the validator to judge `action` taking `job` from `from` to `to`.
    pub fn validate(&self, job: &Job, action: Action, from: JobState, to: JobState) -> CallReport<Verdict> {
        self.runtime.block_on(self.host.validate(&self.plugin, job, action, from, to))
    }

    /// The tags the tagger adds to `job` (or its refusal).
    pub fn tag(&self, job: &Job) -> CallReport<Result<Vec<(String, serde_json::Value)>, String>> {
        self.runtime.block_on(self.host.tag(&self.plugin, job))
    }

    /// Migrate a payload one version up from `from`.
    pub fn up(&self, payload: &serde_json::Value, from: u32) -> CallReport<Result<String, String>> {
        self.runtime.block_on(self.host.migrate(&self.plugin, &payload.to_string(), from, true))
    }

    /// Migrate a payload one version down from `from`.
    pub fn down(&self, payload: &serde_json::Value, from: u32) -> CallReport<Result<String, String>> {
        self.runtime.block_on(self.host.migrate(&self.plugin, &payload.to_string(), from, false))
    }

    /// The alerts the policy wants firing for these statistics.
    pub fn evaluate(&self, stats: &QueueStats) -> CallReport<Vec<PolicyAlert>> {
        self.runtime.block_on(self.host.evaluate(&self.plugin, stats))
    }
}

/// A pending job with this payload, as a plugin would see it.
pub fn job(queue: &str, payload: serde_json::Value) -> Job {
    job_with_tags(queue, payload, serde_json::Map::new())
}

/// A pending job with a payload and tags.
pub fn job_with_tags(queue: &str, payload: serde_json::Value, tags: serde_json::Map<String, serde_json::Value>) -> Job {
    let new = NewJob {
        job_uuid: uuid::Uuid::new_v4(),
        user_id: "test-user".into(),
        trace_id: "test-trace".into(),
        queue: queue.into(),
        kind: "test".into(),
        payload: serde_json::value::to_raw_value(&payload).expect("JSON payload"),
        schema_version: 1,
        priority: 0,
        run_at: now_ms(),
        max_attempts: None,
        tags,
        stage: Stage::Stable,
        judgement: None,
    };
    new.into_job(TENANT, 1, 5, now_ms())
}
