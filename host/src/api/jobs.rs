//! Job routes: insert (one or a batch), read, list, history, and the actions
//! (complete also as a batch).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::extract::{Json, Path, Query};
use super::problem::{ApiError, ApiResult, Problem};
use crate::auth::Permission;
use crate::error::Error;
use crate::model::{HistoryEvent, Job, JobState};
use crate::queue::{Completion, DEFAULT_LEASE_MS, JobInput, MAX_BATCH};
use crate::store::{Command, Failure, JobFilter};

fn traceparent(headers: &HeaderMap) -> Option<&str> {
    headers.get("traceparent").and_then(|v| v.to_str().ok())
}

/// Insert one job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobInput,
    responses((status = 201, body = Job), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn insert(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(input): Json<JobInput>,
) -> ApiResult<(StatusCode, axum::Json<Job>)> {
    let scope = caller.tenant(Permission::InsertJobs, "insert jobs")?;
    let mut results = app.queue.insert(&scope.tenant, vec![input], traceparent(&headers), &scope.actor).await?;
    let job = results.pop().expect("one result for one job")?;
    Ok((StatusCode::CREATED, axum::Json(job)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// Up to 1,000 jobs, each checked on its own.
    #[schema(value_type = Vec<JobInput>)]
    pub jobs: Vec<Box<RawValue>>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchItem {
    pub index: usize,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchOutcome {
    pub accepted: usize,
    pub refused: usize,
    pub results: Vec<BatchItem>,
}

impl BatchOutcome {
    /// One item per result, in order: status `ok` with the job, or the problem.
    pub(super) fn from_results(results: impl IntoIterator<Item = Result<Job, Error>>, ok: u16) -> BatchOutcome {
        let results: Vec<BatchItem> = results
            .into_iter()
            .enumerate()
            .map(|(index, r)| match r {
                Ok(job) => BatchItem { index, status: ok, job: Some(job), error: None },
                Err(e) => {
                    let problem = ApiError::from(e).problem();
                    BatchItem { index, status: problem.status, job: None, error: Some(problem) }
                }
            })
            .collect();
        let accepted = results.iter().filter(|r| r.job.is_some()).count();
        BatchOutcome { accepted, refused: results.len() - accepted, results }
    }
}

/// Insert up to 1,000 jobs; each is accepted or refused on its own.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs", request_body = BatchInput,
    responses((status = 200, body = BatchOutcome), (status = 422, body = Problem)))]
pub async fn insert_batch(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(batch): Json<BatchInput>,
) -> ApiResult<axum::Json<BatchOutcome>> {
    let scope = caller.tenant(Permission::InsertJobs, "insert jobs")?;
    if batch.jobs.is_empty() || batch.jobs.len() > MAX_BATCH {
        return Err(Error::validation(format!("jobs: 1 to {MAX_BATCH} per batch")).into());
    }
    // Parse each job on its own, so one malformed job refuses only itself.
    let parsed: Vec<Result<JobInput, Error>> = batch
        .jobs
        .iter()
        .map(|raw| serde_json::from_str(raw.get()).map_err(|e| Error::validation(e.to_string())))
        .collect();
    let inputs: Vec<JobInput> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
    let mut stored = app.queue.insert(&scope.tenant, inputs, traceparent(&headers), &scope.actor).await?.into_iter();
    let results = parsed.into_iter().map(|p| p.and_then(|_| stored.next().expect("one result per parsed job")));
    Ok(axum::Json(BatchOutcome::from_results(results, 201)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub parked: Option<bool>,
    /// Jobs flagged stuck (or not).
    pub stuck: Option<bool>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<u64>,
    /// 1 to 500, default 100.
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<u64>,
}

/// List the tenant's jobs, oldest first, with filters and a cursor.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListParams), responses((status = 200, body = JobList)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> ApiResult<axum::Json<JobList>> {
    let scope = caller.tenant(Permission::ReadJobs, "read jobs")?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::validation("limit: 1 to 500").into());
    }
    if let Some(asked) = &p.user_id {
        scope.check_user(asked)?;
    }
    let filter = JobFilter {
        queue: p.queue,
        state: p.state,
        kind: p.kind,
        user_id: scope.user.clone().or(p.user_id),
        parked: p.parked,
        stuck: p.stuck,
    };
    let page = app.queue.jobs(&scope.tenant, &filter, p.cursor, limit)?;
    Ok(axum::Json(JobList { jobs: page.jobs, next_cursor: page.next_cursor }))
}

/// One job by its job_uuid.
#[utoipa::path(get, path = "/v1/jobs/{job_uuid}", tag = "jobs", responses((status = 200, body = Job), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
) -> ApiResult<axum::Json<Job>> {
    let scope = caller.tenant(Permission::ReadJobs, "read jobs")?;
    let job = app.queue.job(&scope.tenant, job_uuid)?;
    scope.check_job(&job)?;
    Ok(axum::Json(job))
}

#[derive(Serialize, ToSchema)]
pub struct History {
    pub job_uuid: Uuid,
    pub events: Vec<HistoryEvent>,
}

/// Every action on the job, in order.
#[utoipa::path(get, path = "/v1/jobs/{job_uuid}/history", tag = "jobs", responses((status = 200, body = History), (status = 404, body = Problem)))]
pub async fn history(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
) -> ApiResult<axum::Json<History>> {
    let scope = caller.tenant(Permission::ReadJobs, "read jobs")?;
    if scope.user.is_some() {
        scope.check_job(&app.queue.job(&scope.tenant, job_uuid)?)?;
    }
    Ok(axum::Json(History { job_uuid, events: app.queue.history(&scope.tenant, job_uuid)? }))
}

async fn act(
    app: &AppState,
    caller: &Caller,
    permission: Permission,
    job_uuid: Uuid,
    command: Command,
) -> ApiResult<axum::Json<Job>> {
    let what = if permission == Permission::WorkJobs { "work on jobs" } else { "retry, replay or cancel jobs" };
    let scope = caller.tenant(permission, what)?;
    Ok(axum::Json(app.queue.act(&scope.tenant, job_uuid, command, &scope.actor).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressInput {
    pub step: String,
    #[schema(value_type = Object)]
    pub data: Value,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatInput {
    pub token: u64,
    /// New lease length from now; default 30,000 ms.
    pub lease_ms: Option<u64>,
    /// Save progress; a retry resumes from it.
    pub progress: Option<ProgressInput>,
}

/// Extend the lease, maybe saving progress.
#[utoipa::path(post, path = "/v1/jobs/{job_uuid}/heartbeat", tag = "work", request_body = HeartbeatInput,
    responses((status = 200, body = Job), (status = 409, body = Problem)))]
pub async fn heartbeat(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
    Json(b): Json<HeartbeatInput>,
) -> ApiResult<axum::Json<Job>> {
    let command = Command::Heartbeat {
        token: b.token,
        lease_ms: b.lease_ms.unwrap_or(DEFAULT_LEASE_MS),
        progress: b.progress.map(|p| (p.step, p.data)),
    };
    act(&app, &caller, Permission::WorkJobs, job_uuid, command).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    pub token: u64,
}

/// Finish the job (current lease token required).
#[utoipa::path(post, path = "/v1/jobs/{job_uuid}/complete", tag = "work", request_body = TokenInput,
    responses((status = 200, body = Job), (status = 409, body = Problem)))]
pub async fn complete(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
    Json(b): Json<TokenInput>,
) -> ApiResult<axum::Json<Job>> {
    act(&app, &caller, Permission::WorkJobs, job_uuid, Command::Complete { token: b.token }).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBatchInput {
    /// Up to 1,000 jobs, each completed (or refused) on its own.
    pub jobs: Vec<Completion>,
}

/// Finish up to 1,000 jobs in one request, each with its current lease token; each
/// is judged and completed or refused on its own, as by `/v1/jobs/{job_uuid}/complete`,
/// and all go to the writer as one request. Workers holding many jobs pay one round trip.
#[utoipa::path(post, path = "/v1/jobs/batch/complete", tag = "work", request_body = CompleteBatchInput,
    responses((status = 200, body = BatchOutcome), (status = 422, body = Problem)))]
