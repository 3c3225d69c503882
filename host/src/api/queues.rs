//! Queue routes: configuration, claims, and the failure breaker.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::extract::{Json, Path};
use super::jobs::BatchOutcome;
use super::problem::{ApiResult, Problem};
use crate::auth::Permission;
use crate::model::{Breaker, Job, JobState, QueueConfig};
use crate::queue::ClaimInput;
use crate::store::{PauseScope, QueueView};

#[derive(Serialize, ToSchema)]
pub struct BreakerView {
    pub kind: String,
    /// `open` or `closed`.
    pub state: &'static str,
    pub failures_in_window: usize,
    pub opened_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct QueueInfo {
    pub name: String,
    pub config: QueueConfig,
    pub breakers: Vec<BreakerView>,
    /// Jobs by state.
    #[schema(value_type = Object)]
    pub counts: serde_json::Map<String, serde_json::Value>,
}

impl QueueInfo {
    fn from_view(view: QueueView, now: chrono::DateTime<chrono::Utc>) -> QueueInfo {
        let window = view.config.breaker_window_ms as i64;
        let breaker = |b: Breaker| BreakerView {
            state: if b.is_open() { "open" } else { "closed" },
            failures_in_window: b.recent_failures.iter().filter(|&&t| t > now.timestamp_millis() - window).count(),
            opened_at: b.opened_at,
            kind: b.kind,
        };
        let mut counts: serde_json::Map<String, serde_json::Value> =
            view.counts.iter().map(|(s, n)| (JobState::as_str(*s).to_owned(), (*n).into())).collect();
        counts.insert("stuck".into(), view.stuck.into());
        QueueInfo {
            name: view.name,
            config: view.config,
            breakers: view.breakers.into_iter().map(breaker).collect(),
            counts,
        }
    }
}

/// A queue's configuration, breakers and counts.
#[utoipa::path(get, path = "/v1/queues/{queue}", tag = "queues", responses((status = 200, body = QueueInfo), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<axum::Json<QueueInfo>> {
    let scope = caller.tenant(Permission::ReadQueues, "read queues")?;
    let view = app.queue.queue(&scope.tenant, &queue)?;
    Ok(axum::Json(QueueInfo::from_view(view, crate::model::now_ms())))
}

/// Fields to change; the rest keep their current (or default) values.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfigInput {
    pub backoff_base_ms: Option<u64>,
    pub backoff_cap_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub breaker_threshold: Option<u32>,
    pub breaker_window_ms: Option<u64>,
    pub schema_versions: Option<Vec<u32>>,
    pub pending_timeout_ms: Option<u64>,
    pub processing_timeout_ms: Option<u64>,
    pub parked_timeout_ms: Option<u64>,
    /// Alert thresholds (replaces the queue's whole set).
    pub alerts: Option<crate::model::AlertRules>,
}

/// Set a queue's configuration (creating the queue if needed).
#[utoipa::path(put, path = "/v1/queues/{queue}", tag = "queues", request_body = QueueConfigInput,
    responses((status = 200, body = QueueInfo), (status = 422, body = Problem)))]
pub async fn put(
    State(app): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    Json(input): Json<QueueConfigInput>,
) -> ApiResult<axum::Json<QueueInfo>> {
    let scope = caller.tenant(Permission::ManageQueues, "configure queues")?;
    let mut config = match app.queue.queue(&scope.tenant, &queue) {
        Ok(view) => view.config,
        Err(e) if e.code == crate::error::Code::NotFound => QueueConfig::default(),
        Err(e) => return Err(e.into()),
    };
    config.backoff_base_ms = input.backoff_base_ms.unwrap_or(config.backoff_base_ms);
    config.backoff_cap_ms = input.backoff_cap_ms.unwrap_or(config.backoff_cap_ms);
    config.max_attempts = input.max_attempts.unwrap_or(config.max_attempts);
    config.breaker_threshold = input.breaker_threshold.unwrap_or(config.breaker_threshold);
    config.breaker_window_ms = input.breaker_window_ms.unwrap_or(config.breaker_window_ms);
    config.schema_versions = input.schema_versions.unwrap_or(config.schema_versions);
    config.pending_timeout_ms = input.pending_timeout_ms.unwrap_or(config.pending_timeout_ms);
    config.processing_timeout_ms = input.processing_timeout_ms.unwrap_or(config.processing_timeout_ms);
    config.parked_timeout_ms = input.parked_timeout_ms.unwrap_or(config.parked_timeout_ms);
    config.alerts = input.alerts.unwrap_or(config.alerts);
    app.queue.configure_queue(&scope.tenant, &queue, config, &scope.actor).await?;
    let view = app.queue.queue(&scope.tenant, &queue)?;
    Ok(axum::Json(QueueInfo::from_view(view, crate::model::now_ms())))
}

