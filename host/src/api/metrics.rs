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
    let body = crate::metrics::handle().render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}
