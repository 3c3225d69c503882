//! The consistency check: every index and counter rebuilt from the job records
//! and compared with what is stored (invariant 2). Used by tests after crashes
//! and after hostile input; it reads one snapshot, so it never blocks the writer.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use redb::{Key, ReadTransaction, ReadableTable, TableDefinition};

use super::codec::decode;
use super::tables::*;
use super::write_ops::{STUCK_COUNT, index_keys};
use crate::model::Job;

type Check<T = ()> = Result<T, String>;

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The entries every index should hold, derived from the records.
#[derive(Default)]
struct Expected {
    ready: BTreeSet<(String, String, u8, u32, u64, u64)>,
    due: BTreeSet<(u64, u64)>,
    leases: BTreeSet<(u64, u64)>,
    stuck_due: BTreeSet<(u64, u64)>,
    stuck: BTreeSet<(String, u64)>,
    by_state: BTreeSet<(String, u8, u64)>,
    by_tenant: BTreeSet<(String, u64)>,
    by_user: BTreeSet<(String, String, u64)>,
    retention: BTreeSet<(u64, u64, u64)>,
    held: BTreeSet<(String, u64)>,
    counts: BTreeMap<(String, String, u8), u64>,
    tenant_pending: BTreeMap<String, u64>,
    user_pending: BTreeMap<(String, String), u64>,
}

impl Expected {
    fn add(&mut self, job: &Job) {
        let k = index_keys(job);
        let (tenant, queue) = (k.tenant.to_string(), k.queue.to_string());
        if let Some((stage, prio, order)) = k.ready {
            self.ready.insert((tenant.clone(), queue.clone(), stage, prio, order, k.seq));
        }
        self.due.extend(k.due.map(|d| (d, k.seq)));
        self.leases.extend(k.lease.map(|e| (e, k.seq)));
        self.stuck_due.extend(k.stuck_due.map(|d| (d, k.seq)));
        if k.stuck {
            self.stuck.insert((tenant.clone(), k.seq));
            *self.counts.entry((tenant.clone(), queue.clone(), STUCK_COUNT)).or_default() += 1;
        }
        self.retention.extend(k.retention);
        if k.held {
            self.held.insert((tenant.clone(), k.seq));
        }
        if k.pending {
            *self.tenant_pending.entry(tenant.clone()).or_default() += 1;
            *self.user_pending.entry((tenant.clone(), job.user_id.clone())).or_default() += 1;
        }
        self.by_state.insert((tenant.clone(), k.state, k.seq));
        self.by_tenant.insert((tenant.clone(), k.seq));
        self.by_user.insert((tenant.clone(), job.user_id.clone(), k.seq));
        *self.counts.entry((tenant, queue, k.state)).or_default() += 1;
    }
}

/// Every entry of a table, converted to owned keys and values.
fn entries<K: Key + 'static, V: redb::Value + 'static, T: Ord>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
    owned: impl Fn(K::SelfType<'_>, V::SelfType<'_>) -> T,
) -> Check<Vec<T>> {
    let table = txn.open_table(def).map_err(fail)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(fail)? {
        let (k, v) = entry.map_err(fail)?;
        out.push(owned(k.value(), v.value()));
    }
    Ok(out)
}

fn same<T: Ord + Debug>(name: &str, expected: BTreeSet<T>, actual: Vec<T>) -> Check {
    let actual: BTreeSet<T> = actual.into_iter().collect();
    if let Some(missing) = expected.difference(&actual).next() {
        return Err(format!("{name}: missing entry {missing:?}"));
    }
    if let Some(stray) = actual.difference(&expected).next() {
        return Err(format!("{name}: entry {stray:?} does not follow from any job"));
    }
    Ok(())
}

fn same_counts<K: Ord + Debug>(name: &str, expected: BTreeMap<K, u64>, actual: Vec<(K, u64)>) -> Check {
    same(name, expected.into_iter().collect(), actual)
}

/// Check one snapshot; returns the number of jobs.
pub fn check(txn: &ReadTransaction) -> Check<u64> {
    let mut expected = Expected::default();
    let jobs = txn.open_table(JOBS).map_err(fail)?;
    let uuids = txn.open_table(UUIDS).map_err(fail)?;
    let mut count = 0u64;
    for entry in jobs.iter().map_err(fail)? {
        let (seq, bytes) = entry.map_err(fail)?;
        let job: Job = decode(bytes.value()).map_err(fail)?;
        if job.seq != seq.value() {
            return Err(format!("job stored under {} says seq {}", seq.value(), job.seq));
        }
        let pointed = uuids.get((job.tenant.as_str(), job.job_uuid.as_u128())).map_err(fail)?.map(|v| v.value());
        if pointed != Some(job.seq) {
            return Err(format!("uuid_index: job {} ({}) is indexed as {pointed:?}", job.job_uuid, job.seq));
        }
        expected.add(&job);
        count += 1;
    }
    let live_uuids = entries(txn, UUIDS, |_, seq| seq)?.into_iter().filter(|&seq| seq != 0).count() as u64;
    if live_uuids != count {
        return Err(format!("uuid_index: {live_uuids} live entries for {count} jobs"));
    }
    let history_seqs: BTreeSet<u64> = entries(txn, HISTORY, |k, _| k.0)?.into_iter().collect();
    if let Some(orphan) = history_seqs.iter().find(|&&seq| jobs.get(seq).ok().flatten().is_none()) {
        return Err(format!("job_history: events of missing job {orphan}"));
    }
    let owned = |s: &str| s.to_owned();
    same("ready_index", expected.ready, entries(txn, READY, |k, _| (owned(k.0), owned(k.1), k.2, k.3, k.4, k.5))?)?;
    same("due_index", expected.due, entries(txn, DUE, |k, _| k)?)?;
    same("lease_index", expected.leases, entries(txn, LEASES, |k, _| k)?)?;
    same("stuck_due_index", expected.stuck_due, entries(txn, STUCK_DUE, |k, _| k)?)?;
    same("stuck_index", expected.stuck, entries(txn, STUCK, |k, _| (owned(k.0), k.1))?)?;
    same("state_index", expected.by_state, entries(txn, BY_STATE, |k, _| (owned(k.0), k.1, k.2))?)?;
    same("tenant_index", expected.by_tenant, entries(txn, BY_TENANT, |k, _| (owned(k.0), k.1))?)?;
    same("user_index", expected.by_user, entries(txn, BY_USER, |k, _| (owned(k.0), owned(k.1), k.2))?)?;
    same("retention_index", expected.retention, entries(txn, RETENTION, |k, _| k)?)?;
    same("held_index", expected.held, entries(txn, HELD, |k, _| (owned(k.0), k.1))?)?;
    same_counts("state_counts", expected.counts, entries(txn, COUNTS, |k, v| ((owned(k.0), owned(k.1), k.2), v))?)?;
    same_counts("tenant_pending", expected.tenant_pending, entries(txn, TENANT_PENDING, |k, v| (owned(k), v))?)?;
    same_counts(
        "user_pending",
        expected.user_pending,
        entries(txn, USER_PENDING, |k, v| ((owned(k.0), owned(k.1)), v))?,
    )?;
    Ok(count)
}
