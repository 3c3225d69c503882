//! The redb tables and their key layouts. Index entries are a pure function of the
//! job record (see `write_ops::index_keys`), so an index can always be checked
//! against, or rebuilt from, the jobs table.

use std::borrow::Borrow;
use std::cell::{Cell, OnceCell, RefCell};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use redb::{
    AccessGuard, Key, ReadableTable, StorageError, Table, TableDefinition, TableHandle, Value, WriteTransaction,
};

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

impl<'t, K: Key + 'static, V: Value + 'static> Deref for Logged<'t, K, V> {
    type Target = Table<'t, K, V>;

    fn deref(&self) -> &Table<'t, K, V> {
        &self.table
    }
}

/// A table wrapper that holds changes back until the batch ends (or a read needs
/// them): `flush` writes them.
pub trait HeldBack {
    fn flush(&mut self) -> Result<(), StorageError>;
}

impl<K: Key + 'static, V: Value + 'static> HeldBack for Logged<'_, K, V> {
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A table of counts (the job counters) whose changes in one transaction are summed
/// in memory and written once, at `Tables::flush`: a batch of 500 claims
/// writes its queue's counters once each, not 500 times. Reads (`get`) include the
/// sums not yet written; there is no other access, so no read can miss them.
pub struct Counted<'t, K: Key + 'static, V: Value + 'static> {
    table: Logged<'t, K, V>,
    deltas: BTreeMap<Vec<u8>, i64>,
}

impl<'t, K: Key + 'static, V: Value + 'static> From<Logged<'t, K, V>> for Counted<'t, K, V> {
    fn from(table: Logged<'t, K, V>) -> Self {
        Counted { table, deltas: BTreeMap::new() }
    }
}

impl<'t, K: Key + 'static, V: for<'a> Value<SelfType<'a> = u64> + 'static> Counted<'t, K, V> {
    pub fn get<'k>(&self, key: impl Borrow<K::SelfType<'k>>) -> Result<u64, StorageError> {
        let delta = self.deltas.get(K::as_bytes(key.borrow()).as_ref()).copied().unwrap_or(0);
        let stored = self.table.get(key)?.map(|v| v.value()).unwrap_or(0);
        Ok(stored.saturating_add_signed(delta))
    }

    pub fn add<'k>(&mut self, key: impl Borrow<K::SelfType<'k>>, delta: i64) {
        let bytes = K::as_bytes(key.borrow());
        match self.deltas.get_mut(bytes.as_ref()) {
            Some(sum) => *sum += delta,
            None => {
                self.deltas.insert(bytes.as_ref().to_vec(), delta);
            }
        }
    }

    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
        self.table.apply(key, value)
    }
}

impl<K: Key + 'static, V: for<'a> Value<SelfType<'a> = u64> + 'static> HeldBack for Counted<'_, K, V> {
    /// Write the summed changes; a count that reaches 0 is removed.
    fn flush(&mut self) -> Result<(), StorageError> {
        for (key, delta) in std::mem::take(&mut self.deltas) {
            if delta == 0 {
                continue;
            }
            let key = K::from_bytes(&key);
            let next = self.table.get(&key)?.map(|v| v.value()).unwrap_or(0).saturating_add_signed(delta);
            if next == 0 {
                self.table.remove(&key)?;
            } else {
                self.table.insert(&key, next)?;
            }
        }
        Ok(())
    }
}

/// An index table (keys only) whose removals wait until the table is next read or
/// the batch ends, and then go in ordered sweeps (redb's `retain_in`), which rewrite
/// each leaf once for all the keys it loses. Removed one by one, each key rewrites
/// its leaf (and the branch above) whenever the leaf is under redb's merge threshold,
/// a third of a page: the queue-shaped indexes (ready jobs, leases, stuck deadlines,
/// jobs by state) are small or lose their oldest entries, so nearly always.
/// Reads go through [`Index::read`], which applies the removals first.
pub struct Index<'t, K: Key + 'static, V: Value + 'static> {
    table: Logged<'t, K, V>,
    /// Keys removed (and journaled) but still in the table.
    removed: HashSet<Vec<u8>>,
}

/// Live entries a sweep may step over between two removed keys before the removals
/// beyond them go in a sweep of their own (one more seek).
const SWEEP_GAP: usize = 64;

impl<'t, K: Key + 'static, V: Value + 'static> From<Logged<'t, K, V>> for Index<'t, K, V> {
    fn from(table: Logged<'t, K, V>) -> Self {
        Index { table, removed: HashSet::new() }
    }
}

