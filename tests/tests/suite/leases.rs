//! Leases under contention: 8 concurrent workers over HTTP, 10,000 jobs, some workers
//! paused past their lease and some killed. Counted on the client side:
//!
//! - for every job exactly one `complete` succeeds and every other `complete` of it
//!   gets 409 `LEASE_LOST`;
//! - no job ever has two unexpired leases: per job, the lease intervals
//!   `[acquired_at, end)` (end = the successful complete, else `expires_at`) of
//!   different tokens never overlap, and tokens strictly increase in acquisition order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::*;

const JOBS: usize = 10_000;
const WORKERS: usize = 8;
const QUEUE: &str = "leases";
/// Workers that die for good at some point (the others die and come back).
const PERMANENT_DEATHS: usize = 2;

#[derive(Clone, Debug)]
struct ClaimRec {
    uuid: String,
    token: u64,
    attempt: u64,
    owner: String,
    acquired_at: i64,
    expires_at: i64,
}

#[derive(Clone, Debug)]
struct CompleteRec {
    uuid: String,
    token: u64,
    status: u16,
    code: String,
    /// The job's `updated_at` from a successful answer.
    updated_at: Option<i64>,
    /// The worker slept before this complete.
    paused: bool,
}

#[derive(Default)]
struct WorkerLog {
    claims: Vec<ClaimRec>,
    completes: Vec<CompleteRec>,
    claim_calls: usize,
    pauses: usize,
    /// Times this worker "died" (abandoned its claimed jobs).
    deaths: usize,
    /// Jobs it held when it died.
    abandoned: usize,
    permanently_dead: bool,
}

fn worker_loop(api: Api, index: usize, done: Arc<AtomicBool>) -> WorkerLog {
    let mut rng = Rng::new();
    let mut log = WorkerLog::default();
    let mut generation = 0;
    // Some workers die for good after a while.
    let die_for_good_after = (index >= WORKERS - PERMANENT_DEATHS).then(|| rng.range(20, 80) as usize);
    let mut batches = 0usize;
    while !done.load(Ordering::Relaxed) {
        let worker = format!("worker-{index}-gen-{generation}");
        let lease_ms = rng.range(1000, 2000);
        let (status, body) = api.post(
            &format!("/v1/queues/{QUEUE}/claim"),
            json!({ "worker": worker, "limit": 10, "lease_ms": lease_ms, "wait_ms": 200 }),
        );
        log.claim_calls += 1;
        assert_eq!(status, 200, "claim: {body}");
        let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
        for job in &jobs {
            let lease = &job["lease"];
            assert_eq!(lease["owner"], worker.as_str(), "lease owner: {job}");
            assert_eq!(job["state"], "processing", "claimed job state: {job}");
            let rec = ClaimRec {
                uuid: job["job_uuid"].as_str().unwrap().to_owned(),
                token: lease["token"].as_u64().expect("lease token"),
                attempt: job["attempt"].as_u64().expect("attempt"),
                owner: worker.clone(),
                acquired_at: ms_of(&lease["acquired_at"]),
                expires_at: ms_of(&lease["expires_at"]),
            };
            assert_eq!(rec.expires_at - rec.acquired_at, lease_ms as i64, "lease length: {job}");
            log.claims.push(rec);
        }
        if jobs.is_empty() {
            continue;
        }
        batches += 1;
        // A killed worker: it stops at some point of its batch and never finishes the rest.
        let permanent = die_for_good_after.is_some_and(|n| batches >= n);
        let die_at =
            if permanent || rng.chance(0.015) { Some(rng.range(0, jobs.len() as u64 - 1) as usize) } else { None };
        // A paused worker (GC pause, stopped VM ...): the whole batch waits past its lease.
        let pause_batch = die_at.is_none() && rng.chance(0.03);
        if pause_batch {
            log.pauses += 1;
            thread::sleep(Duration::from_millis(lease_ms + rng.range(100, 700)));
        }
        for (i, job) in jobs.iter().enumerate() {
            if die_at == Some(i) {
                log.deaths += 1;
                log.abandoned += jobs.len() - i;
                break;
            }
            // A pause before one job, sometimes shorter and sometimes longer than the lease.
            let mut paused = pause_batch;
            if rng.chance(0.006) {
                log.pauses += 1;
                paused = true;
                thread::sleep(Duration::from_millis((lease_ms as f64 * (0.5 + rng.unit())) as u64));
            }
            let uuid = job["job_uuid"].as_str().unwrap();
            let token = job["lease"]["token"].as_u64().unwrap();
            let (status, answer) = api.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token }));
            let updated_at = (status == 200).then(|| {
                assert_eq!(answer["state"], "completed", "complete answer: {answer}");
                ms_of(&answer["updated_at"])
            });
            log.completes.push(CompleteRec {
                uuid: uuid.to_owned(),
                token,
                status,
                code: code(&answer).to_owned(),
                updated_at,
                paused,
            });
        }
        if die_at.is_some() {
            if permanent {
                log.permanently_dead = true;
                return log;
            }
            // Back later as a new worker identity.
            generation += 1;
            thread::sleep(Duration::from_millis(rng.range(0, 300)));
        }
    }
    log
}

