//! Quotas: the tenant's limits (set by an admin) and usage per tenant and per user.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::extract::{Json, Path};
use super::problem::{ApiResult, Problem};
use crate::auth::Permission;
use crate::limits::{Limits, UserQuota};
use crate::store::Usage;

/// The tenant's limits (the host default when an admin set none).
#[utoipa::path(get, path = "/v1/limits", tag = "quotas", responses((status = 200, body = Limits)))]
pub async fn get(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Limits>> {
    let scope = caller.tenant(Permission::ReadConfig, "read limits")?;
    Ok(axum::Json(app.queue.quotas().limits(&scope.tenant)?))
}

/// Set the tenant's limits (admin).
#[utoipa::path(put, path = "/v1/limits", tag = "quotas", request_body = Limits,
    responses((status = 200, body = Limits), (status = 422, body = Problem)))]
pub async fn put(
    State(app): State<AppState>,
    caller: Caller,
    Json(limits): Json<Limits>,
) -> ApiResult<axum::Json<Limits>> {
    let scope = caller.tenant(Permission::ManageLimits, "set limits")?;
    limits.check()?;
    let limits = app.store().put_limits(&scope.tenant, limits).await?;
    let detail = serde_json::to_value(&limits).unwrap_or_default();
    app.audit("limits_change", &scope.actor, Some(&scope.tenant), detail).await;
    Ok(axum::Json(limits))
}

#[derive(Serialize, ToSchema)]
pub struct TenantUsage {
    pub tenant: String,
    pub limits: Limits,
    pub usage: Usage,
    /// Webhooks in the tenant's configuration.
    pub webhooks: u64,
}

/// The tenant's use of its limits.
#[utoipa::path(get, path = "/v1/usage", tag = "quotas", responses((status = 200, body = TenantUsage)))]
pub async fn tenant(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<TenantUsage>> {
    let scope = caller.tenant(Permission::ReadStats, "read usage")?;
    let usage = app.store().usage(&scope.tenant)?;
    let webhooks = app.store().tenant_config(&scope.tenant)?.webhooks.len() as u64;
    let limits = app.queue.quotas().limits(&scope.tenant)?;
    Ok(axum::Json(TenantUsage { tenant: scope.tenant, limits, usage, webhooks }))
}

#[derive(Serialize, ToSchema)]
pub struct UserUsage {
    pub user_id: String,
    /// The quota that applies: the user's own, or the tenant's default.
    pub quota: UserQuota,
    pub pending: u64,
}

/// One user's quota and use of it.
#[utoipa::path(get, path = "/v1/users/{user_id}/usage", tag = "quotas", responses((status = 200, body = UserUsage)))]
pub async fn user(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<UserUsage>> {
    let scope = caller.tenant(Permission::ReadUserUsage, "read usage")?;
    scope.check_user(&user_id)?;
    let quotas = app.queue.quotas();
    let quota = quotas.user_quota(&scope.tenant, &user_id, &quotas.limits(&scope.tenant)?)?;
    let pending = app.store().pending(&scope.tenant, Some(&user_id))?;
    Ok(axum::Json(UserUsage { user_id, quota, pending }))
}
