//! Crash safety: kill -9 the server during a load of inserts, claims and completions,
//! restart it on the same data file, and check, at least 10 times in a row:
//!
//! - every acknowledged insert is there (with its payload);
//! - no job has two acknowledged successful completes, and a job whose complete was
//!   acknowledged is `completed`;
//! - leases of killed workers run out and are rescued (`LEASE_EXPIRED`), none stays
//!   `processing`;
//! - queue order survives: priority first, then insertion order.
//!
//! The server folds its journal into the database file every 250 ms, so kills land
//! both with batches waiting in the journal (the restart replays them) and during
//! folds; a clean stop at the end leaves the journal empty.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sluice_tests::*;

const ROUNDS: usize = 10;
const PRODUCERS: usize = 3;
const WORKERS: usize = 3;
const LOAD: &str = "load";
const ORDER_JOBS: usize = 24;
const PRIORITIES: [i32; 4] = [-10, 0, 5, 20];
const LEASE_MS: u64 = 1000;

#[derive(Default)]
struct ProducerLog {
    /// (job_uuid, payload n) answered 201.
    acked: Vec<(String, u64)>,
    /// Sent, but no answer (the server died): may or may not be stored.
    unacked: Vec<String>,
    /// Answers other than 201 while the server was up.
    unexpected: Vec<String>,
}

#[derive(Clone, Debug)]
struct Claim {
    uuid: String,
    token: u64,
    attempt: u64,
}

#[derive(Default)]
struct WorkerLog {
    claims: Vec<Claim>,
    /// (job_uuid, token) whose complete was answered 200.
    completed: Vec<(String, u64)>,
    /// (job_uuid, token) answered 409 LEASE_LOST.
    lease_lost: Vec<(String, u64)>,
    /// (job_uuid, token) sent without an answer.
    complete_unanswered: Vec<(String, u64)>,
    unexpected: Vec<String>,
}

fn producer_loop(api: Api, round: usize, p: usize, stop: Arc<AtomicBool>) -> ProducerLog {
    let mut log = ProducerLog::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let uuid = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "job_uuid": uuid, "queue": LOAD, "kind": "crash-test", "user_id": "user-1",
            "payload": { "round": round, "producer": p, "n": n },
        });
        match api.try_send(api.request(Method::POST, "/v1/jobs").json(&body)) {
            Ok((201, job)) => {
                assert_eq!(job["job_uuid"], uuid.as_str());
                log.acked.push((uuid, n));
            }
            Ok((status, answer)) => log.unexpected.push(format!("insert {uuid}: {status} {answer}")),
            Err(_) => {
                log.unacked.push(uuid);
                break;
            }
        }
        n += 1;
    }
    log
}

fn worker_loop(api: Api, round: usize, w: usize, stop: Arc<AtomicBool>) -> WorkerLog {
    let mut log = WorkerLog::default();
    let worker = format!("worker-{w}-round-{round}");
    'work: while !stop.load(Ordering::Relaxed) {
        let claim = json!({ "worker": worker, "limit": 5, "lease_ms": LEASE_MS, "wait_ms": 100 });
        let jobs = match api.try_send(api.request(Method::POST, &format!("/v1/queues/{LOAD}/claim")).json(&claim)) {
            Ok((200, body)) => body["jobs"].as_array().cloned().unwrap_or_default(),
            Ok((status, answer)) => {
                log.unexpected.push(format!("claim: {status} {answer}"));
                continue;
            }
            Err(_) => break,
        };
        for job in &jobs {
            log.claims.push(Claim {
                uuid: job["job_uuid"].as_str().unwrap().to_owned(),
                token: job["lease"]["token"].as_u64().expect("token"),
                attempt: job["attempt"].as_u64().expect("attempt"),
            });
        }
        for job in &jobs {
            let uuid = job["job_uuid"].as_str().unwrap().to_owned();
            let token = job["lease"]["token"].as_u64().unwrap();
            let request =
                api.request(Method::POST, &format!("/v1/jobs/{uuid}/complete")).json(&json!({ "token": token }));
            match api.try_send(request) {
                Ok((200, answer)) => {
                    assert_eq!(answer["state"], "completed", "{answer}");
                    log.completed.push((uuid, token));
                }
                Ok((409, answer)) if code(&answer) == "LEASE_LOST" => log.lease_lost.push((uuid, token)),
                Ok((status, answer)) => log.unexpected.push(format!("complete {uuid}: {status} {answer}")),
                Err(_) => {
                    log.complete_unanswered.push((uuid, token));
                    break 'work;
                }
            }
        }
    }
    log
}

