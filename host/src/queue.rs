//! The queue service: what the API, the CLI's server side and the maintenance loops
//! call. It checks input, fills in defaults, asks the store to act, wakes waiting
//! claimers and writes one structured log line per action (QUEUE-017).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Code, Error, Result};
use crate::judge::{self, Decision};
use crate::model::*;
use crate::plugins::{ActiveBinding, PluginHost};
use crate::pseudonym::Pseudonyms;
use crate::reservations::Reservations;
use crate::store::RestoreScope;
use crate::store::{
    Change, ClaimRequest, Claimed, Command, JobFilter, JobMark, JobPage, JudgedPick, NewJob, NoteRequest, PauseScope,
    QueueView, ReadJob, Store, TransitionRequest,
};

/// How often an action is judged again when the job changed under the plugin.
const JUDGE_ATTEMPTS: usize = 5;

/// Most jobs in one batch insert.
pub const MAX_BATCH: usize = 1000;
/// Default and bounds of a claim's lease.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
const LEASE_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;
/// Longest a claim may wait for work.
const MAX_WAIT_MS: u64 = 30_000;

/// A job as a producer submits it.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    /// Client-chosen id; a UUIDv7 is generated when absent.
    pub job_uuid: Option<Uuid>,
    pub queue: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub user_id: String,
    /// Else taken from a W3C `traceparent` header, else generated.
    pub trace_id: Option<String>,
    /// Higher runs first; -1000 to 1000, default 0.
    #[serde(default)]
    pub priority: i32,
    /// Not before this time.
    pub run_at: Option<DateTime<Utc>>,
    /// Not before this many ms from now (instead of run_at).
    pub delay_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    #[serde(default = "one")]
    pub schema_version: u32,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub tags: Map<String, Value>,
    #[serde(default)]
    pub stage: Stage,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimInput {
    /// Who is claiming (shown in the lease and the history).
    pub worker: String,
    /// How many jobs at most, 1 to 1000. Default 1.
    #[serde(default = "one")]
    pub limit: u32,
    /// Lease length in ms, 1,000 to 3,600,000. Default 30,000.
    pub lease_ms: Option<u64>,
    /// Wait up to this many ms (at most 30,000) for a job when none is ready.
    #[serde(default)]
    pub wait_ms: u64,
    #[serde(default)]
    pub stage: Stage,
    /// Jobs this worker finished, up to 1,000: each is completed or refused on its
    /// own (as by `POST /v1/jobs/batch/complete`) beside the claim, so a worker
    /// pays one round trip per batch of jobs. They are applied at once; the answer
    /// still comes when the claim has jobs or its `wait_ms` ends, so a worker
    /// handing in jobs usually sends `wait_ms` 0.
    #[serde(default)]
    pub complete: Vec<Completion>,
}

/// A finished job, named with the token of its lease.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    pub job_uuid: Uuid,
    pub token: u64,
}

impl Completion {
    pub fn command(&self) -> (Uuid, Command) {
        (self.job_uuid, Command::Complete { token: self.token })
    }
}

#[derive(Debug)]
pub struct ClaimOutcome {
    pub jobs: Vec<Job>,
    pub paused: bool,
    /// The outcome of each of the claim's completions, in order.
    pub completed: Vec<Result<Job>>,
}

