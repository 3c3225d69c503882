//! The tenant's alerts: list, history, acknowledge.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::extract::Path;
use super::problem::{ApiResult, Problem};
use crate::auth::Permission;
use crate::model::{Alert, AlertEvent};

#[derive(Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
}

/// The tenant's alerts, firing and resolved.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", responses((status = 200, body = AlertList)))]
pub async fn list(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<AlertList>> {
    let scope = caller.tenant(Permission::ReadStats, "read alerts")?;
    Ok(axum::Json(AlertList { alerts: app.store().alerts(Some(&scope.tenant))? }))
}

#[derive(Serialize, ToSchema)]
pub struct AlertHistory {
    pub events: Vec<AlertEvent>,
}

/// Every alert event of the tenant, in order.
#[utoipa::path(get, path = "/v1/alerts/history", tag = "alerts", responses((status = 200, body = AlertHistory)))]
pub async fn history(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<AlertHistory>> {
    let scope = caller.tenant(Permission::ReadStats, "read alerts")?;
    Ok(axum::Json(AlertHistory { events: app.store().alert_events(&scope.tenant)? }))
}

/// Acknowledge an alert (`<queue>:<name>`).
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "alerts", responses((status = 200, body = Alert), (status = 404, body = Problem)))]
pub async fn acknowledge(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Alert>> {
    let scope = caller.tenant(Permission::ManageQueues, "acknowledge alerts")?;
    Ok(axum::Json(app.alerting.acknowledge(&scope.tenant, &id, &scope.actor).await?))
}