impl<'t, K: Key + 'static> Index<'t, K, ()> {
    pub fn insert<'k>(&mut self, key: impl Borrow<K::SelfType<'k>>, value: ()) -> Result<(), StorageError> {
        if !self.removed.is_empty() {
            self.removed.remove(K::as_bytes(key.borrow()).as_ref());
        }
        self.table.insert(key, value).map(drop)
    }

    pub fn remove<'k>(&mut self, key: impl Borrow<K::SelfType<'k>>) {
        let bytes = K::as_bytes(key.borrow());
        self.table.changes.record(self.table.id, bytes.as_ref(), None);
        self.removed.insert(bytes.as_ref().to_vec());
    }

    /// The table, with every removal so far applied.
    pub fn read(&mut self) -> Result<&Table<'t, K, ()>, StorageError> {
        self.flush()?;
        Ok(&self.table.table)
    }

    /// How many of the sorted `keys` one sweep takes: it stops before a key that
    /// more than `SWEEP_GAP` live entries separate from the one before.
    fn run_length(&self, keys: &[Vec<u8>]) -> Result<usize, StorageError> {
        let (mut taken, mut gap) = (0, 0);
        for entry in self.table.table.range(K::from_bytes(&keys[0])..)? {
            let (key, _) = entry?;
            let key = key.value();
            let key = K::as_bytes(&key);
            while taken < keys.len() && K::compare(&keys[taken], key.as_ref()) == Ordering::Less {
                taken += 1; // a removed key the table does not hold
            }
            if taken == keys.len() {
                return Ok(taken);
            }
            if K::compare(&keys[taken], key.as_ref()) == Ordering::Equal {
                (taken, gap) = (taken + 1, 0);
            } else if gap == SWEEP_GAP {
                return Ok(taken);
            } else {
                gap += 1;
            }
        }
        Ok(keys.len())
    }

    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
        self.table.apply(key, value)
    }
}

impl<K: Key + 'static> HeldBack for Index<'_, K, ()> {
    /// Apply the pending removals: one sweep per run of removed keys that lie close
    /// together in the table.
    fn flush(&mut self) -> Result<(), StorageError> {
        if self.removed.is_empty() {
            return Ok(());
        }
        let mut keys: Vec<Vec<u8>> = self.removed.drain().collect();
        keys.sort_by(|a, b| K::compare(a, b));
        let mut start = 0;
        while start < keys.len() {
            let end = start + self.run_length(&keys[start..])?;
            let run = &keys[start..end];
            let (first, last) = (K::from_bytes(&run[0]), K::from_bytes(&run[run.len() - 1]));
            self.table.table.retain_in(first..=last, |k, _| {
                run.binary_search_by(|r| K::compare(r, K::as_bytes(&k).as_ref())).is_err()
            })?;
            start = end;
        }
        Ok(())
    }
}

/// A table of a write transaction, opened at its first use: a batch opens (and at
/// its commit closes) only the tables it touches, a dozen of the 37 for a claim.
/// Tables exist from start-up (`Tables::create_all`), so opening one can fail only
/// on an I/O error; it then panics with [`TableOpenFailed`], which the writer
/// treats as the storage failure it is.
pub struct Lazy<'t, K: Key + 'static, V: Value + 'static, W> {
    txn: &'t WriteTransaction,
    def: TableDefinition<'static, K, V>,
    id: u8,
    changes: Changes,
    table: OnceCell<W>,
}

/// The panic payload of a table that failed to open.
pub struct TableOpenFailed(pub String);

impl<'t, K: Key + 'static, V: Value + 'static, W: From<Logged<'t, K, V>>> Lazy<'t, K, V, W> {
    fn new(txn: &'t WriteTransaction, def: TableDefinition<'static, K, V>, id: u8, changes: &Changes) -> Self {
        Lazy { txn, def, id, changes: changes.clone(), table: OnceCell::new() }
    }

    fn try_open(&self) -> Result<W, redb::TableError> {
        let table = self.txn.open_table(self.def)?;
        Ok(Logged { table, id: self.id, changes: self.changes.clone() }.into())
    }

    fn open(&self) -> W {
        self.try_open().unwrap_or_else(|e| {
            std::panic::panic_any(TableOpenFailed(format!("opening table {}: {e}", self.def.name())))
        })
    }

    /// Open the table now (creating it if missing), reporting a failure.
    fn create(&mut self) -> Result<(), redb::TableError> {
        if self.table.get().is_none() {
            let _ = self.table.set(self.try_open()?);
        }
        Ok(())
    }
}

impl<'t, K: Key + 'static, V: Value + 'static, W: From<Logged<'t, K, V>>> Deref for Lazy<'t, K, V, W> {
    type Target = W;

    fn deref(&self) -> &W {
        self.table.get_or_init(|| self.open())
    }
}

impl<'t, K: Key + 'static, V: Value + 'static, W: From<Logged<'t, K, V>>> DerefMut for Lazy<'t, K, V, W> {
    fn deref_mut(&mut self) -> &mut W {
        if self.table.get().is_none() {
            let _ = self.table.set(self.open());
        }
        self.table.get_mut().expect("opened above")
    }
}