#[test]
fn eight_workers_ten_thousand_jobs_one_winner_per_job() {
    let started = Instant::now();
    let server = Server::start();
    let acme = server.tenant("acme");

    // Short backoff, many attempts, and a breaker that never opens: every rescued lease
    // is a failed attempt the breaker counts, and an open breaker would park the jobs.
    let (status, body) = acme.tenant_admin.put(
        &format!("/v1/queues/{QUEUE}"),
        json!({ "backoff_base_ms": 100, "backoff_cap_ms": 200, "max_attempts": 1000, "breaker_threshold": 1_000_000 }),
    );
    assert_eq!(status, 200, "configure queue: {body}");

    let mut inserted = Vec::with_capacity(JOBS);
    for chunk in 0..JOBS / 1000 {
        let jobs: Vec<Value> = (0..1000)
            .map(|i| json!({ "queue": QUEUE, "kind": "lease-test", "payload": { "n": chunk * 1000 + i }, "user_id": "user-1" }))
            .collect();
        let (status, body) = acme.producer.post("/v1/jobs/batch", json!({ "jobs": jobs }));
        assert_eq!(status, 200, "batch insert: {body}");
        assert_eq!(body["accepted"], 1000, "batch insert: {}", body["refused"]);
        for r in body["results"].as_array().unwrap() {
            inserted.push(r["job"]["job_uuid"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(inserted.len(), JOBS);
    let inserted_at = Instant::now();

    let done = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..WORKERS)
        .map(|i| {
            let api = acme.worker.clone();
            let done = done.clone();
            thread::Builder::new().name(format!("worker-{i}")).spawn(move || worker_loop(api, i, done)).unwrap()
        })
        .collect();

    // Wait until every job is completed.
    let deadline = Instant::now() + Duration::from_secs(170);
    loop {
        let (status, q) = acme.worker.get(&format!("/v1/queues/{QUEUE}"));
        assert_eq!(status, 200, "queue: {q}");
        let completed = q["counts"]["completed"].as_u64().unwrap_or(0);
        if completed as usize == JOBS {
            break;
        }
        if handles.iter().all(|h| h.is_finished()) {
            done.store(true, Ordering::Relaxed);
            panic!("every worker stopped with {completed} of {JOBS} jobs completed; counts {}", q["counts"]);
        }
        if Instant::now() > deadline {
            done.store(true, Ordering::Relaxed);
            panic!("not every job completed in time: counts {}", q["counts"]);
        }
        thread::sleep(Duration::from_millis(250));
    }
    done.store(true, Ordering::Relaxed);
    let logs: Vec<WorkerLog> = handles.into_iter().map(|h| h.join().expect("worker thread")).collect();
    let work_time = inserted_at.elapsed();

    // The server's view: every job completed, listed by state.
    let completed = acme.worker.list_all(&format!("queue={QUEUE}&state=completed"));
    assert_eq!(completed.len(), JOBS, "completed jobs listed");
    for state in ["pending", "processing", "failed", "abandoned"] {
        assert!(acme.worker.list_all(&format!("queue={QUEUE}&state={state}")).is_empty(), "jobs left in {state}");
    }
    let server_jobs: HashMap<String, Value> =
        completed.into_iter().map(|j| (j["job_uuid"].as_str().unwrap().to_owned(), j)).collect();
    for uuid in &inserted {
        assert!(server_jobs.contains_key(uuid), "job {uuid} not listed as completed");
    }

    let mut claims: HashMap<&str, Vec<&ClaimRec>> = HashMap::new();
    let mut completes: HashMap<&str, Vec<&CompleteRec>> = HashMap::new();
    for log in &logs {
        for c in &log.claims {
            claims.entry(c.uuid.as_str()).or_default().push(c);
        }
        for c in &log.completes {
            completes.entry(c.uuid.as_str()).or_default().push(c);
        }
    }

    let mut failures: Vec<String> = Vec::new();
    let mut fail = |msg: String| {
        if failures.len() < 50 {
            failures.push(msg);
        }
    };
    let (mut ok_total, mut lost_total, mut paused_ok, mut paused_lost, mut rescued_jobs, mut expired_leases) =
        (0, 0, 0, 0, 0, 0);
    for uuid in &inserted {
        let job = &server_jobs[uuid];
        let mut cl: Vec<&ClaimRec> = claims.get(uuid.as_str()).cloned().unwrap_or_default();
        let co: Vec<&CompleteRec> = completes.get(uuid.as_str()).cloned().unwrap_or_default();

        // Exactly one complete succeeded; every other one is 409 LEASE_LOST.
        let oks: Vec<&&CompleteRec> = co.iter().filter(|c| c.status == 200).collect();
        if oks.len() != 1 {
            fail(format!("job {uuid}: {} successful completes: {oks:?}", oks.len()));
        }
        for c in &co {
            match (c.status, c.code.as_str()) {
                (200, _) => {
                    ok_total += 1;
                    paused_ok += c.paused as usize;
                }
                (409, "LEASE_LOST") => {
                    lost_total += 1;
                    paused_lost += c.paused as usize;
                }
                _ => fail(format!("job {uuid}: complete with token {} got {} {}", c.token, c.status, c.code)),
            }
        }

        // Leases: tokens 1..=n in acquisition order, and intervals that never overlap.
        cl.sort_by_key(|c| (c.acquired_at, c.token));
        if cl.is_empty() {
            fail(format!("job {uuid}: completed but never claimed by our workers"));
            continue;
        }
        for (i, c) in cl.iter().enumerate() {
            if c.token != i as u64 + 1 {
                fail(format!(
                    "job {uuid}: tokens in acquisition order are {:?}",
                    cl.iter().map(|c| c.token).collect::<Vec<_>>()
                ));
                break;
            }
            if c.attempt != c.token {
                fail(format!("job {uuid}: claim with token {} reports attempt {}", c.token, c.attempt));
            }
        }
        if job["last_token"].as_u64() != Some(cl.len() as u64) {
            fail(format!("job {uuid}: server last_token {} but {} claims seen", job["last_token"], cl.len()));
        }
        let ok = oks.first().copied();
        let end_of = |c: &ClaimRec| -> i64 {
            match ok {
                Some(ok) if ok.token == c.token => ok.updated_at.unwrap().min(c.expires_at),
                _ => c.expires_at,
            }
        };
        for pair in cl.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.acquired_at < end_of(a) {
                fail(format!(
                    "job {uuid}: lease {} ({}, {}..{}) overlaps lease {} ({}, {}..{})",
                    a.token, a.owner, a.acquired_at, a.expires_at, b.token, b.owner, b.acquired_at, b.expires_at
                ));
            }
        }
        if let Some(ok) = ok {
            let last = cl.last().unwrap();
            let t = ok.updated_at.unwrap();
            if ok.token != last.token {
                fail(format!(
                    "job {uuid}: complete with token {} succeeded but token {} was issued later",
                    ok.token, last.token
                ));
            }
            if !(last.acquired_at <= t && t < last.expires_at) {
                fail(format!(
                    "job {uuid}: complete at {t} outside its lease {}..{}",
                    last.acquired_at, last.expires_at
                ));
            }
        }

        // Every lease but the last ended by expiry: the rescuer recorded each as a failed
        // attempt with LEASE_EXPIRED, after the lease ran out.
        let errors = job["errors"].as_array().cloned().unwrap_or_default();
        let expired: Vec<&Value> = errors.iter().filter(|e| e["code"] == "LEASE_EXPIRED").collect();
        if expired.len() != errors.len() || expired.len() != cl.len() - 1 {
            fail(format!("job {uuid}: {} claims but errors {:?}", cl.len(), errors));
        }
        for e in &expired {
            let attempt = e["attempt"].as_u64().unwrap_or(0);
            match cl.iter().find(|c| c.attempt == attempt) {
                Some(c) if ms_of(&e["at"]) >= c.expires_at => {}
                Some(c) => fail(format!(
                    "job {uuid}: lease {} expiring {} rescued early at {}",
                    c.token, c.expires_at, e["at"]
                )),
                None => fail(format!("job {uuid}: LEASE_EXPIRED for attempt {attempt} that we never claimed")),
            }
        }
        expired_leases += expired.len();
        if cl.iter().any(|c| c.attempt > 1) {
            rescued_jobs += 1;
        }
    }
    assert!(failures.is_empty(), "{} problems, first ones:\n{}", failures.len(), failures.join("\n"));

    let claim_calls: usize = logs.iter().map(|l| l.claim_calls).sum();
    let claims_total: usize = logs.iter().map(|l| l.claims.len()).sum();
    let pauses: usize = logs.iter().map(|l| l.pauses).sum();
    let deaths: usize = logs.iter().map(|l| l.deaths).sum();
    let abandoned: usize = logs.iter().map(|l| l.abandoned).sum();
    let dead_for_good = logs.iter().filter(|l| l.permanently_dead).count();
    println!(
        "leases: {JOBS} jobs, {WORKERS} workers; claim calls {claim_calls}, claims (leases) {claims_total}, completes ok {ok_total}, \
         LEASE_LOST {lost_total} (paused completes: {paused_ok} ok, {paused_lost} lost), pauses {pauses}, \
         killed workers {deaths} ({dead_for_good} for good, {abandoned} jobs abandoned), expired leases {expired_leases}, \
         rescued jobs (attempt > 1) {rescued_jobs}; work {:.1} s, total {:.1} s",
        work_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(ok_total, JOBS);
    assert!(deaths >= PERMANENT_DEATHS, "the killed-worker path ran");
    assert!(lost_total > 0 && rescued_jobs > 0, "the lease-lost path ran");
}

/// A claim that hands in finished jobs: each completion is applied or refused on
/// its own and the claim leases more, in one request; an invalid claim applies
/// none of its completions.
#[test]
fn a_claim_hands_in_finished_jobs_and_claims_more_in_one_request() {
    let server = Server::start();
    let t = server.tenant("acme");
    let inserted: Vec<Value> = (0..6).map(|_| t.producer.insert("q", json!({}))["job_uuid"].clone()).collect();
    let first = t.worker.claim("q", 3, 60_000);
    assert_eq!(first.len(), 3);
    let item = |job: &Value, token: u64| json!({ "job_uuid": job["job_uuid"], "token": token });
    let token = |job: &Value| job["lease"]["token"].as_u64().unwrap();
    let state = |job: &Value| t.worker.job(job["job_uuid"].as_str().unwrap())["state"].clone();
    let claim = |limit: u32, complete: Value| {
        let body = json!({ "worker": "w", "limit": limit, "lease_ms": 60_000, "complete": complete });
        t.worker.post("/v1/queues/q/claim", body)
    };

    // Refused before anything happens: the claim's own input, too many completions,
    // a malformed completion.
    let (status, body) = claim(0, json!([item(&first[0], token(&first[0]))]));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "limit 0: {body}");
    let too_many: Vec<Value> = (0..1001).map(|_| item(&first[0], token(&first[0]))).collect();
    let (status, body) = claim(3, json!(too_many));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "1,001 completions: {body}");
    let (status, body) = claim(3, json!([{ "job_uuid": first[0]["job_uuid"], "token": token(&first[0]), "x": 1 }]));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "an unknown field: {body}");
    assert!(first.iter().all(|job| state(job) == "processing"), "nothing was completed");
    assert_eq!(t.producer.get("/v1/queues/q").1["counts"]["pending"], 3, "nothing was claimed");

    let (status, out) = claim(3, json!([item(&first[0], token(&first[0])), item(&first[1], token(&first[1]) + 1)]));
    assert_eq!(status, 200, "{out}");
    let completed = &out["completed"];
    assert_eq!(batch_outcome(completed), [(200, ""), (409, "LEASE_LOST")]);
    assert_eq!(completed["results"][0]["job"]["state"], "completed");
    assert_eq!((state(&first[0]), state(&first[1])), (json!("completed"), json!("processing")));
    let second: Vec<Value> = out["jobs"].as_array().unwrap().clone();
    let mut leased: Vec<&Value> = first.iter().chain(&second).map(|job| &job["job_uuid"]).collect();
    leased.sort_by_key(|u| u.as_str().unwrap().to_owned());
    let mut all: Vec<&Value> = inserted.iter().collect();
    all.sort_by_key(|u| u.as_str().unwrap().to_owned());
    assert_eq!(leased, all, "the claim leased the other three");

    // Handing in with an empty queue answers at once, and a claim without
    // completions carries no `completed`.
    let (status, out) = claim(3, json!(second.iter().map(|j| item(j, token(j))).collect::<Vec<_>>()));
    assert_eq!(status, 200, "{out}");
    assert_eq!((out["completed"]["accepted"].as_u64(), out["jobs"].as_array().map(Vec::len)), (Some(3), Some(0)));
    assert!(second.iter().all(|job| state(job) == "completed"));
    let (status, out) = claim(1, json!([]));
    assert_eq!(status, 200, "{out}");
    assert!(out.get("completed").is_none(), "{out}");
}

