//! The single writer and its group commit.
//!
//! redb allows one write transaction at a time, so every write request goes to one
//! thread that takes all requests waiting, applies them in one transaction and
//! makes the batch durable once: its changes are appended to the journal and synced,
//! then redb commits without a sync of its own (see `journal.rs`). Every
//! `FoldPolicy` the batch is instead committed durably by redb and the journal
//! emptied. Each request succeeds or fails on its own; none is answered before the
//! batch that holds it is durable.
//!
//! Invariant for operations: an operation that refuses (returns `OpError::Refused`)
//! has written nothing. Operations check everything first, then write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::journal::Journal;
use super::leased::LeasedSeqs;
use super::tables::Tables;
use crate::error::{Error, Result};
use crate::model::now_ms;

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 2048;

/// Why an operation did not succeed.
pub enum OpError {
    /// The request was refused (bad state, duplicate ...); it wrote nothing.
    Refused(Error),
    /// Storage failed; the whole batch is rolled back.
    Storage(String),
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        OpError::Refused(e)
    }
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for OpError {
            fn from(e: $t) -> Self {
                OpError::Storage(e.to_string())
            }
        }
    )*};
}
storage_errors!(redb::StorageError, redb::TableError, redb::CommitError, redb::TransactionError);

/// What an operation sees: the open tables, the batch's clock and the job sequence.
pub struct WriteCtx<'a, 't> {
    pub tables: &'a mut Tables<'t>,
    pub now: DateTime<Utc>,
    pub next_seq: &'a mut u64,
    /// Where the jobs this writer leased are stored (a hint for lease actions).
    pub leased: &'a mut LeasedSeqs,
}

type Reply = Box<dyn FnOnce(Result<()>) + Send>;
type Op = Box<dyn FnOnce(&mut WriteCtx<'_, '_>) -> Result<Reply, String> + Send>;
/// Builds a new database from the current one (the erasure's rewrite of the file).
type Replace = Box<dyn FnOnce(&Database) -> Result<Database> + Send>;

/// The database the readers and the writer use; the writer swaps it after a rewrite.
pub type SharedDb = Arc<ArcSwap<Database>>;

enum Msg {
    Op(Op),
    Replace(Replace, oneshot::Sender<Result<()>>),
    Fold(oneshot::Sender<Result<()>>),
}

/// When the writer folds the journal into the database file (a durable redb commit,
/// then the journal starts empty). Folding less often writes each hot page once for
/// many batches; folding more often keeps the journal, and the replay after a crash,
/// short.
#[derive(Clone, Debug)]
pub struct FoldPolicy {
    /// Fold once the journal holds this many bytes. Default 64 MiB.
    pub bytes: u64,
    /// Fold at the first batch this long after the last fold. Default 10 s.
    pub interval: Duration,
}

impl Default for FoldPolicy {
    fn default() -> Self {
        FoldPolicy { bytes: 64 << 20, interval: Duration::from_secs(10) }
    }
}

/// The journal and where it stands against the database file.
pub struct Log {
    journal: Journal,
    /// The last batch journaled (or held durably by the file).
    seq: u64,
    folded_at: Instant,
    policy: FoldPolicy,
}

impl Log {
    /// `seq` is the file's `meta.journal_seq` once the journal is replayed into it.
    pub fn new(journal: Journal, seq: u64, policy: FoldPolicy) -> Log {
        Log { journal, seq, folded_at: Instant::now(), policy }
    }

    fn fold_due(&self) -> bool {
        self.journal.len() >= self.policy.bytes
            || (self.journal.len() > 0 && self.folded_at.elapsed() >= self.policy.interval)
    }

    /// The database file durably holds every journaled batch: empty the journal.
    pub fn clear(&mut self) {
        self.folded_at = Instant::now();
        self.journal.clear();
    }

    /// Count and log a fold that began at `started`, then empty the journal.
    fn folded(&mut self, started: Instant, counters: &Counters) {
        let bytes = self.journal.len();
        self.clear();
        counters.folds.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            target: "sluice::store",
            journal_bytes = bytes,
            batch = self.seq,
            duration_ms = started.elapsed().as_millis() as u64,
            "journal folded into the database file"
        );
    }
}

