//! Plain data: the job record and the small types it is made of. No I/O, no policy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// Version of the serialized [`Job`] record; bumped when its layout changes.
pub const JOB_FORMAT_VERSION: u32 = 1;

/// The five states (the README's "Jobs and their states"). `parked` and `stuck` are flags on the job, not states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Processing,
    Completed,
    Failed,
    Abandoned,
}

impl JobState {
    pub const ALL: [JobState; 5] =
        [JobState::Pending, JobState::Processing, JobState::Completed, JobState::Failed, JobState::Abandoned];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Processing => "processing",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Abandoned => "abandoned",
        }
    }

    /// Stable one-byte code used in index keys.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Abandoned)
    }
}

/// Rollout stage a job runs in. Only `stable` exists until canary routing is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Stable,
}

impl Stage {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Stable => "stable",
        }
    }
}

/// What a worker saved while running a job; a retry resumes from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub step: String,
    #[schema(value_type = Object)]
    pub data: Value,
    #[serde(with = "crate::timestamp")]
    pub saved_at: DateTime<Utc>,
}

/// One failed attempt (QUEUE-007). Every attempt's record is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorRecord {
    pub code: String,
    pub reason: String,
    pub traceback: Option<String>,
    pub step: Option<String>,
    pub attempt: u32,
    pub retryable: bool,
    #[serde(with = "crate::timestamp")]
    pub at: DateTime<Utc>,
}

/// A claim's lease: the fencing token is monotonic per job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    pub token: u64,
    pub owner: String,
    #[serde(with = "crate::timestamp")]
    pub acquired_at: DateTime<Utc>,
    #[serde(with = "crate::timestamp")]
    pub expires_at: DateTime<Utc>,
}

/// The job record as stored and as returned by the API.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// Internal, time-ordered sequence number: the storage key.
    pub seq: u64,
    pub job_uuid: Uuid,
    pub tenant: String,
    pub user_id: String,
    pub trace_id: String,
    pub queue: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub schema_version: u32,
    pub format_version: u32,
    pub priority: i32,
    /// When the job may next run. Ready jobs are handed out by priority, then run_at,
    /// then insertion. A retry, replay or rescheduling moves it to that moment; a
    /// release keeps it, so a handed-back job keeps its place.
    #[serde(with = "crate::timestamp")]
    pub run_at: DateTime<Utc>,
    /// Attempts started in the current attempt budget.
    pub attempt: u32,
    pub max_attempts: u32,
    pub state: JobState,
    pub parked: bool,
    pub stuck: bool,
    /// When the job becomes stuck if nothing happens (absent while stuck).
    #[serde(with = "crate::timestamp::option", default)]
    pub stuck_at: Option<DateTime<Utc>>,
    /// A legal hold placed on this job: it is never deleted while held.
    pub legal_hold: bool,
    /// A legal hold placed on the job's user (covers all of the user's jobs).
    #[serde(default)]
    pub user_hold: bool,
    #[schema(value_type = Object)]
    pub tags: Map<String, Value>,
    pub stage: Stage,
    pub progress: Option<Progress>,
    pub errors: Vec<ErrorRecord>,
    pub lease: Option<Lease>,
    /// Highest fencing token ever issued for this job.
    pub last_token: u64,
    /// When the scheduler next moves this job: a delayed pending job's run_at, or the
    /// end of a failed job's backoff. `None` for ready, running, parked and terminal jobs.
    #[serde(with = "crate::timestamp::option", default)]
    pub due_at: Option<DateTime<Utc>>,
    /// When the job last became pending (for stuck detection and ordering after retries).
    #[serde(with = "crate::timestamp")]
    pub pending_since: DateTime<Utc>,
    pub revision: u64,
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl Job {
    /// Lease actions must present the token of the job's current, unexpired lease.
    pub fn check_lease(&self, token: u64, now: DateTime<Utc>) -> crate::error::Result<()> {
        let reason = match &self.lease {
            None => format!("job is {} and holds no lease; token {token} is stale", self.state.as_str()),
            Some(l) if l.token != token => format!("token {token} is stale; the current lease has token {}", l.token),
            Some(l) if l.expires_at <= now => format!("the lease with token {token} expired at {}", l.expires_at),
            Some(_) => return Ok(()),
        };
        Err(crate::error::Error::new(crate::error::Code::LeaseLost, reason))
    }
}