fn counts(api: &Api, queue: &str) -> Value {
    let (status, q) = api.get(&format!("/v1/queues/{queue}"));
    assert_eq!(status, 200, "queue {queue}: {q}");
    q["counts"].clone()
}

fn count(counts: &Value, state: &str) -> u64 {
    counts[state].as_u64().unwrap_or(0)
}

struct Keys {
    producer: String,
    worker: String,
}

impl Keys {
    fn producer(&self, server: &Server) -> Api {
        Api::new(&server.url, &self.producer)
    }
    fn worker(&self, server: &Server) -> Api {
        Api::new(&server.url, &self.worker)
    }
}

#[test]
fn kill_nine_during_load_and_restart_ten_times() {
    let started = Instant::now();
    let mut server = Server::start_with(&["--fold-interval-ms", "250"]);
    let acme = server.tenant("acme");
    let keys = Keys { producer: acme.producer.key.clone(), worker: acme.worker.key.clone() };
    // Short backoff, many attempts, a breaker that never opens (each rescued lease counts).
    let (status, body) = acme.tenant_admin.put(
        &format!("/v1/queues/{LOAD}"),
        json!({ "backoff_base_ms": 100, "backoff_cap_ms": 200, "max_attempts": 1000, "breaker_threshold": 1_000_000 }),
    );
    assert_eq!(status, 200, "configure queue: {body}");
    drop(acme);

    let mut rng = Rng::new();
    // job_uuid -> (round, payload n, producer) of every acknowledged insert.
    let mut acked: HashMap<String, (usize, u64, usize)> = HashMap::new();
    let mut unacked: HashSet<String> = HashSet::new();
    let mut claims: Vec<Claim> = Vec::new();
    // job_uuid -> tokens whose complete was acknowledged.
    let mut completes_ok: HashMap<String, Vec<u64>> = HashMap::new();
    let mut lease_lost: Vec<(String, u64)> = Vec::new();
    let mut complete_unanswered: Vec<(String, u64)> = Vec::new();
    let mut unexpected: Vec<String> = Vec::new();
    let mut order_checked = 0;
    let mut starts = 1;

    for round in 0..ROUNDS {
        let round_started = Instant::now();
        let producer = keys.producer(&server);
        let worker = keys.worker(&server);

        // Jobs whose order must survive the crash: no worker touches this queue.
        let order_queue = format!("order-{round}");
        let mut order: Vec<(i32, usize, String)> = Vec::new();
        for i in 0..ORDER_JOBS {
            let priority = PRIORITIES[rng.range(0, PRIORITIES.len() as u64 - 1) as usize];
            let job = producer.insert(&order_queue, json!({ "priority": priority, "payload": { "i": i } }));
            order.push((priority, i, job["job_uuid"].as_str().unwrap().to_owned()));
        }
        order.sort_by_key(|(priority, i, _)| (-priority, *i));

        // The load.
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (api, stop) = (producer.clone(), stop.clone());
                thread::spawn(move || producer_loop(api, round, p, stop))
            })
            .collect();
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (api, stop) = (worker.clone(), stop.clone());
                thread::spawn(move || worker_loop(api, round, w, stop))
            })
            .collect();
        thread::sleep(Duration::from_millis(rng.range(1000, 2000)));
        let all_running = producers.iter().all(|h| !h.is_finished()) && workers.iter().all(|h| !h.is_finished());
        server.kill();
        stop.store(true, Ordering::Relaxed);
        assert!(all_running, "round {round}: a load thread stopped before the kill");

        let mut round_acked = Vec::new();
        for (p, h) in producers.into_iter().enumerate() {
            let log = h.join().expect("producer thread");
            for (uuid, n) in log.acked {
                round_acked.push(uuid.clone());
                acked.insert(uuid, (round, n, p));
            }
            unacked.extend(log.unacked);
            unexpected.extend(log.unexpected);
        }
        let mut round_completes = 0;
        let mut round_claims = 0;
        for h in workers {
            let log = h.join().expect("worker thread");
            round_claims += log.claims.len();
            claims.extend(log.claims);
            round_completes += log.completed.len();
            for (uuid, token) in log.completed {
                completes_ok.entry(uuid).or_default().push(token);
            }
            lease_lost.extend(log.lease_lost);
            complete_unanswered.extend(log.complete_unanswered);
            unexpected.extend(log.unexpected);
        }
        assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");

        server.restart();
        starts += 1;
        let worker = keys.worker(&server);

        // Every acknowledged insert is there, with its payload; nothing else appeared.
        let stored: HashMap<String, Value> = worker
            .list_all(&format!("queue={LOAD}"))
            .into_iter()
            .map(|j| (j["job_uuid"].as_str().unwrap().to_owned(), j))
            .collect();
        for (uuid, (r, n, p)) in &acked {
            let job = stored
                .get(uuid)
                .unwrap_or_else(|| panic!("round {round}: acknowledged insert {uuid} (round {r}) is missing"));
            assert_eq!(job["payload"], json!({ "round": r, "producer": p, "n": n }), "payload of {uuid}");
        }
        for uuid in &round_acked {
            let (status, job) = worker.get(&format!("/v1/jobs/{uuid}"));
            assert_eq!(status, 200, "round {round}: GET acknowledged job {uuid}: {job}");
        }
        for uuid in stored.keys() {
            assert!(acked.contains_key(uuid) || unacked.contains(uuid), "round {round}: job {uuid} was never inserted");
        }
        // No job completed twice; an acknowledged complete stuck.
        for (uuid, tokens) in &completes_ok {
            assert_eq!(tokens.len(), 1, "round {round}: job {uuid} has acknowledged completes with tokens {tokens:?}");
            let job = &stored[uuid];
            assert_eq!(job["state"], "completed", "round {round}: acknowledged complete of {uuid} lost: {job}");
            assert_eq!(
                job["last_token"].as_u64(),
                Some(tokens[0]),
                "round {round}: {uuid} was claimed after its complete: {job}"
            );
        }

        // Queue order: priority, then insertion order.
        for (k, (priority, i, uuid)) in order.iter().enumerate() {
            let got = worker.claim(&order_queue, 1, 60_000);
            assert_eq!(got.len(), 1, "round {round}: order queue ran dry at {k}");
            assert_eq!(
                got[0]["job_uuid"],
                uuid.as_str(),
                "round {round}: claim {k} should be job #{i} with priority {priority}, got priority {} payload {}",
                got[0]["priority"],
                got[0]["payload"]
            );
            let token = got[0]["lease"]["token"].as_u64().unwrap();
            let (status, done) = worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token }));
            assert_eq!(status, 200, "{done}");
            order_checked += 1;
        }
        assert!(worker.claim(&order_queue, 1, 60_000).is_empty(), "round {round}: extra jobs in {order_queue}");

        println!(
            "round {round}: {} inserts acknowledged, {round_claims} claims, {round_completes} completes acknowledged, \
             {} jobs stored; {:.1} s",
            round_acked.len(),
            stored.len(),
            round_started.elapsed().as_secs_f64()
        );
    }

    // Leases of killed workers run out; the rescuer makes them failed attempts.
    let worker = keys.worker(&server);
    wait_for(Duration::from_secs(30), "no job processing", || {
        (count(&counts(&worker, LOAD), "processing") == 0).then_some(())
    });
    let stored: HashMap<String, Value> = worker
        .list_all(&format!("queue={LOAD}"))
        .into_iter()
        .map(|j| (j["job_uuid"].as_str().unwrap().to_owned(), j))
        .collect();
    assert!(stored.values().all(|j| j["state"] != "processing" && j["state"] != "abandoned"));
    let ok_tokens: HashSet<(&str, u64)> =
        completes_ok.iter().flat_map(|(u, ts)| ts.iter().map(move |t| (u.as_str(), *t))).collect();
    let (mut rescued_leases, mut committed_unacked) = (0, 0);
    for c in &claims {
        assert_eq!(c.attempt, c.token, "no release happened, so attempt == token: {c:?}");
        if ok_tokens.contains(&(c.uuid.as_str(), c.token)) {
            continue;
        }
        let job = &stored[&c.uuid];
        let expired = job["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "LEASE_EXPIRED" && e["attempt"].as_u64() == Some(c.attempt));
        if expired {
            rescued_leases += 1;
        } else {
            // The only other end: the complete was committed but its answer was lost in the kill.
            let lost_answer = complete_unanswered.contains(&(c.uuid.clone(), c.token));
            assert!(
                lost_answer && job["state"] == "completed" && job["last_token"].as_u64() == Some(c.token),
                "claim {c:?} was neither completed nor rescued: {job}"
            );
            committed_unacked += 1;
        }
    }
    for (uuid, token) in &lease_lost {
        let job = &stored[uuid];
        let expired = job["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "LEASE_EXPIRED" && e["attempt"].as_u64() == Some(*token));
        assert!(expired, "complete of {uuid} with token {token} got LEASE_LOST but that lease was not rescued: {job}");
    }
    let expired_records: usize = stored
        .values()
        .map(|j| j["errors"].as_array().unwrap().iter().filter(|e| e["code"] == "LEASE_EXPIRED").count())
        .sum();
    // Leases whose claim answer was lost in a kill: the client never knew it held them.
    let known: HashSet<(&str, u64)> = claims.iter().map(|c| (c.uuid.as_str(), c.attempt)).collect();
    let rescued_unknown: usize = stored
        .iter()
        .map(|(u, j)| {
            j["errors"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["code"] == "LEASE_EXPIRED" && !known.contains(&(u.as_str(), e["attempt"].as_u64().unwrap()))
                })
                .count()
        })
        .sum();
    // No lease was both completed (acknowledged) and rescued.
    assert_eq!(
        expired_records,
        rescued_leases + rescued_unknown,
        "a LEASE_EXPIRED record for a lease whose complete was acknowledged"
    );
    let rescued_jobs: Vec<&String> =
        stored.iter().filter(|(_, j)| !j["errors"].as_array().unwrap().is_empty()).map(|(u, _)| u).collect();
    assert!(rescued_leases > 0, "no lease of a killed worker was rescued: the test did not exercise rescue");

    // Drain: everything left completes exactly once.
    let drain_started = Instant::now();
    let mut drained = 0;
    loop {
        let jobs = worker.claim(LOAD, 100, 30_000);
        if jobs.is_empty() {
            let c = counts(&worker, LOAD);
            if count(&c, "completed") as usize == stored.len() {
                break;
            }
            assert!(drain_started.elapsed() < Duration::from_secs(60), "drain stalled: {c}");
            thread::sleep(Duration::from_millis(50));
            continue;
        }
        for job in jobs {
            let uuid = job["job_uuid"].as_str().unwrap().to_owned();
            let token = job["lease"]["token"].as_u64().unwrap();
            let (status, done) = worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token }));
            assert_eq!(status, 200, "drain complete: {done}");
            let tokens = completes_ok.entry(uuid.clone()).or_default();
            tokens.push(token);
            assert_eq!(tokens.len(), 1, "job {uuid} completed twice: tokens {tokens:?}");
            drained += 1;
        }
    }
    // Server side: the history of every job that was rescued holds exactly one complete.
    for uuid in &rescued_jobs {
        let (status, h) = worker.get(&format!("/v1/jobs/{uuid}/history"));
        assert_eq!(status, 200, "{h}");
        let completes = h["events"].as_array().unwrap().iter().filter(|e| e["action"] == "complete").count();
        assert_eq!(completes, 1, "job {uuid} history: {h}");
    }

    // The kills found batches waiting in the journal, and the server folded under load.
    let replays = journal_replays(&server, starts);
    assert!(replays > 0, "no kill left a batch in the journal: the test did not exercise the replay");
    let folds = server.log_lines().iter().filter(|l| l["message"] == "journal folded into the database file").count();
    assert!(folds > ROUNDS, "the server folded its journal {folds} times in {ROUNDS} rounds");
    // A clean stop folds the journal: nothing is left to replay.
    assert!(server.stop().success());
    let journal = std::fs::metadata(server.data().join("sluice.journal")).expect("the journal file");
    assert_eq!(journal.len(), 0, "a clean stop leaves an empty journal file");
    server.restart();
    starts += 1;
    assert_eq!(journal_replays(&server, starts), replays, "a clean stop leaves nothing to replay");

    let acked_completes: usize = completes_ok.values().map(Vec::len).sum::<usize>() - drained;
    let stored_unacked = stored.keys().filter(|u| unacked.contains(*u)).count();
    println!(
        "crash_restart: {ROUNDS} rounds (kill -9 + restart each), {} inserts acknowledged, {} unanswered ({stored_unacked} of them stored), \
         {} jobs in all, {} claims, {acked_completes} completes acknowledged under load, {} LEASE_LOST, \
         {committed_unacked} completes committed without an answer, {rescued_leases} leases of killed workers rescued \
         ({expired_records} LEASE_EXPIRED records on {} jobs, {rescued_unknown} of them leases whose claim answer was lost), {drained} drained after the last restart, \
         {order_checked} order checks, {replays} restarts replayed the journal; {:.1} s",
        acked.len(),
        unacked.len(),
        stored.len(),
        claims.len(),
        lease_lost.len(),
        rescued_jobs.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The starts at which the server replayed journaled batches, once its `starts`-th
/// start is in the log (one thread writes the log, in order, so the lines of that
/// start's replay are in it by then).
fn journal_replays(server: &Server, starts: usize) -> usize {
    let lines = server.log_lines_until("the server's latest start in its log", |lines| {
        lines.iter().filter(|l| l["message"] == "sluice is serving").count() >= starts
    });
    lines.iter().filter(|l| l["message"] == "journal replayed into the database file").count()
}