/// Counts of the writer's work, for tests, `/health` and metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WriterStats {
    pub requests: u64,
    /// Batches that changed something, each journaled or folded (a batch whose
    /// requests were all refused writes nothing).
    pub commits: u64,
    /// Durable redb commits that emptied the journal (see `FoldPolicy`).
    pub folds: u64,
    /// fsyncs of the database file and its journal (0 for stores without a file).
    pub syncs: u64,
    pub largest_batch: u64,
    pub queued: u64,
    /// The first storage failure. redb refuses all writes after an I/O error, so
    /// the server stops and a restart recovers from the last durable commit.
    pub failure: Option<String>,
}

#[derive(Default)]
struct Counters {
    /// Bumped after each commit that changed cached configuration (`ConfigCache`).
    config_generation: Arc<AtomicU64>,
    requests: AtomicU64,
    commits: AtomicU64,
    folds: AtomicU64,
    largest_batch: AtomicU64,
    queued: AtomicU64,
    failure: std::sync::Mutex<Option<String>>,
}

impl Counters {
    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Start the writer thread. `next_seq` is the next job sequence number to hand
    /// out; `config_generation` is bumped whenever a batch changes cached configuration.
    pub fn start(db: SharedDb, log: Log, next_seq: u64, config_generation: Arc<AtomicU64>) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters { config_generation, ..Counters::default() });
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("sluice-writer".into())
            .spawn(move || run(db, log, rx, next_seq, thread_counters))
            .expect("spawn writer thread");
        Writer { tx, counters }
    }

    /// Run `op` in the next batch and wait until its commit is durable.
    pub async fn submit<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_, '_>) -> Result<T, OpError> + Send + 'static,
    {
        let (done, wait) = oneshot::channel::<Result<T>>();
        let boxed: Op = Box::new(move |ctx| match op(ctx) {
            Err(OpError::Storage(e)) => Err(e),
            outcome => Ok(Box::new(move |committed: Result<()>| {
                let answer = committed.and_then(|()| match outcome {
                    Ok(v) => Ok(v),
                    Err(OpError::Refused(e)) => Err(e),
                    Err(OpError::Storage(e)) => Err(Error::internal(e)),
                });
                let _ = done.send(answer);
            }) as Reply),
        });
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(Msg::Op(boxed)).map_err(|_| Error::internal("the writer has stopped"))?;
        // A request that never got an answer was lost with a failed batch.
        wait.await.map_err(|_| {
            let reason = self.counters.failure().unwrap_or_else(|| "the writer stopped".into());
            Error::internal(format!("storage failure: {reason}"))
        })?
    }

    /// Between two batches, replace the database with the one `build` makes from it
    /// (no write runs meanwhile); readers move to the new one at their next read.
    pub async fn replace(&self, build: impl FnOnce(&Database) -> Result<Database> + Send + 'static) -> Result<()> {
        self.between_batches(|done| Msg::Replace(Box::new(build), done)).await
    }

    /// Fold the journal into the database file now and wipe it (at shutdown): the
    /// next start then reads an empty journal, not a file of old records.
    pub async fn fold(&self) -> Result<()> {
        self.between_batches(Msg::Fold).await
    }

    /// Send a message the writer handles between two batches, and wait for its answer.
    async fn between_batches(&self, msg: impl FnOnce(oneshot::Sender<Result<()>>) -> Msg) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx.send(msg(done)).map_err(|_| Error::internal("the writer has stopped"))?;
        wait.await.map_err(|_| Error::internal("the writer stopped"))?
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
            folds: self.counters.folds.load(Ordering::Relaxed),
            syncs: 0,
            largest_batch: self.counters.largest_batch.load(Ordering::Relaxed),
            queued: self.counters.queued.load(Ordering::Relaxed),
            // A writer thread that is gone fails readiness like a storage failure.
            failure: self
                .counters
                .failure()
                .or_else(|| self.tx.is_closed().then(|| "the writer thread stopped".to_owned())),
        }
    }
}