impl Job {
    /// When this job becomes stuck if nothing happens: pending past
    /// the pending timeout from max(run_at, when it became pending); processing
    /// past the processing timeout since it was claimed or last saved progress;
    /// failed and parked past the parked timeout. `None`: it cannot get stuck.
    pub fn stuck_deadline(&self, config: &QueueConfig) -> Option<DateTime<Utc>> {
        let after = |since: DateTime<Utc>, timeout_ms: u64| {
            let timeout = chrono::Duration::try_milliseconds(i64::try_from(timeout_ms).ok()?)?;
            (timeout_ms > 0).then(|| since.checked_add_signed(timeout)).flatten()
        };
        match self.state {
            JobState::Pending => after(self.run_at.max(self.pending_since), config.pending_timeout_ms),
            JobState::Processing => {
                let claimed = self.lease.as_ref().map(|l| l.acquired_at)?;
                let since = self.progress.as_ref().map_or(claimed, |p| p.saved_at.max(claimed));
                after(since, config.processing_timeout_ms)
            }
            JobState::Failed if self.parked => after(self.updated_at, config.parked_timeout_ms),
            _ => None,
        }
    }
}

/// Who did something: a key (by id and role) or one of the host's own loops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    Key { key_id: String, role: String },
    Host { service: String },
}

impl Actor {
    pub fn host(service: &str) -> Actor {
        Actor::Host { service: service.to_owned() }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Key { key_id, role } => write!(f, "key:{key_id}({role})"),
            Actor::Host { service } => write!(f, "host:{service}"),
        }
    }
}

/// One durable entry of a job's history: every action on the job, in order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryEvent {
    #[serde(with = "crate::timestamp")]
    pub at: DateTime<Utc>,
    pub action: String,
    pub from: Option<JobState>,
    pub to: JobState,
    pub actor: Actor,
    pub attempt: u32,
    pub revision: u64,
    /// Action-specific detail (error code, lease token, override flag ...).
    #[schema(value_type = Object)]
    pub detail: Map<String, Value>,
}

/// Truncate to milliseconds: every timestamp the store keeps or indexes is in ms.
pub fn now_ms() -> DateTime<Utc> {
    ms_to_time(Utc::now().timestamp_millis())
}

pub fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Millisecond key for time-ordered indexes; times before the epoch sort first.
pub fn time_key(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

/// A queue's configuration (per tenant and name). Defaults are documented in the README.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// First retry delay; each further attempt doubles it (with jitter). Default 1 s.
    pub backoff_base_ms: u64,
    /// Upper bound of the retry delay. Default 5 min.
    pub backoff_cap_ms: u64,
    /// Attempts per budget for jobs that don't set their own. Default 5.
    pub max_attempts: u32,
    /// Failures inside the window that open the breaker. Default 20.
    pub breaker_threshold: u32,
    /// The breaker's window. Default 60 s.
    pub breaker_window_ms: u64,
    /// Payload schema versions inserts may carry. Default [1].
    pub schema_versions: Vec<u32>,
    /// A pending job is stuck after this long without being claimed, counted from
    /// max(run_at, when it became pending). Default 1 h; 0 turns it off.
    #[serde(default = "hour")]
    pub pending_timeout_ms: u64,
    /// A processing job is stuck after this long without saving progress (a bare
    /// heartbeat is not progress). Default 15 min; 0 turns it off.
    #[serde(default = "quarter")]
    pub processing_timeout_ms: u64,
    /// A failed, parked job is stuck after this long. Default 1 h; 0 turns it off.
    #[serde(default = "hour")]
    pub parked_timeout_ms: u64,
    /// Alert thresholds for this queue (none by default).
    #[serde(default)]
    pub alerts: AlertRules,
    /// No job is handed out while paused (set by pause and resume, not by PUT).
    #[serde(default)]
    pub paused: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            backoff_base_ms: 1_000,
            backoff_cap_ms: 300_000,
            max_attempts: 5,
            breaker_threshold: 20,
            breaker_window_ms: 60_000,
            schema_versions: vec![1],
            pending_timeout_ms: hour(),
            processing_timeout_ms: quarter(),
            parked_timeout_ms: hour(),
            alerts: AlertRules::default(),
            paused: false,
        }
    }
}

fn hour() -> u64 {
    3_600_000
}

fn quarter() -> u64 {
    900_000
}