/// A claim's writer request, once its whole input (its completions too) is checked.
fn claim_request(tenant: &str, queue: &str, input: &ClaimInput, actor: &Actor) -> Result<ClaimRequest> {
    check_queue_name(queue)?;
    check_len("worker", &input.worker, 128)?;
    if !(1..=MAX_BATCH as u32).contains(&input.limit) {
        return Err(Error::validation(format!("limit: 1 to {MAX_BATCH}")));
    }
    let lease_ms = input.lease_ms.unwrap_or(DEFAULT_LEASE_MS);
    if !LEASE_MS.contains(&lease_ms) {
        return Err(Error::validation("lease_ms: 1000 to 3600000"));
    }
    if input.wait_ms > MAX_WAIT_MS {
        return Err(Error::validation(format!("wait_ms: at most {MAX_WAIT_MS}")));
    }
    if input.complete.len() > MAX_BATCH {
        return Err(Error::validation(format!("complete: at most {MAX_BATCH} jobs")));
    }
    Ok(ClaimRequest {
        tenant: tenant.to_owned(),
        queue: queue.to_owned(),
        stage: input.stage,
        worker: input.worker.clone(),
        limit: input.limit,
        lease_ms,
        actor: actor.clone(),
        judged: None,
    })
}

fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max {
        return Err(Error::validation(format!("{field}: 1 to {max} bytes")));
    }
    Ok(())
}

/// Queue names appear in paths: letters, digits, '.', '_' and '-'.
pub fn check_queue_name(name: &str) -> Result<()> {
    check_len("queue", name, 128)?;
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(Error::validation("queue: only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// The trace id of a W3C `traceparent` header (version-traceid-parentid-flags).
fn trace_from_header(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()) && trace != "0".repeat(32))
        .then(|| trace.to_ascii_lowercase())
}

impl JobInput {
    fn validate(self, traceparent: Option<&str>, now: DateTime<Utc>) -> Result<NewJob> {
        check_queue_name(&self.queue)?;
        check_len("kind", &self.kind, 128)?;
        check_len("user_id", &self.user_id, 256)?;
        if !(-1000..=1000).contains(&self.priority) {
            return Err(Error::validation("priority: -1000 to 1000"));
        }
        if let Some(n) = self.max_attempts
            && !(1..=1000).contains(&n)
        {
            return Err(Error::validation("max_attempts: 1 to 1000"));
        }
        if self.schema_version == 0 {
            return Err(Error::validation("schema_version: 1 or more"));
        }
        let run_at = match (self.run_at, self.delay_ms) {
            (Some(_), Some(_)) => return Err(Error::validation("give run_at or delay_ms, not both")),
            (Some(at), None) => at,
            (None, Some(ms)) if ms <= 365 * 86_400_000 => now + chrono::Duration::milliseconds(ms as i64),
            (None, Some(_)) => return Err(Error::validation("delay_ms: at most one year")),
            (None, None) => now,
        };
        let trace_id = match self.trace_id {
            Some(t) => {
                check_len("trace_id", &t, 128)?;
                t
            }
            None => traceparent.and_then(trace_from_header).unwrap_or_else(|| Uuid::new_v4().simple().to_string()),
        };
        Ok(NewJob {
            job_uuid: self.job_uuid.unwrap_or_else(Uuid::now_v7),
            user_id: self.user_id,
            trace_id,
            queue: self.queue,
            kind: self.kind,
            payload: self.payload,
            schema_version: self.schema_version,
            priority: self.priority,
            run_at: ms_to_time(run_at.timestamp_millis()),
            max_attempts: self.max_attempts,
            tags: self.tags,
            stage: self.stage,
            judgement: None,
        })
    }
}

pub struct QueueService {
    store: Arc<dyn Store>,
    plugins: Arc<PluginHost>,
    quotas: crate::quota::Quotas,
    pseudonyms: Pseudonyms,
    /// Claimers waiting for work, per (tenant, queue).
    waiters: DashMap<(String, String), Arc<Notify>>,
    /// Recent events per (tenant, queue, kind), for per-minute rates.
    recent: DashMap<(String, String, &'static str), std::collections::VecDeque<std::time::Instant>>,
    /// Scopes being restored: inserts into them answer 503 meanwhile.
    restoring: Arc<std::sync::Mutex<Vec<RestoreScope>>>,
    /// Ready jobs being judged before a claim.
    reservations: Reservations,
}

/// Marks a scope as being restored until dropped.
pub struct RestoreGuard {
    restoring: Arc<std::sync::Mutex<Vec<RestoreScope>>>,
    scope: RestoreScope,
}

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        let mut scopes = self.restoring.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = scopes.iter().position(|s| *s == self.scope) {
            scopes.remove(i);
        }
    }
}