fn run(db: SharedDb, mut log: Log, mut rx: mpsc::UnboundedReceiver<Msg>, mut next_seq: u64, counters: Arc<Counters>) {
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    let mut held: Option<Msg> = None;
    let mut leased = LeasedSeqs::default();
    while let Some(msg) = held.take().or_else(|| rx.blocking_recv()) {
        match msg {
            Msg::Replace(build, done) => {
                let current = db.load_full();
                let outcome = fold(&current, &mut log, &counters)
                    .and_then(|()| wipe(&mut log, &counters))
                    .and_then(|()| build(&current))
                    .map(|new| db.store(Arc::new(new)));
                let _ = done.send(outcome);
                continue;
            }
            Msg::Fold(done) => {
                let _ = done.send(fold(&db.load(), &mut log, &counters).and_then(|()| wipe(&mut log, &counters)));
                continue;
            }
            Msg::Op(first) => batch.push(first),
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Op(op)) => batch.push(op),
                Ok(other) => {
                    held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let size = batch.len() as u64;
        counters.queued.fetch_sub(size, Ordering::Relaxed);
        if counters.failure().is_some() {
            // After a storage failure the file and the journal may disagree with what
            // this thread has applied: write nothing more; a restart recovers.
            batch.clear();
            continue;
        }
        counters.requests.fetch_add(size, Ordering::Relaxed);
        counters.largest_batch.fetch_max(size, Ordering::Relaxed);
        crate::metrics::batch(size as usize);
        let seq_before = next_seq;
        match apply_batch(&db.load(), &mut log, &counters, batch.drain(..), &mut next_seq, &mut leased) {
            Ok(replies) => {
                for reply in replies {
                    reply(Ok(()));
                }
            }
            Err(BatchFailure { replies, reason, fatal }) => {
                next_seq = seq_before;
                tracing::error!(target: "sluice::store", error = %reason, fatal, "write batch rolled back");
                if fatal {
                    fail(&counters, &reason);
                }
                for reply in replies {
                    reply(Err(Error::internal(format!("storage failure: {reason}"))));
                }
            }
        }
    }
}

fn fail(counters: &Counters, reason: &str) {
    counters.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| reason.to_owned());
}

/// Fold the journal into the database file: a durable commit, then an empty journal.
fn fold(db: &Database, log: &mut Log, counters: &Counters) -> Result<()> {
    if let Some(reason) = counters.failure() {
        return Err(Error::internal(format!("storage failure: {reason}")));
    }
    let started = Instant::now();
    let outcome = (|| -> Result<(), String> {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(super::tables::META)
            .and_then(|mut meta| meta.insert("journal_seq", log.seq).map(drop).map_err(Into::into))
            .map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        log.folded(started, counters);
        Ok(())
    })();
    outcome.map_err(|reason| {
        fail(counters, &reason);
        Error::internal(format!("storage failure: {reason}"))
    })
}

/// Wipe the folded journal: before the file is rewritten (an erasure), since its
/// old records may hold the erased data, and at shutdown.
fn wipe(log: &mut Log, counters: &Counters) -> Result<()> {
    log.journal.wipe().map_err(|e| {
        fail(counters, &e.to_string());
        Error::internal(format!("storage failure: {e}"))
    })
}

/// A batch that did not commit: every request in it is answered with `reason`.
struct BatchFailure {
    replies: Vec<Reply>,
    reason: String,
    /// Storage failed (redb refuses further writes): the host must restart. A
    /// panicking operation is not fatal: its batch is rolled back and the writer goes on.
    fatal: bool,
}

