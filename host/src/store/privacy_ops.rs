//! Write operations of retention, legal holds, the right to delete and the audit
//! log, run inside the single writer's transaction like every other write.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use redb::ReadableTable;
use serde_json::{Value, json};
use sha2::Sha256;

use super::PendingErasure;
use super::codec::{decode, encode};
use super::tables::Tables;
use super::write_ops::{delete_job, index_keys, put_job, record_event};
use super::writer::{OpError, WriteCtx};
use crate::error::Error;
use crate::model::*;

type OpResult<T> = Result<T, OpError>;

/// Append one event to the security audit log.
pub fn audit(
    t: &mut Tables<'_>,
    now: DateTime<Utc>,
    action: &str,
    actor: &Actor,
    tenant: Option<&str>,
    detail: Value,
) -> OpResult<()> {
    let seq = t.audit.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
    let detail = match detail {
        Value::Object(map) => map,
        _ => Default::default(),
    };
    let event = AuditEvent {
        seq,
        at: now,
        action: action.to_owned(),
        actor: actor.clone(),
        tenant: tenant.map(str::to_owned),
        detail,
    };
    t.audit.insert(seq, encode(&event).as_slice())?;
    Ok(())
}

/// The key of the ledger's keyed hash, made on first use. It never leaves the
/// database, so a ledger entry cannot be tied to a user id without it.
pub fn ledger_secret(t: &mut Tables<'_>) -> OpResult<[u8; 32]> {
    if let Some(v) = t.secrets.get("ledger")? {
        return <[u8; 32]>::try_from(v.value()).map_err(|_| Error::internal("ledger secret has the wrong size").into());
    }
    let secret: [u8; 32] = rand::random();
    t.secrets.insert("ledger", secret.as_slice())?;
    Ok(secret)
}

/// HMAC-SHA256 of (tenant, user_id) under the ledger secret.
pub fn subject_hash(secret: &[u8; 32], tenant: &str, user_id: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(tenant.as_bytes());
    mac.update(&[0]);
    mac.update(user_id.as_bytes());
    mac.finalize().into_bytes().into()
}

fn user_seqs(t: &mut Tables<'_>, tenant: &str, user_id: &str) -> OpResult<Vec<u64>> {
    t.by_user
        .read()?
        .range((tenant, user_id, 0)..=(tenant, user_id, u64::MAX))?
        .map(|e| e.map(|(k, _)| k.value().2).map_err(OpError::from))
        .collect()
}

fn load(t: &Tables<'_>, seq: u64) -> OpResult<Job> {
    let bytes = t.jobs.get(seq)?.ok_or_else(|| Error::internal(format!("index points at missing job {seq}")))?;
    Ok(decode(bytes.value())?)
}

/// Place (`true`) or lift a legal hold on one job.
pub fn set_job_hold(
    ctx: &mut WriteCtx<'_, '_>,
    tenant: &str,
    job_uuid: uuid::Uuid,
    hold: bool,
    reason: Option<String>,
    actor: &Actor,
) -> OpResult<Job> {
    let t = &mut *ctx.tables;
    let seq = t.uuids.get((tenant, job_uuid.as_u128()))?.map(|v| v.value()).unwrap_or(0);
    if seq == 0 {
        return Err(Error::not_found("job").into());
    }
    let old = load(t, seq)?;
    if old.legal_hold == hold {
        return Ok(old);
    }
    let mut job = old.clone();
    job.legal_hold = hold;
    job.revision += 1;
    job.updated_at = ctx.now;
    put_job(t, Some(&index_keys(&old)), &job)?;
    let action = if hold { "legal_hold_place" } else { "legal_hold_lift" };
    record_event(t, &job, action, Some(job.state), actor, json!({ "reason": reason }), ctx.now)?;
    audit(t, ctx.now, action, actor, Some(tenant), json!({ "job_uuid": job_uuid }))?;
    Ok(job)
}

