//! Checkpoints of the whole host (admin and operator keys).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::extract::Path;
use super::problem::{ApiResult, Problem};
use crate::auth::Permission;
use crate::checkpoints::Checkpoint;

/// Take a checkpoint now, while the host runs.
#[utoipa::path(post, path = "/v1/admin/checkpoints", tag = "admin", responses((status = 201, body = Checkpoint), (status = 403, body = Problem)))]
pub async fn create(State(app): State<AppState>, caller: Caller) -> ApiResult<(StatusCode, axum::Json<Checkpoint>)> {
    let actor = caller.global(Permission::ManageHost, "take checkpoints")?;
    let checkpoint = app.checkpoints.create().await?;
    app.audit("checkpoint_create", &actor, None, serde_json::json!({ "id": checkpoint.id, "bytes": checkpoint.bytes }))
        .await;
    Ok((StatusCode::CREATED, axum::Json(checkpoint)))
}

#[derive(Serialize, ToSchema)]
pub struct CheckpointList {
    pub checkpoints: Vec<Checkpoint>,
}

/// The checkpoints the host holds, oldest first.
#[utoipa::path(get, path = "/v1/admin/checkpoints", tag = "admin", responses((status = 200, body = CheckpointList)))]
pub async fn list(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<CheckpointList>> {
    caller.global(Permission::ManageHost, "read checkpoints")?;
    Ok(axum::Json(CheckpointList { checkpoints: app.checkpoints.list()? }))
}

/// One checkpoint: id, time, storage schema version, counts by state, size.
#[utoipa::path(get, path = "/v1/admin/checkpoints/{id}", tag = "admin", responses((status = 200, body = Checkpoint), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Checkpoint>> {
    caller.global(Permission::ManageHost, "read checkpoints")?;
    Ok(axum::Json(app.checkpoints.get(&id)?))
}

/// Delete a checkpoint and its file.
#[utoipa::path(delete, path = "/v1/admin/checkpoints/{id}", tag = "admin", responses((status = 200, body = Checkpoint), (status = 404, body = Problem)))]
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Checkpoint>> {
    let actor = caller.global(Permission::ManageHost, "delete checkpoints")?;
    let checkpoint = app.checkpoints.delete(&id)?;
    app.audit("checkpoint_delete", &actor, None, serde_json::json!({ "id": id })).await;
    Ok(axum::Json(checkpoint))
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreInput {
    /// The tenant to restore; leave out to restore the whole host (admin keys only).
    pub tenant: Option<String>,
    /// Only these queues of the tenant (default: all of them).
    pub queues: Option<Vec<String>>,
    /// Without it, a dry run: the report of what would change, nothing changed.
    #[serde(default)]
    pub confirm: bool,
}

/// Restore a checkpoint within a scope that is paused: a dry run by default,
/// the restore itself with `confirm: true`.
#[utoipa::path(post, path = "/v1/admin/checkpoints/{id}/restore", tag = "admin", request_body = RestoreInput,
    responses((status = 200, body = crate::restore::RestoreReport), (status = 409, body = Problem), (status = 404, body = Problem)))]
pub async fn restore(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    super::extract::Json(input): super::extract::Json<RestoreInput>,
) -> ApiResult<axum::Json<crate::restore::RestoreReport>> {
    let actor = caller.global(Permission::ManageHost, "restore checkpoints")?;
    let scope = match input.tenant {
        None => {
            if caller.key.role != crate::model::Role::Admin {
                return Err(crate::auth::forbidden(caller.key.role, "restore the whole host").into());
            }
            crate::store::RestoreScope::Host
        }
        Some(tenant) => {
            if app.store().tenant(&tenant)?.is_none() {
                return Err(crate::error::Error::not_found("tenant").into());
            }
            for q in input.queues.iter().flatten() {
                crate::queue::check_queue_name(q)?;
            }
            crate::store::RestoreScope::Tenant { tenant, queues: input.queues }
        }
    };
    Ok(axum::Json(crate::restore::restore(&app.queue, &app.checkpoints, &id, scope, input.confirm, &actor).await?))
}
