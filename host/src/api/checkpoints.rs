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
    tracing::info!(target: "sluice::audit", action = "checkpoint_create", id = %checkpoint.id, bytes = checkpoint.bytes, actor = %actor, "checkpoint taken");
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
    tracing::info!(target: "sluice::audit", action = "checkpoint_delete", id = %id, actor = %actor, "checkpoint deleted");
    Ok(axum::Json(checkpoint))
}
