//! The right to delete: a user's data erased on request, with a receipt.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::extract::Path;
use super::problem::{ApiResult, Problem};
use crate::auth::Permission;
use crate::error::Error;
use crate::model::Receipt;

/// Delete all of a user's data (tenant-admin, or the user's own key). Running
/// jobs lose their lease; legally held jobs stay (the receipt counts them). The
/// receipt's `erasure_completed_at` is set once the database file and the
/// checkpoints have been written anew without the data.
#[utoipa::path(delete, path = "/v1/users/{user_id}/data", tag = "privacy",
    responses((status = 202, body = Receipt), (status = 404, body = Problem)))]
pub async fn delete_user(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<Receipt>)> {
    let scope = caller.tenant(Permission::DeleteUserData, "delete user data")?;
    scope.check_user(&user_id)?;
    if user_id.is_empty() || user_id.len() > 256 {
        return Err(Error::validation("user_id: 1 to 256 bytes").into());
    }
    let (receipt, key_hashes) = app.store().delete_user(&scope.tenant, &user_id, scope.actor.clone()).await?;
    app.keyring.forget(&key_hashes);
    app.queue.quotas().forget_user(&scope.tenant, &user_id);
    app.queue.pseudonyms().forget(&scope.tenant, &user_id);
    tracing::info!(target: "sluice::audit", action = "user_delete", tenant = %scope.tenant, receipt = %receipt.id, jobs = receipt.jobs_deleted, held = receipt.held_kept, actor = %scope.actor, "user data deleted");
    Ok((StatusCode::ACCEPTED, axum::Json(receipt)))
}

#[derive(Serialize, ToSchema)]
pub struct ReceiptList {
    pub receipts: Vec<Receipt>,
}

/// The tenant's deletion receipts.
#[utoipa::path(get, path = "/v1/deletions", tag = "privacy", responses((status = 200, body = ReceiptList)))]
pub async fn list(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<ReceiptList>> {
    let scope = caller.tenant(Permission::ReadDeletions, "read deletion receipts")?;
    Ok(axum::Json(ReceiptList { receipts: app.store().receipts(&scope.tenant)? }))
}

/// One deletion receipt.
#[utoipa::path(get, path = "/v1/deletions/{receipt_id}", tag = "privacy",
    responses((status = 200, body = Receipt), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(receipt_id): Path<String>,
) -> ApiResult<axum::Json<Receipt>> {
    let scope = caller.tenant(Permission::ReadDeletions, "read deletion receipts")?;
    let receipt = app.store().receipt(&scope.tenant, &receipt_id)?;
    Ok(axum::Json(receipt.ok_or_else(|| Error::not_found("receipt"))?))
}
