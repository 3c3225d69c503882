//! Storage, at the level of queue operations (not key-value), so that another
//! implementation (PostgreSQL, for several hosts on one database) can sit beside redb.
//!
//! Every write is one request to the store; the store decides state changes with
//! `machine::decide` under its own serialisation, so two requests can never both
//! win a job.

mod codec;
mod config_cache;
mod consistency;
mod counted_file;
mod export;
mod journal;
mod leased;
mod plugin_ops;
mod privacy_ops;
mod redb_store;
mod restore_ops;
mod tables;
mod write_ops;
mod writer;

pub use redb_store::{RedbStore, StoreOptions};
pub use tables::SCHEMA_VERSION;
pub use writer::{FoldPolicy, WriterStats};

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::Result;
use crate::limits::Limits;
use crate::model::{
    Actor, Alert, AlertEvent, ApiKey, AuditEvent, Binding, Breaker, HistoryEvent, Job, JobState, Judgement, Plugin,
    PluginKind, QueueConfig, Receipt, Stage, Tenant, TenantConfig, UserConfig, UserHold,
};

/// A validated insert request for one job.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub job_uuid: Uuid,
    pub user_id: String,
    pub trace_id: String,
    pub queue: String,
    pub kind: String,
    pub payload: Box<RawValue>,
    pub schema_version: u32,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub max_attempts: Option<u32>,
    pub tags: Map<String, Value>,
    pub stage: Stage,
    /// A tagger's call, kept in the insert's history event.
    pub judgement: Option<Judgement>,
}

impl NewJob {
    /// The pending job this request becomes; `default_max_attempts` applies when
    /// the request sets none.
    pub fn into_job(self, tenant: &str, seq: u64, default_max_attempts: u32, now: DateTime<Utc>) -> Job {
        Job {
            seq,
            job_uuid: self.job_uuid,
            tenant: tenant.to_owned(),
            user_id: self.user_id,
            trace_id: self.trace_id,
            queue: self.queue,
            kind: self.kind,
            payload: self.payload,
            schema_version: self.schema_version,
            format_version: crate::model::JOB_FORMAT_VERSION,
            priority: self.priority,
            run_at: self.run_at,
            attempt: 0,
            max_attempts: self.max_attempts.unwrap_or(default_max_attempts),
            state: JobState::Pending,
            parked: false,
            stuck: false,
            stuck_at: None,
            legal_hold: false,
            user_hold: false,
            tags: self.tags,
            stage: self.stage,
            progress: None,
            errors: Vec::new(),
            lease: None,
            last_token: 0,
            due_at: (self.run_at > now).then_some(self.run_at),
            pending_since: now,
            revision: 1,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The quota counts an insert must respect, checked in the writer so that
/// concurrent inserts cannot overshoot them. `None` is unlimited.
#[derive(Clone, Debug, Default)]
pub struct InsertCaps {
    pub tenant_pending: Option<u64>,
    /// Per user_id of the request: that user's `max_pending`.
    pub user_pending: std::collections::HashMap<String, Option<u64>>,
    pub queues: Option<u64>,
}

/// The plugin quotas of a tenant, checked in the writer at upload.
#[derive(Clone, Copy, Debug, Default)]
pub struct PluginCaps {
    pub plugins: Option<u64>,
    pub bytes: Option<u64>,
}

/// A tenant's use of what its limits cover (pending jobs come from the counters).
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub pending: u64,
    pub queues: u64,
    pub plugins: u64,
    pub plugin_bytes: u64,
    pub bindings: u64,
}

/// A page of the audit log.
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<u64>,
}

/// A right-to-delete whose erasure from the files is still to do.
#[derive(Clone, Debug)]
pub struct PendingErasure {
    pub tenant: String,
    pub receipt: String,
    /// The keyed hash of (tenant, user_id), to find the user in checkpoints.
    pub subject: [u8; 32],
}

#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub tenant: String,
    pub queue: String,
    pub stage: Stage,
    pub worker: String,
    pub limit: u32,
    pub lease_ms: u64,
    pub actor: Actor,
    /// Under a validator: the jobs it judged, claimed (or deferred when vetoed)
    /// instead of the queue's head. `None` claims the head.
    pub judged: Option<Vec<JudgedPick>>,
}