impl QueueService {
    pub fn new(store: Arc<dyn Store>, plugins: Arc<PluginHost>, default_limits: crate::limits::Limits) -> QueueService {
        QueueService {
            quotas: crate::quota::Quotas::new(store.clone(), default_limits),
            pseudonyms: Pseudonyms::new(store.clone()),
            store,
            plugins,
            waiters: DashMap::new(),
            recent: DashMap::new(),
            restoring: Arc::default(),
            reservations: Reservations::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.plugins
    }

    pub fn quotas(&self) -> &crate::quota::Quotas {
        &self.quotas
    }

    pub fn pseudonyms(&self) -> &Pseudonyms {
        &self.pseudonyms
    }

    fn count_event(&self, tenant: &str, queue: &str, kind: &'static str) {
        let mut times = self.recent.entry((tenant.to_owned(), queue.to_owned(), kind)).or_default();
        times.push_back(std::time::Instant::now());
        while times.front().is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
            times.pop_front();
        }
    }

    /// Events of `kind` (`failure`, `ILLEGAL_TRANSITION`, `LEASE_LOST`) in the last minute.
    pub fn rate_per_minute(&self, tenant: &str, queue: &str, kind: &'static str) -> f64 {
        self.recent
            .get(&(tenant.to_owned(), queue.to_owned(), kind))
            .map_or(0, |times| times.iter().filter(|t| t.elapsed() <= Duration::from_secs(60)).count()) as f64
    }

    /// Mark `scope` as being restored until the guard drops.
    pub fn begin_restore(&self, scope: RestoreScope) -> RestoreGuard {
        self.restoring.lock().unwrap_or_else(|p| p.into_inner()).push(scope.clone());
        RestoreGuard { restoring: self.restoring.clone(), scope }
    }

