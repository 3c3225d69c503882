//! Power loss through the real group-commit writer.
//!
//! A `Disk` holds the store's two files, the database and its journal, each as two
//! images: the volatile one (what the OS cache holds) and the durable one (what
//! survived on disk). Writes and `set_len` only change the volatile image; a file's
//! `sync_data` makes everything written to that file so far durable. Every mutating
//! operation (write, set_len, sync) on either file is counted; at a seeded operation
//! number the power goes: that operation and every later one (reads too) fails, and
//! nothing more reaches the durable images.
//!
//! For each seed a workload of concurrent inserts, claims (half of them judged first,
//! as under a validator, some picks vetoed), completes, fails, releases, duplicate
//! completes and scheduler passes runs from several tokio tasks through
//! `RedbStore` (so the writer really batches); the client remembers every answer it got
//! before the crash. Then redb's `check_integrity` runs on the durable image, and the
//! store is reopened on it and checked against what was acknowledged and submitted
//! (`verify`).
//!
//! Crash plans (`plan_of`): two seeds in three follow the model above exactly, crashing
//! at a uniformly chosen operation or at a uniformly chosen sync; the third also lets a
//! random part (50 % or all) of the unsynced writes reach the disk, as a disk cache
//! flushing in any order would. A negative control then runs a disk whose fsync lies and
//! requires the checks to notice lost acknowledged work.
//!
//! One case is tolerated and counted, not failed: power lost between redb's two fsyncs
//! while it creates a new file leaves a file redb refuses ("not a redb database"); no
//! request can have been answered then. `POWER_LOSS_STRICT_CREATE=1` fails it instead.
//!
//! Replay one case: `POWER_LOSS_SEED=<seed>` (with `POWER_LOSS_CRASH_AT=<op>` or
//! `POWER_LOSS_CRASH_AT_SYNC=<n>` to override the crash point); `POWER_LOSS_SEEDS=<n>`
//! changes the number of seeds, `POWER_LOSS_VERBOSE=1` prints one line per seed.
//! Batching depends on thread timing, so a seed fixes the workload but not the exact
//! batch boundaries, and its crash point is scaled by the calibration run: a failure
//! prints its plan, replay it with the seed and the crash point it names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{Duration, Utc};
use redb::StorageBackend;
use serde_json::Map;
use serde_json::value::RawValue;
use sluice_host::error::Code;
use sluice_host::model::{Actor, Job, JobState, Judgement, PluginKind, QueueConfig, Stage, Tenant};
use sluice_host::store::{
    Change, ClaimRequest, Command, Failure, JobFilter, JudgedPick, NewJob, RedbStore, Store, StoreOptions,
    TransitionRequest,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------
// Deterministic randomness

/// splitmix64: small, deterministic, good enough to pick workloads and crash points.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5151_1ce0_dead_beef)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_u128(((self.next() as u128) << 64) | self.next() as u128)
    }
}

// ---------------------------------------------------------------------------------
// The backend that loses power

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Write,
    SetLen,
    Sync,
}

#[derive(Clone, Copy, Debug)]
enum Crash {
    /// The power went at this operation (1-based), of this kind.
    AtOp(u64, OpKind),
    /// The workload finished first; the power was cut with the store idle.
    AfterWorkload,
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Crash::AtOp(n, kind) => write!(f, "power lost at op {n} ({kind:?})"),
            Crash::AfterWorkload => write!(f, "power cut after the workload"),
        }
    }
}

/// When the power goes.
#[derive(Clone, Copy, Debug, Default)]
struct CrashPlan {
    /// At this mutating operation (1-based) ...
    at_op: Option<u64>,
    /// ... or at this sync (1-based), whichever comes first.
    at_sync: Option<u64>,
    /// `None`: no unsynced write reaches the disk (the model of the brief).
    /// `Some((seed, percent))`: each unsynced write or set_len independently reaches it
    /// (whole, in order) with this chance, as a disk that flushes its cache in any order
    /// would do; at 100 % the crashing sync did its work but never returned.
    torn: Option<(u64, u64)>,
    /// Negative control only: every second sync returns Ok without making anything
    /// durable (a disk that lies about fsync), so acknowledged work can be lost.
    lying_sync: bool,
    /// Fold the journal into the database file whenever it holds this many bytes
    /// (`None`: the default policy, which a short workload never reaches).
    fold_bytes: Option<u64>,
}

enum Mutation {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

fn apply(image: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if image.len() < end {
                image.resize(end, 0); // a write past the end extends the file
            }
            image[start..end].copy_from_slice(data);
        }
        Mutation::SetLen(len) => image.resize(*len as usize, 0),
    }
}

/// The two files of a store: the database and its journal.
const FILES: usize = 2;
const DATABASE: usize = 0;
const JOURNAL: usize = 1;

#[derive(Default)]
struct Disk {
    volatile: [Vec<u8>; FILES],
    durable: [Vec<u8>; FILES],
    /// Mutations since the last sync of their file, in order: a sync replays that
    /// file's onto `durable` (cheaper than copying the whole volatile image every time).
    unsynced: Vec<(usize, Mutation)>,
    /// Mutating operations attempted so far (writes, set_len, syncs), on both files.
    ops: u64,
    writes: u64,
    syncs: u64,
    /// Unsynced mutations that reached the disk anyway (torn plan).
    torn_applied: u64,
    plan: CrashPlan,
    crashed: Option<Crash>,
}

fn power_off() -> io::Error {
    io::Error::other("power lost")
}

impl Disk {
    fn from_images(images: [Vec<u8>; FILES]) -> Disk {
        Disk { volatile: images.clone(), durable: images, ..Disk::default() }
    }