pub async fn complete_batch(
    State(app): State<AppState>,
    caller: Caller,
    Json(batch): Json<CompleteBatchInput>,
) -> ApiResult<axum::Json<BatchOutcome>> {
    let scope = caller.tenant(Permission::WorkJobs, "work on jobs")?;
    if batch.jobs.is_empty() || batch.jobs.len() > MAX_BATCH {
        return Err(Error::validation(format!("jobs: 1 to {MAX_BATCH} per batch")).into());
    }
    let completions = batch.jobs.iter().map(Completion::command).collect();
    let results = app.queue.act_many(&scope.tenant, completions, &scope.actor).await;
    Ok(axum::Json(BatchOutcome::from_results(results, 200)))
}

/// Hand the job back without spending an attempt (graceful worker shutdown).
#[utoipa::path(post, path = "/v1/jobs/{job_uuid}/release", tag = "work", request_body = TokenInput,
    responses((status = 200, body = Job), (status = 409, body = Problem)))]
pub async fn release(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
    Json(b): Json<TokenInput>,
) -> ApiResult<axum::Json<Job>> {
    act(&app, &caller, Permission::WorkJobs, job_uuid, Command::Release { token: b.token }).await
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailInput {
    pub token: u64,
    pub code: String,
    pub reason: String,
    pub traceback: Option<String>,
    /// The step that failed.
    pub step: Option<String>,
    /// Default true; false abandons the job at once.
    #[serde(default = "yes")]
    pub retryable: bool,
}

/// Record a failed attempt: failed (backoff, then pending) or abandoned.
#[utoipa::path(post, path = "/v1/jobs/{job_uuid}/fail", tag = "work", request_body = FailInput,
    responses((status = 200, body = Job), (status = 409, body = Problem)))]