    fn being_restored(&self, tenant: &str, queue: &str) -> bool {
        self.restoring.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|s| s.covers(tenant, queue))
    }

    fn waiter(&self, tenant: &str, queue: &str) -> Arc<Notify> {
        self.waiters.entry((tenant.to_owned(), queue.to_owned())).or_default().clone()
    }

    pub fn wake(&self, tenant: &str, queue: &str) {
        if let Some(n) = self.waiters.get(&(tenant.to_owned(), queue.to_owned())) {
            n.notify_waiters();
        }
    }

    /// Insert jobs; each is accepted or refused on its own, in order.
    pub async fn insert(
        &self,
        tenant: &str,
        inputs: Vec<JobInput>,
        traceparent: Option<&str>,
        actor: &Actor,
    ) -> Result<Vec<Result<Job>>> {
        let started = std::time::Instant::now();
        let now = now_ms();
        // Each job is checked, tagged and stored on its own; its result keeps its place.
        let mut results: Vec<Option<Result<Job>>> = Vec::with_capacity(inputs.len());
        let mut valid = Vec::new();
        for (i, input) in inputs.into_iter().enumerate() {
            match input.validate(traceparent, now) {
                Ok(new) if self.being_restored(tenant, &new.queue) => results.push(Some(Err(Error::new(
                    Code::RestoreInProgress,
                    format!("queue {} is being restored; try again shortly", new.queue),
                )))),
                Ok(new) => {
                    valid.push((i, new));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut users = crate::quota::UserConfigs::new();
        for (_, job) in &valid {
            if !users.contains_key(&job.user_id) {
                users.insert(job.user_id.clone(), self.store.user_config(tenant, &job.user_id)?);
            }
        }
        let admission = match self.quotas.admit(tenant, &valid.iter().map(|(_, j)| j).collect::<Vec<_>>(), &users) {
            Ok(admission) => admission,
            Err(e) => {
                crate::metrics::quota_refusal(tenant, &e);
                return Err(e);
            }
        };
        let mut sized = Vec::new();
        for (i, new) in valid {
            match admission.check_payload(&new) {
                Ok(()) => sized.push((i, new)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let (places, jobs): (Vec<usize>, Vec<NewJob>) = sized.into_iter().unzip();
        let mut accepted = Vec::new();
        for (i, tagged) in
            places.into_iter().zip(judge::tag_jobs(&self.plugins, &self.store, tenant, jobs, &users).await?)
        {
            match tagged.and_then(|mut new| admission.check_retention(&mut new).map(|()| new)) {
                Ok(new) => accepted.push((i, new)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let (places, jobs): (Vec<usize>, Vec<NewJob>) = accepted.into_iter().unzip();
        for (i, stored) in
            places.into_iter().zip(self.store.insert(tenant, jobs, actor.clone(), admission.caps()).await?)
        {
            results[i] = Some(stored);
        }
        let results: Vec<Result<Job>> = results.into_iter().map(|r| r.expect("every job has a result")).collect();
        crate::metrics::latency("insert", started.elapsed());
        for job in results.iter().flatten() {
            self.log(job, "insert", None, actor);
            if job.due_at.is_none() {
                self.wake(tenant, &job.queue);
            }
        }
        for err in results.iter().filter_map(|r| r.as_ref().err()) {
            crate::metrics::quota_refusal(tenant, err);
            tracing::info!(target: "sluice::job", action = "insert", tenant, actor = %actor, code = err.code.as_str(), reason = %err.reason, "insert refused");
        }
        Ok(results)
    }

    /// Lease up to `input.limit` jobs of the queue and complete `input.complete`, side
    /// by side (the jobs being completed are not ready, so neither affects the other):
    /// under load both writer requests share a commit. Nothing happens when any part
    /// of the input is invalid.
    pub async fn claim(&self, tenant: &str, queue: &str, input: ClaimInput, actor: &Actor) -> Result<ClaimOutcome> {
        let request = claim_request(tenant, queue, &input, actor)?;
        let completions = input.complete.iter().map(Completion::command).collect::<Vec<_>>();
        let (completed, claimed) = tokio::join!(
            async { if completions.is_empty() { Vec::new() } else { self.act_many(tenant, completions, actor).await } },
            self.lease(request, input.wait_ms, actor),
        );
        let (jobs, paused) = claimed?;
        Ok(ClaimOutcome { jobs, paused, completed })
    }

    /// Lease the request's jobs, waiting up to `wait_ms` for one: (jobs, paused).
    async fn lease(&self, request: ClaimRequest, wait_ms: u64, actor: &Actor) -> Result<(Vec<Job>, bool)> {
        let (tenant, queue, stage) = (request.tenant.as_str(), request.queue.as_str(), request.stage);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let waiter = self.waiter(tenant, queue);
        loop {
            // Register for a wake-up before looking, so an insert in between is not missed.
            let notified = waiter.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let started = std::time::Instant::now();
            let claimed = match self.plugins.bound(tenant, queue, PluginKind::Validator, stage) {
                Some(binding) => self.claim_judged(&binding, &request).await?,
                None => self.store.claim(request.clone()).await?,
            };
            if claimed.paused {
                return Ok((Vec::new(), true));
            }
            for job in &claimed.jobs {
                self.log(job, "claim", Some(JobState::Pending), actor);
            }
            for change in &claimed.deferred {
                self.after(change, actor);
            }
            crate::metrics::latency("claim", started.elapsed());
            if !claimed.jobs.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok((claimed.jobs, false));
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// A claim under a validator: reserve the queue's next ready jobs, judge them
    /// outside the writer, then have the writer lease the allowed ones and defer the
    /// vetoed ones (no attempt spent), each only if still ready at the revision the
    /// plugin saw. One writer request, and claimers judge different jobs.
    async fn claim_judged(&self, binding: &Arc<ActiveBinding>, request: &ClaimRequest) -> Result<Claimed> {
        let (tenant, queue) = (request.tenant.as_str(), request.queue.as_str());
        let limit = request.limit as usize;
        let read = |skip: &HashSet<u64>| self.store.ready_jobs(tenant, queue, request.stage, limit, skip);
        let (reserved, jobs) = self.reservations.reserve(tenant, queue, read, |read| read.job.seq)?;
        let mut picks = Vec::with_capacity(jobs.len());
        let mut vetoes = Vec::new();
        for (read, decision) in judge::judge_claims(&self.plugins, binding, jobs).await {
            let (judgement, vetoed) = match decision {
                Decision::Proceed(judgement) => (judgement.expect("a bound validator judged"), false),
                Decision::Refuse(error, judgement) => {
                    vetoes.push((read.job.job_uuid, error));
                    (judgement, true)
                }
            };
            picks.push(JudgedPick { read, judgement, vetoed });
        }
        let judged = picks.len();
        let claimed = self.store.claim(ClaimRequest { judged: Some(picks), ..request.clone() }).await;
        drop(reserved);
        let claimed = claimed?;
        if claimed.jobs.len() + claimed.deferred.len() < judged {
            // Some changed while judged; any still ready are free again for waiting claimers.
            self.wake(tenant, queue);
        }
        for (job_uuid, error) in vetoes {
            if claimed.deferred.iter().any(|change| change.job.job_uuid == job_uuid) {
                tracing::info!(target: "sluice::job", action = "claim", tenant, job_uuid = %job_uuid, code = error.code.as_str(), reason = %error.reason, "claim vetoed; job deferred");
            }
        }
        Ok(claimed)
    }

    /// A worker's or a person's action on one job.
    pub async fn act(&self, tenant: &str, job_uuid: Uuid, command: Command, actor: &Actor) -> Result<Job> {
        self.act_many(tenant, vec![(job_uuid, command)], actor).await.pop().expect("one result per action")
    }

    /// Actions on jobs of one tenant, each applied or refused on its own. A bound
    /// validator judges each first, outside the writer; the store then applies them
    /// in one writer request, each only if its job is still at the revision the
    /// plugin saw (else it is judged again).
    pub async fn act_many(&self, tenant: &str, actions: Vec<(Uuid, Command)>, actor: &Actor) -> Vec<Result<Job>> {
        // Invalid commands are answered as they are: not judged, logged or counted.
        let invalid: Vec<Option<Error>> = actions.iter().map(|(_, command)| validate_command(command).err()).collect();
        let mut outcomes: Vec<Option<Result<Change>>> = actions.iter().map(|_| None).collect();
        let mut queues: Vec<Option<String>> = vec![None; actions.len()];
        // Without a validator bound in the tenant nothing is judged, and the writer
        // reads each job itself: no read before it.
        let judged = self.plugins.binds_any(tenant, PluginKind::Validator);
        let mut todo: Vec<usize> = (0..actions.len()).filter(|&i| invalid[i].is_none()).collect();
        for attempt in 1..=JUDGE_ATTEMPTS {
            if todo.is_empty() {
                break;
            }
            let verdicts = if judged {
                self.judge_actions(tenant, &actions, &todo, &mut queues, actor).await
            } else {
                todo.iter().map(|_| Ok((None, None))).collect()
            };
            let (mut requests, mut sent) = (Vec::with_capacity(todo.len()), Vec::with_capacity(todo.len()));
            for (i, verdict) in todo.drain(..).zip(verdicts) {
                match verdict {
                    Ok((judged, judgement)) => {
                        let (job_uuid, command) = actions[i].clone();
                        let (tenant, actor) = (tenant.to_owned(), actor.clone());
                        requests.push(TransitionRequest { tenant, job_uuid, command, actor, judged, judgement });
                        sent.push(i);
                    }
                    Err(e) => outcomes[i] = Some(Err(e)),
                }
            }
            let applied = match self.store.transitions(requests).await {
                Ok(applied) => applied,
                Err(e) => sent.iter().map(|_| Err(e.clone())).collect(),
            };
            for (i, result) in sent.into_iter().zip(applied) {
                match result {
                    Err(e) if e.code == Code::RevisionConflict && attempt < JUDGE_ATTEMPTS => todo.push(i),
                    other => outcomes[i] = Some(other),
                }
            }
        }
        let finished = invalid.into_iter().zip(outcomes).zip(queues).zip(actions);
        finished
            .map(|(((invalid, outcome), queue), (job_uuid, command))| match invalid {
                Some(e) => Err(e),
                None => {
                    let outcome = outcome.expect("every valid action was applied or refused");
                    self.finish_action(tenant, job_uuid, &command, queue, outcome, actor)
                }
            })
            .collect()
    }

    /// Judge the actions `todo` (indexes into `actions`) with the tenant's bound
    /// validator: the jobs read in one transaction, the calls side by side. Each
    /// gets the job as the plugin saw it and its judgement, or the refusal (noted in
    /// the job's history). Records each job's queue in `queues`.
    async fn judge_actions(
        &self,
        tenant: &str,
        actions: &[(Uuid, Command)],
        todo: &[usize],
        queues: &mut [Option<String>],
        actor: &Actor,
    ) -> Vec<Result<(Option<ReadJob>, Option<Judgement>)>> {
        let uuids: Vec<Uuid> = todo.iter().map(|&i| actions[i].0).collect();
        let jobs = match self.store.jobs_by_uuid(tenant, &uuids) {
            Ok(jobs) => jobs,
            Err(e) => return todo.iter().map(|_| Err(e.clone())).collect(),
        };
        for (&i, read) in todo.iter().zip(&jobs) {
            queues[i] = read.as_ref().map(|read| read.job.queue.clone());
        }
        let calls = todo.iter().zip(jobs).map(|(&i, read)| async move {
            let Some(read) = read else { return Err(Error::not_found("job")) };
            let decision = judge::judge_command(&self.plugins, &read.job, &actions[i].1).await?;
            Ok((read, decision))
        });
        let decisions = futures::future::join_all(calls).await;
        let mut notes = Vec::new();
        let mut verdicts = Vec::with_capacity(todo.len());
        for (&i, decision) in todo.iter().zip(decisions) {
            verdicts.push(match decision {
                Ok((_, Decision::Proceed(None))) => Ok((None, None)),
                Ok((read, Decision::Proceed(Some(judgement)))) => Ok((Some(read), Some(judgement))),
                Ok((read, Decision::Refuse(error, judgement))) => {
                    notes.push(NoteRequest {
                        tenant: tenant.to_owned(),
                        job_uuid: read.job.job_uuid,
                        mark: JobMark::from(&read.job),
                        action: format!("{}_refused", actions[i].1.action().name()),
                        actor: actor.clone(),
                        judgement,
                    });
                    Err(error)
                }
                Err(e) => Err(e),
            });
        }
        if !notes.is_empty()
            && let Err(e) = self.store.note(notes).await
        {
            return todo.iter().map(|_| Err(e.clone())).collect();
        }
        verdicts
    }

    /// Answer one applied or refused action: log and count it. `queue` is the job's
    /// queue when it was read to be judged.
    fn finish_action(
        &self,
        tenant: &str,
        job_uuid: Uuid,
        command: &Command,
        queue: Option<String>,
        result: Result<Change>,
        actor: &Actor,
    ) -> Result<Job> {
        if let Err(e) = &result
            && e.code == Code::NotFound
        {
            // A deleted job's worker learns its lease is gone, like any lost lease.
            if command.token().is_some() && self.store.was_deleted(tenant, job_uuid)? {
                return Err(Error::lease_of_deleted_job());
            }
            return Err(Error::not_found("job"));
        }
        match result {
            Ok(change) => {
                self.after(&change, actor);
                Ok(change.job)
            }
            Err(e) => {
                let name = command.action().name();
                tracing::info!(target: "sluice::job", action = name, tenant, job_uuid = %job_uuid, actor = %actor, code = e.code.as_str(), reason = %e.reason, "action refused");
                crate::metrics::refusal(tenant, name, e.code.as_str());
                let kind = match e.code {
                    Code::IllegalTransition => Some("ILLEGAL_TRANSITION"),
                    Code::LeaseLost => Some("LEASE_LOST"),
                    _ => None,
                };
                if let Some(kind) = kind {
                    // Refusals are rare: the job is read for its queue only here when unjudged.
                    let queue = match queue {
                        Some(queue) => Some(queue),
                        None => self.store.job(tenant, job_uuid)?.map(|job| job.queue),
                    };
                    if let Some(queue) = queue {
                        self.count_event(tenant, &queue, kind);
                    }
                }
                Err(e)
            }
        }
    }

    /// Log a change, count it, and wake claimers when it made a job ready.
    pub fn after(&self, change: &Change, actor: &Actor) {
        let job = &change.job;
        self.log(job, change.action, Some(change.from), actor);
        crate::metrics::transition(&job.tenant, &job.queue, change.action, job.state);
        if matches!(change.action, "fail" | "lease_expired")
            && let Some(error) = job.errors.last()
        {
            crate::metrics::failure(&job.tenant, &job.queue, &error.code);
            self.count_event(&job.tenant, &job.queue, "failure");
        }
        if change.job.state == JobState::Pending && change.job.due_at.is_none() {
            self.wake(&change.job.tenant, &change.job.queue);
        }
    }

    fn log(&self, job: &Job, action: &str, from: Option<JobState>, actor: &Actor) {
        tracing::info!(
            target: "sluice::job",
            action,
            job_uuid = %job.job_uuid,
            user = %self.pseudonyms.of(&job.tenant, &job.user_id),
            trace_id = %job.trace_id,
            tenant = %job.tenant,
            queue = %job.queue,
            from = from.map(JobState::as_str).unwrap_or("-"),
            to = job.state.as_str(),
            attempt = job.attempt,
            actor = %actor,
            "job {action}"
        );
    }

    pub fn job(&self, tenant: &str, job_uuid: Uuid) -> Result<Job> {
        self.store.job(tenant, job_uuid)?.ok_or_else(|| Error::not_found("job"))
    }

    pub fn jobs(&self, tenant: &str, filter: &JobFilter, after: Option<u64>, limit: usize) -> Result<JobPage> {
        self.store.jobs(tenant, filter, after, limit)
    }

    pub fn history(&self, tenant: &str, job_uuid: Uuid) -> Result<Vec<HistoryEvent>> {
        self.store.history(tenant, job_uuid)?.ok_or_else(|| Error::not_found("job"))
    }

    pub fn queue(&self, tenant: &str, name: &str) -> Result<QueueView> {
        check_queue_name(name)?;
        self.store.queue(tenant, name)?.ok_or_else(|| Error::not_found("queue"))
    }

    pub async fn configure_queue(
        &self,
        tenant: &str,
        name: &str,
        config: QueueConfig,
        actor: &Actor,
    ) -> Result<QueueConfig> {
        check_queue_name(name)?;
        check_config(&config)?;
        let max_queues = self.quotas.limits(tenant)?.max_queues;
        let config = self.store.put_queue_config(tenant, name, config, max_queues).await.inspect_err(|e| {
            crate::metrics::quota_refusal(tenant, e);
        })?;
        tracing::info!(target: "sluice::queue", action = "configure", tenant, queue = name, actor = %actor, "queue configured");
        Ok(config)
    }

    /// Pause or resume a queue or the host; logged with who did it.
    pub async fn set_paused(&self, scope: PauseScope, paused: bool, actor: &Actor) -> Result<()> {
        if let PauseScope::Queue { queue, .. } = &scope {
            check_queue_name(queue)?;
        }
        self.store.set_paused(scope.clone(), paused).await?;
        let action = if paused { "pause" } else { "resume" };
        match &scope {
            PauseScope::Host => {
                tracing::info!(target: "sluice::audit", action, scope = "host", actor = %actor, "host {action}d")
            }
            PauseScope::Queue { tenant, queue } => {
                tracing::info!(target: "sluice::audit", action, scope = "queue", tenant = %tenant, queue = %queue, actor = %actor, "queue {action}d");
                if !paused {
                    self.wake(tenant, queue);
                }
            }
        }
        if !paused && matches!(scope, PauseScope::Host) {
            for waiter in self.waiters.iter() {
                waiter.notify_waiters();
            }
        }
        Ok(())
    }

    pub async fn reset_breakers(&self, tenant: &str, name: &str, actor: &Actor) -> Result<usize> {
        check_queue_name(name)?;
        let changes = self.store.reset_breakers(tenant, name, actor.clone()).await?;
        tracing::info!(target: "sluice::queue", action = "breaker_reset", tenant, queue = name, actor = %actor, unparked = changes.len(), "breakers reset");
        for change in &changes {
            self.after(change, actor);
        }
        Ok(changes.len())
    }
}

fn validate_command(command: &Command) -> Result<()> {
    match command {
        Command::Heartbeat { lease_ms, progress, .. } => {
            if !LEASE_MS.contains(lease_ms) {
                return Err(Error::validation("lease_ms: 1000 to 3600000"));
            }
            if let Some((step, _)) = progress {
                check_len("progress.step", step, 128)?;
            }
        }
        Command::Fail { failure, .. } => {
            check_len("code", &failure.code, 64)?;
            check_len("reason", &failure.reason, 4096)?;
            if failure.traceback.as_ref().is_some_and(|t| t.len() > 65_536) {
                return Err(Error::validation("traceback: at most 65536 bytes"));
            }
            if let Some(step) = &failure.step {
                check_len("step", step, 128)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Longest duration a queue setting may name: times stay far inside chrono's range.
const MAX_SETTING_MS: u64 = 366 * 86_400_000;

fn check_config(c: &QueueConfig) -> Result<()> {
    if c.backoff_base_ms == 0 || c.backoff_cap_ms < c.backoff_base_ms {
        return Err(Error::validation("backoff: base above 0 and cap at least the base"));
    }
    let durations = [
        ("backoff_cap_ms", c.backoff_cap_ms),
        ("breaker_window_ms", c.breaker_window_ms),
        ("pending_timeout_ms", c.pending_timeout_ms),
        ("processing_timeout_ms", c.processing_timeout_ms),
        ("parked_timeout_ms", c.parked_timeout_ms),
    ];
    if let Some((name, _)) = durations.iter().find(|(_, ms)| *ms > MAX_SETTING_MS) {
        return Err(Error::validation(format!("{name}: at most {MAX_SETTING_MS} (366 days)")));
    }
    if !(1..=1000).contains(&c.max_attempts) {
        return Err(Error::validation("max_attempts: 1 to 1000"));
    }
    if c.breaker_threshold == 0 || c.breaker_window_ms == 0 {
        return Err(Error::validation("breaker_threshold and breaker_window_ms: above 0"));
    }
    if c.schema_versions.is_empty() || c.schema_versions.contains(&0) {
        return Err(Error::validation("schema_versions: at least one version, each 1 or more"));
    }
    for (name, t) in c.alerts.set() {
        if t.clear_below > t.fire_above || !t.fire_above.is_finite() || !t.clear_below.is_finite() {
            return Err(Error::validation(format!("alerts.{name}: clear_below must be at most fire_above")));
        }
    }
    Ok(())
}