    /// Account for one mutating operation; fail it if the power is (now) off.
    fn mutate(&mut self, kind: OpKind) -> io::Result<()> {
        if self.crashed.is_some() {
            return Err(power_off());
        }
        self.ops += 1;
        let at_sync = kind == OpKind::Sync && self.plan.at_sync == Some(self.syncs + 1);
        if self.plan.at_op == Some(self.ops) || at_sync {
            self.crashed = Some(Crash::AtOp(self.ops, kind));
            self.lose_unsynced();
            return Err(power_off());
        }
        match kind {
            OpKind::Write => self.writes += 1,
            OpKind::Sync => self.syncs += 1,
            OpKind::SetLen => {}
        }
        Ok(())
    }

    fn cut_power(&mut self) {
        if self.crashed.is_none() {
            self.crashed = Some(Crash::AfterWorkload);
            self.lose_unsynced();
        }
    }

    /// What was written but not synced: lost, or (torn plan) partly on the disk.
    fn lose_unsynced(&mut self) {
        let unsynced = std::mem::take(&mut self.unsynced);
        if let Some((seed, percent)) = self.plan.torn {
            let mut rng = Rng::new(seed);
            for (file, m) in &unsynced {
                if rng.below(100) < percent {
                    apply(&mut self.durable[*file], m);
                    self.torn_applied += 1;
                }
            }
        }
    }

    /// What survived, database and journal.
    fn durable_images(&self) -> [Vec<u8>; FILES] {
        self.durable.clone()
    }
}

/// One file on the disk that loses power.
#[derive(Clone)]
struct PowerLossBackend {
    disk: Arc<Mutex<Disk>>,
    file: usize,
}

impl PowerLossBackend {
    /// The database file of a new disk.
    fn new(plan: CrashPlan) -> PowerLossBackend {
        PowerLossBackend { disk: Arc::new(Mutex::new(Disk { plan, ..Disk::default() })), file: DATABASE }
    }

    /// A machine booting on what survived: both images are the durable one. Returns
    /// the database file.
    fn from_images(images: [Vec<u8>; FILES]) -> PowerLossBackend {
        PowerLossBackend { disk: Arc::new(Mutex::new(Disk::from_images(images))), file: DATABASE }
    }

    /// The journal beside this database file, on the same disk.
    fn journal(&self) -> PowerLossBackend {
        PowerLossBackend { disk: self.disk.clone(), file: JOURNAL }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Open the store on the database and journal of one disk.
fn open_store(backend: &PowerLossBackend, fold_bytes: Option<u64>) -> anyhow::Result<RedbStore> {
    let mut options = StoreOptions::default();
    if let Some(bytes) = fold_bytes {
        options.fold.bytes = bytes;
    }
    RedbStore::open_backend(backend.clone(), backend.journal(), &options)
}

impl fmt::Debug for PowerLossBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.lock();
        f.debug_struct("PowerLossBackend")
            .field("file", &self.file)
            .field("volatile_len", &d.volatile[self.file].len())
            .field("durable_len", &d.durable[self.file].len())
            .field("ops", &d.ops)
            .field("crashed", &d.crashed)
            .finish()
    }
}