/// A ready job a validator judged before the claim. The writer takes it only if
/// it is still ready at the revision the plugin saw; else it is skipped.
#[derive(Clone, Debug)]
pub struct JudgedPick {
    /// The job as the plugin saw it.
    pub read: ReadJob,
    pub judgement: Judgement,
    /// Vetoed: deferred by the queue's `backoff_base_ms`, no attempt spent.
    pub vetoed: bool,
}

/// A job as read outside the writer, with the stored bytes it was decoded from:
/// the writer, finding the same bytes still stored, takes this job instead of
/// decoding it again (a judged claim or action reads each job twice otherwise).
#[derive(Clone, Debug)]
pub struct ReadJob {
    pub job: Job,
    pub stored: Box<[u8]>,
}

/// What a claim got: jobs, or nothing because the queue or host is paused.
#[derive(Clone, Debug, Default)]
pub struct Claimed {
    pub jobs: Vec<Job>,
    /// Vetoed jobs, deferred.
    pub deferred: Vec<Change>,
    pub paused: bool,
}

/// What a pause or resume applies to.
#[derive(Clone, Debug)]
pub enum PauseScope {
    Host,
    Queue { tenant: String, queue: String },
}

/// A worker's or a person's action on one job, named by its job_uuid.
#[derive(Clone, Debug)]
pub enum Command {
    Heartbeat {
        token: u64,
        lease_ms: u64,
        progress: Option<(String, Value)>,
    },
    Complete {
        token: u64,
    },
    Fail {
        token: u64,
        failure: Failure,
    },
    Release {
        token: u64,
    },
    Retry,
    Replay {
        override_terminal: bool,
        resume: bool,
    },
    Cancel,
    /// Host: a claim a validator vetoed goes back to pending after `delay_ms`,
    /// without spending an attempt.
    Defer {
        token: u64,
        delay_ms: u64,
    },
}

impl Command {
    /// The state-machine action this command asks for.
    pub fn action(&self) -> crate::machine::Action {
        use crate::machine::Action;
        match self {
            Command::Heartbeat { .. } => Action::Heartbeat,
            Command::Complete { .. } => Action::Complete,
            Command::Fail { failure, .. } => Action::Fail { retryable: failure.retryable },
            Command::Release { .. } | Command::Defer { .. } => Action::Release,
            Command::Retry => Action::Retry,
            Command::Replay { override_terminal, .. } => Action::Replay { override_terminal: *override_terminal },
            Command::Cancel => Action::Cancel,
        }
    }

    /// The lease token a worker's command presents.
    pub fn token(&self) -> Option<u64> {
        match self {
            Command::Heartbeat { token, .. }
            | Command::Complete { token }
            | Command::Fail { token, .. }
            | Command::Release { token }
            | Command::Defer { token, .. } => Some(*token),
            Command::Retry | Command::Replay { .. } | Command::Cancel => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub code: String,
    pub reason: String,
    pub traceback: Option<String>,
    pub step: Option<String>,
    pub retryable: bool,
}

#[derive(Clone, Debug)]
pub struct TransitionRequest {
    pub tenant: String,
    pub job_uuid: Uuid,
    pub command: Command,
    pub actor: Actor,
    /// Set when a plugin judged the job as read here: a job whose revision has
    /// changed since is refused with `REVISION_CONFLICT` (the service judges again).
    pub judged: Option<ReadJob>,
    /// The plugin's verdict, kept in the history event.
    pub judgement: Option<Judgement>,
}

/// The job as a history event describes it: which job, and the state, attempt and
/// revision the event finds or leaves it at.
#[derive(Clone, Copy, Debug)]
pub struct JobMark {
    pub seq: u64,
    pub state: JobState,
    pub attempt: u32,
    pub revision: u64,
}

impl From<&Job> for JobMark {
    fn from(job: &Job) -> JobMark {
        JobMark { seq: job.seq, state: job.state, attempt: job.attempt, revision: job.revision }
    }
}

/// A history event that changes nothing else (a veto). It records
/// the job as the plugin judged it (`mark`), so the writer need not read the job.
#[derive(Clone, Debug)]
pub struct NoteRequest {
    pub tenant: String,
    pub job_uuid: Uuid,
    pub mark: JobMark,
    pub action: String,
    pub actor: Actor,
    pub judgement: Judgement,
}

/// A job after a state change, and the state it left.
#[derive(Clone, Debug)]
pub struct Change {
    pub job: Job,
    pub from: JobState,
    pub action: &'static str,
}

/// What a restore covers: one tenant (some of its queues, or all), or everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreScope {
    Host,
    Tenant { tenant: String, queues: Option<Vec<String>> },
}

impl RestoreScope {
    pub fn covers(&self, tenant: &str, queue: &str) -> bool {
        match self {
            RestoreScope::Host => true,
            RestoreScope::Tenant { tenant: t, queues } => {
                t == tenant && queues.as_ref().is_none_or(|q| q.iter().any(|q| q == queue))
            }
        }
    }
}

/// The part of a checkpoint a restore puts back.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub jobs: Vec<Job>,
    /// (tenant, queue, config).
    pub queues: Vec<(String, String, QueueConfig)>,
    pub bindings: Vec<Binding>,
}