/// Place (`Some`) or lift a legal hold on a user: every job of the user, and every
/// job inserted for the user while it lasts, is held. Returns the hold and the
/// number of jobs it covers.
pub fn set_user_hold(
    ctx: &mut WriteCtx<'_, '_>,
    tenant: &str,
    user_id: &str,
    hold: Option<UserHold>,
    actor: &Actor,
) -> OpResult<(UserHold, u64)> {
    let now = ctx.now;
    let t = &mut *ctx.tables;
    if t.tenants.get(tenant)?.is_none() {
        return Err(Error::not_found("tenant").into());
    }
    let existing: Option<UserHold> = match t.user_holds.get((tenant, user_id))? {
        Some(v) => Some(decode(v.value())?),
        None => None,
    };
    let (hold, held) = match (hold, existing) {
        (Some(new), _) => {
            t.user_holds.insert((tenant, user_id), encode(&new).as_slice())?;
            (new, true)
        }
        (None, Some(old)) => {
            t.user_holds.remove((tenant, user_id))?;
            (old, false)
        }
        (None, None) => return Err(Error::not_found("legal hold on this user").into()),
    };
    let mut jobs = 0;
    for seq in user_seqs(t, tenant, user_id)? {
        let old = load(t, seq)?;
        jobs += 1;
        if old.user_hold != held {
            let mut job = old.clone();
            job.user_hold = held;
            job.revision += 1;
            job.updated_at = now;
            put_job(t, Some(&index_keys(&old)), &job)?;
        }
    }
    let action = if held { "user_hold_place" } else { "user_hold_lift" };
    audit(t, now, action, actor, Some(tenant), json!({ "jobs": jobs }))?;
    Ok((hold, jobs))
}

/// Host move: delete terminal jobs past their retention (`day_ms` per retention
/// day), with their history. Held jobs are not in the retention index. Returns
/// the number deleted per tenant.
pub fn delete_expired(ctx: &mut WriteCtx<'_, '_>, day_ms: u64, limit: usize) -> OpResult<Vec<(String, u64)>> {
    let now = time_key(ctx.now);
    let t = &mut *ctx.tables;
    let mut due = Vec::new();
    let mut days = 0u64;
    // The index is sorted by retention days first: walk each distinct value's run
    // up to its own cut-off.
    while due.len() < limit {
        let Some(first) = t.retention.read()?.range((days, 0, 0)..)?.next() else { break };
        days = first?.0.value().0;
        let cutoff = now.saturating_sub(days.saturating_mul(day_ms));
        for entry in t.retention.read()?.range((days, 0, 0)..=(days, cutoff, u64::MAX))?.take(limit - due.len()) {
            due.push(entry?.0.value().2);
        }
        days = match days.checked_add(1) {
            Some(d) => d,
            None => break,
        };
    }
    let mut deleted: Vec<(String, u64)> = Vec::new();
    for seq in due {
        let job = load(t, seq)?;
        delete_job(t, &job)?;
        match deleted.iter_mut().find(|(tenant, _)| *tenant == job.tenant) {
            Some((_, n)) => *n += 1,
            None => deleted.push((job.tenant.clone(), 1)),
        }
    }
    Ok(deleted)
}

/// What erasing one user removed.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Erased {
    pub jobs_deleted: u64,
    pub leases_revoked: u64,
    pub held_kept: u64,
    pub keys_deleted: u64,
}

/// Remove a user's jobs (held ones excepted), history, configuration, pseudonym
/// secret and own keys from one set of tables: the live database or a checkpoint.
/// Returns what went and the hashes of the deleted keys.
pub fn erase_user(t: &mut Tables<'_>, tenant: &str, user_id: &str) -> OpResult<(Erased, Vec<[u8; 32]>)> {
    let mut erased = Erased::default();
    for seq in user_seqs(t, tenant, user_id)? {
        let job = load(t, seq)?;
        if job.held() {
            erased.held_kept += 1;
            continue;
        }
        if job.state == JobState::Processing {
            erased.leases_revoked += 1;
        }
        delete_job(t, &job)?;
        erased.jobs_deleted += 1;
    }
    t.user_config.remove((tenant, user_id))?;
    // The pseudonym secret goes even when held jobs stay: old log lines become unlinkable.
    t.user_keys.remove((tenant, user_id))?;
    let mut keys = Vec::new();
    for entry in t.keys.iter()? {
        let (k, v) = entry?;
        let key: ApiKey = decode(v.value())?;
        if key.role == Role::User && key.tenant.as_deref() == Some(tenant) && key.user_id.as_deref() == Some(user_id) {
            keys.push((k.value().to_owned(), key.hash));
        }
    }
    for (id, _) in &keys {
        t.keys.remove(id.as_str())?;
    }
    erased.keys_deleted = keys.len() as u64;
    Ok((erased, keys.into_iter().map(|(_, hash)| hash).collect()))
}

