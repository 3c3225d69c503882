//! The retention cleaner: deletes terminal jobs past their retention (the job's
//! `retention_days` tag, merged from the request, configuration and taggers),
//! with their history; their job_uuids stay as tombstones. Jobs under a legal
//! hold are never in the retention index, so they are never deleted: each pass
//! reports, per tenant, the held jobs it kept past their retention.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::Result;
use crate::model::now_ms;
use crate::store::Store;

/// A held job the cleaner kept although its retention has passed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeptJob {
    pub job_uuid: Uuid,
    pub retention_ended_at: DateTime<Utc>,
}

/// What the cleaner did for one tenant.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct TenantRetention {
    /// Jobs deleted since the host started.
    pub deleted: u64,
    /// Held jobs past their retention, kept.
    pub kept: Vec<KeptJob>,
}

/// The cleaner's reports, read by `GET /v1/retention`.
#[derive(Default)]
pub struct RetentionReports {
    pub last_pass_at: std::sync::Mutex<Option<DateTime<Utc>>>,
    pub tenants: DashMap<String, TenantRetention>,
}

pub async fn pass(store: Arc<dyn Store>, reports: Arc<RetentionReports>, day_ms: u64, limit: usize) -> Result<usize> {
    let deleted = store.delete_expired(day_ms, limit).await?;
    let mut total = 0;
    for (tenant, n) in &deleted {
        reports.tenants.entry(tenant.clone()).or_default().deleted += n;
        total += *n as usize;
        tracing::info!(target: "sluice::maintenance", service = "retention_cleaner", tenant = %tenant, deleted = n, "jobs past retention deleted");
    }
    let now = now_ms();
    for tenant in store.tenants()? {
        let mut kept = Vec::new();
        for job in store.held_jobs(&tenant.id)? {
            let Some(days) = job.retention_days().filter(|_| job.state.is_terminal()) else { continue };
            let ends = job.updated_at
                + chrono::Duration::milliseconds((days.saturating_mul(day_ms)).min(i64::MAX as u64) as i64);
            if ends <= now {
                kept.push(KeptJob { job_uuid: job.job_uuid, retention_ended_at: ends });
            }
        }
        if !kept.is_empty() || reports.tenants.contains_key(&tenant.id) {
            let mut report = reports.tenants.entry(tenant.id.clone()).or_default();
            if report.kept.len() != kept.len() {
                tracing::info!(target: "sluice::maintenance", service = "retention_cleaner", tenant = %tenant.id, kept = kept.len(), "held jobs past retention kept");
            }
            report.kept = kept;
        }
    }
    *reports.last_pass_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    Ok(total)
}