/// One row of the job counts: `state` is `None` for the stuck count.
#[derive(Clone, Debug)]
pub struct CountRow {
    pub tenant: String,
    pub queue: String,
    pub state: Option<JobState>,
    pub jobs: u64,
}

/// What one scheduler pass did.
#[derive(Debug, Default)]
pub struct Promoted {
    /// Failed jobs back to pending (state changes, logged).
    pub changes: Vec<Change>,
    /// Queues that got ready jobs, to wake their claimers.
    pub ready_queues: Vec<(String, String)>,
    /// Jobs moved in all.
    pub moved: usize,
}

#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub parked: Option<bool>,
    pub stuck: Option<bool>,
}

pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass back to get the next page; `None` at the end.
    pub next_cursor: Option<u64>,
}

/// A queue as the API shows it: configuration, breakers and counts by state.
pub struct QueueView {
    pub tenant: String,
    pub name: String,
    pub config: QueueConfig,
    pub breakers: Vec<Breaker>,
    pub counts: Vec<(JobState, u64)>,
    /// Jobs flagged stuck.
    pub stuck: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Insert jobs; each is accepted or refused on its own (order kept).
    async fn insert(&self, tenant: &str, jobs: Vec<NewJob>, actor: Actor, caps: InsertCaps)
    -> Result<Vec<Result<Job>>>;
    /// Lease up to `limit` ready jobs of one queue, in priority, ready time, insertion order.
    async fn claim(&self, request: ClaimRequest) -> Result<Claimed>;
    /// Pause or resume one queue, or the whole host. Survives restarts.
    async fn set_paused(&self, scope: PauseScope, paused: bool) -> Result<()>;
    fn host_paused(&self) -> Result<bool>;
    /// Transitions in one writer request (one action, or a batch complete); each
    /// is applied or refused on its own.
    async fn transitions(&self, requests: Vec<TransitionRequest>) -> Result<Vec<Result<Change>>>;
    /// Host move: expired leases become failed attempts (`LEASE_EXPIRED`).
    async fn expire_leases(&self, limit: usize) -> Result<Vec<Change>>;
    /// Host move: flag jobs whose stuck deadline passed.
    async fn detect_stuck(&self, limit: usize) -> Result<Vec<Change>>;
    /// Copy one consistent snapshot of everything into a new database file
    /// `dir/name` (blocking); returns its job counts by state.
    fn export(&self, dir: &cap_std::fs::Dir, name: &str) -> Result<Vec<(JobState, u64)>>;
    /// Read the part of checkpoint file `dir/name` that `scope` covers (blocking).
    fn read_snapshot(&self, dir: &cap_std::fs::Dir, name: &str, scope: &RestoreScope) -> Result<Snapshot>;
    /// Put a snapshot back in one transaction: its jobs return to their checkpointed
    /// records with revisions and lease tokens above every value issued since;
    /// jobs created since are kept; the scope's queue configurations and bindings
    /// return; its breakers close. Returns the changed jobs.
    async fn restore(&self, snapshot: Snapshot, scope: RestoreScope, actor: Actor) -> Result<Vec<Change>>;
    /// Store an alert's new state and its history event.
    async fn put_alert(&self, alert: Alert, event: AlertEvent) -> Result<()>;
    /// One tenant's alerts, or every tenant's.
    fn alerts(&self, tenant: Option<&str>) -> Result<Vec<Alert>>;
    fn alert_events(&self, tenant: &str) -> Result<Vec<AlertEvent>>;
    /// Every queue's configuration: (tenant, queue, config).
    fn queue_configs(&self) -> Result<Vec<(String, String, QueueConfig)>>;
    /// When the longest-running processing job of the queue was claimed.
    fn oldest_processing(&self, tenant: &str, queue: &str) -> Result<Option<DateTime<Utc>>>;
    /// Jobs by (tenant, queue, state) for every queue; stuck counted as its own row.
    fn counts(&self) -> Result<Vec<CountRow>>;
    /// The ready time of the queue's next job, if any is ready.
    fn oldest_ready(&self, tenant: &str, queue: &str) -> Result<Option<DateTime<Utc>>>;
    /// Every failure breaker of every queue.
    fn breakers(&self) -> Result<Vec<(String, String, Breaker)>>;
    /// When the stuck detector next has work, if ever.
    fn earliest_stuck(&self) -> Result<Option<DateTime<Utc>>>;
    /// Host move: delayed jobs become ready; failed jobs past their backoff go pending.
    async fn promote_due(&self, limit: usize) -> Result<Promoted>;

