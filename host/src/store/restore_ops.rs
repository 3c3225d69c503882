//! The restore, as one write operation: a snapshot's jobs, queue configurations
//! and bindings put back within their scope.

use redb::ReadableTable;
use serde_json::json;

use super::codec::{decode, encode};
use super::export::binding_in_scope;
use super::write_ops::{index_keys, put_job, record_event};
use super::writer::{OpError, WriteCtx};
use super::{Change, RestoreScope, Snapshot};
use crate::model::{Actor, Binding, Job};

type OpResult<T> = Result<T, OpError>;

pub fn restore(
    ctx: &mut WriteCtx<'_, '_>,
    snapshot: Snapshot,
    scope: &RestoreScope,
    actor: &Actor,
) -> OpResult<Vec<Change>> {
    let now = ctx.now;
    let t = &mut *ctx.tables;
    // Queue configurations return, but the pause that guards the restore stays.
    for (tenant, queue, mut config) in snapshot.queues {
        let current: Option<crate::model::QueueConfig> = match t.queues.get((tenant.as_str(), queue.as_str()))? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        config.paused = current.is_some_and(|c| c.paused);
        t.queues.insert((tenant.as_str(), queue.as_str()), encode(&config).as_slice())?;
    }
    // Bindings: the scope's current ones go, the checkpoint's come back.
    let mut stale = Vec::new();
    for entry in t.bindings.iter()? {
        let (k, v) = entry?;
        let binding: Binding = decode(v.value())?;
        if binding_in_scope(scope, &binding) {
            let (tenant, queue, kind, stage) = k.value();
            stale.push((tenant.to_owned(), queue.to_owned(), kind.to_owned(), stage));
        }
    }
    for (tenant, queue, kind, stage) in &stale {
        t.bindings.remove((tenant.as_str(), queue.as_str(), kind.as_str(), *stage))?;
    }
    for b in &snapshot.bindings {
        t.bindings
            .insert((b.tenant.as_str(), b.queue.as_str(), b.kind.as_str(), b.stage.code()), encode(b).as_slice())?;
    }
    // Breakers of the scope close.
    let mut breakers = Vec::new();
    for entry in t.breakers.iter()? {
        let (k, _) = entry?;
        let (tenant, queue, kind) = k.value();
        if scope.covers(tenant, queue) {
            breakers.push((tenant.to_owned(), queue.to_owned(), kind.to_owned()));
        }
    }
    for (tenant, queue, kind) in &breakers {
        t.breakers.remove((tenant.as_str(), queue.as_str(), kind.as_str()))?;
    }
    // Jobs: back to their checkpointed records; revisions and lease tokens above
    // every value issued since, so no worker's newer lease still fits.
    let mut changes = Vec::new();
    for saved in snapshot.jobs {
        let seq = t.uuids.get((saved.tenant.as_str(), saved.job_uuid.as_u128()))?.map(|v| v.value());
        let current: Option<Job> = match seq {
            Some(0) => continue, // deleted since the checkpoint: the deletion stands
            Some(seq) => match t.jobs.get(seq)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            },
            // Gone now: unless its user's deletion is in the ledger, it comes back.
            None if super::privacy_ops::in_ledger(t, &saved.tenant, &saved.user_id)? => continue,
            None => None,
        };
        let mut job = saved.clone();
        job.updated_at = now;
        job.user_hold = t.user_holds.get((job.tenant.as_str(), job.user_id.as_str()))?.is_some();
        if let Some(current) = &current {
            job.seq = current.seq;
            job.revision = current.revision.max(saved.revision) + 1;
            job.last_token = current.last_token.max(saved.last_token);
        } else {
            job.revision = saved.revision + 1;
            t.uuids.insert((job.tenant.as_str(), job.job_uuid.as_u128()), job.seq)?;
        }
        if let Some(lease) = job.lease.as_mut() {
            job.last_token += 1;
            lease.token = job.last_token;
        }
        put_job(t, current.as_ref().map(index_keys).as_ref(), &job)?;
        let from = current.as_ref().map(|c| c.state);
        record_event(t, &job, "restore", from, actor, json!({ "to_revision_of_checkpoint": saved.revision }), now)?;
        changes.push(Change { from: from.unwrap_or(job.state), job, action: "restore" });
    }
    let tenant = match scope {
        RestoreScope::Host => None,
        RestoreScope::Tenant { tenant, .. } => Some(tenant.as_str()),
    };
    super::privacy_ops::audit(t, now, "restore", actor, tenant, json!({ "jobs_changed": changes.len() }))?;
    Ok(changes)
}
