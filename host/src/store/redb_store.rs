//! The redb implementation of [`Store`]: reads run on the caller's thread in their
//! own read transaction; writes go through the group-commit [`Writer`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use cap_std::fs::{Dir, OpenOptions};
use chrono::{DateTime, Utc};
use redb::backends::FileBackend;
use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend};
use uuid::Uuid;

use super::codec::{decode, decode_queue_config};
use super::config_cache::ConfigCache;
use super::counted_file::CountedFile;
use super::journal::Journal;
use super::privacy_ops;
use super::tables::*;
use super::writer::{FoldPolicy, Log, OpError, SharedDb, WriteCtx, Writer, WriterStats};
use super::{
    AuditPage, Change, ClaimRequest, Claimed, CountRow, InsertCaps, JobFilter, JobPage, NewJob, NoteRequest,
    PauseScope, PendingErasure, PluginCaps, Promoted, QueueView, ReadJob, Store, TransitionRequest, Usage,
};
use super::{RestoreScope, Snapshot};
use super::{plugin_ops, write_ops};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::model::*;

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// redb page cache in bytes. Default 128 MiB: measured, 64 MiB let inserts with
    /// a million jobs stored fall 28 % below an empty store's rate (the job_uuid
    /// index's random pages missed the cache).
    pub cache_bytes: usize,
    /// When the journal is folded into the database file.
    pub fold: FoldPolicy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_bytes: 128 << 20, fold: FoldPolicy::default() }
    }
}

pub struct RedbStore {
    db: SharedDb,
    writer: Writer,
    configs: ConfigCache,
    /// The database file, when there is one (the erasure rewrites it).
    file: Option<DataFile>,
    /// fsyncs of the database file.
    syncs: Arc<AtomicU64>,
    /// Journaled batches the file did not hold at open, applied then.
    replayed: u64,
}

struct DataFile {
    dir: Dir,
    name: String,
    cache_bytes: usize,
}

/// A read transaction with the database it reads. Dropping a redb `Database`
/// closes its file under any read still open on it, and the eraser swaps in a
/// rewritten file while reads run: each read keeps its own database alive.
struct Reading {
    // Declared first, so dropped before the database.
    txn: ReadTransaction,
    _db: Arc<Database>,
}

impl std::ops::Deref for Reading {
    type Target = ReadTransaction;

    fn deref(&self) -> &ReadTransaction {
        &self.txn
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("storage: {e}"))
}

impl RedbStore {
    /// Open the database file `name` in the data folder, creating it if missing, with
    /// its journal beside it (`name` with the extension `journal`).
    ///
    /// A new file is made under a temporary name and renamed into place once redb
    /// has written and synced its header: a power cut during the very first start
    /// leaves no half-made file that redb would refuse to open ever after.
    pub fn open_in(dir: &Dir, name: &str, options: &StoreOptions) -> anyhow::Result<RedbStore> {
        if !dir.exists(name) {
            let creating = format!("{name}.creating");
            let _ = dir.remove_file(&creating);
            let file = dir.open_with(&creating, OpenOptions::new().read(true).write(true).create_new(true))?;
            let db = redb::Builder::new().create_with_backend(FileBackend::new(file.into_std())?)?;
            prepare(&db)?;
            drop(db);
            dir.open(&creating)?.sync_all()?;
            dir.rename(&creating, dir, name)?;
            // Make the rename itself durable.
            dir.open(".")?.sync_all()?;
        }
        let journal_name = std::path::Path::new(name).with_extension("journal");
        if !dir.exists(&journal_name) {
            dir.create(&journal_name)?.sync_all()?;
            dir.open(".")?.sync_all()?;
        }
        let syncs = Arc::new(AtomicU64::new(0));
        let journal = dir.open_with(&journal_name, OpenOptions::new().read(true).write(true))?;
        let journal = CountedFile::new(FileBackend::new(journal.into_std())?, syncs.clone());
        let db = open_file(dir, name, options.cache_bytes, syncs.clone())?;
        let mut store = Self::start(db, journal, options)?;
        store.syncs = syncs;
        store.file = Some(DataFile { dir: dir.try_clone()?, name: name.to_owned(), cache_bytes: options.cache_bytes });
        Ok(store)
    }

    /// Open on any storage backends, for the database and its journal (the crash
    /// tests use ones that lose unsynced writes).
    pub fn open_backend(
        backend: impl StorageBackend,
        journal: impl StorageBackend,
        options: &StoreOptions,
    ) -> anyhow::Result<RedbStore> {
        let db = redb::Builder::new().set_cache_size(options.cache_bytes).create_with_backend(backend)?;
        Self::start(db, journal, options)
    }

    /// Journaled batches the file did not hold when it was opened (crash tests).
    pub fn replayed_batches(&self) -> u64 {
        self.replayed
    }

    /// A store that lives in memory only (the SDK's test harness).
    pub fn in_memory(options: &StoreOptions) -> anyhow::Result<RedbStore> {
        use redb::backends::InMemoryBackend;
        Self::open_backend(InMemoryBackend::new(), InMemoryBackend::new(), options)
    }