/// Apply a batch in one transaction and make it durable (journal, or a fold). On
/// failure every request of the batch is answered with the error (the replies
/// gathered so far are handed back).
fn apply_batch(
    db: &Database,
    log: &mut Log,
    counters: &Counters,
    ops: impl Iterator<Item = Op>,
    next_seq: &mut u64,
    leased: &mut LeasedSeqs,
) -> Result<Vec<Reply>, BatchFailure> {
    let mut replies: Vec<Reply> = Vec::new();
    let mut ops = ops.peekable();
    let storage = |replies, e: &dyn std::fmt::Display| BatchFailure { replies, reason: e.to_string(), fatal: true };
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return Err(storage(drain_failed(ops), &e)),
    };
    let fold = log.fold_due();
    let seq_before = *next_seq;
    let outcome = {
        let mut tables = Tables::open(&txn);
        let mut ctx = WriteCtx { tables: &mut tables, now: now_ms(), next_seq, leased };
        let mut failure = None;
        for op in ops.by_ref() {
            match guarded(|| op(&mut ctx)).and_then(|done| done.map_err(|e| (e, true))) {
                Ok(reply) => replies.push(reply),
                Err(failed) => {
                    failure = Some(failed);
                    break;
                }
            }
        }
        let seq = *ctx.next_seq;
        let finish = || -> Result<Option<(Vec<u8>, bool)>, redb::StorageError> {
            tables.flush()?;
            if seq != seq_before {
                tables.meta.insert("next_seq", seq)?;
            }
            if !tables.changed() {
                return Ok(None);
            }
            tables.meta.insert("journal_seq", if fold { log.seq } else { log.seq + 1 })?;
            Ok(Some((tables.take_changes(), tables.config_changed())))
        };
        match failure {
            Some(failed) => Err(failed),
            None => guarded(finish).and_then(|finished| finished.map_err(|e| (e.to_string(), true))),
        }
    };
    let changes = match outcome {
        Ok(changes) => changes,
        Err((reason, fatal)) => {
            // The failing op and those after it never produced a reply: answer them too.
            replies.extend(drain_failed(ops));
            return Err(BatchFailure { replies, reason, fatal });
        }
    };
    let Some((changes, config_changed)) = changes else {
        // Every request was refused or only read: nothing to make durable.
        let _ = txn.abort();
        return Ok(replies);
    };
    if fold {
        let started = Instant::now();
        let _ = txn.set_durability(Durability::Immediate);
        txn.commit().map_err(|e| storage(std::mem::take(&mut replies), &e))?;
        log.folded(started, counters);
        counters.commits.fetch_add(1, Ordering::Relaxed);
    } else {
        let _ = txn.set_durability(Durability::None);
        log.journal.append(log.seq + 1, &changes).map_err(|e| storage(std::mem::take(&mut replies), &e))?;
        log.seq += 1;
        // The batch is durable now; a failure to commit it is still fatal, since the
        // journal holds it and the file does not.
        txn.commit().map_err(|e| storage(std::mem::take(&mut replies), &e))?;
        counters.commits.fetch_add(1, Ordering::Relaxed);
    }
    if config_changed {
        // After the commit: a reader that sees the new generation reads the new values.
        counters.config_generation.fetch_add(1, Ordering::Release);
    }
    Ok(replies)
}

/// Run part of a batch, catching a panic: a table that failed to open is a storage
/// failure (fatal); any other panic rolls back only this batch.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, (String, bool)> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        match payload.downcast::<super::tables::TableOpenFailed>() {
            Ok(failed) => (failed.0, true),
            Err(_) => ("internal error: a write operation panicked".to_owned(), false),
        }
    })
}

/// Ops that will not run still owe their caller an answer: dropping an op drops
/// its reply channel, and the caller then reports the writer's recorded failure.
fn drain_failed(ops: impl Iterator<Item = Op>) -> Vec<Reply> {
    ops.for_each(drop);
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::TableOpenFailed;

    #[test]
    fn a_table_that_fails_to_open_is_a_storage_failure_and_any_other_panic_is_not() {
        assert_eq!(guarded(|| 7).ok(), Some(7));
        let failed = guarded(|| std::panic::panic_any(TableOpenFailed("opening table jobs: I/O error".into())));
        assert_eq!(failed.err(), Some(("opening table jobs: I/O error".to_owned(), true)));
        let panicked = guarded(|| panic!("a bug"));
        assert_eq!(panicked.err(), Some(("internal error: a write operation panicked".to_owned(), false)));
    }
}
