//! Plugins (uploads of WebAssembly components) and bindings.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::extract::{Json, Path, Query, Wasm};
use super::problem::{ApiResult, Problem};
use crate::auth::Permission;
use crate::error::Error;
use crate::model::{Binding, FailurePolicy, Plugin, PluginKind, Stage, now_ms};
use crate::plugins::Upload;
use crate::queue::check_queue_name;
use crate::store::PluginCaps;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    pub name: String,
    /// validator, tagger, migrator or alert-policy.
    pub kind: PluginKind,
    pub version: String,
}

/// Upload a component (`Content-Type: application/wasm`). The same bytes from the
/// same tenant are one plugin: 201 the first time, 200 after.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins", params(UploadParams),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 201, body = Plugin), (status = 200, body = Plugin), (status = 422, body = Problem)))]
pub async fn upload(
    State(app): State<AppState>,
    caller: Caller,
    Query(p): Query<UploadParams>,
    Wasm(bytes): Wasm,
) -> ApiResult<(StatusCode, axum::Json<Plugin>)> {
    let scope = caller.tenant(Permission::ManagePlugins, "upload plugins")?;
    let upload = Upload { name: p.name, kind: p.kind, version: p.version };
    let limits = app.queue.quotas().limits(&scope.tenant)?;
    let caps = PluginCaps { plugins: limits.max_plugins, bytes: limits.max_plugin_bytes };
    let (plugin, created) = app
        .queue
        .plugins()
        .upload(&scope.tenant, upload, bytes.to_vec(), caps)
        .await
        .inspect_err(|e| crate::metrics::quota_refusal(&scope.tenant, e))?;
    let detail = serde_json::json!({ "digest": plugin.digest, "kind": plugin.kind.as_str(), "created": created });
    app.audit("plugin_upload", &scope.actor, Some(&scope.tenant), detail).await;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(plugin)))
}

#[derive(Serialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<Plugin>,
}

/// The tenant's plugins.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", responses((status = 200, body = PluginList)))]
pub async fn list(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<PluginList>> {
    let scope = caller.tenant(Permission::ReadPlugins, "read plugins")?;
    Ok(axum::Json(PluginList { plugins: app.store().plugins(Some(&scope.tenant))? }))
}

/// One plugin by digest.
#[utoipa::path(get, path = "/v1/plugins/{digest}", tag = "plugins", responses((status = 200, body = Plugin), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(digest): Path<String>,
) -> ApiResult<axum::Json<Plugin>> {
    let scope = caller.tenant(Permission::ReadPlugins, "read plugins")?;
    Ok(axum::Json(app.store().plugin(&scope.tenant, &digest)?.ok_or_else(|| Error::not_found("plugin"))?))
}

/// Delete a plugin; refused with 409 PLUGIN_IN_USE while bound.
#[utoipa::path(delete, path = "/v1/plugins/{digest}", tag = "plugins", responses((status = 200, body = Plugin), (status = 409, body = Problem)))]
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(digest): Path<String>,
) -> ApiResult<axum::Json<Plugin>> {
    let scope = caller.tenant(Permission::ManagePlugins, "delete plugins")?;
    let plugin = app.queue.plugins().delete(&scope.tenant, &digest).await?;
    app.audit("plugin_delete", &scope.actor, Some(&scope.tenant), serde_json::json!({ "digest": digest })).await;
    Ok(axum::Json(plugin))
}

#[derive(Serialize, ToSchema)]
pub struct BindingList {
    pub bindings: Vec<Binding>,
}

/// The tenant's bindings.
#[utoipa::path(get, path = "/v1/bindings", tag = "plugins", responses((status = 200, body = BindingList)))]
pub async fn bindings(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<BindingList>> {
    let scope = caller.tenant(Permission::ReadPlugins, "read bindings")?;
    Ok(axum::Json(BindingList { bindings: app.store().bindings(Some(&scope.tenant))? }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingInput {
    /// The plugin's digest.
    pub plugin: String,
    /// `closed` (default): a failing plugin refuses the action; `open`: it lets it through.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

fn binding_target(queue: &str, kind: &str, stage: &str) -> Result<(PluginKind, Stage), Error> {
    if queue != "*" {
        check_queue_name(queue)?;
    }
    let kind = PluginKind::parse(kind)
        .ok_or_else(|| Error::validation("kind: validator, tagger, migrator or alert-policy"))?;
    let stage = match stage {
        "stable" => Stage::Stable,
        _ => return Err(Error::validation("stage: stable")),
    };
    Ok((kind, stage))
}

/// Bind a plugin to a queue (or `*`: every queue without its own) for a kind and
/// stage. Takes effect for new calls at once; calls in flight finish on the old one.
#[utoipa::path(put, path = "/v1/bindings/{queue}/{kind}/{stage}", tag = "plugins", request_body = BindingInput,
    responses((status = 200, body = Binding), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn bind(
    State(app): State<AppState>,
    caller: Caller,
    Path((queue, kind, stage)): Path<(String, String, String)>,
    Json(input): Json<BindingInput>,
) -> ApiResult<axum::Json<Binding>> {
    let scope = caller.tenant(Permission::ManagePlugins, "bind plugins")?;
    let (kind, stage) = binding_target(&queue, &kind, &stage)?;
    let binding = Binding {
        tenant: scope.tenant.clone(),
        queue,
        kind,
        stage,
        plugin: input.plugin,
        failure_policy: input.failure_policy,
        created_at: now_ms(),
    };
    let max_bindings = app.queue.quotas().limits(&scope.tenant)?.max_bindings;
    let binding = app
        .queue
        .plugins()
        .bind(binding, max_bindings)
        .await
        .inspect_err(|e| crate::metrics::quota_refusal(&scope.tenant, e))?;
    let detail = serde_json::json!({ "queue": binding.queue, "kind": binding.kind.as_str(), "digest": binding.plugin });
    app.audit("plugin_bind", &scope.actor, Some(&scope.tenant), detail).await;
    Ok(axum::Json(binding))
}

/// Remove a binding.
#[utoipa::path(delete, path = "/v1/bindings/{queue}/{kind}/{stage}", tag = "plugins", responses((status = 200, body = Binding), (status = 404, body = Problem)))]
pub async fn unbind(
    State(app): State<AppState>,
    caller: Caller,
    Path((queue, kind, stage)): Path<(String, String, String)>,
) -> ApiResult<axum::Json<Binding>> {
    let scope = caller.tenant(Permission::ManagePlugins, "unbind plugins")?;
    let (kind, stage) = binding_target(&queue, &kind, &stage)?;
    let binding = app.queue.plugins().unbind(&scope.tenant, &queue, kind, stage).await?;
    let detail = serde_json::json!({ "queue": queue, "kind": kind.as_str() });
    app.audit("plugin_unbind", &scope.actor, Some(&scope.tenant), detail).await;
    Ok(axum::Json(binding))
}
