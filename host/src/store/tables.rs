//! The redb tables and their key layouts. Index entries are a pure function of the
//! job record (see `write_ops::index_keys`), so an index can always be checked
//! against, or rebuilt from, the jobs table.

use redb::{TableDefinition, WriteTransaction};

/// Storage schema version this binary writes; a newer file is refused at open.
/// 2 added retention, legal holds, quota counters, the deletion ledger and the audit log.
pub const SCHEMA_VERSION: u64 = 2;

/// seq -> job record (JSON).
pub const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
/// (tenant, job_uuid) -> seq; a tombstone (seq 0) stays after a job is deleted.
pub const UUIDS: TableDefinition<(&str, u128), u64> = TableDefinition::new("uuid_index");
/// (tenant, queue, stage, inverted priority, ready time ms, seq): pending jobs ready to run.
pub const READY: TableDefinition<(&str, &str, u8, u32, u64, u64), ()> = TableDefinition::new("ready_index");
/// (due ms, seq): delayed pending jobs and failed jobs waiting out their backoff.
pub const DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("due_index");
/// (lease expiry ms, seq): processing jobs.
pub const LEASES: TableDefinition<(u64, u64), ()> = TableDefinition::new("lease_index");
/// (stuck deadline ms, seq): jobs the stuck detector will look at.
pub const STUCK_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("stuck_due_index");
/// (tenant, seq): jobs flagged stuck.
pub const STUCK: TableDefinition<(&str, u64), ()> = TableDefinition::new("stuck_index");
/// (tenant, state, seq).
pub const BY_STATE: TableDefinition<(&str, u8, u64), ()> = TableDefinition::new("state_index");
/// (tenant, seq): every job of a tenant, in insertion order.
pub const BY_TENANT: TableDefinition<(&str, u64), ()> = TableDefinition::new("tenant_index");
/// (tenant, user_id, seq).
pub const BY_USER: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("user_index");
/// (tenant, queue, state) -> number of jobs.
pub const COUNTS: TableDefinition<(&str, &str, u8), u64> = TableDefinition::new("state_counts");
/// (seq, n) -> history event (JSON), n counting from 0.
pub const HISTORY: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("job_history");
/// (tenant, queue) -> queue config (JSON).
pub const QUEUES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("queues");
/// (tenant, queue, kind) -> breaker (JSON).
pub const BREAKERS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("breakers");
/// tenant id -> tenant (JSON).
pub const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// key id -> api key (JSON, holding the secret's hash only).
pub const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// (tenant, user_id) -> 32-byte secret of the user's log pseudonym.
pub const USER_KEYS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("user_keys");
/// (tenant, digest) -> plugin record (JSON).
pub const PLUGINS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("plugins");
/// (tenant, digest) -> the uploaded component.
pub const PLUGIN_COMPONENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("plugin_components");
/// (tenant, digest) -> the precompiled artifact for this host's engine.
pub const PLUGIN_ARTIFACTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("plugin_artifacts");
/// (tenant, queue or `*`, plugin kind, stage) -> binding (JSON).
pub const BINDINGS: TableDefinition<(&str, &str, &str, u8), &[u8]> = TableDefinition::new("bindings");
/// tenant -> tenant configuration (JSON).
pub const TENANT_CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("tenant_config");
/// (tenant, user_id) -> user configuration (JSON).
pub const USER_CONFIG: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("user_config");
/// (tenant, alert id) -> alert (JSON).
pub const ALERTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("alerts");
/// (tenant, n) -> alert event (JSON), the alert history.
pub const ALERT_EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("alert_events");
/// (tenant, user_id) -> pending jobs of the user (the per-user quota counter).
pub const USER_PENDING: TableDefinition<(&str, &str), u64> = TableDefinition::new("user_pending");
/// tenant -> pending jobs of the tenant.
pub const TENANT_PENDING: TableDefinition<&str, u64> = TableDefinition::new("tenant_pending");
/// (retention days, ended ms, seq): terminal jobs with a retention and no legal hold.
pub const RETENTION: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("retention_index");
/// (tenant, seq): jobs under a legal hold (their own or their user's).
pub const HELD: TableDefinition<(&str, u64), ()> = TableDefinition::new("held_index");
/// (tenant, user_id) -> legal hold on the user (JSON).
pub const USER_HOLDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("user_holds");
/// tenant -> the tenant's limits (JSON), set by an admin.
pub const LIMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenant_limits");
/// n -> security audit event (JSON), append-only.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_log");
/// (tenant, receipt id) -> deletion receipt (JSON).
pub const RECEIPTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("deletion_receipts");
/// keyed hash of (tenant, user_id) -> receipt id: the deletion ledger a restore re-applies.
pub const LEDGER: TableDefinition<&[u8], &str> = TableDefinition::new("deletion_ledger");
/// (tenant, receipt id) -> keyed hash: deletions whose erasure from the files is not done yet.
pub const PENDING_ERASURES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pending_erasures");
/// name -> secret bytes (`ledger`: the key of the ledger's keyed hash).
pub const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// name -> value: `schema_version`, `next_seq`, `paused`, `alert_seq`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// All tables of one write transaction, opened once per batch.
pub struct Tables<'t> {
    pub jobs: redb::Table<'t, u64, &'static [u8]>,
    pub uuids: redb::Table<'t, (&'static str, u128), u64>,
    pub ready: redb::Table<'t, (&'static str, &'static str, u8, u32, u64, u64), ()>,
    pub due: redb::Table<'t, (u64, u64), ()>,
    pub leases: redb::Table<'t, (u64, u64), ()>,
    pub stuck_due: redb::Table<'t, (u64, u64), ()>,
    pub stuck: redb::Table<'t, (&'static str, u64), ()>,
    pub by_state: redb::Table<'t, (&'static str, u8, u64), ()>,
    pub by_tenant: redb::Table<'t, (&'static str, u64), ()>,
    pub by_user: redb::Table<'t, (&'static str, &'static str, u64), ()>,
    pub counts: redb::Table<'t, (&'static str, &'static str, u8), u64>,
    pub history: redb::Table<'t, (u64, u32), &'static [u8]>,
    pub queues: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub breakers: redb::Table<'t, (&'static str, &'static str, &'static str), &'static [u8]>,
    pub tenants: redb::Table<'t, &'static str, &'static [u8]>,
    pub keys: redb::Table<'t, &'static str, &'static [u8]>,
    pub user_keys: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub meta: redb::Table<'t, &'static str, u64>,
    pub plugins: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub plugin_components: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub plugin_artifacts: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub bindings: redb::Table<'t, (&'static str, &'static str, &'static str, u8), &'static [u8]>,
    pub tenant_config: redb::Table<'t, &'static str, &'static [u8]>,
    pub user_config: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub alerts: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub alert_events: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    pub user_pending: redb::Table<'t, (&'static str, &'static str), u64>,
    pub tenant_pending: redb::Table<'t, &'static str, u64>,
    pub retention: redb::Table<'t, (u64, u64, u64), ()>,
    pub held: redb::Table<'t, (&'static str, u64), ()>,
    pub user_holds: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub limits: redb::Table<'t, &'static str, &'static [u8]>,
    pub audit: redb::Table<'t, u64, &'static [u8]>,
    pub receipts: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub ledger: redb::Table<'t, &'static [u8], &'static str>,
    pub pending_erasures: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub secrets: redb::Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, redb::TableError> {
        Ok(Tables {
            jobs: txn.open_table(JOBS)?,
            uuids: txn.open_table(UUIDS)?,
            ready: txn.open_table(READY)?,
            due: txn.open_table(DUE)?,
            leases: txn.open_table(LEASES)?,
            stuck_due: txn.open_table(STUCK_DUE)?,
            stuck: txn.open_table(STUCK)?,
            by_state: txn.open_table(BY_STATE)?,
            by_tenant: txn.open_table(BY_TENANT)?,
            by_user: txn.open_table(BY_USER)?,
            counts: txn.open_table(COUNTS)?,
            history: txn.open_table(HISTORY)?,
            queues: txn.open_table(QUEUES)?,
            breakers: txn.open_table(BREAKERS)?,
            tenants: txn.open_table(TENANTS)?,
            keys: txn.open_table(KEYS)?,
            user_keys: txn.open_table(USER_KEYS)?,
            meta: txn.open_table(META)?,
            plugins: txn.open_table(PLUGINS)?,
            plugin_components: txn.open_table(PLUGIN_COMPONENTS)?,
            plugin_artifacts: txn.open_table(PLUGIN_ARTIFACTS)?,
            bindings: txn.open_table(BINDINGS)?,
            tenant_config: txn.open_table(TENANT_CONFIG)?,
            user_config: txn.open_table(USER_CONFIG)?,
            alerts: txn.open_table(ALERTS)?,
            alert_events: txn.open_table(ALERT_EVENTS)?,
            user_pending: txn.open_table(USER_PENDING)?,
            tenant_pending: txn.open_table(TENANT_PENDING)?,
            retention: txn.open_table(RETENTION)?,
            held: txn.open_table(HELD)?,
            user_holds: txn.open_table(USER_HOLDS)?,
            limits: txn.open_table(LIMITS)?,
            audit: txn.open_table(AUDIT)?,
            receipts: txn.open_table(RECEIPTS)?,
            ledger: txn.open_table(LEDGER)?,
            pending_erasures: txn.open_table(PENDING_ERASURES)?,
            secrets: txn.open_table(SECRETS)?,
        })
    }
}
