//! Checkpoints as exports: every table of one read transaction copied into a new
//! redb file (not redb savepoints, which pin pages and block compaction). A read
//! transaction never blocks the writer, so the host keeps serving meanwhile.

use cap_std::fs::{Dir, OpenOptions};
use redb::backends::FileBackend;
use redb::{Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value, WriteTransaction};

use super::tables::*;
use crate::error::{Error, Result};
use crate::model::JobState;

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("checkpoint: {e}"))
}

fn copy<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<()> {
    let from = src.open_table(def).map_err(internal)?;
    let mut to = dst.open_table(def).map_err(internal)?;
    for entry in from.iter().map_err(internal)? {
        let (k, v) = entry.map_err(internal)?;
        to.insert(k.value(), v.value()).map_err(internal)?;
    }
    Ok(())
}

/// Copy every table of `src` into `dst`.
fn copy_all(src: &ReadTransaction, dst: &WriteTransaction) -> Result<()> {
    copy(src, dst, JOBS)?;
    copy(src, dst, UUIDS)?;
    copy(src, dst, READY)?;
    copy(src, dst, DUE)?;
    copy(src, dst, LEASES)?;
    copy(src, dst, STUCK_DUE)?;
    copy(src, dst, STUCK)?;
    copy(src, dst, BY_STATE)?;
    copy(src, dst, BY_TENANT)?;
    copy(src, dst, BY_USER)?;
    copy(src, dst, COUNTS)?;
    copy(src, dst, HISTORY)?;
    copy(src, dst, QUEUES)?;
    copy(src, dst, BREAKERS)?;
    copy(src, dst, TENANTS)?;
    copy(src, dst, KEYS)?;
    copy(src, dst, USER_KEYS)?;
    copy(src, dst, META)?;
    copy(src, dst, PLUGINS)?;
    copy(src, dst, PLUGIN_COMPONENTS)?;
    copy(src, dst, PLUGIN_ARTIFACTS)?;
    copy(src, dst, BINDINGS)?;
    copy(src, dst, TENANT_CONFIG)?;
    copy(src, dst, USER_CONFIG)?;
    copy(src, dst, ALERTS)?;
    copy(src, dst, ALERT_EVENTS)?;
    copy(src, dst, USER_PENDING)?;
    copy(src, dst, TENANT_PENDING)?;
    copy(src, dst, RETENTION)?;
    copy(src, dst, HELD)?;
    copy(src, dst, USER_HOLDS)?;
    copy(src, dst, LIMITS)?;
    copy(src, dst, AUDIT)?;
    copy(src, dst, RECEIPTS)?;
    copy(src, dst, LEDGER)?;
    copy(src, dst, PENDING_ERASURES)?;
    copy(src, dst, SECRETS)?;
    Ok(())
}

/// Jobs by state in one read transaction, over every tenant.
fn counts(txn: &ReadTransaction) -> Result<Vec<(JobState, u64)>> {
    let t = txn.open_table(COUNTS).map_err(internal)?;
    let mut totals = [0u64; 5];
    for entry in t.iter().map_err(internal)? {
        let (k, v) = entry.map_err(internal)?;
        if let Some(state) = JobState::ALL.into_iter().find(|s| s.code() == k.value().2) {
            totals[state.code() as usize] += v.value();
        }
    }
    Ok(JobState::ALL.into_iter().map(|s| (s, totals[s.code() as usize])).collect())
}

/// Export one read transaction of `db` into `dir/name` (made under a temporary
/// name and renamed when complete). Returns the counts by state it holds.
pub fn export(db: &Database, dir: &Dir, name: &str) -> Result<Vec<(JobState, u64)>> {
    let src = db.begin_read().map_err(internal)?;
    let partial = format!("{name}.partial");
    let _ = dir.remove_file(&partial);
    let file = dir
        .open_with(&partial, OpenOptions::new().read(true).write(true).create_new(true))
        .map_err(internal)?
        .into_std();
    let out = redb::Builder::new().create_with_backend(FileBackend::new(file).map_err(internal)?).map_err(internal)?;
    let dst = out.begin_write().map_err(internal)?;
    copy_all(&src, &dst)?;
    dst.commit().map_err(internal)?;
    drop(out);
    dir.rename(&partial, dir, name).map_err(internal)?;
    dir.open(".").and_then(|d| d.sync_all()).map_err(internal)?;
    counts(&src)
}