    fn start(db: Database, journal: impl StorageBackend, options: &StoreOptions) -> anyhow::Result<RedbStore> {
        prepare(&db)?;
        let (journal, records) = Journal::open(Box::new(journal))?;
        let Replayed { next_seq, journal_seq, batches: replayed } = replay(&db, &records)?;
        if replayed > 0 {
            tracing::info!(target: "sluice::store", batches = replayed, "journal replayed into the database file");
        }
        drop(records);
        let mut log = Log::new(journal, journal_seq, options.fold.clone());
        // The file now holds every batch: start the journal afresh.
        log.clear();
        let db: SharedDb = Arc::new(ArcSwap::from_pointee(db));
        let configs = ConfigCache::default();
        let writer = Writer::start(db.clone(), log, next_seq, configs.generation());
        Ok(RedbStore { db, writer, configs, file: None, syncs: Arc::default(), replayed })
    }

    fn read(&self) -> Result<Reading> {
        let db = self.db.load_full();
        let txn = db.begin_read().map_err(internal)?;
        Ok(Reading { txn, _db: db })
    }

    /// Check that every index agrees with the job records (tests, after a crash).
    /// Returns the number of jobs checked, or the first disagreement found.
    pub fn check_consistency(&self) -> std::result::Result<u64, String> {
        super::consistency::check(&*self.read().map_err(|e| e.to_string())?)
    }

    async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_, '_>) -> Result<T, OpError> + Send + 'static,
    {
        self.writer.submit(op).await
    }

    /// Run `op` on each item in one writer request. A refused item wrote nothing,
    /// so each is applied or refused on its own; a storage failure fails them all.
    async fn write_each<I, T, F>(&self, items: Vec<I>, op: F) -> Result<Vec<Result<T>>>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(&mut WriteCtx<'_, '_>, I) -> Result<T, OpError> + Send + 'static,
    {
        self.write(move |ctx| {
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                results.push(match op(ctx, item) {
                    Ok(done) => Ok(done),
                    Err(OpError::Refused(e)) => Err(e),
                    Err(storage) => return Err(storage),
                });
            }
            Ok(results)
        })
        .await
    }
}

fn open_file(dir: &Dir, name: &str, cache_bytes: usize, syncs: Arc<AtomicU64>) -> std::io::Result<Database> {
    let file = dir.open_with(name, OpenOptions::new().read(true).write(true))?;
    let backend = CountedFile::new(FileBackend::new(file.into_std()).map_err(std::io::Error::other)?, syncs);
    redb::Builder::new().set_cache_size(cache_bytes).create_with_backend(backend).map_err(std::io::Error::other)
}

/// Create missing tables and check the storage schema version.
fn prepare(db: &Database) -> anyhow::Result<()> {
    let txn = db.begin_write()?;
    {
        let mut tables = Tables::open(&txn);
        tables.create_all()?;
        let version = tables.meta.get("schema_version")?.map(|v| v.value());
        match version {
            Some(v) if v > SCHEMA_VERSION => anyhow::bail!(
                "the data file has storage schema version {v}, newer than this binary's {SCHEMA_VERSION}; run a newer sluice"
            ),
            Some(1) => migrate_from_1(&mut tables)?,
            _ => {}
        }
        tables.flush()?;
        tables.meta.insert("schema_version", SCHEMA_VERSION)?;
    }
    txn.commit()?;
    Ok(())
}

/// What the replay at open found.
pub(super) struct Replayed {
    /// The next job seq.
    next_seq: u64,
    /// The last batch the file now holds.
    journal_seq: u64,
    /// Batches applied.
    pub(super) batches: u64,
}

/// Apply the journaled batches the file does not hold yet, in one durable commit.
pub(super) fn replay(db: &Database, records: &super::journal::Records) -> anyhow::Result<Replayed> {
    let txn = db.begin_write()?;
    let replayed = {
        let mut tables = Tables::open(&txn);
        // Opened up front, so an I/O error is reported here, not as a panic midway.
        tables.create_all()?;
        let mut journal_seq = tables.meta.get("journal_seq")?.map(|v| v.value()).unwrap_or(0);
        let last_held = journal_seq;
        for batch in records.iter().filter(|b| b.seq > last_held) {
            anyhow::ensure!(
                batch.seq == journal_seq + 1,
                "the journal starts at batch {} but the database file holds batches up to {journal_seq}",
                batch.seq
            );
            for change in batch.changes() {
                tables.apply(&change?).map_err(anyhow::Error::msg)?;
            }
            journal_seq = batch.seq;
        }
        tables.meta.insert("journal_seq", journal_seq)?;
        let next_seq = tables.meta.get("next_seq")?.map(|v| v.value()).unwrap_or(1);
        Replayed { next_seq, journal_seq, batches: journal_seq - last_held }
    };
    txn.commit()?;
    Ok(replayed)
}

/// Schema 1 had no retention index nor pending counters: derive them.
fn migrate_from_1(t: &mut Tables<'_>) -> anyhow::Result<()> {
    let mut jobs = Vec::new();
    for entry in t.jobs.iter()? {
        jobs.push(decode::<Job>(entry?.1.value())?);
    }
    for job in &jobs {
        match write_ops::add_schema2_entries(t, job) {
            Ok(()) => {}
            Err(OpError::Refused(e)) => anyhow::bail!(e),
            Err(OpError::Storage(e)) => anyhow::bail!(e),
        }
    }
    Ok(())
}

