//! Tenants and API keys.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::extract::{Json, Path};
use super::problem::{ApiResult, Problem};
use crate::auth::{Permission, new_tenant};
use crate::error::Error;
use crate::model::{ApiKey, Role, Tenant};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    /// 1-64 characters of a-z, 0-9 and '-'.
    pub id: String,
}

/// Create a tenant.
#[utoipa::path(post, path = "/v1/tenants", tag = "admin", request_body = TenantInput,
    responses((status = 201, body = Tenant), (status = 422, body = Problem)))]
pub async fn create_tenant(
    State(app): State<AppState>,
    caller: Caller,
    Json(input): Json<TenantInput>,
) -> ApiResult<(StatusCode, axum::Json<Tenant>)> {
    let actor = caller.global(Permission::ManageTenants, "manage tenants")?;
    let tenant = app.store().create_tenant(new_tenant(input.id)?).await?;
    app.audit("tenant_create", &actor, Some(&tenant.id), serde_json::json!({})).await;
    Ok((StatusCode::CREATED, axum::Json(tenant)))
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<Tenant>,
}

/// List tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "admin", responses((status = 200, body = TenantList)))]
pub async fn list_tenants(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<TenantList>> {
    caller.global(Permission::ManageTenants, "manage tenants")?;
    Ok(axum::Json(TenantList { tenants: app.store().tenants()? }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    pub name: String,
    pub role: Role,
    /// The key's tenant; leave out for a key that spans tenants. A tenant-bound
    /// caller can only create keys of its own tenant.
    pub tenant: Option<String>,
    /// For a `user` key: the user it speaks for.
    pub user_id: Option<String>,
}

/// A key as listed: never the secret, nor its hash.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            role: k.role,
            tenant: k.tenant,
            user_id: k.user_id,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret, shown this once; only its hash is stored.
    pub secret: String,
}

/// Create an API key.
#[utoipa::path(post, path = "/v1/keys", tag = "admin", request_body = KeyInput,
    responses((status = 201, body = CreatedKey), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create_key(
    State(app): State<AppState>,
    caller: Caller,
    Json(input): Json<KeyInput>,
) -> ApiResult<(StatusCode, axum::Json<CreatedKey>)> {
    let actor = caller.global(Permission::ManageKeys, "manage keys")?;
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.len() > 128 {
        return Err(Error::validation("name: 1 to 128 bytes").into());
    }
    let tenant = match (caller.tenant_filter()?, input.tenant) {
        (None, wanted) => wanted,
        (Some(own), None) => Some(own),
        (Some(own), Some(wanted)) if own == wanted => Some(wanted),
        (Some(_), Some(_)) => return Err(Error::not_found("tenant").into()),
    };
    let spanning = matches!(input.role, Role::Admin | Role::Operator) || tenant.is_none();
    if caller.key.tenant.is_some() && spanning {
        return Err(crate::auth::forbidden(caller.key.role, "create keys that span tenants").into());
    }
    let (key, secret) = app.keyring.create(name, input.role, tenant, input.user_id).await?;
    let detail = serde_json::json!({ "key_id": key.id, "role": key.role.as_str() });
    app.audit("key_create", &actor, key.tenant.as_deref(), detail).await;
    Ok((StatusCode::CREATED, axum::Json(CreatedKey { key: key.into(), secret })))
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// List keys: the caller's tenant's, or every key for a key that spans tenants and
/// names no tenant with `Sluice-Tenant`.
#[utoipa::path(get, path = "/v1/keys", tag = "admin", responses((status = 200, body = KeyList)))]
pub async fn list_keys(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<KeyList>> {
    caller.global(Permission::ManageKeys, "manage keys")?;
    let tenant = caller.tenant_filter()?;
    let keys =
        app.store().keys()?.into_iter().filter(|k| tenant.is_none() || k.tenant == tenant).map(KeyView::from).collect();
    Ok(axum::Json(KeyList { keys }))
}

/// Revoke a key; it stops working at once.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "admin", responses((status = 200, body = KeyView), (status = 404, body = Problem)))]
pub async fn revoke_key(
    State(app): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> ApiResult<axum::Json<KeyView>> {
    let actor = caller.global(Permission::ManageKeys, "manage keys")?;
    let key = app.keyring.revoke(&key_id, caller.tenant_filter()?.as_deref()).await?;
    app.audit("key_revoke", &actor, key.tenant.as_deref(), serde_json::json!({ "key_id": key.id })).await;
    Ok(axum::Json(key.into()))
}