impl StorageBackend for PowerLossBackend {
    fn len(&self) -> Result<u64, io::Error> {
        let d = self.lock();
        if d.crashed.is_some() {
            return Err(power_off());
        }
        Ok(d.volatile[self.file].len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let d = self.lock();
        if d.crashed.is_some() {
            return Err(power_off());
        }
        let start = offset as usize;
        let source = d.volatile[self.file]
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut d = self.lock();
        d.mutate(OpKind::SetLen)?;
        let m = Mutation::SetLen(len);
        apply(&mut d.volatile[self.file], &m);
        d.unsynced.push((self.file, m));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut d = self.lock();
        d.mutate(OpKind::Sync)?;
        if d.plan.lying_sync && d.syncs.is_multiple_of(2) {
            return Ok(());
        }
        let Disk { durable, unsynced, .. } = &mut *d;
        unsynced.retain(|(file, m)| {
            if *file == self.file {
                apply(&mut durable[*file], m);
            }
            *file != self.file
        });
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut d = self.lock();
        d.mutate(OpKind::Write)?;
        let m = Mutation::Write { offset, data: data.to_vec() };
        apply(&mut d.volatile[self.file], &m);
        d.unsynced.push((self.file, m));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The client's record

/// What one acknowledged request said about one job.
#[derive(Clone, Debug)]
struct Ack {
    what: &'static str,
    uuid: Uuid,
    revision: u64,
    state: JobState,
    last_token: u64,
}

impl Ack {
    fn of(what: &'static str, job: &Job) -> Ack {
        Ack { what, uuid: job.job_uuid, revision: job.revision, state: job.state, last_token: job.last_token }
    }
}

/// Everything the client submitted (to recognise phantoms) and everything it was told
/// (to find losses).
#[derive(Default)]
struct Client {
    tenant_acked: bool,
    config_acked: bool,
    /// Every job_uuid ever sent in an insert, answered or not.
    submitted_inserts: HashSet<Uuid>,
    /// Every claim's worker name (unique per request) and its limit.
    submitted_claims: HashMap<String, u32>,
    /// Every (job, token, action) sent as complete / fail / release.
    submitted_finishes: HashSet<(Uuid, u64, &'static str)>,
    submitted_promotes: u32,
    /// Jobs sent as vetoed in a judged claim.
    submitted_vetoes: HashSet<Uuid>,
    acks: Vec<Ack>,
    /// Requests answered Ok (each may acknowledge several jobs) and refusals answered
    /// after their commit.
    acked_requests: u64,
    acked_refusals: u64,
    failed_requests: u64,
    /// Wrong answers seen while the power was on.
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Client>>;

fn client(c: &Shared) -> MutexGuard<'_, Client> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------
// The workload

const QUEUES: [&str; 2] = ["q0", "q1"];

fn actor() -> Actor {
    Actor::Key { key_id: "power-loss".into(), role: "worker".into() }
}

/// One transition, as the service sends a single action.
async fn transition(store: &RedbStore, request: TransitionRequest) -> sluice_host::error::Result<Change> {
    store.transitions(vec![request]).await?.pop().expect("one result per request")
}

/// What a validator's call left for a judged claim (no plugin runs at this level).
fn judgement() -> Judgement {
    Judgement {
        digest: "power-loss".into(),
        kind: PluginKind::Validator,
        outcome: "allowed".into(),
        code: None,
        reason: None,
        fuel: 1,
        duration_us: 1,
        output: String::new(),
    }
}

fn new_job(rng: &mut Rng, n: u64) -> NewJob {
    NewJob {
        job_uuid: rng.uuid(),
        user_id: format!("user-{}", rng.below(3)),
        trace_id: format!("trace-{n}"),
        queue: QUEUES[rng.below(2) as usize].to_owned(),
        kind: "work".into(),
        payload: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
        schema_version: 1,
        priority: rng.below(3) as i32,
        run_at: Utc::now() - Duration::seconds(5),
        max_attempts: None,
        tags: Map::new(),
        stage: Stage::Stable,
        judgement: None,
    }
}

/// A refusal that was decided inside a committed batch (not a storage failure).
fn is_refusal(code: Code) -> bool {
    !matches!(code, Code::Internal)
}

async fn finish(
    store: &RedbStore,
    c: &Shared,
    tenant: &str,
    uuid: Uuid,
    token: u64,
    action: &'static str,
    retryable: bool,
) -> bool {
    let command = match action {
        "complete" => Command::Complete { token },
        "release" => Command::Release { token },
        _ => Command::Fail {
            token,
            failure: Failure {
                code: "E_TEST".into(),
                reason: "simulated failure".into(),
                traceback: None,
                step: None,
                retryable,
            },
        },
    };
    client(c).submitted_finishes.insert((uuid, token, action));
    let request = TransitionRequest {
        tenant: tenant.to_owned(),
        job_uuid: uuid,
        command,
        actor: actor(),
        judged: None,
        judgement: None,
    };
    let result = transition(store, request).await;
    let mut cl = client(c);
    match result {
        Ok(change) => {
            assert_eq!(change.job.job_uuid, uuid);
            cl.acked_requests += 1;
            cl.acks.push(Ack::of(action, &change.job));
            true
        }
        Err(e) if is_refusal(e.code) => {
            cl.acked_refusals += 1;
            false
        }
        Err(_) => {
            cl.failed_requests += 1;
            false
        }
    }
}

async fn worker_task(store: Arc<RedbStore>, c: Shared, tenant: String, budget: Arc<AtomicI64>, mut rng: Rng, id: u64) {
    // Leases this task holds: (job, token).
    let mut held: Vec<(Uuid, u64)> = Vec::new();
    // Completes already acknowledged, to send again with the (now stale) token.
    let mut done: Vec<(Uuid, u64)> = Vec::new();
    let mut n = 0u64;
    while budget.fetch_sub(1, Ordering::SeqCst) > 0 {
        n += 1;
        let r = rng.below(100);
        if !held.is_empty() && r < 45 {
            let (uuid, token) = held.swap_remove(rng.below(held.len() as u64) as usize);
            let p = rng.below(100);
            let (action, retryable) = match p {
                0..55 => ("complete", false),
                55..78 => ("fail", true),
                78..85 => ("fail", false),
                _ => ("release", false),
            };
            let ok = finish(&store, &c, &tenant, uuid, token, action, retryable).await;
            if ok && action == "complete" {
                done.push((uuid, token));
            }
        } else if !done.is_empty() && r < 50 {
            // A duplicate complete: must be refused (LEASE_LOST) and change nothing (the
            // acknowledged complete's revision is checked after recovery).
            let (uuid, token) = done[rng.below(done.len() as u64) as usize];
            if finish(&store, &c, &tenant, uuid, token, "complete", false).await {
                client(&c).violations.push(format!("a second complete of job {uuid} with token {token} was accepted"));
            }
        } else if r < 75 {
            let count = rng.range(1, 3);
            let jobs: Vec<NewJob> = (0..count).map(|i| new_job(&mut rng, id * 1000 + n * 10 + i)).collect();
            client(&c).submitted_inserts.extend(jobs.iter().map(|j| j.job_uuid));
            let result = store.insert(&tenant, jobs, actor(), Default::default()).await;
            let mut cl = client(&c);
            match result {
                Ok(results) => {
                    cl.acked_requests += 1;
                    for r in results {
                        match r {
                            Ok(job) => cl.acks.push(Ack::of("insert", &job)),
                            Err(_) => cl.acked_refusals += 1,
                        }
                    }
                }
                Err(_) => cl.failed_requests += 1,
            }
        } else if r < 93 {
            let limit = rng.range(1, 3) as u32;
            let worker = format!("w{id}-{n}");
            client(&c).submitted_claims.insert(worker.clone(), limit);
            let mut request = ClaimRequest {
                tenant: tenant.clone(),
                queue: QUEUES[rng.below(2) as usize].to_owned(),
                stage: Stage::Stable,
                worker,
                limit,
                lease_ms: 600_000,
                actor: actor(),
                judged: None,
            };
            // Half the claims are judged first, as under a validator: the writer leases
            // the picked jobs still at the revision read, and defers the vetoed ones.
            if rng.below(2) == 0 {
                let Ok(ready) =
                    store.ready_jobs(&tenant, &request.queue, Stage::Stable, limit as usize, &HashSet::new())
                else {
                    client(&c).failed_requests += 1;
                    continue;
                };
                let picks: Vec<JudgedPick> = ready
                    .into_iter()
                    .map(|read| JudgedPick { read, judgement: judgement(), vetoed: rng.below(4) == 0 })
                    .collect();
                let vetoed = picks.iter().filter(|p| p.vetoed).map(|p| p.read.job.job_uuid);
                client(&c).submitted_vetoes.extend(vetoed);
                request.judged = Some(picks);
            }
            let result = store.claim(request).await;
            let mut cl = client(&c);
            match result {
                Ok(claimed) => {
                    cl.acked_requests += 1;
                    for job in claimed.jobs {
                        let token = job.lease.as_ref().map(|l| l.token).expect("a claimed job holds a lease");
                        assert_eq!(token, job.last_token);
                        cl.acks.push(Ack::of("claim", &job));
                        held.push((job.job_uuid, token));
                    }
                    for change in claimed.deferred {
                        cl.acks.push(Ack::of("defer", &change.job));
                    }
                }
                Err(_) => cl.failed_requests += 1,
            }
        } else {
            client(&c).submitted_promotes += 1;
            let result = store.promote_due(100).await;
            let mut cl = client(&c);
            match result {
                Ok(promoted) => {
                    cl.acked_requests += 1;
                    for change in promoted.changes {
                        cl.acks.push(Ack::of("reschedule", &change.job));
                    }
                }
                Err(_) => cl.failed_requests += 1,
            }
        }
    }
}

async fn workload(store: Arc<RedbStore>, c: Shared, tenant: String, budget: u64, mut rng: Rng) {
    let created = store.create_tenant(Tenant { id: tenant.clone(), created_at: Utc::now() }).await;
    match created {
        Ok(_) => {
            let mut cl = client(&c);
            cl.tenant_acked = true;
            cl.acked_requests += 1;
        }
        Err(_) => {
            client(&c).failed_requests += 1;
            return;
        }
    }
    // q0 retries at once (no backoff), so the scheduler pass has work; q1 keeps the defaults.
    let config = QueueConfig { backoff_base_ms: 0, backoff_cap_ms: 0, ..QueueConfig::default() };
    match store.put_queue_config(&tenant, "q0", config, None).await {
        Ok(_) => {
            let mut cl = client(&c);
            cl.config_acked = true;
            cl.acked_requests += 1;
        }
        Err(_) => client(&c).failed_requests += 1,
    }
    let budget = Arc::new(AtomicI64::new(budget as i64));
    let tasks = rng.range(3, 6);
    let handles: Vec<_> = (0..tasks)
        .map(|id| {
            let task_rng = Rng::new(rng.next());
            tokio::spawn(worker_task(store.clone(), c.clone(), tenant.clone(), budget.clone(), task_rng, id))
        })
        .collect();
    for h in handles {
        h.await.expect("workload task panicked");
    }
}

// ---------------------------------------------------------------------------------
// Checking the recovered store

#[derive(Default)]
struct Checked {
    jobs_recovered: u64,
    acks_checked: u64,
    /// Of them, deferrals of vetoed jobs by judged claims.
    defers_checked: u64,
    /// Jobs whose recovered revision is newer than anything acknowledged: durable but
    /// unanswered work (allowed).
    unacked_durable: u64,
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

fn verify(store: &RedbStore, cl: &Client, tenant: &str, rt: &tokio::runtime::Runtime) -> Result<Checked, String> {
    let mut checked = Checked::default();
    ensure!(cl.violations.is_empty(), "before the crash: {}", cl.violations.join("; "));
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: sluice_host::error::Error| format!("{what}: {err}")
    };

    // The tenant.
    let tenant_present = store.tenant(tenant).map_err(e("tenant"))?.is_some();
    ensure!(!cl.tenant_acked || tenant_present, "tenant creation was acknowledged but the tenant is gone");

    // Every job, through the tenant index, in one page and in small pages.
    let all = store.jobs(tenant, &JobFilter::default(), None, 1_000_000).map_err(e("jobs"))?;
    ensure!(all.next_cursor.is_none(), "a listing larger than the data set has a next cursor");
    let jobs = all.jobs;
    ensure!(jobs.is_empty() || tenant_present, "{} jobs survived but their tenant did not", jobs.len());
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.jobs(tenant, &JobFilter::default(), cursor, 4).map_err(e("jobs page"))?;
        paged.extend(page.jobs.iter().map(|j| j.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        ensure!(paged.len() <= jobs.len(), "paging returns more jobs than the full listing");
    }
    let seqs: Vec<u64> = jobs.iter().map(|j| j.seq).collect();
    ensure!(paged == seqs, "paged listing {paged:?} differs from the full listing {seqs:?}");
    ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "listing not in strictly increasing seq order: {seqs:?}");

    let mut by_uuid: HashMap<Uuid, &Job> = HashMap::new();
    for job in &jobs {
        ensure!(by_uuid.insert(job.job_uuid, job).is_none(), "job {} listed twice", job.job_uuid);
    }
    checked.jobs_recovered = jobs.len() as u64;

    // No phantom, every job readable by uuid, history consistent with the record and
    // with what was submitted.
    let mut claimed_per_worker: HashMap<String, u32> = HashMap::new();
    for job in &jobs {
        let u = job.job_uuid;
        ensure!(cl.submitted_inserts.contains(&u), "job {u} (seq {}) exists but was never submitted", job.seq);
        ensure!(job.tenant == tenant, "job {u} has tenant {}", job.tenant);
        let direct =
            store.job(tenant, u).map_err(e("job"))?.ok_or_else(|| format!("job {u} listed but not found by uuid"))?;
        ensure!(
            direct.seq == job.seq && direct.revision == job.revision,
            "job {u}: uuid lookup gives seq {} rev {}, listing gives seq {} rev {}",
            direct.seq,
            direct.revision,
            job.seq,
            job.revision
        );
        let history =
            store.history(tenant, u).map_err(e("history"))?.ok_or_else(|| format!("job {u} has no history"))?;
        ensure!(
            history.len() as u64 == job.revision,
            "job {u}: {} history events for revision {} ({:?})",
            history.len(),
            job.revision,
            history.iter().map(|h| h.action.as_str()).collect::<Vec<_>>()
        );
        for (i, ev) in history.iter().enumerate() {
            ensure!(ev.revision == i as u64 + 1, "job {u}: event {i} has revision {}", ev.revision);
        }
        ensure!(
            history[0].action == "insert" && history[0].from.is_none(),
            "job {u}: first event is {}",
            history[0].action
        );
        let last = history.last().unwrap();
        ensure!(last.to == job.state, "job {u}: last event goes to {:?}, job is {:?}", last.to, job.state);
        let mut token = 0u64;
        for ev in &history[1..] {
            match ev.action.as_str() {
                "claim" => {
                    let t = ev
                        .detail
                        .get("token")
                        .and_then(|v| v.as_u64())
                        .ok_or_else(|| format!("job {u}: claim without token"))?;
                    let w = ev
                        .detail
                        .get("worker")
                        .and_then(|v| v.as_str())
                        .ok_or_else(|| format!("job {u}: claim without worker"))?;
                    ensure!(t == token + 1, "job {u}: claim token {t} after token {token}");
                    ensure!(cl.submitted_claims.contains_key(w), "job {u}: claimed by {w}, a claim never submitted");
                    *claimed_per_worker.entry(w.to_owned()).or_default() += 1;
                    token = t;
                }
                action @ ("complete" | "fail" | "release") => {
                    let key = cl.submitted_finishes.iter().find(|(id, t, a)| *id == u && *t == token && *a == action);
                    ensure!(key.is_some(), "job {u}: {action} with token {token} in history, never submitted");
                }
                "reschedule" => ensure!(cl.submitted_promotes > 0, "job {u}: rescheduled without a scheduler pass"),
                "defer" => ensure!(cl.submitted_vetoes.contains(&u), "job {u}: deferred, never vetoed"),
                other => return Err(format!("job {u}: unexpected history action {other}")),
            }
        }
        ensure!(
            job.last_token == token,
            "job {u}: last_token {} but history's last claim token {token}",
            job.last_token
        );
        match job.state {
            JobState::Processing => {
                let lease = job.lease.as_ref().ok_or_else(|| format!("job {u}: processing without a lease"))?;
                ensure!(
                    lease.token == job.last_token,
                    "job {u}: lease token {} != last_token {}",
                    lease.token,
                    job.last_token
                );
            }
            _ => ensure!(job.lease.is_none(), "job {u}: {:?} but holds a lease", job.state),
        }
    }
    for (w, n) in &claimed_per_worker {
        let limit = cl.submitted_claims[w];
        ensure!(*n <= limit, "claim {w} took {n} jobs with limit {limit}");
    }

    // Submitted jobs absent from the listing must be absent by uuid too.
    for u in &cl.submitted_inserts {
        if !by_uuid.contains_key(u) {
            let direct = store.job(tenant, *u).map_err(e("job"))?;
            ensure!(direct.is_none(), "job {u} found by uuid but missing from the tenant listing");
        }
    }

    // Every acknowledgement holds.
    let mut newest: BTreeMap<Uuid, &Ack> = BTreeMap::new();
    for ack in &cl.acks {
        checked.acks_checked += 1;
        checked.defers_checked += u64::from(ack.what == "defer");
        let job = by_uuid.get(&ack.uuid).ok_or_else(|| {
            format!("LOST: job {} acknowledged ({} at revision {}) is gone", ack.uuid, ack.what, ack.revision)
        })?;
        ensure!(
            job.revision >= ack.revision,
            "LOST: job {} acknowledged {} at revision {} ({:?}) but recovered at revision {} ({:?})",
            ack.uuid,
            ack.what,
            ack.revision,
            ack.state,
            job.revision,
            job.state
        );
        ensure!(
            job.last_token >= ack.last_token,
            "LOST: job {} acknowledged token {} but recovered with last_token {}",
            ack.uuid,
            ack.last_token,
            job.last_token
        );
        if ack.what == "complete" {
            ensure!(
                job.state == JobState::Completed && job.revision == ack.revision,
                "LOST: job {} acknowledged completed at revision {}, recovered {:?} at revision {}",
                ack.uuid,
                ack.revision,
                job.state,
                job.revision
            );
        }
        let slot = newest.entry(ack.uuid).or_insert(ack);
        if ack.revision > slot.revision {
            *slot = ack;
        }
    }
    for (u, ack) in &newest {
        let job = by_uuid[u];
        if job.revision == ack.revision {
            ensure!(
                job.state == ack.state && job.last_token == ack.last_token,
                "job {u}: at acknowledged revision {} the client was told {:?}/token {}, recovered {:?}/token {}",
                ack.revision,
                ack.state,
                ack.last_token,
                job.state,
                job.last_token
            );
        } else {
            checked.unacked_durable += 1;
        }
    }
    // A completed job carries the token of a complete that was submitted (checked in the
    // history walk); one acknowledged or not is fine.

    // Indexes agree with the records.
    for state in JobState::ALL {
        let filter = JobFilter { state: Some(state), ..JobFilter::default() };
        let listed: HashSet<Uuid> = store
            .jobs(tenant, &filter, None, 1_000_000)
            .map_err(e("jobs by state"))?
            .jobs
            .iter()
            .map(|j| j.job_uuid)
            .collect();
        let expected: HashSet<Uuid> = jobs.iter().filter(|j| j.state == state).map(|j| j.job_uuid).collect();
        ensure!(
            listed == expected,
            "state index for {state:?} lists {} jobs, records say {}",
            listed.len(),
            expected.len()
        );
    }
    for q in QUEUES {
        let tally = |s: JobState| jobs.iter().filter(|j| j.queue == q && j.state == s).count() as u64;
        match store.queue(tenant, q).map_err(e("queue"))? {
            Some(view) => {
                for (state, n) in view.counts {
                    ensure!(n == tally(state), "queue {q}: count of {state:?} is {n}, records say {}", tally(state));
                }
                if q == "q0" && cl.config_acked {
                    ensure!(view.config.backoff_base_ms == 0, "queue q0: acknowledged config lost ({:?})", view.config);
                }
            }
            None => {
                ensure!(!jobs.iter().any(|j| j.queue == q), "queue {q} missing but has jobs");
                ensure!(!(q == "q0" && cl.config_acked), "queue q0: acknowledged config lost (queue missing)");
            }
        }
    }
    let processing = jobs.iter().any(|j| j.state == JobState::Processing);
    let expiry = store.earliest_lease_expiry().map_err(e("earliest_lease_expiry"))?;
    ensure!(expiry.is_some() == processing, "lease index: earliest expiry {expiry:?}, processing jobs: {processing}");

    // The recovered store takes writes, and hands out a seq no existing job has.
    let max_seq = seqs.last().copied().unwrap_or(0);
    rt.block_on(async {
        if !tenant_present {
            store
                .create_tenant(Tenant { id: tenant.to_owned(), created_at: Utc::now() })
                .await
                .map_err(e("probe tenant"))?;
        }
        let mut rng = Rng::new(max_seq ^ 0xabc);
        let mut probe = new_job(&mut rng, 0);
        probe.queue = "probe".into();
        let inserted =
            store.insert(tenant, vec![probe.clone()], actor(), Default::default()).await.map_err(e("probe insert"))?;
        let job = inserted.into_iter().next().unwrap().map_err(e("probe insert"))?;
        ensure!(job.seq > max_seq, "probe job got seq {} but seq {max_seq} already exists", job.seq);
        let claimed = store
            .claim(ClaimRequest {
                tenant: tenant.to_owned(),
                queue: "probe".into(),
                stage: Stage::Stable,
                worker: "probe".into(),
                limit: 1,
                lease_ms: 60_000,
                actor: actor(),
                judged: None,
            })
            .await
            .map_err(e("probe claim"))?
            .jobs;
        ensure!(claimed.len() == 1 && claimed[0].job_uuid == probe.job_uuid, "probe claim got {} jobs", claimed.len());
        let token = claimed[0].last_token;
        let request = TransitionRequest {
            tenant: tenant.to_owned(),
            job_uuid: probe.job_uuid,
            command: Command::Complete { token },
            actor: actor(),
            judged: None,
            judgement: None,
        };
        let change = transition(store, request).await.map_err(e("probe complete"))?;
        ensure!(change.job.state == JobState::Completed, "probe job is {:?}", change.job.state);
        Ok::<(), String>(())
    })?;
    let after = store.jobs(tenant, &JobFilter::default(), None, 1_000_000).map_err(e("jobs"))?.jobs.len();
    ensure!(after == jobs.len() + 1, "after the probe {after} jobs, expected {}", jobs.len() + 1);
    Ok(checked)
}

// ---------------------------------------------------------------------------------
// One seed

struct Outcome {
    crash: Crash,
    /// Mutating operations and syncs seen by the backend: after open, and in all.
    ops_after_open: u64,
    syncs_after_open: u64,
    ops_total: u64,
    syncs_total: u64,
    torn_applied: u64,
    opened: bool,
    /// The power went between redb's two creation fsyncs (tolerated, counted).
    half_created: bool,
    /// The writer's commits and largest batch before the crash.
    commits: u64,
    folds: u64,
    largest_batch: u64,
    durable_len: usize,
    /// The surviving journal held batches: reopening replayed them.
    journal_replayed: bool,
    checked: Checked,
    acked_requests: u64,
    acked_refusals: u64,
}

fn run_seed(rt: &tokio::runtime::Runtime, seed: u64, budget: u64, plan: CrashPlan) -> Result<Outcome, String> {
    let backend = PowerLossBackend::new(plan);
    let c: Shared = Arc::new(Mutex::new(Client::default()));
    let tenant = format!("tenant-{seed}");
    let (mut ops_after_open, mut syncs_after_open) = (0, 0);
    let (mut commits, mut folds, mut largest_batch) = (0, 0, 0);
    let opened = match open_store(&backend, plan.fold_bytes) {
        Ok(store) => {
            {
                let d = backend.lock();
                (ops_after_open, syncs_after_open) = (d.ops, d.syncs);
            }
            let store = Arc::new(store);
            rt.block_on(workload(
                store.clone(),
                c.clone(),
                tenant.clone(),
                budget,
                Rng::new(seed.wrapping_mul(31) + 7),
            ));
            // Every request has its answer; cut the power (if it did not go already)
            // while the store is still open, so no clean shutdown reaches the disk.
            backend.lock().cut_power();
            let stats = store.writer_stats();
            (commits, folds, largest_batch) = (stats.commits, stats.folds, stats.largest_batch);
            drop(store);
            true
        }
        Err(_) => {
            backend.lock().cut_power();
            false
        }
    };
    let (images, crash, ops_total, syncs_total, torn_applied) = {
        let d = backend.lock();
        (d.durable_images(), d.crashed.expect("power is off"), d.ops, d.syncs, d.torn_applied)
    };
    let image = &images[DATABASE];
    let cl = client(&c);
    let fail = |e: String| {
        format!(
            "{crash}; {} acknowledged requests, {} job acknowledgements; torn writes on disk: {torn_applied}: {e}",
            cl.acked_requests,
            cl.acks.len()
        )
    };
    if !opened && !cl.acks.is_empty() {
        return Err(fail("acknowledgements without an open store".into()));
    }

    // Known redb limitation (see the report): power lost while redb creates a new file,
    // after its first fsync (file sized, header without magic number) and before the
    // second (magic number), leaves a file redb refuses as "not a redb database". Only
    // possible before the store ever opened, so nothing can have been acknowledged;
    // tolerated unless POWER_LOSS_STRICT_CREATE is set, and counted.
    if !opened
        && !image.is_empty()
        && !image.starts_with(b"redb")
        && std::env::var_os("POWER_LOSS_STRICT_CREATE").is_none()
    {
        let refused = open_store(&PowerLossBackend::from_images(images.clone()), None);
        match refused {
            Err(e) if format!("{e:#}").contains("magic number") => {
                return Ok(Outcome {
                    crash,
                    ops_after_open,
                    syncs_after_open,
                    ops_total,
                    syncs_total,
                    torn_applied,
                    opened,
                    half_created: true,
                    commits,
                    folds,
                    largest_batch,
                    durable_len: image.len(),
                    journal_replayed: false,
                    checked: Checked::default(),
                    acked_requests: cl.acked_requests,
                    acked_refusals: cl.acked_refusals,
                });
            }
            Err(e) => {
                return Err(fail(format!("the store cannot open the durable image ({} bytes): {e:#}", image.len())));
            }
            Ok(_) => {} // opened after all: check it as any other
        }
    }

    // redb's own view of the surviving file.
    {
        let mut db = redb::Builder::new()
            .create_with_backend(PowerLossBackend::from_images(images.clone()))
            .map_err(|e| fail(format!("redb cannot open the durable image ({} bytes): {e}", image.len())))?;
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => return Err(fail("redb check_integrity had to repair the recovered database".into())),
            Err(e) => return Err(fail(format!("redb check_integrity: {e}"))),
        }
    }

    let store = open_store(&PowerLossBackend::from_images(images.clone()), None)
        .map_err(|e| fail(format!("the store cannot open the durable image ({} bytes): {e:#}", image.len())))?;
    let journal_replayed = store.replayed_batches() > 0;
    let checked = verify(&store, &cl, &tenant, rt).map_err(fail)?;
    Ok(Outcome {
        crash,
        ops_after_open,
        syncs_after_open,
        ops_total,
        syncs_total,
        torn_applied,
        opened,
        half_created: false,
        commits,
        folds,
        largest_batch,
        durable_len: image.len(),
        journal_replayed,
        checked,
        acked_requests: cl.acked_requests,
        acked_refusals: cl.acked_refusals,
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn budget_of(seed: u64) -> u64 {
    Rng::new(seed).range(20, 60)
}

/// Backend cost of opening the store and of one request, measured on clean runs.
struct Calibration {
    open_ops: u64,
    open_syncs: u64,
    ops_per_request: f64,
    syncs_per_request: f64,
}

/// The seed's crash plan. Two seeds in three follow the brief's model exactly (nothing
/// unsynced survives): one crashes at a uniformly chosen operation, the other at a
/// uniformly chosen sync (a commit's own fsync: its writes are all in the OS cache). The
/// third seed also lets a random part of the unsynced writes reach the disk.
fn plan_of(seed: u64, budget: u64, cal: &Calibration) -> CrashPlan {
    let mut rng = Rng::new(seed ^ 0xc4a5_c4a5);
    // The tenant and the queue config are two more requests; aim a little past the end.
    let requests = (budget + 2) as f64;
    let op_span = ((cal.open_ops as f64 + cal.ops_per_request * requests) * 1.1) as u64;
    let sync_span = ((cal.open_syncs as f64 + cal.syncs_per_request * requests) * 1.1) as u64;
    let at_op = || Some(1 + Rng::new(seed ^ 0x0b).below(op_span.max(1)));
    let at_sync = || Some(1 + Rng::new(seed ^ 0x5c).below(sync_span.max(1)));
    let mut plan = match seed % 3 {
        0 => CrashPlan { at_op: at_op(), ..CrashPlan::default() },
        1 => CrashPlan { at_sync: at_sync(), ..CrashPlan::default() },
        _ => {
            let mut p = if rng.below(2) == 0 {
                CrashPlan { at_op: at_op(), ..CrashPlan::default() }
            } else {
                CrashPlan { at_sync: at_sync(), ..CrashPlan::default() }
            };
            p.torn = Some((rng.next(), if rng.below(3) == 0 { 100 } else { 50 }));
            p
        }
    };
    // One seed in two folds the journal every few batches, so crashes also land in folds.
    if (seed / 3) % 2 == 1 {
        plan.fold_bytes = Some(rng.range(200, 4000));
    }
    if let Some(n) = env_u64("POWER_LOSS_CRASH_AT") {
        plan.at_op = Some(n);
        plan.at_sync = None;
    }
    if let Some(n) = env_u64("POWER_LOSS_CRASH_AT_SYNC") {
        plan.at_sync = Some(n);
        plan.at_op = None;
    }
    plan
}

#[test]
fn acknowledged_writes_survive_power_loss() {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // Calibrate on clean runs (themselves checked: the power is cut once the workload is done).
    let mut cal = Calibration { open_ops: 0, open_syncs: 0, ops_per_request: 0.0, syncs_per_request: 0.0 };
    let (mut request_ops, mut request_syncs, mut requests) = (0u64, 0u64, 0u64);
    for seed in 0..5u64 {
        let budget = 40;
        let out = run_seed(&rt, 1_000_000 + seed, budget, CrashPlan::default())
            .unwrap_or_else(|e| panic!("calibration run {seed} (no crash): {e}"));
        assert!(matches!(out.crash, Crash::AfterWorkload));
        cal.open_ops = cal.open_ops.max(out.ops_after_open);
        cal.open_syncs = cal.open_syncs.max(out.syncs_after_open);
        request_ops += out.ops_total - out.ops_after_open;
        request_syncs += out.syncs_total - out.syncs_after_open;
        requests += budget + 2;
    }
    cal.ops_per_request = request_ops as f64 / requests as f64;
    cal.syncs_per_request = request_syncs as f64 / requests as f64;
    println!(
        "calibration: opening takes {} backend ops ({} syncs); a request about {:.1} ops ({:.2} syncs: the writer batches)",
        cal.open_ops, cal.open_syncs, cal.ops_per_request, cal.syncs_per_request
    );

    let seeds: Vec<u64> = match env_u64("POWER_LOSS_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("POWER_LOSS_SEEDS").unwrap_or(300)).collect(),
    };
    let mut failures = Vec::new();
    let (mut acked_requests, mut acks, mut refusals, mut recovered, mut unacked_durable) = (0, 0, 0, 0, 0);
    let (mut hit_open, mut hit_workload, mut after_workload, mut torn_seeds, mut torn_writes) = (0, 0, 0, 0, 0);
    let mut hit_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut max_image = 0;
    let mut half_created = 0u64;
    let (mut commits, mut folds, mut largest_batch, mut replayed, mut defers) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for &seed in &seeds {
        let budget = budget_of(seed);
        let plan = plan_of(seed, budget, &cal);
        match run_seed(&rt, seed, budget, plan) {
            Ok(out) => {
                if std::env::var_os("POWER_LOSS_VERBOSE").is_some() {
                    println!(
                        "seed {seed}: budget {budget}, {plan:?}, {}, {} ops / {} syncs, {} acks",
                        out.crash, out.ops_total, out.syncs_total, out.checked.acks_checked
                    );
                }
                acked_requests += out.acked_requests;
                refusals += out.acked_refusals;
                acks += out.checked.acks_checked;
                defers += out.checked.defers_checked;
                recovered += out.checked.jobs_recovered;
                unacked_durable += out.checked.unacked_durable;
                max_image = max_image.max(out.durable_len);
                half_created += out.half_created as u64;
                commits += out.commits;
                folds += out.folds;
                replayed += out.journal_replayed as u64;
                largest_batch = largest_batch.max(out.largest_batch);
                if plan.torn.is_some() {
                    torn_seeds += 1;
                    torn_writes += out.torn_applied;
                }
                match out.crash {
                    Crash::AtOp(_, kind) => {
                        if out.opened {
                            hit_workload += 1;
                        } else {
                            hit_open += 1;
                        }
                        *hit_kinds.entry(format!("{kind:?}")).or_default() += 1;
                    }
                    Crash::AfterWorkload => after_workload += 1,
                }
            }
            Err(e) => {
                let msg = format!("seed {seed} (budget {budget}, plan {plan:?}): {e}");
                eprintln!("FAILED {msg}");
                failures.push(msg);
            }
        }
    }
    println!(
        "power loss: {} seeds run, {} failed; {} acknowledged requests checked ({} job acknowledgements, {} of them \
         deferrals by judged claims; {} refusals) in {} commits (largest batch {}) and {} folds; {} recoveries replayed a journal; \
         {} jobs recovered, {} with durable but unacknowledged changes; crash points hit: {} during open, \
         {} during the workload, {} power cuts after it; crashed ops by kind {:?}; {} seeds with torn unsynced writes \
         ({} writes reached the disk); {} half-created files refused by redb (no acknowledged work); largest durable image {} KiB; {:.1} s",
        seeds.len(),
        failures.len(),
        acked_requests,
        acks,
        defers,
        refusals,
        commits,
        largest_batch,
        folds,
        replayed,
        recovered,
        unacked_durable,
        hit_open,
        hit_workload,
        after_workload,
        hit_kinds,
        torn_seeds,
        torn_writes,
        half_created,
        max_image / 1024,
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} of {} seeds failed:\n{}", failures.len(), seeds.len(), failures.join("\n"));
    if seeds.len() > 1 {
        assert!(
            folds > 0 && replayed > 0 && defers > 0,
            "the seeds must exercise folds ({folds}), journal replays ({replayed}) and judged deferrals ({defers})"
        );
    }

    // Negative control: the same checks must notice lost acknowledged work when the disk
    // lies about fsync.
    if env_u64("POWER_LOSS_SEED").is_none() {
        let control = 12u64;
        let mut caught = 0;
        for i in 0..control {
            let seed = 2_000_000 + i;
            let budget = 40;
            let syncs = cal.open_syncs as f64 + cal.syncs_per_request * (budget + 2) as f64;
            // Even syncs lie; crashing at an odd one loses what the previous one acknowledged.
            let at_sync =
                (cal.open_syncs + 3 + Rng::new(seed).below((syncs as u64).saturating_sub(cal.open_syncs + 3).max(1)))
                    | 1;
            let plan = CrashPlan { at_sync: Some(at_sync), lying_sync: true, ..CrashPlan::default() };
            if let Err(e) = run_seed(&rt, seed, budget, plan) {
                if std::env::var_os("POWER_LOSS_VERBOSE").is_some() {
                    println!("control seed {seed}: {e}");
                }
                if e.contains("LOST") || e.contains("tenant creation was acknowledged") {
                    caught += 1;
                }
            }
        }
        println!(
            "negative control: a disk with a lying fsync, lost acknowledged work caught in {caught} of {control} seeds"
        );
        assert!(caught > 0, "the checks never noticed a lying fsync: they cannot detect lost writes");
    }
}