/// The failure breaker of one (tenant, queue, kind) (QUEUE-010).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Breaker {
    pub kind: String,
    /// Times (ms) of the failed attempts still inside the window.
    pub recent_failures: Vec<i64>,
    #[serde(with = "crate::timestamp::option", default)]
    pub opened_at: Option<DateTime<Utc>>,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.opened_at.is_some()
    }

    /// Count one failed attempt; opens the breaker when the window holds `threshold` of them.
    pub fn record_failure(&mut self, now: DateTime<Utc>, config: &QueueConfig) {
        let now_ms = now.timestamp_millis();
        let horizon = now_ms - config.breaker_window_ms as i64;
        self.recent_failures.retain(|&t| t > horizon);
        self.recent_failures.push(now_ms);
        if self.opened_at.is_none() && self.recent_failures.len() as u32 >= config.breaker_threshold {
            self.opened_at = Some(now);
        }
    }
}

/// Delay before retry `attempt` (1-based): exponential from the base, capped, with
/// "equal jitter" (half fixed, half random) so a burst of failures spreads out.
pub fn backoff_ms(config: &QueueConfig, attempt: u32, random_unit: f64) -> u64 {
    let exp = attempt.saturating_sub(1).min(32);
    let full = config.backoff_base_ms.saturating_mul(1u64 << exp).min(config.backoff_cap_ms);
    full / 2 + ((full / 2) as f64 * random_unit) as u64
}

/// A tenant: the unit of isolation.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub created_at: DateTime<Utc>,
}

/// Roles a key can carry. Issue "security" refines what each may do (auth.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    Operator,
    TenantAdmin,
    Producer,
    Worker,
    Auditor,
    /// Bound to one (tenant, user_id): reads that user's jobs, asks for its deletion.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::TenantAdmin => "tenant-admin",
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Auditor => "auditor",
            Role::User => "user",
        }
    }
}

/// An API key as stored: never the secret, only its SHA-256.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `None`: the key spans all tenants.
    pub tenant: Option<String>,
    /// For a `user` key: the user it speaks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(with = "hex_hash")]
    #[schema(value_type = String)]
    pub hash: [u8; 32],
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        if text.len() != 64 {
            return Err(serde::de::Error::custom("hash must be 64 hex digits"));
        }
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(serde::de::Error::custom)?;
        }
        Ok(out)
    }
}

/// The four kinds of tenant plugin, one WIT world each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Validator,
    Tagger,
    Migrator,
    AlertPolicy,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] =
        [PluginKind::Validator, PluginKind::Tagger, PluginKind::Migrator, PluginKind::AlertPolicy];

    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Validator => "validator",
            PluginKind::Tagger => "tagger",
            PluginKind::Migrator => "migrator",
            PluginKind::AlertPolicy => "alert-policy",
        }
    }

    pub fn parse(text: &str) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// An uploaded plugin, owned by one tenant and named by the SHA-256 of its bytes.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Plugin {
    pub digest: String,
    pub tenant: String,
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
    /// Bytes of the uploaded component.
    pub size: u64,
    /// The `sluice:plugin` contract version it was built against.
    pub contract: String,
    pub created_at: DateTime<Utc>,
}

/// What happens when a bound plugin fails (traps, times out, hits a limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Refuse the action (the default): a broken policy never lets work through.
    #[default]
    Closed,
    /// Let the action happen as if no plugin were bound.
    Open,
}

/// (tenant, queue or `*`, plugin kind, stage) -> plugin.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Binding {
    pub tenant: String,
    /// A queue name, or `*` for every queue of the tenant without its own binding.
    pub queue: String,
    pub kind: PluginKind,
    pub stage: Stage,
    /// The plugin's digest.
    pub plugin: String,
    pub failure_policy: FailurePolicy,
    pub created_at: DateTime<Utc>,
}

/// How one plugin call went, as kept in the job's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Judgement {
    pub digest: String,
    pub kind: PluginKind,
    /// `allowed`, `rejected`, `tagged`, or `failed` (with `code`).
    pub outcome: String,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub fuel: u64,
    pub duration_us: u64,
    /// The plugin's stdout, stderr and log lines, bounded in size.
    pub output: String,
}

/// A tenant's configuration: default tags for every job and the retention bounds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub default_tags: Map<String, Value>,
    /// Shortest retention a job may ask for, in days.
    #[serde(default)]
    pub min_retention_days: Option<u64>,
    /// Longest retention a job may ask for, in days.
    #[serde(default)]
    pub max_retention_days: Option<u64>,
    /// URLs that receive the tenant's alerts (POST, JSON); each must match the
    /// host's webhook allow-list.
    #[serde(default)]
    pub webhooks: Vec<String>,
}