/// The jobs table of a read, opened once for all the jobs a read looks at (an open
/// looks the table up by name).
type JobsTable = ReadOnlyTable<u64, &'static [u8]>;

fn jobs_table(txn: &ReadTransaction) -> Result<JobsTable> {
    txn.open_table(JOBS).map_err(internal)
}

fn job_by_seq(jobs: &JobsTable, seq: u64) -> Result<Option<Job>> {
    read_job(jobs, seq, |job, _| job)
}

/// The job stored under `seq`, to be judged: with a copy of its stored bytes.
fn judged_job(jobs: &JobsTable, seq: u64) -> Result<Option<ReadJob>> {
    read_job(jobs, seq, |job, stored| ReadJob { job, stored: stored.into() })
}

/// The job stored under `seq`, handed to `take` with its stored bytes.
fn read_job<T>(jobs: &JobsTable, seq: u64, take: impl FnOnce(Job, &[u8]) -> T) -> Result<Option<T>> {
    match jobs.get(seq).map_err(internal)? {
        Some(bytes) => Ok(Some(take(decode(bytes.value())?, bytes.value()))),
        None => Ok(None),
    }
}

fn host_paused_in(txn: &ReadTransaction) -> Result<bool> {
    let meta = txn.open_table(META).map_err(internal)?;
    Ok(meta.get("paused").map_err(internal)?.is_some_and(|v| v.value() == 1))
}

/// A queue's configuration; `None` when the queue was never used.
fn queue_config_in(txn: &ReadTransaction, tenant: &str, queue: &str) -> Result<Option<QueueConfig>> {
    let queues = txn.open_table(QUEUES).map_err(internal)?;
    match queues.get((tenant, queue)).map_err(internal)? {
        Some(bytes) => Ok(Some(decode_queue_config(bytes.value())?)),
        None => Ok(None),
    }
}

fn seq_of(uuids: &ReadOnlyTable<(&'static str, u128), u64>, tenant: &str, job_uuid: Uuid) -> Result<Option<u64>> {
    let seq = uuids.get((tenant, job_uuid.as_u128())).map_err(internal)?.map(|v| v.value());
    Ok(seq.filter(|&s| s != 0))
}

/// Decode the JSON values of a range for as long as its keys pass `keep`.
fn decode_while<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
    range: redb::Range<'_, K, &'static [u8]>,
    keep: impl Fn(&K::SelfType<'_>) -> bool,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for entry in range {
        let (k, v) = entry.map_err(internal)?;
        if !keep(&k.value()) {
            break;
        }
        out.push(decode(v.value())?);
    }
    Ok(out)
}

/// The time of the first entry of a (time ms, seq) index.
fn first_time(txn: &ReadTransaction, table: redb::TableDefinition<(u64, u64), ()>) -> Result<Option<DateTime<Utc>>> {
    let t = txn.open_table(table).map_err(internal)?;
    let first = t.first().map_err(internal)?;
    Ok(first.map(|(k, _)| ms_to_time(k.value().0 as i64)))
}

