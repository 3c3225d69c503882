//! `/health`: no key needed, no tenant data.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::store::WriterStats;

#[derive(Serialize, ToSchema)]
pub struct WriterHealth {
    /// Write requests applied since start.
    pub requests: u64,
    /// Durable commits since start (group commit: far fewer than requests under load).
    pub commits: u64,
    pub largest_batch: u64,
    /// Requests waiting for the writer.
    pub queued: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub writer: WriterHealth,
}

/// Liveness and the writer's counts.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
pub async fn health(State(app): State<AppState>) -> axum::Json<Health> {
    let WriterStats { requests, commits, largest_batch, queued, .. } = app.store().writer_stats();
    axum::Json(Health { status: "ok", writer: WriterHealth { requests, commits, largest_batch, queued } })
}
