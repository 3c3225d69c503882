//! Legal holds on jobs and users, and the retention report.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::extract::{Json, Path};
use super::problem::{ApiResult, Problem};
use crate::auth::Permission;
use crate::error::Error;
use crate::maintenance::retention_cleaner::TenantRetention;
use crate::model::{Job, UserHold, now_ms};

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct HoldInput {
    /// Why (a case number ...), kept with the hold.
    pub reason: Option<String>,
}

fn check_reason(input: &HoldInput) -> Result<(), Error> {
    match &input.reason {
        Some(r) if r.len() > 512 => Err(Error::validation("reason: at most 512 bytes")),
        _ => Ok(()),
    }
}

/// Place a legal hold on a job: it is never deleted while held.
#[utoipa::path(put, path = "/v1/jobs/{job_uuid}/hold", tag = "retention", request_body = HoldInput,
    responses((status = 200, body = Job), (status = 404, body = Problem)))]
pub async fn hold_job(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
    Json(input): Json<HoldInput>,
) -> ApiResult<axum::Json<Job>> {
    let scope = caller.tenant(Permission::ManageHolds, "place legal holds")?;
    check_reason(&input)?;
    Ok(axum::Json(app.store().set_job_hold(&scope.tenant, job_uuid, true, input.reason, scope.actor).await?))
}

/// Lift a job's legal hold.
#[utoipa::path(delete, path = "/v1/jobs/{job_uuid}/hold", tag = "retention",
    responses((status = 200, body = Job), (status = 404, body = Problem)))]
pub async fn release_job(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
) -> ApiResult<axum::Json<Job>> {
    let scope = caller.tenant(Permission::ManageHolds, "lift legal holds")?;
    Ok(axum::Json(app.store().set_job_hold(&scope.tenant, job_uuid, false, None, scope.actor).await?))
}

#[derive(Serialize, ToSchema)]
pub struct UserHoldView {
    pub hold: UserHold,
    /// The user's jobs the hold covers now.
    pub jobs: u64,
    pub held: bool,
}

/// Place a legal hold on a user: all of the user's jobs, now and to come, are kept.
#[utoipa::path(put, path = "/v1/users/{user_id}/hold", tag = "retention", request_body = HoldInput,
    responses((status = 200, body = UserHoldView), (status = 422, body = Problem)))]
pub async fn hold_user(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    Json(input): Json<HoldInput>,
) -> ApiResult<axum::Json<UserHoldView>> {
    let scope = caller.tenant(Permission::ManageHolds, "place legal holds")?;
    check_reason(&input)?;
    if user_id.is_empty() || user_id.len() > 256 {
        return Err(Error::validation("user_id: 1 to 256 bytes").into());
    }
    let hold = UserHold {
        user_id: user_id.clone(),
        reason: input.reason,
        placed_at: now_ms(),
        placed_by: scope.actor.clone(),
    };
    let (hold, jobs) = app.store().set_user_hold(&scope.tenant, &user_id, Some(hold), scope.actor).await?;
    Ok(axum::Json(UserHoldView { hold, jobs, held: true }))
}

/// Lift a user's legal hold.
#[utoipa::path(delete, path = "/v1/users/{user_id}/hold", tag = "retention",
    responses((status = 200, body = UserHoldView), (status = 404, body = Problem)))]
pub async fn release_user(
    State(app): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<UserHoldView>> {
    let scope = caller.tenant(Permission::ManageHolds, "lift legal holds")?;
    let (hold, jobs) = app.store().set_user_hold(&scope.tenant, &user_id, None, scope.actor).await?;
    Ok(axum::Json(UserHoldView { hold, jobs, held: false }))
}

#[derive(Serialize, ToSchema)]
pub struct RetentionReport {
    /// When the retention cleaner last finished a pass.
    pub last_pass_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(flatten)]
    pub tenant: TenantRetention,
    /// Users under a legal hold.
    pub user_holds: Vec<UserHold>,
    /// Jobs under a legal hold (their own or their user's).
    pub held_jobs: u64,
}

/// What retention deleted and what legal holds kept.
#[utoipa::path(get, path = "/v1/retention", tag = "retention", responses((status = 200, body = RetentionReport)))]
pub async fn report(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<RetentionReport>> {
    let scope = caller.tenant(Permission::ReadStats, "read the retention report")?;
    let last_pass_at = *app.retention.last_pass_at.lock().unwrap_or_else(|p| p.into_inner());
    let tenant = app.retention.tenants.get(&scope.tenant).map(|r| r.clone()).unwrap_or_default();
    Ok(axum::Json(RetentionReport {
        last_pass_at,
        tenant,
        user_holds: app.store().user_holds(&scope.tenant)?,
        held_jobs: app.store().held_jobs(&scope.tenant)?.len() as u64,
    }))
}