impl JobFilter {
    fn admits(&self, job: &Job) -> bool {
        self.queue.as_ref().is_none_or(|q| *q == job.queue)
            && self.state.is_none_or(|s| s == job.state)
            && self.kind.as_ref().is_none_or(|k| *k == job.kind)
            && self.user_id.as_ref().is_none_or(|u| *u == job.user_id)
            && self.parked.is_none_or(|p| p == job.parked)
            && self.stuck.is_none_or(|s| s == job.stuck)
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn insert(
        &self,
        tenant: &str,
        jobs: Vec<NewJob>,
        actor: Actor,
        caps: InsertCaps,
    ) -> Result<Vec<Result<Job>>> {
        let tenant = tenant.to_owned();
        self.write_each(jobs, move |ctx, new| write_ops::insert(ctx, &tenant, new, &actor, &caps)).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Claimed> {
        self.write(move |ctx| write_ops::claim(ctx, request)).await
    }

    async fn set_paused(&self, scope: PauseScope, paused: bool) -> Result<()> {
        self.write(move |ctx| write_ops::set_paused(ctx, &scope, paused)).await
    }

    fn host_paused(&self) -> Result<bool> {
        host_paused_in(&*self.read()?)
    }

    async fn transitions(&self, requests: Vec<TransitionRequest>) -> Result<Vec<Result<Change>>> {
        self.write_each(requests, write_ops::transition).await
    }

    async fn expire_leases(&self, limit: usize) -> Result<Vec<Change>> {
        self.write(move |ctx| write_ops::expire_leases(ctx, limit)).await
    }

    async fn promote_due(&self, limit: usize) -> Result<Promoted> {
        self.write(move |ctx| write_ops::promote_due(ctx, limit)).await
    }

    fn ready_jobs(
        &self,
        tenant: &str,
        queue: &str,
        stage: Stage,
        limit: usize,
        skip: &HashSet<u64>,
    ) -> Result<Vec<ReadJob>> {
        let txn = self.read()?;
        if host_paused_in(&txn)? || queue_config_in(&txn, tenant, queue)?.is_some_and(|c| c.paused) {
            return Ok(Vec::new());
        }
        let ready = txn.open_table(READY).map_err(internal)?;
        let stored = jobs_table(&txn)?;
        let mut jobs = Vec::with_capacity(limit);
        for entry in ready.range(write_ops::ready_range(tenant, queue, stage.code())).map_err(internal)? {
            let seq = entry.map_err(internal)?.0.value().5;
            if jobs.len() == limit {
                break;
            }
            if !skip.contains(&seq) {
                jobs.extend(judged_job(&stored, seq)?);
            }
        }
        Ok(jobs)
    }

    fn jobs_by_uuid(&self, tenant: &str, job_uuids: &[Uuid]) -> Result<Vec<Option<ReadJob>>> {
        let txn = self.read()?;
        let (uuids, jobs) = (txn.open_table(UUIDS).map_err(internal)?, jobs_table(&txn)?);
        let find = |&job_uuid: &Uuid| match seq_of(&uuids, tenant, job_uuid)? {
            Some(seq) => judged_job(&jobs, seq),
            None => Ok(None),
        };
        job_uuids.iter().map(find).collect()
    }

    fn was_deleted(&self, tenant: &str, job_uuid: Uuid) -> Result<bool> {
        let txn = self.read()?;
        let uuids = txn.open_table(UUIDS).map_err(internal)?;
        Ok(uuids.get((tenant, job_uuid.as_u128())).map_err(internal)?.is_some_and(|v| v.value() == 0))
    }

    fn jobs(&self, tenant: &str, filter: &JobFilter, after: Option<u64>, limit: usize) -> Result<JobPage> {
        let txn = self.read()?;
        let start = after.map_or(0, |s| s + 1);
        // Walk the narrowest index the filter allows, then check the rest on the record.
        let seqs: Box<dyn Iterator<Item = Result<u64>>> = if filter.stuck == Some(true) {
            let t = txn.open_table(STUCK).map_err(internal)?;
            let range = t.range((tenant, start)..=(tenant, u64::MAX)).map_err(internal)?;
            Box::new(range.map(|e| e.map(|(k, _)| k.value().1).map_err(internal)))
        } else if let Some(user) = &filter.user_id {
            let t = txn.open_table(BY_USER).map_err(internal)?;
            let range =
                t.range((tenant, user.as_str(), start)..=(tenant, user.as_str(), u64::MAX)).map_err(internal)?;
            Box::new(range.map(|e| e.map(|(k, _)| k.value().2).map_err(internal)))
        } else if let Some(state) = filter.state {
            let t = txn.open_table(BY_STATE).map_err(internal)?;
            let range = t.range((tenant, state.code(), start)..=(tenant, state.code(), u64::MAX)).map_err(internal)?;
            Box::new(range.map(|e| e.map(|(k, _)| k.value().2).map_err(internal)))
        } else {
            let t = txn.open_table(BY_TENANT).map_err(internal)?;
            let range = t.range((tenant, start)..=(tenant, u64::MAX)).map_err(internal)?;
            Box::new(range.map(|e| e.map(|(k, _)| k.value().1).map_err(internal)))
        };
        let stored = jobs_table(&txn)?;
        let mut jobs = Vec::new();
        let mut last = None;
        for seq in seqs {
            let seq = seq?;
            last = Some(seq);
            if let Some(job) = job_by_seq(&stored, seq)?
                && filter.admits(&job)
            {
                jobs.push(job);
                if jobs.len() == limit {
                    break;
                }
            }
        }
        let next_cursor = if jobs.len() == limit { last } else { None };
        Ok(JobPage { jobs, next_cursor })
    }

    fn history(&self, tenant: &str, job_uuid: Uuid) -> Result<Option<Vec<HistoryEvent>>> {
        let txn = self.read()?;
        let Some(seq) = seq_of(&txn.open_table(UUIDS).map_err(internal)?, tenant, job_uuid)? else { return Ok(None) };
        let t = txn.open_table(HISTORY).map_err(internal)?;
        let events = t
            .range((seq, 0)..=(seq, u32::MAX))
            .map_err(internal)?
            .map(|e| e.map_err(internal).and_then(|(_, v)| decode(v.value())))
            .collect::<Result<_>>()?;
        Ok(Some(events))
    }

    fn earliest_due(&self) -> Result<Option<DateTime<Utc>>> {
        first_time(&*self.read()?, DUE)
    }

    fn export(&self, dir: &Dir, name: &str) -> Result<Vec<(JobState, u64)>> {
        super::export::export(&self.db.load_full(), dir, name)
    }

    fn read_snapshot(&self, dir: &Dir, name: &str, scope: &RestoreScope) -> Result<Snapshot> {
        super::export::read_snapshot(dir, name, scope)
    }

    async fn restore(&self, snapshot: Snapshot, scope: RestoreScope, actor: Actor) -> Result<Vec<Change>> {
        self.write(move |ctx| super::restore_ops::restore(ctx, snapshot, &scope, &actor)).await
    }

    async fn put_alert(&self, alert: Alert, event: AlertEvent) -> Result<()> {
        self.write(move |ctx| plugin_ops::put_alert(ctx, &alert, &event)).await
    }

    fn alerts(&self, tenant: Option<&str>) -> Result<Vec<Alert>> {
        let txn = self.read()?;
        let t = txn.open_table(ALERTS).map_err(internal)?;
        match tenant {
            Some(tenant) => decode_while(t.range((tenant, "")..).map_err(internal)?, |k| k.0 == tenant),
            None => decode_while(t.range::<(&str, &str)>(..).map_err(internal)?, |_| true),
        }
    }

    fn alert_events(&self, tenant: &str) -> Result<Vec<AlertEvent>> {
        let txn = self.read()?;
        let t = txn.open_table(ALERT_EVENTS).map_err(internal)?;
        decode_while(t.range((tenant, 0)..=(tenant, u64::MAX)).map_err(internal)?, |_| true)
    }

    fn queue_configs(&self) -> Result<Vec<(String, String, QueueConfig)>> {
        let txn = self.read()?;
        let t = txn.open_table(QUEUES).map_err(internal)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let (tenant, queue) = k.value();
            out.push((tenant.to_owned(), queue.to_owned(), decode(v.value())?));
        }
        Ok(out)
    }

    fn oldest_processing(&self, tenant: &str, queue: &str) -> Result<Option<DateTime<Utc>>> {
        let txn = self.read()?;
        let t = txn.open_table(BY_STATE).map_err(internal)?;
        let code = JobState::Processing.code();
        let stored = jobs_table(&txn)?;
        let mut oldest: Option<DateTime<Utc>> = None;
        for entry in t.range((tenant, code, 0)..=(tenant, code, u64::MAX)).map_err(internal)? {
            let seq = entry.map_err(internal)?.0.value().2;
            if let Some(job) = job_by_seq(&stored, seq)?
                && job.queue == queue
                && let Some(lease) = &job.lease
            {
                oldest = Some(oldest.map_or(lease.acquired_at, |o| o.min(lease.acquired_at)));
            }
        }
        Ok(oldest)
    }

    fn counts(&self) -> Result<Vec<CountRow>> {
        let txn = self.read()?;
        let t = txn.open_table(COUNTS).map_err(internal)?;
        let mut rows = Vec::new();
        for entry in t.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let (tenant, queue, code) = k.value();
            let state = JobState::ALL.into_iter().find(|s| s.code() == code);
            if state.is_none() && code != write_ops::STUCK_COUNT {
                continue;
            }
            rows.push(CountRow { tenant: tenant.to_owned(), queue: queue.to_owned(), state, jobs: v.value() });
        }
        Ok(rows)
    }