/// A batch of completes: each item is judged on its own (a stale token, another
/// tenant's job and an unknown job are refused alone), and two workers racing to
/// complete the same 200 jobs in batches complete each job exactly once.
#[test]
fn batch_completes_refuse_each_item_on_its_own_and_complete_each_job_once() {
    let server = Server::start();
    let t = server.tenant("acme");
    let other = server.tenant("globex");
    for _ in 0..4 {
        t.producer.insert("q", json!({}));
    }
    let foreign = other.producer.insert("q", json!({}))["job_uuid"].clone();
    let claimed = t.worker.claim("q", 4, 60_000);
    assert_eq!(claimed.len(), 4);
    let item = |job: &Value, token: u64| json!({ "job_uuid": job["job_uuid"], "token": token });
    let token = |job: &Value| job["lease"]["token"].as_u64().unwrap();
    let jobs = json!([
        item(&claimed[0], token(&claimed[0])),
        item(&claimed[1], token(&claimed[1]) + 1),
        { "job_uuid": foreign, "token": 1 },
        { "job_uuid": uuid::Uuid::new_v4(), "token": 1 },
        item(&claimed[2], token(&claimed[2])),
    ]);
    let (status, out) = t.worker.post("/v1/jobs/batch/complete", json!({ "jobs": jobs }));
    assert_eq!(status, 200, "{out}");
    let outcome = [(200, ""), (409, "LEASE_LOST"), (404, "NOT_FOUND"), (404, "NOT_FOUND"), (200, "")];
    assert_eq!(batch_outcome(&out), outcome);
    assert_eq!((out["accepted"].as_u64(), out["refused"].as_u64()), (Some(2), Some(3)));
    assert_eq!(out["results"][0]["job"]["state"], "completed");
    assert_eq!(t.worker.job(claimed[1]["job_uuid"].as_str().unwrap())["state"], "processing");
    assert_eq!(other.worker.job(foreign.as_str().unwrap())["state"], "pending", "another tenant's job untouched");
    let (status, body) = t.worker.post("/v1/jobs/batch/complete", json!({ "jobs": [] }));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "an empty batch");
    let too_many: Vec<Value> = (0..1001).map(|_| item(&claimed[3], token(&claimed[3]))).collect();
    let (status, body) = t.worker.post("/v1/jobs/batch/complete", json!({ "jobs": too_many }));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "at most 1,000 per batch");
    let (status, body) = t.producer.post("/v1/jobs/batch/complete", json!({ "jobs": [item(&claimed[3], 1)] }));
    assert_eq!((status, code(&body)), (403, "FORBIDDEN"), "producers do not work on jobs");

    // The race: both workers send every lease of 200 jobs, in batches of 50.
    for _ in 0..200 {
        t.producer.insert("race", json!({}));
    }
    let leases: Vec<Value> = t.worker.claim("race", 200, 60_000).iter().map(|j| item(j, token(j))).collect();
    assert_eq!(leases.len(), 200);
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (worker, leases) = (t.worker.clone(), leases.clone());
            thread::spawn(move || {
                let mut won = Vec::new();
                for chunk in leases.chunks(50) {
                    let (status, out) = worker.post("/v1/jobs/batch/complete", json!({ "jobs": chunk }));
                    assert_eq!(status, 200, "{out}");
                    for r in out["results"].as_array().unwrap() {
                        match r["status"].as_u64() {
                            Some(200) => won.push(r["job"]["job_uuid"].as_str().unwrap().to_owned()),
                            _ => assert_eq!(r["error"]["code"], "LEASE_LOST", "the loser: {r}"),
                        }
                    }
                }
                won
            })
        })
        .collect();
    let mut won: Vec<String> = racers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    won.sort();
    let mut all: Vec<String> = leases.iter().map(|l| l["job_uuid"].as_str().unwrap().to_owned()).collect();
    all.sort();
    assert_eq!(won, all, "every job completed exactly once");
}
