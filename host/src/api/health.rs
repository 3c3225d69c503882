//! `/health`: no key needed, no tenant data. Liveness, readiness (503 when not
//! ready) and job counts by state.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::model::JobState;
use crate::store::WriterStats;

/// Above this many queued write requests the host reports itself not ready.
const WRITER_BACKLOG_LIMIT: u64 = 10_000;
/// Past this without an epoch tick, plugin deadlines no longer work: not ready.
const PLUGIN_TICK_STALE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
pub struct WriterHealth {
    /// Write requests applied since start.
    pub requests: u64,
    /// Batches made durable since start (group commit: far fewer than requests under
    /// load), each journaled or folded before it answers.
    pub commits: u64,
    /// Durable commits of the database file that emptied the journal.
    pub folds: u64,
    /// fsyncs of the database file and its journal since start.
    pub fsyncs: u64,
    pub largest_batch: u64,
    /// Requests waiting for the writer.
    pub queued: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `not_ready`.
    pub status: &'static str,
    pub live: bool,
    pub ready: bool,
    pub checks: Vec<Check>,
    /// The whole host is paused (no job is handed out).
    pub paused: bool,
    pub writer: WriterHealth,
    /// Jobs by state over every tenant, and how many are stuck.
    #[schema(value_type = Object)]
    pub jobs: serde_json::Map<String, serde_json::Value>,
}

/// Liveness, readiness and job counts.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(app): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let store = app.store();
    let WriterStats { requests, commits, folds, syncs, largest_batch, queued, failure } = store.writer_stats();
    let counts = store.counts();
    let paused = store.host_paused();
    let stalled = app.loops.stalled();
    let since_tick = app.queue.plugins().since_last_tick();
    let checks = vec![
        Check {
            name: "database",
            ok: counts.is_ok() && paused.is_ok(),
            detail: counts.as_ref().err().map_or("readable".into(), |e| e.reason.clone()),
        },
        Check {
            name: "writer",
            ok: failure.is_none() && queued < WRITER_BACKLOG_LIMIT,
            detail: failure.unwrap_or_else(|| format!("{queued} requests queued")),
        },
        Check {
            name: "plugin_engine",
            ok: since_tick < PLUGIN_TICK_STALE,
            detail: format!("epoch ticker last ticked {} ms ago", since_tick.as_millis()),
        },
        Check {
            name: "maintenance",
            ok: stalled.is_empty(),
            detail: if stalled.is_empty() {
                "all loops running".into()
            } else {
                format!("stalled: {}", stalled.join(", "))
            },
        },
    ];
    let ready = checks.iter().all(|c| c.ok);
    let mut jobs = serde_json::Map::new();
    for state in JobState::ALL {
        jobs.insert(state.as_str().into(), 0.into());
    }
    jobs.insert("stuck".into(), 0.into());
    for row in counts.unwrap_or_default() {
        let key = row.state.map_or("stuck", JobState::as_str);
        let n = jobs[key].as_u64().unwrap_or(0) + row.jobs;
        jobs.insert(key.into(), n.into());
    }
    let health = Health {
        status: if ready { "ok" } else { "not_ready" },
        live: true,
        ready,
        checks,
        paused: paused.unwrap_or(false),
        writer: WriterHealth { requests, commits, folds, fsyncs: syncs, largest_batch, queued },
        jobs,
    };
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(health))
}