#[derive(Serialize, ToSchema)]
pub struct ClaimAnswer {
    pub jobs: Vec<Job>,
    pub paused: bool,
    /// The outcome of each of `complete`, in order; absent when none were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<BatchOutcome>,
}

/// Lease up to `limit` jobs, in priority, then ready time, then insertion order,
/// and complete the jobs in `complete`, if any, in the same round trip.
#[utoipa::path(post, path = "/v1/queues/{queue}/claim", tag = "work", request_body = ClaimInput,
    responses((status = 200, body = ClaimAnswer), (status = 422, body = Problem)))]
pub async fn claim(
    State(app): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    Json(input): Json<ClaimInput>,
) -> ApiResult<axum::Json<ClaimAnswer>> {
    let scope = caller.tenant(Permission::WorkJobs, "claim jobs")?;
    let sent_completions = !input.complete.is_empty();
    let outcome = app.queue.claim(&scope.tenant, &queue, input, &scope.actor).await?;
    let completed = sent_completions.then(|| BatchOutcome::from_results(outcome.completed, 200));
    Ok(axum::Json(ClaimAnswer { jobs: outcome.jobs, paused: outcome.paused, completed }))
}

#[derive(Serialize, ToSchema)]
pub struct BreakerReset {
    /// Parked jobs sent back to pending.
    pub unparked: usize,
}

/// Close the queue's failure breakers; parked jobs go back to pending.
#[utoipa::path(post, path = "/v1/queues/{queue}/breaker/reset", tag = "queues",
    responses((status = 200, body = BreakerReset), (status = 404, body = Problem)))]
pub async fn reset_breaker(
    State(app): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<axum::Json<BreakerReset>> {
    let scope = caller.tenant(Permission::ManageQueues, "reset breakers")?;
    let unparked = app.queue.reset_breakers(&scope.tenant, &queue, &scope.actor).await?;
    Ok(axum::Json(BreakerReset { unparked }))
}

#[derive(Serialize, ToSchema)]
pub struct Paused {
    pub paused: bool,
}

/// Pause a queue: claims answer with no jobs and `paused: true`; inserts, reads,
/// retries, replays and cancels go on.
#[utoipa::path(post, path = "/v1/queues/{queue}/pause", tag = "queues", responses((status = 200, body = Paused), (status = 422, body = Problem)))]
pub async fn pause(
    State(app): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<axum::Json<Paused>> {
    let scope = caller.tenant(Permission::ManageQueues, "pause queues")?;
    app.queue.set_paused(PauseScope::Queue { tenant: scope.tenant, queue }, true, &scope.actor).await?;
    Ok(axum::Json(Paused { paused: true }))
}

/// Resume a paused queue.
#[utoipa::path(post, path = "/v1/queues/{queue}/resume", tag = "queues", responses((status = 200, body = Paused), (status = 422, body = Problem)))]
pub async fn resume(
    State(app): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<axum::Json<Paused>> {
    let scope = caller.tenant(Permission::ManageQueues, "resume queues")?;
    app.queue.set_paused(PauseScope::Queue { tenant: scope.tenant, queue }, false, &scope.actor).await?;
    Ok(axum::Json(Paused { paused: false }))
}

/// Pause the whole host: no queue of any tenant hands out jobs.
#[utoipa::path(post, path = "/v1/admin/pause", tag = "admin", responses((status = 200, body = Paused)))]
pub async fn pause_host(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Paused>> {
    let actor = caller.global(Permission::ManageHost, "pause the host")?;
    app.queue.set_paused(PauseScope::Host, true, &actor).await?;
    Ok(axum::Json(Paused { paused: true }))
}

/// Resume the whole host.
#[utoipa::path(post, path = "/v1/admin/resume", tag = "admin", responses((status = 200, body = Paused)))]
pub async fn resume_host(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Paused>> {
    let actor = caller.global(Permission::ManageHost, "resume the host")?;
    app.queue.set_paused(PauseScope::Host, false, &actor).await?;
    Ok(axum::Json(Paused { paused: false }))
}
