//! The redb tables and their key layouts. Index entries are a pure function of the
//! job record (see `write_ops::index_keys`), so an index can always be checked
//! against, or rebuilt from, the jobs table.

use std::borrow::Borrow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use redb::{AccessGuard, Key, StorageError, Table, TableDefinition, Value, WriteTransaction};

use super::journal::{Change, encode_change};

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
/// name -> value: `schema_version`, `next_seq`, `journal_seq`, `paused`, `alert_seq`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A table of a write transaction whose every change is also written down, so
/// the writer can journal the batch (see `journal.rs`). Reads go to the table
/// itself (`Deref`); changes only through `insert` and `remove`.
pub struct Logged<'t, K: Key + 'static, V: Value + 'static> {
    table: Table<'t, K, V>,
    id: u8,
    changes: Changes,
}

/// The changes of one transaction: in order, in the journal's encoding, and the
/// set of tables they touched (bit `id`).
#[derive(Default)]
struct ChangeLog {
    bytes: RefCell<Vec<u8>>,
    tables: Cell<u64>,
}

type Changes = Rc<ChangeLog>;

impl ChangeLog {
    fn record(&self, table: u8, key: &[u8], value: Option<&[u8]>) {
        encode_change(&mut self.bytes.borrow_mut(), table, key, value);
        self.tables.set(self.tables.get() | 1 << table);
    }
}

impl<'t, K: Key + 'static, V: Value + 'static> Logged<'t, K, V> {
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        {
            let (k, v) = (K::as_bytes(key.borrow()), V::as_bytes(value.borrow()));
            self.changes.record(self.id, k.as_ref(), Some(v.as_ref()));
        }
        self.table.insert(key, value)
    }

    pub fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        self.changes.record(self.id, K::as_bytes(key.borrow()).as_ref(), None);
        self.table.remove(key)
    }

    /// Apply a change read back from the journal.
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
        match value {
            Some(value) => self.table.insert(K::from_bytes(key), V::from_bytes(value)).map(drop),
            None => self.table.remove(K::from_bytes(key)).map(drop),
        }
    }
}

impl<'t, K: Key + 'static, V: Value + 'static> std::ops::Deref for Logged<'t, K, V> {
    type Target = Table<'t, K, V>;

    fn deref(&self) -> &Table<'t, K, V> {
        &self.table
    }
}

/// Declares `Tables` from one list. The number is the table's id in the journal:
/// a journal is replayed by the next version of the binary, so ids never change.
macro_rules! tables {
    ($($id:literal $field:ident: $def:ident <$k:ty, $v:ty>,)*) => {
        /// All tables of one write transaction, opened once per batch.
        pub struct Tables<'t> {
            $(pub $field: Logged<'t, $k, $v>,)*
            changes: Changes,
        }

        impl<'t> Tables<'t> {
            pub fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, redb::TableError> {
                let changes = Changes::default();
                Ok(Tables {
                    $($field: Logged { table: txn.open_table($def)?, id: $id, changes: changes.clone() },)*
                    changes,
                })
            }

            /// Apply one change read back from the journal.
            pub fn apply(&mut self, change: &Change<'_>) -> Result<(), String> {
                let applied = match change.table {
                    $($id => self.$field.apply(change.key, change.value),)*
                    other => return Err(format!("the journal names table {other}, unknown to this binary")),
                };
                applied.map_err(|e| e.to_string())
            }
        }
    };
}

tables! {
    0 jobs: JOBS<u64, &'static [u8]>,
    1 uuids: UUIDS<(&'static str, u128), u64>,
    2 ready: READY<(&'static str, &'static str, u8, u32, u64, u64), ()>,
    3 due: DUE<(u64, u64), ()>,
    4 leases: LEASES<(u64, u64), ()>,
    5 stuck_due: STUCK_DUE<(u64, u64), ()>,
    6 stuck: STUCK<(&'static str, u64), ()>,
    7 by_state: BY_STATE<(&'static str, u8, u64), ()>,
    8 by_tenant: BY_TENANT<(&'static str, u64), ()>,
    9 by_user: BY_USER<(&'static str, &'static str, u64), ()>,
    10 counts: COUNTS<(&'static str, &'static str, u8), u64>,
    11 history: HISTORY<(u64, u32), &'static [u8]>,
    12 queues: QUEUES<(&'static str, &'static str), &'static [u8]>,
    13 breakers: BREAKERS<(&'static str, &'static str, &'static str), &'static [u8]>,
    14 tenants: TENANTS<&'static str, &'static [u8]>,
    15 keys: KEYS<&'static str, &'static [u8]>,
    16 user_keys: USER_KEYS<(&'static str, &'static str), &'static [u8]>,
    17 meta: META<&'static str, u64>,
    18 plugins: PLUGINS<(&'static str, &'static str), &'static [u8]>,
    19 plugin_components: PLUGIN_COMPONENTS<(&'static str, &'static str), &'static [u8]>,
    20 plugin_artifacts: PLUGIN_ARTIFACTS<(&'static str, &'static str), &'static [u8]>,
    21 bindings: BINDINGS<(&'static str, &'static str, &'static str, u8), &'static [u8]>,
    22 tenant_config: TENANT_CONFIG<&'static str, &'static [u8]>,
    23 user_config: USER_CONFIG<(&'static str, &'static str), &'static [u8]>,
    24 alerts: ALERTS<(&'static str, &'static str), &'static [u8]>,
    25 alert_events: ALERT_EVENTS<(&'static str, u64), &'static [u8]>,
    26 user_pending: USER_PENDING<(&'static str, &'static str), u64>,
    27 tenant_pending: TENANT_PENDING<&'static str, u64>,
    28 retention: RETENTION<(u64, u64, u64), ()>,
    29 held: HELD<(&'static str, u64), ()>,
    30 user_holds: USER_HOLDS<(&'static str, &'static str), &'static [u8]>,
    31 limits: LIMITS<&'static str, &'static [u8]>,
    32 audit: AUDIT<u64, &'static [u8]>,
    33 receipts: RECEIPTS<(&'static str, &'static str), &'static [u8]>,
    34 ledger: LEDGER<&'static [u8], &'static str>,
    35 pending_erasures: PENDING_ERASURES<(&'static str, &'static str), &'static [u8]>,
    36 secrets: SECRETS<&'static str, &'static [u8]>,
}

impl Tables<'_> {
    /// Take the changes made so far (empty if nothing changed).
    pub fn take_changes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.changes.bytes.borrow_mut())
    }

    pub fn changed(&self) -> bool {
        !self.changes.bytes.borrow().is_empty()
    }

    /// Whether the configuration that readers cache (`ConfigCache`) changed.
    pub fn config_changed(&self) -> bool {
        let touched = self.changes.tables.get();
        [self.tenant_config.id, self.user_config.id, self.limits.id].iter().any(|id| touched & (1 << id) != 0)
    }
}
