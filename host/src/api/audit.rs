//! The security audit log, for admins and auditors.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::extract::Query;
use super::problem::ApiResult;
use crate::auth::Permission;
use crate::error::Error;
use crate::model::AuditEvent;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// One tenant's events (an auditor of one tenant always sees only its own).
    pub tenant: Option<String>,
    /// `next_cursor` of the previous page.
    pub after: Option<u64>,
    /// 1 to 1000, default 100.
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<u64>,
}

/// Security events, oldest first: keys, denials, deletions, quota and plugin
/// changes, restores.
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditParams), responses((status = 200, body = AuditList)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(p): Query<AuditParams>,
) -> ApiResult<axum::Json<AuditList>> {
    caller.global(Permission::ReadAudit, "read the audit log")?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::validation("limit: 1 to 1000").into());
    }
    let tenant = match (caller.tenant_filter()?, p.tenant) {
        (Some(own), Some(asked)) if own != asked => return Err(Error::not_found("tenant").into()),
        (Some(own), _) => Some(own),
        (None, asked) => asked,
    };
    let page = app.store().audit_events(tenant.as_deref(), p.after.unwrap_or(0), limit)?;
    Ok(axum::Json(AuditList { events: page.events, next_cursor: page.next_cursor }))
}