impl<K: Key + 'static, V: Value + 'static, W: HeldBack> Lazy<'_, K, V, W> {
    /// Write the changes the table holds back, if the batch opened it.
    fn flush(&mut self) -> Result<(), StorageError> {
        self.table.get_mut().map_or(Ok(()), W::flush)
    }
}

/// Declares `Tables` from one list. The number is the table's id in the journal:
/// a journal is replayed by the next version of the binary, so ids never change.
macro_rules! tables {
    ($($id:literal $field:ident: $wrap:ident $def:ident <$k:ty, $v:ty>,)*) => {
        /// All tables of one write transaction, each opened at its first use.
        pub struct Tables<'t> {
            $(pub $field: Lazy<'t, $k, $v, $wrap<'t, $k, $v>>,)*
            changes: Changes,
        }

        impl<'t> Tables<'t> {
            pub fn open(txn: &'t WriteTransaction) -> Tables<'t> {
                let changes = Changes::default();
                Tables {
                    $($field: Lazy::new(txn, $def, $id, &changes),)*
                    changes,
                }
            }

            /// Open every table, creating those missing (at start-up, so later
            /// transactions find them all).
            pub fn create_all(&mut self) -> Result<(), redb::TableError> {
                $(self.$field.create()?;)*
                Ok(())
            }

            /// Write the changes the tables hold back (the counters' sums, the
            /// indexes' removals). Due before the transaction commits.
            pub fn flush(&mut self) -> Result<(), StorageError> {
                $(self.$field.flush()?;)*
                Ok(())
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
    0 jobs: Logged JOBS<u64, &'static [u8]>,
    1 uuids: Logged UUIDS<(&'static str, u128), u64>,
    2 ready: Index READY<(&'static str, &'static str, u8, u32, u64, u64), ()>,
    3 due: Index DUE<(u64, u64), ()>,
    4 leases: Index LEASES<(u64, u64), ()>,
    5 stuck_due: Index STUCK_DUE<(u64, u64), ()>,
    6 stuck: Index STUCK<(&'static str, u64), ()>,
    7 by_state: Index BY_STATE<(&'static str, u8, u64), ()>,
    8 by_tenant: Index BY_TENANT<(&'static str, u64), ()>,
    9 by_user: Index BY_USER<(&'static str, &'static str, u64), ()>,
    10 counts: Counted COUNTS<(&'static str, &'static str, u8), u64>,
    11 history: Logged HISTORY<(u64, u32), &'static [u8]>,
    12 queues: Logged QUEUES<(&'static str, &'static str), &'static [u8]>,
    13 breakers: Logged BREAKERS<(&'static str, &'static str, &'static str), &'static [u8]>,
    14 tenants: Logged TENANTS<&'static str, &'static [u8]>,
    15 keys: Logged KEYS<&'static str, &'static [u8]>,
    16 user_keys: Logged USER_KEYS<(&'static str, &'static str), &'static [u8]>,
    17 meta: Logged META<&'static str, u64>,
    18 plugins: Logged PLUGINS<(&'static str, &'static str), &'static [u8]>,
    19 plugin_components: Logged PLUGIN_COMPONENTS<(&'static str, &'static str), &'static [u8]>,
    20 plugin_artifacts: Logged PLUGIN_ARTIFACTS<(&'static str, &'static str), &'static [u8]>,
    21 bindings: Logged BINDINGS<(&'static str, &'static str, &'static str, u8), &'static [u8]>,
    22 tenant_config: Logged TENANT_CONFIG<&'static str, &'static [u8]>,
    23 user_config: Logged USER_CONFIG<(&'static str, &'static str), &'static [u8]>,
    24 alerts: Logged ALERTS<(&'static str, &'static str), &'static [u8]>,
    25 alert_events: Logged ALERT_EVENTS<(&'static str, u64), &'static [u8]>,
    26 user_pending: Counted USER_PENDING<(&'static str, &'static str), u64>,
    27 tenant_pending: Counted TENANT_PENDING<&'static str, u64>,
    28 retention: Index RETENTION<(u64, u64, u64), ()>,
    29 held: Index HELD<(&'static str, u64), ()>,
    30 user_holds: Logged USER_HOLDS<(&'static str, &'static str), &'static [u8]>,
    31 limits: Logged LIMITS<&'static str, &'static [u8]>,
    32 audit: Logged AUDIT<u64, &'static [u8]>,
    33 receipts: Logged RECEIPTS<(&'static str, &'static str), &'static [u8]>,
    34 ledger: Logged LEDGER<&'static [u8], &'static str>,
    35 pending_erasures: Logged PENDING_ERASURES<(&'static str, &'static str), &'static [u8]>,
    36 secrets: Logged SECRETS<&'static str, &'static [u8]>,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use redb::backends::FileBackend;
    use redb::{Database, ReadableDatabase};

    use super::super::journal::Journal;
    use super::*;

    type StateKey = (String, u8, u64);

    fn lease_keys(table: &impl ReadableTable<(u64, u64), ()>) -> BTreeSet<(u64, u64)> {
        table.iter().unwrap().map(|e| e.unwrap().0.value()).collect()
    }

    fn state_keys(table: &impl ReadableTable<(&'static str, u8, u64), ()>) -> BTreeSet<StateKey> {
        let owned = |entry: Result<_, StorageError>| {
            let (key, _): (AccessGuard<'_, (&str, u8, u64)>, AccessGuard<'_, ()>) = entry.unwrap();
            let (tenant, state, seq) = key.value();
            (tenant.to_owned(), state, seq)
        };
        table.iter().unwrap().map(owned).collect()
    }

    /// What a database's leases and state index hold.
    fn contents(db: &Database) -> (BTreeSet<(u64, u64)>, BTreeSet<StateKey>) {
        let txn = db.begin_read().unwrap();
        (lease_keys(&txn.open_table(LEASES).unwrap()), state_keys(&txn.open_table(BY_STATE).unwrap()))
    }

    /// Index tables with deferred removals against a model: random inserts, removals
    /// (of present and absent keys) and reads mid-batch, over many batches; then the
    /// journal of those batches replayed (as at start-up) into a fresh file must give
    /// the same tables.
    /// Tenants `a`, `ab` and `b` make the key order differ from the byte order.
    #[test]
    fn indexes_with_deferred_removals_match_a_model_and_their_journal() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("live.redb")).unwrap();
        let journal_file = || {
            FileBackend::new(
                std::fs::File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(dir.path().join("journal"))
                    .unwrap(),
            )
            .unwrap()
        };
        let (mut journal, _) = Journal::open(Box::new(journal_file())).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let (mut leases, mut states) = (BTreeSet::<(u64, u64)>::new(), BTreeSet::<StateKey>::new());
        let tenants = ["a", "ab", "b"];
        let lease_key = |rng: &mut StdRng| (rng.random_range(0..40u64) * 10, rng.random_range(0..400u64));
        let state_key = |rng: &mut StdRng| {
            (tenants[rng.random_range(0..3)].to_owned(), rng.random_range(0..3u8), rng.random_range(0..300u64))
        };
        for batch in 1..=60 {
            let txn = db.begin_write().unwrap();
            let mut t = Tables::open(&txn);
            for _ in 0..rng.random_range(1..300) {
                match rng.random_range(0..100) {
                    0..40 => {
                        let k = lease_key(&mut rng);
                        t.leases.insert(k, ()).unwrap();
                        leases.insert(k);
                        let (tenant, state, seq) = state_key(&mut rng);
                        t.by_state.insert((tenant.as_str(), state, seq), ()).unwrap();
                        states.insert((tenant, state, seq));
                    }
                    40..80 => {
                        // Keys present: a random lease, and the state index's first key,
                        // as a queue's head loses its oldest entries.
                        let k = leases.iter().nth(rng.random_range(0..leases.len().max(1))).copied();
                        let k = k.unwrap_or_else(|| lease_key(&mut rng));
                        t.leases.remove(k);
                        leases.remove(&k);
                        let first = states.iter().next().cloned();
                        let (tenant, state, seq) = first.unwrap_or_else(|| state_key(&mut rng));
                        t.by_state.remove((tenant.as_str(), state, seq));
                        states.remove(&(tenant, state, seq));
                    }
                    80..90 => {
                        let k = lease_key(&mut rng);
                        t.leases.remove(k);
                        leases.remove(&k);
                    }
                    _ => {
                        assert_eq!(lease_keys(t.leases.read().unwrap()), leases, "leases mid-batch {batch}");
                        assert_eq!(state_keys(t.by_state.read().unwrap()), states, "states mid-batch {batch}");
                    }
                }
            }
            t.flush().unwrap();
            journal.append(batch, &t.take_changes()).unwrap();
            drop(t);
            txn.commit().unwrap();
            assert_eq!(contents(&db), (leases.clone(), states.clone()), "after batch {batch}");
        }
        assert!(leases.len() > 20 && states.len() > 20, "the tables did not fill: {} {}", leases.len(), states.len());

        let replayed = Database::create(dir.path().join("replayed.redb")).unwrap();
        let (_, records) = Journal::open(Box::new(journal_file())).unwrap();
        assert_eq!(super::super::redb_store::replay(&replayed, &records).unwrap().batches, 60);
        assert_eq!(contents(&replayed), (leases, states));
    }
}