/// Erase the users of `subjects` from checkpoint `dir/name`, then write the file
/// anew from its live data (a file edited in place keeps deleted bytes in freed
/// pages). `None` when the checkpoint held nothing of theirs.
pub fn scrub(
    dir: &Dir,
    name: &str,
    secret: &[u8; 32],
    subjects: &[super::PendingErasure],
) -> Result<Option<Vec<(JobState, u64)>>> {
    let file = dir.open_with(name, OpenOptions::new().read(true).write(true)).map_err(internal)?;
    let db = redb::Builder::new()
        .create_with_backend(FileBackend::new(file.into_std()).map_err(internal)?)
        .map_err(internal)?;
    let txn = db.begin_write().map_err(internal)?;
    let erased = {
        let mut tables = Tables::open(&txn);
        // Opened up front, so an I/O error is reported here, not as a panic midway.
        tables.create_all().map_err(internal)?;
        let erased = match super::privacy_ops::erase_subjects(&mut tables, secret, subjects) {
            Ok(erased) => erased,
            Err(super::writer::OpError::Refused(e)) => return Err(e),
            Err(super::writer::OpError::Storage(e)) => return Err(internal(e)),
        };
        tables.flush().map_err(internal)?;
        erased
    };
    txn.commit().map_err(internal)?;
    if !erased {
        return Ok(None);
    }
    export(&db, dir, name).map(Some)
}

/// Read what `scope` covers from checkpoint file `dir/name`.
pub fn read_snapshot(dir: &Dir, name: &str, scope: &super::RestoreScope) -> Result<super::Snapshot> {
    let file =
        dir.open_with(name, OpenOptions::new().read(true).write(true)).map_err(|_| Error::not_found("checkpoint"))?;
    let db = redb::Builder::new()
        .create_with_backend(FileBackend::new(file.into_std()).map_err(internal)?)
        .map_err(internal)?;
    let txn = db.begin_read().map_err(internal)?;
    let mut snapshot = super::Snapshot::default();
    for entry in txn.open_table(JOBS).map_err(internal)?.iter().map_err(internal)? {
        let (_, v) = entry.map_err(internal)?;
        let job: crate::model::Job = super::codec::decode(v.value())?;
        if scope.covers(&job.tenant, &job.queue) {
            snapshot.jobs.push(job);
        }
    }
    for entry in txn.open_table(QUEUES).map_err(internal)?.iter().map_err(internal)? {
        let (k, v) = entry.map_err(internal)?;
        let (tenant, queue) = k.value();
        if scope.covers(tenant, queue) {
            snapshot.queues.push((tenant.to_owned(), queue.to_owned(), super::codec::decode(v.value())?));
        }
    }
    for entry in txn.open_table(BINDINGS).map_err(internal)?.iter().map_err(internal)? {
        let (_, v) = entry.map_err(internal)?;
        let binding: crate::model::Binding = super::codec::decode(v.value())?;
        if binding_in_scope(scope, &binding) {
            snapshot.bindings.push(binding);
        }
    }
    Ok(snapshot)
}

/// A binding belongs to a scope when its queue does; a tenant's `*` binding only
/// to a scope of the whole tenant.
pub fn binding_in_scope(scope: &super::RestoreScope, binding: &crate::model::Binding) -> bool {
    match scope {
        super::RestoreScope::Host => true,
        super::RestoreScope::Tenant { tenant, queues } => {
            binding.tenant == *tenant && queues.as_ref().is_none_or(|q| q.contains(&binding.queue))
        }
    }
}