    /// The next ready jobs of a queue's stage in claim order, up to `limit`,
    /// skipping the seqs in `skip`; none while the queue or the host is paused.
    fn ready_jobs(
        &self,
        tenant: &str,
        queue: &str,
        stage: Stage,
        limit: usize,
        skip: &HashSet<u64>,
    ) -> Result<Vec<ReadJob>>;
    /// Jobs by uuid, read in one transaction: `None` for an unknown or deleted job.
    fn jobs_by_uuid(&self, tenant: &str, job_uuids: &[Uuid]) -> Result<Vec<Option<ReadJob>>>;
    fn job(&self, tenant: &str, job_uuid: Uuid) -> Result<Option<Job>> {
        Ok(self.jobs_by_uuid(tenant, &[job_uuid])?.pop().flatten().map(|read| read.job))
    }
    /// Whether the job_uuid names a job since deleted (its tombstone).
    fn was_deleted(&self, tenant: &str, job_uuid: Uuid) -> Result<bool>;
    fn jobs(&self, tenant: &str, filter: &JobFilter, after: Option<u64>, limit: usize) -> Result<JobPage>;
    fn history(&self, tenant: &str, job_uuid: Uuid) -> Result<Option<Vec<HistoryEvent>>>;
    /// When the scheduler next has work, if ever.
    fn earliest_due(&self) -> Result<Option<DateTime<Utc>>>;
    /// When the next lease runs out, if any is held.
    fn earliest_lease_expiry(&self) -> Result<Option<DateTime<Utc>>>;

    fn queue(&self, tenant: &str, name: &str) -> Result<Option<QueueView>>;
    /// Set a queue's configuration; a new queue counts against `max_queues`.
    async fn put_queue_config(
        &self,
        tenant: &str,
        name: &str,
        config: QueueConfig,
        max_queues: Option<u64>,
    ) -> Result<QueueConfig>;
    /// Close the queue's breakers and send its parked jobs back to pending.
    async fn reset_breakers(&self, tenant: &str, name: &str, actor: Actor) -> Result<Vec<Change>>;

    async fn create_tenant(&self, tenant: Tenant) -> Result<Tenant>;
    fn tenant(&self, id: &str) -> Result<Option<Tenant>>;
    fn tenants(&self) -> Result<Vec<Tenant>>;

    async fn create_key(&self, key: ApiKey) -> Result<ApiKey>;
    async fn revoke_key(&self, id: &str, tenant: Option<&str>) -> Result<ApiKey>;
    fn keys(&self) -> Result<Vec<ApiKey>>;

    /// Append a history event to a job without changing it.
    async fn note(&self, requests: Vec<NoteRequest>) -> Result<()>;

