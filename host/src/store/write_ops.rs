//! The write operations, run inside the single writer's transaction.
//!
//! Every job change goes through [`put_job`], which derives the index entries from
//! the old and the new record, so indexes cannot drift from the jobs table.
//! Every state change goes through `machine::decide`.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use chrono::{DateTime, Duration, Utc};
use redb::ReadableTable;
use serde_json::{Map, Value, json};

use super::codec::{decode, decode_queue_config, encode};
use super::leased::LeasedSeqs;
use super::tables::Tables;
use super::writer::{OpError, WriteCtx};
use super::{
    Change, ClaimRequest, Claimed, Command, InsertCaps, JobMark, JudgedPick, NewJob, NoteRequest, PauseScope, Promoted,
    ReadJob, TransitionRequest,
};
use crate::error::{Code, Error};
use crate::limits::{self, Holder};
use crate::machine::{self, Action, Facts};
use crate::model::*;

type OpResult<T> = Result<T, OpError>;

/// The index entries a job record implies. Taken before a change and kept
/// (`into_owned`), they let `put_job` remove the old entries of a job that was
/// changed in place, without a copy of the whole record.
pub(super) struct IndexKeys<'j> {
    pub tenant: Cow<'j, str>,
    pub queue: Cow<'j, str>,
    pub user_id: Cow<'j, str>,
    pub state: u8,
    pub seq: u64,
    pub ready: Option<(u8, u32, u64)>,
    pub due: Option<u64>,
    pub lease: Option<u64>,
    /// When the stuck detector should look at it.
    pub stuck_due: Option<u64>,
    pub stuck: bool,
    pub retention: Option<(u64, u64, u64)>,
    pub held: bool,
    /// Counted by the pending-job quota counters.
    pub pending: bool,
}

impl IndexKeys<'_> {
    pub fn into_owned(self) -> IndexKeys<'static> {
        IndexKeys {
            tenant: Cow::Owned(self.tenant.into_owned()),
            queue: Cow::Owned(self.queue.into_owned()),
            user_id: Cow::Owned(self.user_id.into_owned()),
            ..self
        }
    }
}

/// The pseudo-state under which `state_counts` counts stuck jobs.
pub const STUCK_COUNT: u8 = 200;

pub(super) fn index_keys(job: &Job) -> IndexKeys<'_> {
    let ready = (job.state == JobState::Pending && job.due_at.is_none())
        .then(|| (job.stage.code(), priority_key(job.priority), time_key(job.run_at)));
    IndexKeys {
        tenant: Cow::Borrowed(&job.tenant),
        queue: Cow::Borrowed(&job.queue),
        user_id: Cow::Borrowed(&job.user_id),
        state: job.state.code(),
        seq: job.seq,
        ready,
        due: job.due_at.map(time_key),
        lease: (job.state == JobState::Processing)
            .then(|| job.lease.as_ref().map(|l| time_key(l.expires_at)))
            .flatten(),
        stuck_due: job.stuck_at.filter(|_| !job.stuck).map(time_key),
        stuck: job.stuck,
        retention: retention_key(job),
        held: job.held(),
        pending: job.state == JobState::Pending,
    }
}

/// Set when the job becomes stuck if nothing happens, and whether it is stuck
/// now: a job stays flagged only while its condition still holds.
fn arm_stuck(job: &mut Job, config: &QueueConfig, now: DateTime<Utc>) {
    match job.stuck_deadline(config) {
        Some(deadline) if deadline <= now && job.stuck => job.stuck_at = None,
        Some(deadline) => {
            job.stuck = false;
            job.stuck_at = Some(deadline);
        }
        None => {
            job.stuck = false;
            job.stuck_at = None;
        }
    }
}

/// Host move: flag jobs whose stuck deadline has passed (re-checked against the
/// queue's current configuration, which may have changed since).
pub fn detect_stuck(ctx: &mut WriteCtx<'_, '_>, limit: usize) -> OpResult<Vec<Change>> {
    let now = ctx.now;
    let t = &mut *ctx.tables;
    let seqs = seqs_until(t.stuck_due.read()?, now, limit)?;
    let actor = Actor::host("stuck_detector");
    let mut changes = Vec::new();
    for seq in seqs {
        let old = load_job(t, seq, None)?;
        let config = queue_config(t, &old.tenant, &old.queue)?.unwrap_or_default();
        let mut job = old.clone();
        match job.stuck_deadline(&config) {
            Some(deadline) if deadline <= now => {
                job.stuck = true;
                job.stuck_at = None;
                put_job(t, Some(&index_keys(&old)), &job)?;
                record(t, &job, "stuck", Some(old.state), &actor, Map::new(), now)?;
                changes.push(Change { job, from: old.state, action: "stuck" });
            }
            other => {
                job.stuck_at = other;
                put_job(t, Some(&index_keys(&old)), &job)?;
            }
        }
    }
    Ok(changes)
}