/// Per-user configuration inside a tenant: tags for that user's jobs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub tags: Map<String, Value>,
    /// The user's own quota (within the tenant's limits); else the tenant's user default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<crate::limits::UserQuota>,
}

/// A threshold: fires once the value has stayed above `fire_above` for `for_ms`,
/// and resolves only when it falls to `clear_below` or under (no flapping).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub fire_above: f64,
    pub clear_below: f64,
    #[serde(default)]
    pub for_ms: u64,
}

/// A queue's alert thresholds; each is off unless set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// Pending jobs.
    pub depth: Option<Threshold>,
    /// Seconds the oldest ready job has waited.
    pub oldest_pending_seconds: Option<Threshold>,
    /// Seconds the longest-running processing job has run.
    pub processing_seconds: Option<Threshold>,
    /// Failed attempts in the last minute.
    pub failures_per_minute: Option<Threshold>,
    /// Stuck jobs.
    pub stuck: Option<Threshold>,
    /// Illegal transitions refused in the last minute.
    pub illegal_transitions_per_minute: Option<Threshold>,
    /// Completes, fails and heartbeats refused with LEASE_LOST in the last minute.
    pub lease_lost_per_minute: Option<Threshold>,
    /// Open failure breakers.
    pub breaker_trips: Option<Threshold>,
}

impl AlertRules {
    /// (alert name, rule) for each rule that is set.
    pub fn set(&self) -> Vec<(&'static str, Threshold)> {
        let all = [
            ("depth", self.depth),
            ("oldest_pending_seconds", self.oldest_pending_seconds),
            ("processing_seconds", self.processing_seconds),
            ("failures_per_minute", self.failures_per_minute),
            ("stuck", self.stuck),
            ("illegal_transitions_per_minute", self.illegal_transitions_per_minute),
            ("lease_lost_per_minute", self.lease_lost_per_minute),
            ("breaker_trips", self.breaker_trips),
        ];
        all.into_iter().filter_map(|(n, t)| t.map(|t| (n, t))).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// An alert of one queue: a threshold's, or one an alert-policy plugin returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// `<queue>:<name>`, unique in the tenant.
    pub id: String,
    pub tenant: String,
    pub queue: String,
    pub name: String,
    /// `threshold`, or `plugin:<digest>`.
    pub source: String,
    pub severity: String,
    pub message: String,
    pub state: AlertState,
    pub value: f64,
    pub fired_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// One entry of the alert history.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertEvent {
    pub at: DateTime<Utc>,
    pub alert: String,
    /// `fired`, `resolved` or `acknowledged`.
    pub event: String,
    pub value: f64,
    pub message: String,
}

impl Job {
    /// Held by a legal hold on the job or on its user: never deleted.
    pub fn held(&self) -> bool {
        self.legal_hold || self.user_hold
    }

    /// The retention this job was given, in days (`retention_days` tag).
    pub fn retention_days(&self) -> Option<u64> {
        self.tags.get("retention_days").and_then(Value::as_u64)
    }
}

/// A legal hold on a user: all of the user's jobs, present and future, are kept.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UserHold {
    pub user_id: String,
    pub reason: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub placed_by: Actor,
}

/// The receipt of a right-to-delete request. It holds no personal data: not the
/// user id, only what was done and when erasure from the files completed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Receipt {
    pub id: String,
    pub tenant: String,
    pub requested_at: DateTime<Utc>,
    pub jobs_deleted: u64,
    /// Running jobs whose lease the deletion revoked.
    pub leases_revoked: u64,
    /// Jobs kept because of a legal hold.
    pub held_kept: u64,
    /// The user's own API keys, deleted.
    pub keys_deleted: u64,
    /// Checkpoint files rewritten without the user's data.
    pub checkpoints_rewritten: u64,
    /// When the database file and the checkpoints were rewritten without the data.
    pub erasure_completed_at: Option<DateTime<Utc>>,
}

/// One entry of the security audit log (append-only; never restored).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `key_create`, `key_revoke`, `denied`, `user_delete`, `erasure_complete`,
    /// `limits_change`, `quota_change`, `plugin_upload`, `plugin_bind`, `restore` ...
    pub action: String,
    pub actor: Actor,
    /// The tenant acted in; `None` for host-wide actions.
    pub tenant: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Map<String, Value>,
}