/// The right to delete, in the live database: erase the user, record the deletion
/// in the ledger (by keyed hash) and queue the erasure from the files.
pub fn delete_user(
    ctx: &mut WriteCtx<'_, '_>,
    tenant: &str,
    user_id: &str,
    actor: &Actor,
) -> OpResult<(Receipt, Vec<[u8; 32]>)> {
    let now = ctx.now;
    let t = &mut *ctx.tables;
    if t.tenants.get(tenant)?.is_none() {
        return Err(Error::not_found("tenant").into());
    }
    let secret = ledger_secret(t)?;
    let (erased, key_hashes) = erase_user(t, tenant, user_id)?;
    let receipt = Receipt {
        id: uuid::Uuid::now_v7().simple().to_string(),
        tenant: tenant.to_owned(),
        requested_at: now,
        jobs_deleted: erased.jobs_deleted,
        leases_revoked: erased.leases_revoked,
        held_kept: erased.held_kept,
        keys_deleted: erased.keys_deleted,
        checkpoints_rewritten: 0,
        erasure_completed_at: None,
    };
    let hash = subject_hash(&secret, tenant, user_id);
    t.ledger.insert(hash.as_slice(), receipt.id.as_str())?;
    t.receipts.insert((tenant, receipt.id.as_str()), encode(&receipt).as_slice())?;
    t.pending_erasures.insert((tenant, receipt.id.as_str()), hash.as_slice())?;
    let detail = json!({
        "receipt": receipt.id, "jobs_deleted": erased.jobs_deleted, "held_kept": erased.held_kept,
        "keys_deleted": erased.keys_deleted,
    });
    audit(t, now, "user_delete", actor, Some(tenant), detail)?;
    Ok((receipt, key_hashes))
}

/// Whether (tenant, user_id) is in the deletion ledger (a restore skips such jobs).
pub fn in_ledger(t: &mut Tables<'_>, tenant: &str, user_id: &str) -> OpResult<bool> {
    let secret = ledger_secret(t)?;
    Ok(t.ledger.get(subject_hash(&secret, tenant, user_id).as_slice())?.is_some())
}

/// In a checkpoint's tables: erase every user whose keyed hash is in `subjects`.
/// Returns whether anything was erased.
pub fn erase_subjects(t: &mut Tables<'_>, secret: &[u8; 32], subjects: &[PendingErasure]) -> OpResult<bool> {
    let mut users: Vec<(String, String)> = Vec::new();
    let mut consider = |tenant: &str, user: &str| {
        let hash = subject_hash(secret, tenant, user);
        let wanted = subjects.iter().any(|s| s.tenant == tenant && s.subject == hash);
        if wanted && !users.iter().any(|(t, u)| t == tenant && u == user) {
            users.push((tenant.to_owned(), user.to_owned()));
        }
    };
    for entry in t.by_user.read()?.iter()? {
        let (k, _) = entry?;
        let (tenant, user, _) = k.value();
        consider(tenant, user);
    }
    for entry in t.user_config.iter()? {
        let (k, _) = entry?;
        consider(k.value().0, k.value().1);
    }
    for entry in t.user_keys.iter()? {
        let (k, _) = entry?;
        consider(k.value().0, k.value().1);
    }
    for entry in t.keys.iter()? {
        let key: ApiKey = decode(entry?.1.value())?;
        if let (Role::User, Some(tenant), Some(user)) = (key.role, &key.tenant, &key.user_id) {
            consider(tenant, user);
        }
    }
    for (tenant, user) in &users {
        erase_user(t, tenant, user)?;
    }
    Ok(!users.is_empty())
}

/// Mark deletions as erased from the files.
pub fn complete_erasures(ctx: &mut WriteCtx<'_, '_>, done: &[PendingErasure], checkpoints: u64) -> OpResult<()> {
    let now = ctx.now;
    let t = &mut *ctx.tables;
    for PendingErasure { tenant, receipt: id, .. } in done {
        t.pending_erasures.remove((tenant.as_str(), id.as_str()))?;
        let Some(bytes) = t.receipts.get((tenant.as_str(), id.as_str()))?.map(|v| v.value().to_vec()) else {
            continue;
        };
        let mut receipt: Receipt = decode(&bytes)?;
        receipt.erasure_completed_at = Some(now);
        receipt.checkpoints_rewritten = checkpoints;
        t.receipts.insert((tenant.as_str(), id.as_str()), encode(&receipt).as_slice())?;
        let detail = json!({ "receipt": id, "checkpoints_rewritten": checkpoints });
        audit(t, now, "erasure_complete", &Actor::host("eraser"), Some(tenant), detail)?;
    }
    Ok(())
}