    fn oldest_ready(&self, tenant: &str, queue: &str) -> Result<Option<DateTime<Utc>>> {
        let txn = self.read()?;
        let t = txn.open_table(READY).map_err(internal)?;
        let stage = Stage::Stable.code();
        // The index orders by priority first: the oldest ready job is the oldest
        // head among the priority levels, one look per level.
        let mut oldest: Option<u64> = None;
        let mut level = 0u32;
        loop {
            let mut range = t
                .range((tenant, queue, stage, level, 0, 0)..=(tenant, queue, stage, u32::MAX, u64::MAX, u64::MAX))
                .map_err(internal)?;
            let Some(entry) = range.next() else { break };
            let (_, _, _, prio, at, _) = entry.map_err(internal)?.0.value();
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
            match prio.checked_add(1) {
                Some(next) => level = next,
                None => break,
            }
        }
        Ok(oldest.map(|ms| ms_to_time(ms as i64)))
    }

    fn breakers(&self) -> Result<Vec<(String, String, Breaker)>> {
        let txn = self.read()?;
        let t = txn.open_table(BREAKERS).map_err(internal)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let (tenant, queue, _) = k.value();
            out.push((tenant.to_owned(), queue.to_owned(), decode(v.value())?));
        }
        Ok(out)
    }

    async fn detect_stuck(&self, limit: usize) -> Result<Vec<Change>> {
        self.write(move |ctx| write_ops::detect_stuck(ctx, limit)).await
    }

    fn earliest_stuck(&self) -> Result<Option<DateTime<Utc>>> {
        first_time(&*self.read()?, STUCK_DUE)
    }

    fn earliest_lease_expiry(&self) -> Result<Option<DateTime<Utc>>> {
        first_time(&*self.read()?, LEASES)
    }

    fn queue(&self, tenant: &str, name: &str) -> Result<Option<QueueView>> {
        let txn = self.read()?;
        let Some(config) = queue_config_in(&txn, tenant, name)? else { return Ok(None) };
        let breakers_t = txn.open_table(BREAKERS).map_err(internal)?;
        let mut breakers = Vec::new();
        for entry in breakers_t.range((tenant, name, "")..).map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let (t, q, _) = k.value();
            if t != tenant || q != name {
                break;
            }
            breakers.push(decode(v.value())?);
        }
        let counts_t = txn.open_table(COUNTS).map_err(internal)?;
        let mut counts = Vec::new();
        for state in JobState::ALL {
            let n = counts_t.get((tenant, name, state.code())).map_err(internal)?.map(|v| v.value()).unwrap_or(0);
            counts.push((state, n));
        }
        let stuck =
            counts_t.get((tenant, name, write_ops::STUCK_COUNT)).map_err(internal)?.map(|v| v.value()).unwrap_or(0);
        Ok(Some(QueueView { tenant: tenant.to_owned(), name: name.to_owned(), config, breakers, counts, stuck }))
    }

    async fn put_queue_config(
        &self,
        tenant: &str,
        name: &str,
        config: QueueConfig,
        max_queues: Option<u64>,
    ) -> Result<QueueConfig> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.write(move |ctx| write_ops::put_queue_config(ctx, &tenant, &name, &config, max_queues).map(|()| config))
            .await
    }

    async fn reset_breakers(&self, tenant: &str, name: &str, actor: Actor) -> Result<Vec<Change>> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.write(move |ctx| write_ops::reset_breakers(ctx, &tenant, &name, &actor)).await
    }

    async fn create_tenant(&self, tenant: Tenant) -> Result<Tenant> {
        self.write(move |ctx| write_ops::create_tenant(ctx, &tenant).map(|()| tenant)).await
    }

    fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let txn = self.read()?;
        let t = txn.open_table(TENANTS).map_err(internal)?;
        match t.get(id).map_err(internal)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn tenants(&self) -> Result<Vec<Tenant>> {
        let txn = self.read()?;
        let t = txn.open_table(TENANTS).map_err(internal)?;
        t.iter().map_err(internal)?.map(|e| e.map_err(internal).and_then(|(_, v)| decode(v.value()))).collect()
    }

    async fn create_key(&self, key: ApiKey) -> Result<ApiKey> {
        self.write(move |ctx| write_ops::create_key(ctx, &key).map(|()| key)).await
    }

    async fn revoke_key(&self, id: &str, tenant: Option<&str>) -> Result<ApiKey> {
        let (id, tenant) = (id.to_owned(), tenant.map(str::to_owned));
        self.write(move |ctx| write_ops::revoke_key(ctx, &id, tenant.as_deref())).await
    }

    fn keys(&self) -> Result<Vec<ApiKey>> {
        let txn = self.read()?;
        let t = txn.open_table(KEYS).map_err(internal)?;
        t.iter().map_err(internal)?.map(|e| e.map_err(internal).and_then(|(_, v)| decode(v.value()))).collect()
    }

    async fn note(&self, requests: Vec<NoteRequest>) -> Result<()> {
        self.write(move |ctx| {
            for request in requests {
                // A job deleted meanwhile has no history to add to.
                match write_ops::note(ctx, request) {
                    Err(OpError::Refused(_)) | Ok(()) => {}
                    Err(storage) => return Err(storage),
                }
            }
            Ok(())
        })
        .await
    }

    async fn put_plugin(
        &self,
        plugin: Plugin,
        component: Vec<u8>,
        artifact: Vec<u8>,
        caps: PluginCaps,
    ) -> Result<(Plugin, bool)> {
        self.write(move |ctx| plugin_ops::put_plugin(ctx, plugin, &component, &artifact, &caps)).await
    }

    async fn replace_artifact(&self, tenant: &str, digest: &str, artifact: Vec<u8>) -> Result<()> {
        let (tenant, digest) = (tenant.to_owned(), digest.to_owned());
        self.write(move |ctx| plugin_ops::replace_artifact(ctx, &tenant, &digest, &artifact)).await
    }

    async fn delete_plugin(&self, tenant: &str, digest: &str) -> Result<Plugin> {
        let (tenant, digest) = (tenant.to_owned(), digest.to_owned());
        self.write(move |ctx| plugin_ops::delete_plugin(ctx, &tenant, &digest)).await
    }

    fn plugin(&self, tenant: &str, digest: &str) -> Result<Option<Plugin>> {
        let txn = self.read()?;
        let t = txn.open_table(PLUGINS).map_err(internal)?;
        let value = t.get((tenant, digest)).map_err(internal)?;
        value.map(|v| decode(v.value())).transpose()
    }

    fn plugins(&self, tenant: Option<&str>) -> Result<Vec<Plugin>> {
        let txn = self.read()?;
        let t = txn.open_table(PLUGINS).map_err(internal)?;
        match tenant {
            Some(tenant) => decode_while(t.range((tenant, "")..).map_err(internal)?, |k| k.0 == tenant),
            None => decode_while(t.range::<(&str, &str)>(..).map_err(internal)?, |_| true),
        }
    }

    fn plugin_component(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.read()?;
        let t = txn.open_table(PLUGIN_COMPONENTS).map_err(internal)?;
        Ok(t.get((tenant, digest)).map_err(internal)?.map(|v| v.value().to_vec()))
    }

    fn plugin_artifact(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.read()?;
        let t = txn.open_table(PLUGIN_ARTIFACTS).map_err(internal)?;
        Ok(t.get((tenant, digest)).map_err(internal)?.map(|v| v.value().to_vec()))
    }

    async fn put_binding(&self, binding: Binding, max_bindings: Option<u64>) -> Result<Binding> {
        self.write(move |ctx| plugin_ops::put_binding(ctx, binding, max_bindings)).await
    }

    async fn delete_binding(&self, tenant: &str, queue: &str, kind: PluginKind, stage: Stage) -> Result<Binding> {
        let (tenant, queue) = (tenant.to_owned(), queue.to_owned());
        self.write(move |ctx| plugin_ops::delete_binding(ctx, &tenant, &queue, kind, stage)).await
    }

    fn bindings(&self, tenant: Option<&str>) -> Result<Vec<Binding>> {
        let txn = self.read()?;
        let t = txn.open_table(BINDINGS).map_err(internal)?;
        match tenant {
            Some(tenant) => decode_while(t.range((tenant, "", "", 0u8)..).map_err(internal)?, |k| k.0 == tenant),
            None => decode_while(t.range::<(&str, &str, &str, u8)>(..).map_err(internal)?, |_| true),
        }
    }

    fn tenant_config(&self, tenant: &str) -> Result<TenantConfig> {
        self.configs.tenant_config(tenant, || {
            let txn = self.read()?;
            let t = txn.open_table(TENANT_CONFIG).map_err(internal)?;
            let value = t.get(tenant).map_err(internal)?;
            Ok(value.map(|v| decode(v.value())).transpose()?.unwrap_or_default())
        })
    }

    async fn put_tenant_config(&self, tenant: &str, config: TenantConfig) -> Result<TenantConfig> {
        let tenant = tenant.to_owned();
        self.write(move |ctx| plugin_ops::put_tenant_config(ctx, &tenant, &config).map(|()| config)).await
    }

    fn user_config(&self, tenant: &str, user_id: &str) -> Result<Option<UserConfig>> {
        self.configs.user_config(tenant, user_id, || {
            let txn = self.read()?;
            let t = txn.open_table(USER_CONFIG).map_err(internal)?;
            let value = t.get((tenant, user_id)).map_err(internal)?;
            value.map(|v| decode(v.value())).transpose()
        })
    }

    async fn put_user_config(&self, tenant: &str, user_id: &str, config: UserConfig) -> Result<UserConfig> {
        let (tenant, user_id) = (tenant.to_owned(), user_id.to_owned());
        self.write(move |ctx| plugin_ops::put_user_config(ctx, &tenant, &user_id, &config).map(|()| config)).await
    }

    fn user_key(&self, tenant: &str, user_id: &str) -> Result<Option<[u8; 32]>> {
        let txn = self.read()?;
        let t = txn.open_table(USER_KEYS).map_err(internal)?;
        Ok(t.get((tenant, user_id)).map_err(internal)?.and_then(|v| v.value().try_into().ok()))
    }

    fn limits(&self, tenant: &str) -> Result<Option<Limits>> {
        self.configs.limits(tenant, || {
            let txn = self.read()?;
            let t = txn.open_table(LIMITS).map_err(internal)?;
            let value = t.get(tenant).map_err(internal)?;
            value.map(|v| decode(v.value())).transpose()
        })
    }

    async fn put_limits(&self, tenant: &str, limits: Limits) -> Result<Limits> {
        let tenant = tenant.to_owned();
        self.write(move |ctx| {
            if ctx.tables.tenants.get(tenant.as_str())?.is_none() {
                return Err(Error::not_found("tenant").into());
            }
            ctx.tables.limits.insert(tenant.as_str(), super::codec::encode(&limits).as_slice())?;
            Ok(limits)
        })
        .await
    }

    fn pending(&self, tenant: &str, user_id: Option<&str>) -> Result<u64> {
        let txn = self.read()?;
        let value = match user_id {
            Some(user) => txn.open_table(USER_PENDING).map_err(internal)?.get((tenant, user)).map_err(internal)?,
            None => txn.open_table(TENANT_PENDING).map_err(internal)?.get(tenant).map_err(internal)?,
        };
        Ok(value.map(|v| v.value()).unwrap_or(0))
    }

    fn usage(&self, tenant: &str) -> Result<Usage> {
        let txn = self.read()?;
        let queues = txn.open_table(QUEUES).map_err(internal)?;
        let queue_count = count_while(queues.range((tenant, "")..).map_err(internal)?, |k| k.0 == tenant)?;
        let bindings = txn.open_table(BINDINGS).map_err(internal)?;
        let binding_count = count_while(bindings.range((tenant, "", "", 0u8)..).map_err(internal)?, |k| k.0 == tenant)?;
        let plugins = self.plugins(Some(tenant))?;
        Ok(Usage {
            pending: self.pending(tenant, None)?,
            queues: queue_count,
            plugins: plugins.len() as u64,
            plugin_bytes: plugins.iter().map(|p| p.size).sum(),
            bindings: binding_count,
        })
    }

    async fn set_job_hold(
        &self,
        tenant: &str,
        job_uuid: Uuid,
        hold: bool,
        reason: Option<String>,
        actor: Actor,
    ) -> Result<Job> {
        let tenant = tenant.to_owned();
        self.write(move |ctx| privacy_ops::set_job_hold(ctx, &tenant, job_uuid, hold, reason, &actor)).await
    }

    async fn set_user_hold(
        &self,
        tenant: &str,
        user_id: &str,
        hold: Option<UserHold>,
        actor: Actor,
    ) -> Result<(UserHold, u64)> {
        let (tenant, user_id) = (tenant.to_owned(), user_id.to_owned());
        self.write(move |ctx| privacy_ops::set_user_hold(ctx, &tenant, &user_id, hold, &actor)).await
    }

    fn user_holds(&self, tenant: &str) -> Result<Vec<UserHold>> {
        let txn = self.read()?;
        let t = txn.open_table(USER_HOLDS).map_err(internal)?;
        decode_while(t.range((tenant, "")..).map_err(internal)?, |k| k.0 == tenant)
    }

    fn held_jobs(&self, tenant: &str) -> Result<Vec<Job>> {
        let txn = self.read()?;
        let held = txn.open_table(HELD).map_err(internal)?;
        let stored = jobs_table(&txn)?;
        let mut jobs = Vec::new();
        for entry in held.range((tenant, 0)..=(tenant, u64::MAX)).map_err(internal)? {
            let seq = entry.map_err(internal)?.0.value().1;
            jobs.extend(job_by_seq(&stored, seq)?);
        }
        Ok(jobs)
    }

    async fn delete_expired(&self, day_ms: u64, limit: usize) -> Result<Vec<(String, u64)>> {
        self.write(move |ctx| privacy_ops::delete_expired(ctx, day_ms, limit)).await
    }

    async fn delete_user(&self, tenant: &str, user_id: &str, actor: Actor) -> Result<(Receipt, Vec<[u8; 32]>)> {
        let (tenant, user_id) = (tenant.to_owned(), user_id.to_owned());
        self.write(move |ctx| privacy_ops::delete_user(ctx, &tenant, &user_id, &actor)).await
    }

    fn receipts(&self, tenant: &str) -> Result<Vec<Receipt>> {
        let txn = self.read()?;
        let t = txn.open_table(RECEIPTS).map_err(internal)?;
        decode_while(t.range((tenant, "")..).map_err(internal)?, |k| k.0 == tenant)
    }

    fn receipt(&self, tenant: &str, id: &str) -> Result<Option<Receipt>> {
        let txn = self.read()?;
        let t = txn.open_table(RECEIPTS).map_err(internal)?;
        let value = t.get((tenant, id)).map_err(internal)?;
        value.map(|v| decode(v.value())).transpose()
    }

    fn pending_erasures(&self) -> Result<Vec<PendingErasure>> {
        let txn = self.read()?;
        let t = txn.open_table(PENDING_ERASURES).map_err(internal)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let subject = <[u8; 32]>::try_from(v.value()).map_err(|_| Error::internal("bad ledger hash"))?;
            out.push(PendingErasure { tenant: k.value().0.to_owned(), receipt: k.value().1.to_owned(), subject });
        }
        Ok(out)
    }

    fn scrub_checkpoint(
        &self,
        dir: &Dir,
        name: &str,
        subjects: &[PendingErasure],
    ) -> Result<Option<Vec<(JobState, u64)>>> {
        let txn = self.read()?;
        let secrets = txn.open_table(SECRETS).map_err(internal)?;
        let Some(secret) = secrets.get("ledger").map_err(internal)?.and_then(|v| <[u8; 32]>::try_from(v.value()).ok())
        else {
            return Ok(None);
        };
        super::export::scrub(dir, name, &secret, subjects)
    }

    async fn rewrite_file(&self) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let (dir, name, cache_bytes) = (file.dir.try_clone().map_err(internal)?, file.name.clone(), file.cache_bytes);
        let syncs = self.syncs.clone();
        self.writer
            .replace(move |db| {
                super::export::export(db, &dir, &name)?;
                open_file(&dir, &name, cache_bytes, syncs).map_err(internal)
            })
            .await
    }

    async fn complete_erasures(&self, done: Vec<PendingErasure>, checkpoints: u64) -> Result<()> {
        self.write(move |ctx| privacy_ops::complete_erasures(ctx, &done, checkpoints)).await
    }

    async fn audit(&self, action: &str, actor: Actor, tenant: Option<String>, detail: serde_json::Value) -> Result<()> {
        let action = action.to_owned();
        self.write(move |ctx| privacy_ops::audit(ctx.tables, ctx.now, &action, &actor, tenant.as_deref(), detail)).await
    }

    fn audit_events(&self, tenant: Option<&str>, after: u64, limit: usize) -> Result<AuditPage> {
        let txn = self.read()?;
        let t = txn.open_table(AUDIT).map_err(internal)?;
        let mut events = Vec::new();
        let mut next_cursor = None;
        for entry in t.range(after.saturating_add(1)..).map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let event: AuditEvent = decode(v.value())?;
            if tenant.is_some() && event.tenant.as_deref() != tenant {
                continue;
            }
            if events.len() == limit {
                next_cursor = Some(k.value() - 1);
                break;
            }
            events.push(event);
        }
        Ok(AuditPage { events, next_cursor })
    }

    async fn fold_journal(&self) -> Result<()> {
        self.writer.fold().await
    }

    fn writer_stats(&self) -> WriterStats {
        WriterStats { syncs: self.syncs.load(Ordering::Relaxed), ..self.writer.stats() }
    }
}

fn count_while<K: redb::Key + 'static, V: redb::Value + 'static>(
    range: redb::Range<'_, K, V>,
    keep: impl Fn(K::SelfType<'_>) -> bool,
) -> Result<u64> {
    let mut n = 0;
    for entry in range {
        if !keep(entry.map_err(internal)?.0.value()) {
            break;
        }
        n += 1;
    }
    Ok(n)
}