/// After a queue's timeouts change: unflag its stuck jobs that no longer are.
fn recheck_stuck(
    t: &mut Tables<'_>,
    tenant: &str,
    queue: &str,
    config: &QueueConfig,
    now: DateTime<Utc>,
) -> OpResult<()> {
    let seqs: Vec<u64> = t
        .stuck
        .read()?
        .range((tenant, 0)..=(tenant, u64::MAX))?
        .map(|e| e.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for seq in seqs {
        let old = load_job(t, seq, None)?;
        if old.queue != queue {
            continue;
        }
        let mut job = old.clone();
        arm_stuck(&mut job, config, now);
        if job.stuck != old.stuck || job.stuck_at != old.stuck_at {
            put_job(t, Some(&index_keys(&old)), &job)?;
            if !job.stuck {
                record(t, &job, "unstuck", Some(old.state), &Actor::host("stuck_detector"), Map::new(), now)?;
            }
        }
    }
    Ok(())
}

/// Higher priority sorts first.
fn priority_key(priority: i32) -> u32 {
    (i32::MAX as i64 - priority as i64) as u32
}

/// Store `new`, replacing the job whose index entries were `old` (same seq),
/// keeping every index in step.
pub fn put_job(t: &mut Tables<'_>, old: Option<&IndexKeys<'_>>, new: &Job) -> OpResult<()> {
    match old {
        Some(old) => remove_indexes(t, old)?,
        None => {
            t.by_tenant.insert((new.tenant.as_str(), new.seq), ())?;
            t.by_user.insert((new.tenant.as_str(), new.user_id.as_str(), new.seq), ())?;
        }
    }
    add_indexes(t, &index_keys(new))?;
    t.jobs.insert(new.seq, encode(new).as_slice())?;
    Ok(())
}

/// Delete a job with its history and every index entry; its job_uuid stays as a
/// tombstone (seq 0), so the uuid is never accepted again.
pub fn delete_job(t: &mut Tables<'_>, job: &Job) -> OpResult<()> {
    remove_indexes(t, &index_keys(job))?;
    t.by_tenant.remove((job.tenant.as_str(), job.seq));
    t.by_user.remove((job.tenant.as_str(), job.user_id.as_str(), job.seq));
    t.jobs.remove(job.seq)?;
    let events: Vec<u32> = t
        .history
        .range((job.seq, 0)..=(job.seq, u32::MAX))?
        .map(|e| e.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for n in events {
        t.history.remove((job.seq, n))?;
    }
    t.uuids.insert((job.tenant.as_str(), job.job_uuid.as_u128()), 0)?;
    Ok(())
}

/// The retention index key of a job: terminal, with a retention, not held.
fn retention_key(job: &Job) -> Option<(u64, u64, u64)> {
    let days = job.retention_days()?;
    (job.state.is_terminal() && !job.held()).then(|| (days, time_key(job.updated_at), job.seq))
}

fn remove_indexes(t: &mut Tables<'_>, k: &IndexKeys<'_>) -> OpResult<()> {
    let (tenant, queue) = (k.tenant.as_ref(), k.queue.as_ref());
    if let Some((stage, prio, order)) = k.ready {
        t.ready.remove((tenant, queue, stage, prio, order, k.seq));
    }
    if let Some(due) = k.due {
        t.due.remove((due, k.seq));
    }
    if let Some(exp) = k.lease {
        t.leases.remove((exp, k.seq));
    }
    if let Some(at) = k.stuck_due {
        t.stuck_due.remove((at, k.seq));
    }
    if k.stuck {
        t.stuck.remove((tenant, k.seq));
        t.counts.add((tenant, queue, STUCK_COUNT), -1);
    }
    if let Some(key) = k.retention {
        t.retention.remove(key);
    }
    if k.held {
        t.held.remove((tenant, k.seq));
    }
    if k.pending {
        add_pending(t, tenant, &k.user_id, -1);
    }
    t.by_state.remove((tenant, k.state, k.seq));
    t.counts.add((tenant, queue, k.state), -1);
    Ok(())
}

fn add_indexes(t: &mut Tables<'_>, k: &IndexKeys<'_>) -> OpResult<()> {
    let (tenant, queue) = (k.tenant.as_ref(), k.queue.as_ref());
    if let Some((stage, prio, order)) = k.ready {
        t.ready.insert((tenant, queue, stage, prio, order, k.seq), ())?;
    }
    if let Some(due) = k.due {
        t.due.insert((due, k.seq), ())?;
    }
    if let Some(exp) = k.lease {
        t.leases.insert((exp, k.seq), ())?;
    }
    if let Some(at) = k.stuck_due {
        t.stuck_due.insert((at, k.seq), ())?;
    }
    if k.stuck {
        t.stuck.insert((tenant, k.seq), ())?;
        t.counts.add((tenant, queue, STUCK_COUNT), 1);
    }
    if let Some(key) = k.retention {
        t.retention.insert(key, ())?;
    }
    if k.held {
        t.held.insert((tenant, k.seq), ())?;
    }
    if k.pending {
        add_pending(t, tenant, &k.user_id, 1);
    }
    t.by_state.insert((tenant, k.state, k.seq), ())?;
    t.counts.add((tenant, queue, k.state), 1);
    Ok(())
}

/// Storage schema 1 to 2: add the entries of the indexes schema 2 introduced
/// (retention, legal holds, pending counters) for an existing job.
pub fn add_schema2_entries(t: &mut Tables<'_>, job: &Job) -> OpResult<()> {
    if let Some(key) = retention_key(job) {
        t.retention.insert(key, ())?;
    }
    if job.state == JobState::Pending {
        add_pending(t, &job.tenant, &job.user_id, 1);
    }
    Ok(())
}

/// The pending-job counters the quotas read: per user and per tenant.
fn add_pending(t: &mut Tables<'_>, tenant: &str, user_id: &str, delta: i64) {
    t.user_pending.add((tenant, user_id), delta);
    t.tenant_pending.add(tenant, delta);
}

/// The job whose stored bytes are `stored`: the job read from them before, when
/// they are the same bytes (a job read to be judged), else decoded.
fn reread(stored: &[u8], read: Option<ReadJob>) -> OpResult<Job> {
    match read {
        Some(read) if *stored == *read.stored => Ok(read.job),
        _ => Ok(decode(stored)?),
    }
}

/// The job stored under `seq`; the job `read` before when it is unchanged.
fn load_job(t: &Tables<'_>, seq: u64, read: Option<ReadJob>) -> OpResult<Job> {
    let bytes = t.jobs.get(seq)?.ok_or_else(|| Error::internal(format!("index points at missing job {seq}")))?;
    reread(bytes.value(), read)
}

/// The job `job_uuid` of `tenant`: where the writer last leased it, if the record
/// there is that job (no job_uuid index read), else through the index.
fn find_job(
    t: &Tables<'_>,
    leased: &LeasedSeqs,
    tenant: &str,
    job_uuid: uuid::Uuid,
    mut read: Option<ReadJob>,
) -> OpResult<Job> {
    if let Some(seq) = leased.seq(tenant, job_uuid)
        && let Some(stored) = t.jobs.get(seq)?
    {
        // `read` was read by this job_uuid: equal bytes are this job. A job that is
        // not the one asked for leaves the index to answer, decoding anew.
        let job = reread(stored.value(), read.take())?;
        if job.tenant == tenant && job.job_uuid == job_uuid {
            return Ok(job);
        }
    }
    let seq = t.uuids.get((tenant, job_uuid.as_u128()))?.map(|v| v.value()).unwrap_or(0);
    if seq == 0 {
        return Err(Error::not_found("job").into());
    }
    load_job(t, seq, read)
}

/// Append one event to the job's history.
fn record(
    t: &mut Tables<'_>,
    job: impl Into<JobMark>,
    action: &str,
    from: Option<JobState>,
    actor: &Actor,
    detail: Map<String, Value>,
    now: DateTime<Utc>,
) -> OpResult<()> {
    let job = job.into();
    let n = t
        .history
        .range((job.seq, 0)..=(job.seq, u32::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, _)| k.value().1 + 1)
        .unwrap_or(0);
    let event = HistoryEvent {
        at: now,
        action: action.to_owned(),
        from,
        to: job.state,
        actor: actor.clone(),
        attempt: job.attempt,
        revision: job.revision,
        detail,
    };
    t.history.insert((job.seq, n), encode(&event).as_slice())?;
    Ok(())
}

/// Append a history event with a JSON object of detail.
pub fn record_event(
    t: &mut Tables<'_>,
    job: impl Into<JobMark>,
    action: &str,
    from: Option<JobState>,
    actor: &Actor,
    d: Value,
    now: DateTime<Utc>,
) -> OpResult<()> {
    record(t, job, action, from, actor, detail(d), now)
}

fn detail(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The queue's configuration; `None` when the queue was never used.
pub fn queue_config(t: &Tables<'_>, tenant: &str, queue: &str) -> OpResult<Option<QueueConfig>> {
    Ok(match t.queues.get((tenant, queue))? {
        Some(bytes) => Some(decode_queue_config(bytes.value())?),
        None => None,
    })
}

fn config_or_create(t: &mut Tables<'_>, tenant: &str, queue: &str) -> OpResult<QueueConfig> {
    if let Some(config) = queue_config(t, tenant, queue)? {
        return Ok(config);
    }
    let config = QueueConfig::default();
    t.queues.insert((tenant, queue), encode(&config).as_slice())?;
    Ok(config)
}

/// Refuse a new queue past the tenant's `max_queues`.
fn check_queue_count(t: &Tables<'_>, tenant: &str, max: Option<u64>) -> OpResult<()> {
    let Some(max) = max else { return Ok(()) };
    let mut queues = 0u64;
    for entry in t.queues.range((tenant, "")..)? {
        if entry?.0.value().0 != tenant {
            break;
        }
        queues += 1;
    }
    if queues >= max {
        return Err(limits::exceeded(Holder::Tenant, "max_queues", format!("{queues} of {max} queues")).into());
    }
    Ok(())
}

/// Refuse a pending job past the tenant's or the user's `max_pending`.
fn check_pending(t: &Tables<'_>, tenant: &str, user_id: &str, caps: &InsertCaps) -> OpResult<()> {
    if let Some(max) = caps.tenant_pending {
        let now = t.tenant_pending.get(tenant)?;
        if now >= max {
            return Err(limits::exceeded(Holder::Tenant, "max_pending", format!("{now} of {max} pending jobs")).into());
        }
    }
    if let Some(max) = caps.user_pending.get(user_id).copied().flatten() {
        let now = t.user_pending.get((tenant, user_id))?;
        if now >= max {
            return Err(limits::exceeded(Holder::User, "max_pending", format!("{now} of {max} pending jobs")).into());
        }
    }
    Ok(())
}

pub fn insert(
    ctx: &mut WriteCtx<'_, '_>,
    tenant: &str,
    mut new: NewJob,
    actor: &Actor,
    caps: &InsertCaps,
) -> OpResult<Job> {
    let t = &mut *ctx.tables;
    if t.tenants.get(tenant)?.is_none() {
        return Err(Error::not_found("tenant").into());
    }
    let uuid_key = (tenant, new.job_uuid.as_u128());
    if let Some(seq) = t.uuids.get(uuid_key)?.map(|v| v.value()) {
        let reason = if seq == 0 {
            format!("job_uuid {} was used by a job that has since been deleted", new.job_uuid)
        } else {
            format!("job_uuid {} already exists in this tenant; the stored job is unchanged", new.job_uuid)
        };
        return Err(Error::new(Code::DuplicateJob, reason).into());
    }
    let existing = queue_config(t, tenant, &new.queue)?;
    let config = existing.clone().unwrap_or_default();
    if !config.schema_versions.contains(&new.schema_version) {
        return Err(Error::new(
            Code::SchemaUnsupported,
            format!(
                "queue {} accepts schema versions {:?}, not {}",
                new.queue, config.schema_versions, new.schema_version
            ),
        )
        .into());
    }
    if existing.is_none() {
        check_queue_count(t, tenant, caps.queues)?;
    }
    check_pending(t, tenant, &new.user_id, caps)?;
    // Checks done: from here on, write.
    if existing.is_none() {
        config_or_create(t, tenant, &new.queue)?;
    }
    if t.user_keys.get((tenant, new.user_id.as_str()))?.is_none() {
        let secret: [u8; 32] = rand::random();
        t.user_keys.insert((tenant, new.user_id.as_str()), secret.as_slice())?;
    }
    let now = ctx.now;
    let seq = *ctx.next_seq;
    *ctx.next_seq += 1;
    let judgement = new.judgement.take();
    let mut job = new.into_job(tenant, seq, config.max_attempts, now);
    job.user_hold = t.user_holds.get((tenant, job.user_id.as_str()))?.is_some();
    arm_stuck(&mut job, &config, now);
    t.uuids.insert(uuid_key, seq)?;
    put_job(t, None, &job)?;
    let d = match judgement {
        Some(j) => detail(json!({ "plugin": j })),
        None => Map::new(),
    };
    record(t, &job, "insert", None, actor, d, now)?;
    Ok(job)
}

/// The ready index's range of one queue's stage, in claim order.
pub(super) fn ready_range<'a>(tenant: &'a str, queue: &'a str, stage: u8) -> RangeInclusive<ReadyKey<'a>> {
    (tenant, queue, stage, 0, 0, 0)..=(tenant, queue, stage, u32::MAX, u64::MAX, u64::MAX)
}

type ReadyKey<'a> = (&'a str, &'a str, u8, u32, u64, u64);

/// Lease the queue's next ready jobs, or under a validator the jobs it judged
/// (`req.judged`): those still ready at the revision the plugin saw are leased,
/// or deferred when vetoed; the others are skipped.
pub fn claim(ctx: &mut WriteCtx<'_, '_>, mut req: ClaimRequest) -> OpResult<Claimed> {
    let t = &mut *ctx.tables;
    let (tenant, queue, stage) = (req.tenant.as_str(), req.queue.as_str(), req.stage.code());
    // Checked in the writer, so no claim after an acknowledged pause hands out a job.
    let host_paused = t.meta.get("paused")?.is_some_and(|v| v.value() == 1);
    let config = queue_config(t, tenant, queue)?.unwrap_or_default();
    if host_paused || config.paused {
        return Ok(Claimed { paused: true, ..Claimed::default() });
    }
    let picks: Vec<(u64, Option<JudgedPick>)> = match req.judged.take() {
        Some(judged) => judged.into_iter().map(|pick| (pick.read.job.seq, Some(pick))).collect(),
        None => t
            .ready
            .read()?
            .range(ready_range(tenant, queue, stage))?
            .take(req.limit as usize)
            .map(|entry| entry.map(|(k, _)| (k.value().5, None)))
            .collect::<Result<_, _>>()?,
    };
    let mut claimed = Claimed { jobs: Vec::with_capacity(picks.len()), ..Claimed::default() };
    for (seq, pick) in picks {
        let (mut job, judgement) = match pick {
            None => (load_job(t, seq, None)?, None),
            Some(JudgedPick { read, judgement, vetoed }) => {
                let revision = read.job.revision;
                let job = match t.jobs.get(seq)? {
                    Some(stored) => reread(stored.value(), Some(read))?,
                    None => continue,
                };
                let ready = index_keys(&job).ready.is_some_and(|(s, _, _)| s == stage);
                if job.revision != revision || !ready || job.tenant != tenant || job.queue != queue {
                    continue;
                }
                if vetoed {
                    claimed.deferred.push(defer_vetoed(t, job, &config, &judgement, &req.actor, ctx.now)?);
                    continue;
                }
                (job, Some(judgement))
            }
        };
        let from = job.state;
        let mv = machine::decide(Action::Claim, from, Facts::default())
            .map_err(|_| Error::internal("ready index holds a job that is not pending"))?;
        let before = index_keys(&job).into_owned();
        job.state = mv.to;
        job.attempt += 1;
        job.last_token += 1;
        job.lease = Some(Lease {
            token: job.last_token,
            owner: req.worker.clone(),
            acquired_at: ctx.now,
            expires_at: ctx.now + Duration::milliseconds(req.lease_ms as i64),
        });
        job.revision += 1;
        job.updated_at = ctx.now;
        arm_stuck(&mut job, &config, ctx.now);
        put_job(t, Some(&before), &job)?;
        let mut d = detail(json!({ "token": job.last_token, "worker": req.worker, "lease_ms": req.lease_ms }));
        if let Some(judgement) = &judgement {
            d.insert("plugin".into(), serde_json::to_value(judgement).unwrap_or_default());
        }
        record(t, &job, "claim", Some(from), &req.actor, d, ctx.now)?;
        ctx.leased.remember(tenant, job.job_uuid, seq);
        claimed.jobs.push(job);
    }
    Ok(claimed)
}

/// A ready job its validator vetoed claiming stays pending, due after the queue's
/// backoff base: no attempt spent, the veto in its history.
fn defer_vetoed(
    t: &mut Tables<'_>,
    mut job: Job,
    config: &QueueConfig,
    judgement: &Judgement,
    actor: &Actor,
    now: DateTime<Utc>,
) -> OpResult<Change> {
    let before = index_keys(&job).into_owned();
    job.due_at = Some(now + Duration::milliseconds(config.backoff_base_ms as i64));
    job.revision += 1;
    job.updated_at = now;
    arm_stuck(&mut job, config, now);
    put_job(t, Some(&before), &job)?;
    let d = detail(json!({ "plugin": judgement }));
    record(t, &job, "defer", Some(JobState::Pending), actor, d, now)?;
    Ok(Change { job, from: JobState::Pending, action: "defer" })
}

pub fn set_paused(ctx: &mut WriteCtx<'_, '_>, scope: &PauseScope, paused: bool) -> OpResult<()> {
    match scope {
        PauseScope::Host => {
            ctx.tables.meta.insert("paused", u64::from(paused))?;
        }
        PauseScope::Queue { tenant, queue } => {
            if ctx.tables.tenants.get(tenant.as_str())?.is_none() {
                return Err(Error::not_found("tenant").into());
            }
            let mut config = queue_config(ctx.tables, tenant, queue)?.unwrap_or_default();
            config.paused = paused;
            ctx.tables.queues.insert((tenant.as_str(), queue.as_str()), encode(&config).as_slice())?;
        }
    }
    Ok(())
}

pub fn transition(ctx: &mut WriteCtx<'_, '_>, mut req: TransitionRequest) -> OpResult<Change> {
    let now = ctx.now;
    let t = &mut *ctx.tables;
    let expected_revision = req.judged.as_ref().map(|read| read.job.revision);
    let old = match find_job(t, ctx.leased, &req.tenant, req.job_uuid, req.judged.take()) {
        Err(OpError::Refused(e)) if e.code == Code::NotFound && req.command.token().is_some() => {
            let deleted = t.uuids.get((req.tenant.as_str(), req.job_uuid.as_u128()))?.is_some();
            return Err(if deleted { Error::lease_of_deleted_job() } else { e }.into());
        }
        other => other?,
    };
    if expected_revision.is_some_and(|r| r != old.revision) {
        return Err(Error::new(Code::RevisionConflict, "the job changed while a plugin judged it").into());
    }
    let action = req.command.action();
    if let Some(token) = req.command.token() {
        old.check_lease(token, now)?;
    }
    let config = queue_config(t, &old.tenant, &old.queue)?.unwrap_or_default();
    // Only a failure reads (and moves) the breaker: no other move depends on it.
    let breaker = match action {
        Action::Fail { .. } => {
            let mut breaker = load_breaker(t, &old)?;
            breaker.record_failure(now, &config);
            Some(breaker)
        }
        _ => None,
    };
    let facts = Facts {
        attempts_left: old.attempt < old.max_attempts,
        breaker_open: breaker.as_ref().is_some_and(Breaker::is_open),
        parked: old.parked,
    };
    let mv = machine::decide(action, old.state, facts).map_err(|r| r.error(action, old.state))?;

    let (from, before) = (old.state, index_keys(&old).into_owned());
    let mut job = old;
    job.state = mv.to;
    job.parked = mv.parked;
    job.revision += 1;
    job.updated_at = now;
    let mut d = Map::new();
    let name = if matches!(req.command, Command::Defer { .. }) { "defer" } else { action.name() };
    match req.command {
        Command::Heartbeat { lease_ms, progress, .. } => {
            if let Some(lease) = job.lease.as_mut() {
                lease.expires_at = now + Duration::milliseconds(lease_ms as i64);
            }
            if let Some((step, data)) = progress {
                d.insert("step".into(), Value::String(step.clone()));
                job.progress = Some(Progress { step, data, saved_at: now });
                job.stuck = false;
            }
        }
        Command::Complete { .. } => job.lease = None,
        Command::Release { .. } => {
            job.lease = None;
            job.attempt = job.attempt.saturating_sub(1);
            job.pending_since = now;
        }
        Command::Fail { failure, .. } => {
            d = detail(json!({ "code": failure.code, "retryable": failure.retryable }));
            job.errors.push(ErrorRecord {
                code: failure.code,
                reason: failure.reason,
                traceback: failure.traceback,
                step: failure.step,
                attempt: job.attempt,
                retryable: failure.retryable,
                at: now,
            });
            after_failed_attempt(&mut job, &config, now);
            if let Some(breaker) = &breaker {
                store_breaker(t, &job, breaker)?;
            }
        }
        Command::Retry => {
            back_to_pending(&mut job, now);
        }
        Command::Replay { override_terminal, resume } => {
            d = detail(json!({ "override": override_terminal, "resume": resume }));
            back_to_pending(&mut job, now);
            if !resume {
                job.progress = None;
            }
        }
        Command::Cancel => {
            job.due_at = None;
        }
        Command::Defer { delay_ms, .. } => {
            job.lease = None;
            job.attempt = job.attempt.saturating_sub(1);
            job.pending_since = now;
            job.due_at = Some(now + Duration::milliseconds(delay_ms as i64));
        }
    }
    if let Some(judgement) = req.judgement {
        d.insert("plugin".into(), serde_json::to_value(judgement).unwrap_or_default());
    }
    arm_stuck(&mut job, &config, now);
    put_job(t, Some(&before), &job)?;
    if action != Action::Heartbeat || d.contains_key("step") {
        record(t, &job, name, Some(from), &req.actor, d, now)?;
    }
    if job.state != JobState::Processing {
        ctx.leased.forget(job.job_uuid);
    }
    Ok(Change { job, from, action: name })
}

/// After a failed attempt the machine chose `failed` or `abandoned`: set lease and backoff.
fn after_failed_attempt(job: &mut Job, config: &QueueConfig, now: DateTime<Utc>) {
    job.lease = None;
    job.due_at = (job.state == JobState::Failed && !job.parked).then(|| {
        let backoff = backoff_ms(config, job.attempt, rand::random()).min(i32::MAX as u64);
        now + Duration::milliseconds(backoff as i64)
    });
}

/// Retry and replay: pending now, a fresh attempt budget, flags cleared.
fn back_to_pending(job: &mut Job, now: DateTime<Utc>) {
    job.attempt = 0;
    job.parked = false;
    job.stuck = false;
    job.lease = None;
    job.due_at = None;
    job.pending_since = now;
    job.run_at = now;
}

fn load_breaker(t: &Tables<'_>, job: &Job) -> OpResult<Breaker> {
    Ok(match t.breakers.get((job.tenant.as_str(), job.queue.as_str(), job.kind.as_str()))? {
        Some(bytes) => decode(bytes.value())?,
        None => Breaker { kind: job.kind.clone(), ..Breaker::default() },
    })
}

fn store_breaker(t: &mut Tables<'_>, job: &Job, breaker: &Breaker) -> OpResult<()> {
    t.breakers.insert((job.tenant.as_str(), job.queue.as_str(), job.kind.as_str()), encode(breaker).as_slice())?;
    Ok(())
}

/// The first `limit` jobs of a (time ms, seq) index whose time has come.
fn seqs_until(index: &redb::Table<'_, (u64, u64), ()>, now: DateTime<Utc>, limit: usize) -> OpResult<Vec<u64>> {
    let range = index.range((0, 0)..=(time_key(now), u64::MAX))?;
    Ok(range.take(limit).map(|e| e.map(|(k, _)| k.value().1)).collect::<Result<_, _>>()?)
}

/// Host move: leases that ran out are failed attempts with `LEASE_EXPIRED`.
pub fn expire_leases(ctx: &mut WriteCtx<'_, '_>, limit: usize) -> OpResult<Vec<Change>> {
    let now = ctx.now;
    let t = &mut *ctx.tables;
    let seqs = seqs_until(t.leases.read()?, now, limit)?;
    let actor = Actor::host("rescuer");
    let mut changes = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let old = load_job(t, seq, None)?;
        let config = queue_config(t, &old.tenant, &old.queue)?.unwrap_or_default();
        let mut breaker = load_breaker(t, &old)?;
        breaker.record_failure(now, &config);
        let facts = Facts {
            attempts_left: old.attempt < old.max_attempts,
            breaker_open: breaker.is_open(),
            parked: old.parked,
        };
        let mv = machine::decide(Action::ExpireLease, old.state, facts)
            .map_err(|_| Error::internal("lease index holds a job that is not processing"))?;
        let mut job = old.clone();
        job.state = mv.to;
        job.parked = mv.parked;
        let lease = job.lease.clone();
        job.errors.push(ErrorRecord {
            code: "LEASE_EXPIRED".into(),
            reason: match &lease {
                Some(l) => format!("lease {} of worker {} expired at {}", l.token, l.owner, l.expires_at),
                None => "lease expired".into(),
            },
            traceback: None,
            step: job.progress.as_ref().map(|p| p.step.clone()),
            attempt: job.attempt,
            retryable: true,
            at: now,
        });
        after_failed_attempt(&mut job, &config, now);
        job.revision += 1;
        job.updated_at = now;
        store_breaker(t, &job, &breaker)?;
        arm_stuck(&mut job, &config, now);
        put_job(t, Some(&index_keys(&old)), &job)?;
        let d = detail(json!({ "code": "LEASE_EXPIRED", "token": lease.map(|l| l.token) }));
        record(t, &job, Action::ExpireLease.name(), Some(old.state), &actor, d, now)?;
        ctx.leased.forget(job.job_uuid);
        changes.push(Change { job, from: old.state, action: Action::ExpireLease.name() });
    }
    Ok(changes)
}

/// Host move: delayed jobs whose run_at came become ready; failed jobs whose backoff
/// passed go back to pending.
pub fn promote_due(ctx: &mut WriteCtx<'_, '_>, limit: usize) -> OpResult<Promoted> {
    let now = ctx.now;
    let t = &mut *ctx.tables;
    let seqs = seqs_until(t.due.read()?, now, limit)?;
    let actor = Actor::host("scheduler");
    let mut promoted = Promoted { moved: seqs.len(), ..Promoted::default() };
    for seq in seqs {
        let old = load_job(t, seq, None)?;
        let config = queue_config(t, &old.tenant, &old.queue)?.unwrap_or_default();
        let mut job = old.clone();
        job.due_at = None;
        arm_stuck(&mut job, &config, now);
        if old.state == JobState::Failed {
            let facts = Facts { parked: old.parked, ..Facts::default() };
            let mv = machine::decide(Action::Reschedule, old.state, facts)
                .map_err(|_| Error::internal("due index holds a parked job"))?;
            job.state = mv.to;
            job.pending_since = now;
            job.run_at = old.due_at.unwrap_or(now);
            job.revision += 1;
            job.updated_at = now;
            arm_stuck(&mut job, &config, now);
            put_job(t, Some(&index_keys(&old)), &job)?;
            record(t, &job, Action::Reschedule.name(), Some(old.state), &actor, Map::new(), now)?;
            promoted.changes.push(Change { job, from: old.state, action: Action::Reschedule.name() });
        } else {
            put_job(t, Some(&index_keys(&old)), &job)?;
            let queue = (job.tenant.clone(), job.queue.clone());
            if !promoted.ready_queues.contains(&queue) {
                promoted.ready_queues.push(queue);
            }
        }
    }
    Ok(promoted)
}

/// A history event that changes nothing else: a veto.
pub fn note(ctx: &mut WriteCtx<'_, '_>, req: NoteRequest) -> OpResult<()> {
    let t = &mut *ctx.tables;
    // Still this job (not deleted): its uuid still maps to its seq.
    if t.uuids.get((req.tenant.as_str(), req.job_uuid.as_u128()))?.map(|v| v.value()) != Some(req.mark.seq) {
        return Err(Error::not_found("job").into());
    }
    let d = detail(json!({ "plugin": req.judgement }));
    record(t, req.mark, &req.action, Some(req.mark.state), &req.actor, d, ctx.now)
}

pub fn put_queue_config(
    ctx: &mut WriteCtx<'_, '_>,
    tenant: &str,
    queue: &str,
    config: &QueueConfig,
    max_queues: Option<u64>,
) -> OpResult<()> {
    if ctx.tables.tenants.get(tenant)?.is_none() {
        return Err(Error::not_found("tenant").into());
    }
    if ctx.tables.queues.get((tenant, queue))?.is_none() {
        check_queue_count(ctx.tables, tenant, max_queues)?;
    }
    ctx.tables.queues.insert((tenant, queue), encode(config).as_slice())?;
    recheck_stuck(ctx.tables, tenant, queue, config, ctx.now)
}

/// Close every breaker of the queue and send its parked jobs back to pending.
pub fn reset_breakers(ctx: &mut WriteCtx<'_, '_>, tenant: &str, queue: &str, actor: &Actor) -> OpResult<Vec<Change>> {
    let now = ctx.now;
    let t = &mut *ctx.tables;
    let Some(config) = queue_config(t, tenant, queue)? else {
        return Err(Error::not_found("queue").into());
    };
    let mut kinds: Vec<String> = Vec::new();
    for entry in t.breakers.range((tenant, queue, "")..)? {
        let (k, _) = entry?;
        let (tn, q, kind) = k.value();
        if tn != tenant || q != queue {
            break;
        }
        kinds.push(kind.to_owned());
    }
    for kind in &kinds {
        t.breakers.remove((tenant, queue, kind.as_str()))?;
    }
    let failed: Vec<u64> = t
        .by_state
        .read()?
        .range((tenant, JobState::Failed.code(), 0)..=(tenant, JobState::Failed.code(), u64::MAX))?
        .map(|e| e.map(|(k, _)| k.value().2))
        .collect::<Result<_, _>>()?;
    let mut changes = Vec::new();
    for seq in failed {
        let old = load_job(t, seq, None)?;
        if old.queue != queue || !old.parked {
            continue;
        }
        let mut job = old.clone();
        job.parked = false;
        let mv = machine::decide(Action::Reschedule, old.state, Facts::default())
            .map_err(|_| Error::internal("a failed job could not be rescheduled"))?;
        job.state = mv.to;
        job.pending_since = now;
        job.run_at = now;
        job.due_at = None;
        job.revision += 1;
        job.updated_at = now;
        arm_stuck(&mut job, &config, now);
        put_job(t, Some(&index_keys(&old)), &job)?;
        record(t, &job, "breaker_reset", Some(old.state), actor, Map::new(), now)?;
        changes.push(Change { job, from: old.state, action: "breaker_reset" });
    }
    Ok(changes)
}

pub fn create_tenant(ctx: &mut WriteCtx<'_, '_>, tenant: &Tenant) -> OpResult<()> {
    if ctx.tables.tenants.get(tenant.id.as_str())?.is_some() {
        return Err(Error::new(Code::Validation, format!("tenant {} already exists", tenant.id)).into());
    }
    ctx.tables.tenants.insert(tenant.id.as_str(), encode(tenant).as_slice())?;
    Ok(())
}

pub fn create_key(ctx: &mut WriteCtx<'_, '_>, key: &ApiKey) -> OpResult<()> {
    if let Some(tenant) = &key.tenant
        && ctx.tables.tenants.get(tenant.as_str())?.is_none()
    {
        return Err(Error::not_found("tenant").into());
    }
    ctx.tables.keys.insert(key.id.as_str(), encode(key).as_slice())?;
    Ok(())
}

/// Revoke a key; `tenant` limits the search to one tenant's keys.
pub fn revoke_key(ctx: &mut WriteCtx<'_, '_>, id: &str, tenant: Option<&str>) -> OpResult<ApiKey> {
    let mut key: ApiKey = match ctx.tables.keys.get(id)? {
        Some(bytes) => decode(bytes.value())?,
        None => return Err(Error::not_found("key").into()),
    };
    if tenant.is_some() && key.tenant.as_deref() != tenant {
        return Err(Error::not_found("key").into());
    }
    if key.revoked_at.is_none() {
        key.revoked_at = Some(ctx.now);
        ctx.tables.keys.insert(id, encode(&key).as_slice())?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::model::Stage;

    fn job(seq: u64) -> Job {
        let new = NewJob {
            job_uuid: uuid::Uuid::new_v4(),
            user_id: "u".into(),
            trace_id: "t".into(),
            queue: "q".into(),
            kind: "k".into(),
            payload: RawValue::from_string("{\"n\":1}".into()).unwrap(),
            schema_version: 1,
            priority: 0,
            run_at: Utc::now(),
            max_attempts: None,
            tags: Map::new(),
            stage: Stage::Stable,
            judgement: None,
        };
        new.into_job("tenant", seq, 3, Utc::now())
    }

    #[test]
    fn a_job_read_before_is_taken_only_while_its_stored_bytes_are_the_same() {
        let stored = encode(&job(1));
        // The job as read is taken as it is (here a different job, to tell them apart).
        let read = ReadJob { job: job(2), stored: stored.clone().into() };
        assert!(reread(&stored, Some(read)).is_ok_and(|job| job.seq == 2));
        // Once the stored bytes differ, what is stored now is decoded.
        let mut changed = job(1);
        changed.revision += 1;
        let read = ReadJob { job: job(2), stored: stored.into() };
        let Ok(now) = reread(&encode(&changed), Some(read)) else { panic!("decodes") };
        assert_eq!((now.seq, now.revision), (1, changed.revision));
    }

    #[test]
    fn a_queue_configuration_is_read_anew_whenever_its_stored_bytes_change() {
        let db = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let txn = db.begin_write().unwrap();
        let mut t = Tables::open(&txn);
        let read = |t: &Tables<'_>, queue: &str| queue_config(t, "tenant", queue).ok().flatten();
        assert!(read(&t, "q").is_none());
        let mut stored = Vec::new();
        for max_attempts in [3, 7, 3, 7] {
            let config = QueueConfig { max_attempts, ..QueueConfig::default() };
            t.queues.insert(("tenant", "q"), encode(&config).as_slice()).unwrap();
            stored.push(read(&t, "q").expect("stored").max_attempts);
            // Another queue with the same bytes reads the same; its own change stays its own.
            t.queues.insert(("tenant", "other"), encode(&QueueConfig::default()).as_slice()).unwrap();
            assert_eq!(read(&t, "other").expect("stored").max_attempts, 5);
        }
        assert_eq!(stored, [3, 7, 3, 7]);
    }
}
