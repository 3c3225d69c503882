//! Restoring a checkpoint within a scope: the scope must be paused;
//! a dry run reports what would change; with confirmation the restore runs in
//! one transaction and is logged with its report. Inserts into the scope answer
//! 503 `RESTORE_IN_PROGRESS` meanwhile.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use crate::checkpoints::Checkpoints;
use crate::error::{Code, Error, Result};
use crate::model::{Actor, JobState};
use crate::queue::QueueService;
use crate::store::{JobFilter, RestoreScope, Snapshot};

/// Job uuids named in a report, at most this many per list (counts are exact).
const LISTED: usize = 1000;

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct JobMove {
    pub job_uuid: String,
    pub queue: String,
    /// The state it is in now.
    pub from: Option<JobState>,
    /// The state it returns to.
    pub to: Option<JobState>,
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct RestoreReport {
    pub checkpoint: String,
    pub dry_run: bool,
    /// Jobs of the checkpoint in scope.
    pub jobs_in_checkpoint: usize,
    /// Jobs whose state goes back to an earlier one.
    pub going_back: usize,
    /// Of those, completed jobs that will run again.
    pub run_again: usize,
    /// Jobs created since the checkpoint: they are kept as they are.
    pub created_since: usize,
    pub going_back_jobs: Vec<JobMove>,
    pub run_again_jobs: Vec<JobMove>,
    pub created_since_jobs: Vec<String>,
}

/// The scope must be paused: the host, or every queue in scope.
fn check_paused(queue: &QueueService, scope: &RestoreScope, snapshot: &Snapshot) -> Result<()> {
    let store = queue.store();
    if store.host_paused()? {
        return Ok(());
    }
    let mut queues: HashSet<(String, String)> =
        snapshot.queues.iter().map(|(t, q, _)| (t.clone(), q.clone())).collect();
    for row in store.counts()? {
        if scope.covers(&row.tenant, &row.queue) {
            queues.insert((row.tenant, row.queue));
        }
    }
    for (tenant, name) in queues {
        let paused = store.queue(&tenant, &name)?.is_some_and(|q| q.config.paused);
        if !paused {
            return Err(Error::new(
                Code::NotPaused,
                format!("pause queue {name} of tenant {tenant} (or the host) first"),
            ));
        }
    }
    Ok(())
}

fn report(queue: &QueueService, id: &str, scope: &RestoreScope, snapshot: &Snapshot) -> Result<RestoreReport> {
    let store = queue.store();
    let mut r = RestoreReport {
        checkpoint: id.to_owned(),
        dry_run: true,
        jobs_in_checkpoint: snapshot.jobs.len(),
        ..Default::default()
    };
    let saved: HashSet<(String, uuid::Uuid)> = snapshot.jobs.iter().map(|j| (j.tenant.clone(), j.job_uuid)).collect();
    for job in &snapshot.jobs {
        let now = store.job(&job.tenant, job.job_uuid)?;
        let from = now.as_ref().map(|n| n.state);
        if from == Some(job.state) {
            continue;
        }
        let m = JobMove { job_uuid: job.job_uuid.to_string(), queue: job.queue.clone(), from, to: Some(job.state) };
        r.going_back += 1;
        if from == Some(JobState::Completed) {
            r.run_again += 1;
            if r.run_again_jobs.len() < LISTED {
                r.run_again_jobs.push(m.clone());
            }
        }
        if r.going_back_jobs.len() < LISTED {
            r.going_back_jobs.push(m);
        }
    }
    let tenants: Vec<String> = match scope {
        RestoreScope::Host => store.tenants()?.into_iter().map(|t| t.id).collect(),
        RestoreScope::Tenant { tenant, .. } => vec![tenant.clone()],
    };
    for tenant in tenants {
        let mut cursor = None;
        loop {
            let page = store.jobs(&tenant, &JobFilter::default(), cursor, 500)?;
            for job in &page.jobs {
                if scope.covers(&job.tenant, &job.queue) && !saved.contains(&(job.tenant.clone(), job.job_uuid)) {
                    r.created_since += 1;
                    if r.created_since_jobs.len() < LISTED {
                        r.created_since_jobs.push(job.job_uuid.to_string());
                    }
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    Ok(r)
}

/// Report what restoring checkpoint `id` within `scope` would change; with
/// `confirm`, do it.
pub async fn restore(
    queue: &Arc<QueueService>,
    checkpoints: &Checkpoints,
    id: &str,
    scope: RestoreScope,
    confirm: bool,
    actor: &Actor,
) -> Result<RestoreReport> {
    checkpoints.get(id)?;
    let snapshot = checkpoints.read_snapshot(id, &scope).await?;
    check_paused(queue, &scope, &snapshot)?;
    let mut report = report(queue, id, &scope, &snapshot)?;
    if !confirm {
        return Ok(report);
    }
    let _guard = queue.begin_restore(scope.clone());
    let changes = queue.store().restore(snapshot, scope.clone(), actor.clone()).await?;
    queue.plugins().refresh_bindings()?;
    for change in &changes {
        queue.after(change, actor);
    }
    report.dry_run = false;
    tracing::info!(
        target: "sluice::audit",
        action = "restore",
        checkpoint = id,
        scope = ?scope,
        jobs = report.jobs_in_checkpoint,
        going_back = report.going_back,
        run_again = report.run_again,
        created_since = report.created_since,
        actor = %actor,
        "checkpoint restored"
    );
    Ok(report)
}
