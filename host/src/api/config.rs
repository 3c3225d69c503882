//! The tenant's configuration (default tags, retention bounds) and per-user configuration.

use axum::extract::State;

use super::AppState;
use super::auth::Caller;
use super::extract::{Json, Path};
use super::problem::{ApiResult, Problem};
use crate::auth::Permission;
use crate::error::Error;
use crate::model::{TenantConfig, UserConfig};

/// The tenant's configuration.
#[utoipa::path(get, path = "/v1/config", tag = "config", responses((status = 200, body = TenantConfig)))]
pub async fn get(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<TenantConfig>> {
    let scope = caller.tenant(Permission::ReadConfig, "read configuration")?;
    Ok(axum::Json(app.store().tenant_config(&scope.tenant)?))
}

/// Replace the tenant's configuration.
#[utoipa::path(put, path = "/v1/config", tag = "config", request_body = TenantConfig,
    responses((status = 200, body = TenantConfig), (status = 422, body = Problem)))]
pub async fn put(
    State(app): State<AppState>,
    caller: Caller,
    Json(config): Json<TenantConfig>,
) -> ApiResult<axum::Json<TenantConfig>> {
    let scope = caller.tenant(Permission::ManageConfig, "change configuration")?;
    if let (Some(min), Some(max)) = (config.min_retention_days, config.max_retention_days)
        && min > max
    {
        return Err(Error::validation("min_retention_days is above max_retention_days").into());
    }
    for url in &config.webhooks {
        app.alerting.webhooks.check(url)?;
    }
    if let Some(max) = app.queue.quotas().limits(&scope.tenant)?.max_webhooks
        && config.webhooks.len() as u64 > max
    {
        let detail = format!("{} webhooks, at most {max}", config.webhooks.len());
        let e = crate::limits::exceeded(crate::limits::Holder::Tenant, "max_webhooks", detail);
        crate::metrics::quota_refusal(&scope.tenant, &e);
        return Err(e.into());
    }
    // The tenant's own tags must pass the compliance rules on their own.
    crate::tags::merge(&crate::tags::Sources {
        tenant: &TenantConfig::default(),
        user: None,
        plugins: &[],
        request: &config.default_tags,
    })?;
    let config = app.store().put_tenant_config(&scope.tenant, config).await?;
    let detail = serde_json::json!({ "webhooks": config.webhooks.len() });
    app.audit("config_change", &scope.actor, Some(&scope.tenant), detail).await;
    Ok(axum::Json(config))
}

/// One user's configuration (empty when never set).
#[utoipa::path(get, path = "/v1/users/{user_id}/config", tag = "config", responses((status = 200, body = UserConfig)))]
pub async fn get_user(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<UserConfig>> {
    let scope = caller.tenant(Permission::ReadConfig, "read configuration")?;
    Ok(axum::Json(app.store().user_config(&scope.tenant, &user_id)?.unwrap_or_default()))
}

/// Replace one user's configuration.
#[utoipa::path(put, path = "/v1/users/{user_id}/config", tag = "config", request_body = UserConfig,
    responses((status = 200, body = UserConfig), (status = 422, body = Problem)))]
pub async fn put_user(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    Json(config): Json<UserConfig>,
) -> ApiResult<axum::Json<UserConfig>> {
    let scope = caller.tenant(Permission::ManageConfig, "change configuration")?;
    if user_id.is_empty() || user_id.len() > 256 {
        return Err(Error::validation("user_id: 1 to 256 bytes").into());
    }
    crate::tags::merge(&crate::tags::Sources {
        tenant: &TenantConfig::default(),
        user: None,
        plugins: &[],
        request: &config.tags,
    })?;
    if let Some(quota) = &config.quota {
        quota.check_within(&app.queue.quotas().limits(&scope.tenant)?)?;
    }
    let config = app.store().put_user_config(&scope.tenant, &user_id, config).await?;
    let action = if config.quota.is_some() { "quota_change" } else { "user_config_change" };
    app.audit(action, &scope.actor, Some(&scope.tenant), serde_json::json!({ "quota": config.quota })).await;
    Ok(axum::Json(config))
}
