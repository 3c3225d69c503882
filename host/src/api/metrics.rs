//! `/metrics`: Prometheus text, for operator-level keys.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use super::auth::Caller;
use super::problem::ApiResult;
use crate::auth::Permission;

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.global(Permission::ReadMetrics, "read metrics")?;
    crate::metrics::writer(&app.store().writer_stats());
    crate::metrics::refresh_from_store(app.store().as_ref())?;
    let body = crate::metrics::handle().render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub queue: String,
    /// Jobs by state, and `stuck`.
    #[schema(value_type = Object)]
    pub jobs: serde_json::Map<String, serde_json::Value>,
    /// Seconds the oldest ready job has waited.
    pub oldest_pending_seconds: f64,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub queues: Vec<QueueStats>,
}

/// The tenant's own figures, per queue.
#[utoipa::path(get, path = "/v1/stats", tag = "ops", responses((status = 200, body = Stats)))]
pub async fn stats(State(app): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Stats>> {
    let scope = caller.tenant(Permission::ReadStats, "read statistics")?;
    let now = crate::model::now_ms();
    let mut queues: Vec<QueueStats> = Vec::new();
    for row in app.store().counts()?.into_iter().filter(|r| r.tenant == scope.tenant) {
        if queues.last().is_none_or(|q| q.queue != row.queue) {
            let oldest = app.store().oldest_ready(&scope.tenant, &row.queue)?;
            let mut jobs = serde_json::Map::new();
            for state in crate::model::JobState::ALL {
                jobs.insert(state.as_str().into(), 0.into());
            }
            jobs.insert("stuck".into(), 0.into());
            queues.push(QueueStats {
                queue: row.queue.clone(),
                jobs,
                oldest_pending_seconds: oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
            });
        }
        let key = row.state.map_or("stuck", crate::model::JobState::as_str);
        queues.last_mut().expect("pushed above").jobs.insert(key.into(), row.jobs.into());
    }
    Ok(axum::Json(Stats { queues }))
}