pub async fn fail(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
    Json(b): Json<FailInput>,
) -> ApiResult<axum::Json<Job>> {
    let failure =
        Failure { code: b.code, reason: b.reason, traceback: b.traceback, step: b.step, retryable: b.retryable };
    act(&app, &caller, Permission::WorkJobs, job_uuid, Command::Fail { token: b.token, failure }).await
}

/// Failed -> pending with a fresh attempt budget; progress is kept.
#[utoipa::path(post, path = "/v1/jobs/{job_uuid}/retry", tag = "jobs", responses((status = 200, body = Job), (status = 409, body = Problem)))]
pub async fn retry(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
) -> ApiResult<axum::Json<Job>> {
    act(&app, &caller, Permission::ManageJobs, job_uuid, Command::Retry).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    /// Must be true: replaying a completed or abandoned job is deliberate.
    #[serde(rename = "override", default)]
    pub override_terminal: bool,
    /// Keep the saved progress instead of starting from scratch.
    #[serde(default)]
    pub resume: bool,
}

/// Completed or abandoned -> pending, with `override: true`.
#[utoipa::path(post, path = "/v1/jobs/{job_uuid}/replay", tag = "jobs", request_body = ReplayInput,
    responses((status = 200, body = Job), (status = 409, body = Problem)))]
pub async fn replay(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
    Json(b): Json<ReplayInput>,
) -> ApiResult<axum::Json<Job>> {
    let command = Command::Replay { override_terminal: b.override_terminal, resume: b.resume };
    act(&app, &caller, Permission::ManageJobs, job_uuid, command).await
}

/// Pending or failed -> abandoned.
#[utoipa::path(post, path = "/v1/jobs/{job_uuid}/cancel", tag = "jobs", responses((status = 200, body = Job), (status = 409, body = Problem)))]
pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    Path(job_uuid): Path<Uuid>,
) -> ApiResult<axum::Json<Job>> {
    act(&app, &caller, Permission::ManageJobs, job_uuid, Command::Cancel).await
}