    /// Store an uploaded plugin; an existing (tenant, digest) is returned as is (`false`).
    async fn put_plugin(
        &self,
        plugin: Plugin,
        component: Vec<u8>,
        artifact: Vec<u8>,
        caps: PluginCaps,
    ) -> Result<(Plugin, bool)>;
    async fn replace_artifact(&self, tenant: &str, digest: &str, artifact: Vec<u8>) -> Result<()>;
    /// Refused with `PLUGIN_IN_USE` while a binding names it.
    async fn delete_plugin(&self, tenant: &str, digest: &str) -> Result<Plugin>;
    fn plugin(&self, tenant: &str, digest: &str) -> Result<Option<Plugin>>;
    /// One tenant's plugins, or every tenant's.
    fn plugins(&self, tenant: Option<&str>) -> Result<Vec<Plugin>>;
    fn plugin_component(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>>;
    fn plugin_artifact(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>>;

    /// Create or replace a binding; the plugin must be the tenant's, of the binding's kind.
    async fn put_binding(&self, binding: Binding, max_bindings: Option<u64>) -> Result<Binding>;
    async fn delete_binding(&self, tenant: &str, queue: &str, kind: PluginKind, stage: Stage) -> Result<Binding>;
    fn bindings(&self, tenant: Option<&str>) -> Result<Vec<Binding>>;

    fn tenant_config(&self, tenant: &str) -> Result<TenantConfig>;
    async fn put_tenant_config(&self, tenant: &str, config: TenantConfig) -> Result<TenantConfig>;
    fn user_config(&self, tenant: &str, user_id: &str) -> Result<Option<UserConfig>>;
    async fn put_user_config(&self, tenant: &str, user_id: &str, config: UserConfig) -> Result<UserConfig>;

    /// The secret behind a user's log pseudonym (created with the user's first job).
    fn user_key(&self, tenant: &str, user_id: &str) -> Result<Option<[u8; 32]>>;

    /// The limits an admin set for the tenant (`None`: the host default applies).
    fn limits(&self, tenant: &str) -> Result<Option<Limits>>;
    async fn put_limits(&self, tenant: &str, limits: Limits) -> Result<Limits>;
    /// Pending jobs of a tenant, or of one of its users.
    fn pending(&self, tenant: &str, user_id: Option<&str>) -> Result<u64>;
    fn usage(&self, tenant: &str) -> Result<Usage>;

    /// Place or lift a legal hold on one job.
    async fn set_job_hold(
        &self,
        tenant: &str,
        job_uuid: Uuid,
        hold: bool,
        reason: Option<String>,
        actor: Actor,
    ) -> Result<Job>;
    /// Place (`Some`) or lift a legal hold on a user; returns it and the jobs it covers.
    async fn set_user_hold(
        &self,
        tenant: &str,
        user_id: &str,
        hold: Option<UserHold>,
        actor: Actor,
    ) -> Result<(UserHold, u64)>;
    fn user_holds(&self, tenant: &str) -> Result<Vec<UserHold>>;
    /// Jobs of the tenant under a legal hold.
    fn held_jobs(&self, tenant: &str) -> Result<Vec<Job>>;
    /// Host move: delete terminal jobs past retention; (tenant, deleted) pairs.
    async fn delete_expired(&self, day_ms: u64, limit: usize) -> Result<Vec<(String, u64)>>;

    /// The right to delete: erase the user's data (legally held jobs kept), record
    /// it in the ledger and queue the erasure from the files. Returns the receipt
    /// and the hashes of the user's deleted keys.
    async fn delete_user(&self, tenant: &str, user_id: &str, actor: Actor) -> Result<(Receipt, Vec<[u8; 32]>)>;
    fn receipts(&self, tenant: &str) -> Result<Vec<Receipt>>;
    fn receipt(&self, tenant: &str, id: &str) -> Result<Option<Receipt>>;
    fn pending_erasures(&self) -> Result<Vec<PendingErasure>>;
    /// Remove the users of `subjects` from checkpoint file `dir/name` and write the
    /// file anew (blocking). Returns its new counts, or `None` when nothing matched.
    fn scrub_checkpoint(
        &self,
        dir: &cap_std::fs::Dir,
        name: &str,
        subjects: &[PendingErasure],
    ) -> Result<Option<Vec<(JobState, u64)>>>;
    /// Write the database file anew from its live data, so that no deleted byte
    /// survives in freed pages. Stores without a file have nothing to do.
    async fn rewrite_file(&self) -> Result<()>;
    async fn complete_erasures(&self, done: Vec<PendingErasure>, checkpoints: u64) -> Result<()>;

    /// Append a security audit event.
    async fn audit(&self, action: &str, actor: Actor, tenant: Option<String>, detail: Value) -> Result<()>;
    /// Audit events after `after`, oldest first; `tenant` filters to one tenant's.
    fn audit_events(&self, tenant: Option<&str>, after: u64, limit: usize) -> Result<AuditPage>;

    /// Fold the journal into the database file, so a restart has nothing to replay
    /// (at shutdown).
    async fn fold_journal(&self) -> Result<()>;
    fn writer_stats(&self) -> WriterStats;
}
