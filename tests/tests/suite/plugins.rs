//! Tenant plugins over HTTP against the real server: uploads and their checks,
//! bindings, validators, taggers and the sandbox, with the plugins of `plugins/`
//! built from source for wasm32-wasip2.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

fn uuid_of(job: &Value) -> String {
    job["job_uuid"].as_str().unwrap().to_owned()
}

/// Insert a job and claim it; returns (job_uuid, token).
fn claimed(t: &Tenant, queue: &str, payload: Value) -> (String, u64) {
    let uuid = uuid_of(&t.producer.insert(queue, json!({ "payload": payload })));
    let jobs = t.worker.claim(queue, 1, 60_000);
    assert_eq!(jobs.len(), 1, "claimed one job");
    assert_eq!(uuid_of(&jobs[0]), uuid);
    (uuid, jobs[0]["lease"]["token"].as_u64().unwrap())
}

fn complete(t: &Tenant, uuid: &str, token: u64) -> (u16, Value) {
    t.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token }))
}

fn history(t: &Tenant, uuid: &str) -> Vec<Value> {
    t.producer.get(&format!("/v1/jobs/{uuid}/history")).1["events"].as_array().unwrap().clone()
}

#[test]
fn uploads_are_checked_before_anything_is_stored() {
    let server = Server::start();
    let a = server.tenant("alpha");
    let b = server.tenant("beta");
    let wasm = plugin("require_fields");
    let (status, first) = a.tenant_admin.upload(wasm.clone(), "req", "validator");
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["kind"], "validator");
    assert_eq!(first["contract"], "0.1.0");
    let (status, again) = a.tenant_admin.upload(wasm.clone(), "req-again", "validator");
    assert_eq!(status, 200, "the same bytes are the same plugin");
    assert_eq!(again, first);
    let (status, theirs) = b.tenant_admin.upload(wasm.clone(), "theirs", "validator");
    assert_eq!(status, 201, "another tenant's upload is its own plugin");
    assert_eq!(
        (theirs["digest"].clone(), theirs["tenant"].clone(), theirs["name"].clone()),
        (first["digest"].clone(), json!("beta"), json!("theirs"))
    );
    let digest = first["digest"].as_str().unwrap();
    assert_eq!(
        a.tenant_admin.get(&format!("/v1/plugins/{digest}")).1["name"],
        "req",
        "each tenant sees only its own record"
    );

    let refused = [
        (b"\0asm\x01\0\0\0".to_vec(), "validator", "core WebAssembly module"),
        (b"not wasm at all".to_vec(), "validator", "not WebAssembly"),
        (plugin("socket_user"), "validator", "wasi:sockets"),
        (plugin("pii_tagger"), "validator", "missing export sluice:plugin/validator"),
        (plugin("require_fields"), "migrator", "missing export sluice:plugin/migrator"),
    ];
    for (bytes, kind, needle) in refused {
        let (status, body) = a.tenant_admin.upload(bytes, "bad", kind);
        assert_eq!((status, code(&body)), (422, "PLUGIN_INVALID"), "{needle}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(needle), "reason names it: {body}");
    }
    let r = a
        .tenant_admin
        .request(reqwest::Method::POST, "/v1/plugins?name=x&kind=validator&version=1")
        .header("content-type", "application/json")
        .body(wasm);
    assert_eq!(a.tenant_admin.send(r).0, 415);
    let (_, list) = a.tenant_admin.get("/v1/plugins");
    assert_eq!(list["plugins"].as_array().unwrap().len(), 1, "nothing refused was stored");
    let (status, _) = a.producer.upload(plugin("panicker"), "p", "validator");
    assert_eq!(status, 403, "a producer cannot upload plugin code");

    // Delete refuses while bound.
    let (status, _) = a.tenant_admin.put("/v1/bindings/q/validator/stable", json!({ "plugin": digest }));
    assert_eq!(status, 200);
    let (status, body) = a.tenant_admin.delete(&format!("/v1/plugins/{digest}"));
    assert_eq!((status, code(&body)), (409, "PLUGIN_IN_USE"));
    let (status, body) = a.tenant_admin.put("/v1/bindings/q/tagger/stable", json!({ "plugin": digest }));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "a validator cannot be bound as a tagger: {body}");
    let (status, _) = b.tenant_admin.put("/v1/bindings/q/validator/stable", json!({ "plugin": "0".repeat(64) }));
    assert_eq!(status, 404);
    let (status, _) = a.tenant_admin.delete("/v1/bindings/q/validator/stable");
    assert_eq!(status, 200);
    let (status, _) = a.tenant_admin.delete(&format!("/v1/plugins/{digest}"));
    assert_eq!(status, 200);
    assert_eq!(b.tenant_admin.get(&format!("/v1/plugins/{digest}")).0, 200, "the other tenant's copy stays");
}

/// The tenant requires `invoice_id` in every payload, and binds the reference
/// validator that enforces it to queue `billing`; returns the plugin's digest.
fn require_invoice_ids(t: &Tenant) -> String {
    let (status, _) =
        t.tenant_admin.put("/v1/config", json!({ "default_tags": { "required_fields": ["invoice_id"] } }));
    assert_eq!(status, 200);
    t.tenant_admin.install("require_fields", "validator", "billing", "closed")
}

#[test]
fn validators_veto_with_their_code_and_every_judgement_is_in_the_history() {
    let server = Server::start();
    let t = server.tenant("acme");
    let digest = require_invoice_ids(&t);

    let (uuid, token) = claimed(&t, "billing", json!({ "amount": 3 }));
    let before = t.producer.job(&uuid);
    let (status, body) = complete(&t, &uuid, token);
    assert_eq!((status, code(&body)), (409, "PLUGIN_REJECTED"), "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("MISSING_FIELD") && detail.contains("invoice_id"),
        "the plugin's code and reason: {detail}"
    );
    let after = t.producer.job(&uuid);
    assert_eq!(before, after, "a veto changes nothing on the job");
    let events = history(&t, &uuid);
    let veto = events.iter().find(|e| e["action"] == "complete_refused").expect("the veto is in the history");
    assert_eq!(veto["detail"]["plugin"]["digest"], digest.as_str());
    assert_eq!(veto["detail"]["plugin"]["code"], "MISSING_FIELD");
    assert!(
        veto["detail"]["plugin"]["output"].as_str().unwrap().contains("require_fields"),
        "the plugin's log line is kept with the job"
    );

    let (uuid, token) = claimed(&t, "billing", json!({ "invoice_id": 9 }));
    assert_eq!(complete(&t, &uuid, token).0, 200);
    let events = history(&t, &uuid);
    for action in ["claim", "complete"] {
        let e = events.iter().find(|e| e["action"] == action).unwrap_or_else(|| panic!("{action} in history"));
        assert_eq!(e["detail"]["plugin"]["digest"], digest.as_str(), "{action} records the digest");
        assert_eq!(e["detail"]["plugin"]["outcome"], "allowed");
        assert!(e["detail"]["plugin"]["fuel"].as_u64().unwrap() > 0);
    }
    // Other queues of the tenant are not judged; a `*` binding judges them all.
    let (uuid, token) = claimed(&t, "other", json!({}));
    assert_eq!(complete(&t, &uuid, token).0, 200);
    t.tenant_admin.install("require_fields", "validator", "*", "closed");
    let (uuid, token) = claimed(&t, "other", json!({}));
    assert_eq!(complete(&t, &uuid, token).0, 409);

    // Each call is logged with tenant, digest, kind, outcome, duration and fuel; the
    // plugin's own output is not in the host's log.
    let rejected = |l: &Value| l["message"] == "plugin call" && l["outcome"] == "rejected";
    let lines = server.log_lines_until("the rejected call's line", |lines| lines.iter().any(rejected));
    let calls: Vec<Value> = lines.into_iter().filter(|l| l["message"] == "plugin call").collect();
    for l in &calls {
        for field in ["tenant", "digest", "kind", "outcome", "duration_us", "fuel"] {
            assert!(!l[field].is_null(), "{field} in {l}");
        }
    }
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(!log.contains("require_fields: the payload lacks"), "plugin output stays out of the host log");
    // Metrics count the calls per plugin.
    let metrics = server.admin().send(server.admin().request(reqwest::Method::GET, "/metrics")).1;
    let text = metrics.as_str().unwrap();
    assert!(text.contains("sluice_plugin_calls_total{") && text.contains("outcome=\"rejected\""), "{text}");
    assert!(text.contains("sluice_plugin_call_duration_seconds_bucket"));
    assert_eq!(t.producer.get("/metrics").0, 403, "metrics need an operator-level key");
}

/// A batch complete under a validator: the jobs are judged together and applied in
/// one writer request, yet each item is vetoed, refused or completed on its own.
#[test]
fn a_judged_batch_complete_decides_each_item_on_its_own() {
    let server = Server::start();
    let t = server.tenant("acme");
    let digest = require_invoice_ids(&t);
    let (good, good_token) = claimed(&t, "billing", json!({ "invoice_id": 1 }));
    let (bad, bad_token) = claimed(&t, "billing", json!({ "amount": 3 }));
    let (stale, stale_token) = claimed(&t, "billing", json!({ "invoice_id": 2 }));
    let items = json!([
        { "job_uuid": good, "token": good_token },
        { "job_uuid": bad, "token": bad_token },
        { "job_uuid": stale, "token": stale_token + 1 },
        { "job_uuid": uuid::Uuid::new_v4(), "token": 1 },
    ]);
    let (status, out) = t.worker.post("/v1/jobs/batch/complete", json!({ "jobs": items }));
    assert_eq!(status, 200, "{out}");
    let outcome = [(200, ""), (409, "PLUGIN_REJECTED"), (409, "LEASE_LOST"), (404, "NOT_FOUND")];
    assert_eq!(batch_outcome(&out), outcome);
    assert_eq!(t.producer.job(&good)["state"], "completed");
    for uuid in [&bad, &stale] {
        assert_eq!(t.producer.job(uuid)["state"], "processing", "a refused item changes nothing");
    }
    let completed = history(&t, &good);
    let done = completed.iter().find(|e| e["action"] == "complete").expect("the completion is in the history");
    assert_eq!(done["detail"]["plugin"]["digest"], digest.as_str());
    assert_eq!(done["detail"]["plugin"]["outcome"], "allowed");
    let vetoed = history(&t, &bad);
    let veto = vetoed.iter().find(|e| e["action"] == "complete_refused").expect("the veto is in the history");
    assert_eq!(veto["detail"]["plugin"]["code"], "MISSING_FIELD");
    assert!(history(&t, &stale).iter().all(|e| e["action"] != "complete_refused"), "a stale lease is not judged");

    // Handed in with a claim, a job is judged the same way, beside the claim's own judging.
    let next = uuid_of(&t.producer.insert("billing", json!({ "payload": { "invoice_id": 3 } })));
    let claim = json!({ "worker": "w", "complete": [{ "job_uuid": bad, "token": bad_token }] });
    let (status, out) = t.worker.post("/v1/queues/billing/claim", claim);
    assert_eq!(status, 200, "{out}");
    assert_eq!(batch_outcome(&out["completed"]), [(409, "PLUGIN_REJECTED")]);
    assert_eq!(out["jobs"].as_array().map(|jobs| jobs.iter().map(uuid_of).collect()), Some(vec![next.clone()]));
    assert_eq!(t.producer.job(&bad)["state"], "processing", "the vetoed completion changed nothing");
    let vetoes = history(&t, &bad).iter().filter(|e| e["action"] == "complete_refused").count();
    assert_eq!(vetoes, 2, "both vetoes are in the history");
    let claim = history(&t, &next).into_iter().find(|e| e["action"] == "claim").expect("the claim is in the history");
    assert_eq!(claim["detail"]["plugin"]["outcome"], "allowed");
}

/// A claim under a validator is judged before it leases: concurrent claimers judge
/// different jobs, and a job that changed while it was judged is not leased.
#[test]
fn judged_claims_reserve_their_jobs_and_skip_a_job_changed_meanwhile() {
    let server = Server::start();
    let t = server.tenant("acme");
    t.tenant_admin.install("slow_allow", "validator", "q", "closed");
    let mut inserted: Vec<String> = (0..2).map(|_| uuid_of(&t.producer.insert("q", json!({})))).collect();
    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let worker = t.worker.clone();
            std::thread::spawn(move || worker.claim("q", 1, 60_000))
        })
        .collect();
    let mut got: Vec<String> = claimers.into_iter().flat_map(|c| c.join().unwrap()).map(|j| uuid_of(&j)).collect();
    got.sort();
    inserted.sort();
    assert_eq!(got, inserted, "each claimer judged and leased its own job");

    // slow_allow takes about 300 ms; a legal hold placed meanwhile changes the job.
    let job = uuid_of(&t.producer.insert("q", json!({})));
    let worker = t.worker.clone();
    let claimer = std::thread::spawn(move || worker.claim("q", 1, 60_000));
    std::thread::sleep(Duration::from_millis(100));
    let (status, _) = t.tenant_admin.put(&format!("/v1/jobs/{job}/hold"), json!({ "reason": "audit" }));
    assert_eq!(status, 200);
    assert!(claimer.join().unwrap().is_empty(), "the job changed after the plugin saw it");
    let after = t.producer.job(&job);
    assert_eq!((after["state"].as_str(), after["attempt"].as_u64()), (Some("pending"), Some(0)), "{after}");
    let again = t.worker.claim("q", 1, 60_000);
    assert_eq!(again.iter().map(uuid_of).collect::<Vec<_>>(), vec![job.as_str()], "judged again at its new revision");
    let events = history(&t, &job);
    let claim = events.iter().find(|e| e["action"] == "claim").expect("the claim is in the history");
    assert_eq!(claim["detail"]["plugin"]["outcome"], "allowed", "the claim event keeps the judgement");

    // A paused queue hands out nothing, and its jobs are not judged meanwhile.
    t.producer.insert("q", json!({}));
    assert_eq!(t.tenant_admin.post("/v1/queues/q/pause", json!({})).0, 200);
    let before = plugin_calls(&server);
    let (status, body) = t.worker.post("/v1/queues/q/claim", json!({ "worker": "w", "limit": 5 }));
    assert_eq!((status, body["paused"].as_bool(), body["jobs"].as_array().map(Vec::len)), (200, Some(true), Some(0)));
    assert_eq!(plugin_calls(&server), before, "nothing judged while paused");
}

/// Plugin calls the host has made, by its metrics.
fn plugin_calls(server: &Server) -> u64 {
    let admin = server.admin();
    let text = admin.send(admin.request(reqwest::Method::GET, "/metrics")).1;
    let text = text.as_str().expect("metrics text").to_owned();
    text.lines()
        .filter(|l| l.starts_with("sluice_plugin_calls_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

#[test]
fn a_vetoed_claim_defers_that_job_and_returns_the_others() {
    let server = Server::start();
    let t = server.tenant("acme");
    t.tenant_admin.put("/v1/queues/q", json!({ "backoff_base_ms": 60_000 }));
    t.tenant_admin.install("hold_gate", "validator", "q", "closed");
    let held = uuid_of(&t.producer.insert("q", json!({ "payload": { "hold": true } })));
    let free: Vec<String> =
        (0..3).map(|i| uuid_of(&t.producer.insert("q", json!({ "payload": { "i": i } })))).collect();
    let jobs = t.worker.claim("q", 10, 60_000);
    let got: Vec<String> = jobs.iter().map(uuid_of).collect();
    assert_eq!(got, free, "the claim returns the other jobs");
    let job = t.producer.job(&held);
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_u64()),
        (Some("pending"), Some(0)),
        "deferred, no attempt spent: {job}"
    );
    assert!(job["due_at"].is_string(), "deferred by the queue's backoff");
    let events = history(&t, &held);
    let defer = events.iter().find(|e| e["action"] == "defer").expect("one history event for the veto");
    assert_eq!(defer["detail"]["plugin"]["code"], "ON_HOLD");
    assert!(t.worker.claim("q", 10, 60_000).is_empty(), "the held job waits out its deferral");

    // 50 concurrent claimers still get jobs while a validator judges every claim.
    for chunk in 0..5 {
        let jobs: Vec<Value> = (0..100)
            .map(|i| json!({ "queue": "busy", "kind": "k", "user_id": "u", "payload": { "n": chunk * 100 + i } }))
            .collect();
        assert_eq!(t.producer.post("/v1/jobs/batch", json!({ "jobs": jobs })).1["accepted"], 100);
    }
    t.tenant_admin.install("hold_gate", "validator", "busy", "closed");
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let w = t.worker.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let jobs = w.claim("busy", 5, 60_000);
                    if jobs.is_empty() {
                        return mine;
                    }
                    mine.extend(jobs.iter().map(uuid_of));
                }
            })
        })
        .collect();
    let per_claimer: Vec<Vec<String>> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    let mut all: Vec<String> = per_claimer.iter().flatten().cloned().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (500, 500), "every job claimed exactly once");
    let served = per_claimer.iter().filter(|m| !m.is_empty()).count();
    println!("50 claimers with a validator: {served} got jobs");
    assert!(served >= 25, "claimers get jobs, not just a few: {served}");
}

#[test]
fn failure_policies_and_the_sandbox_limits() {
    let server = Server::start_with(&["--plugin-deadline-ms", "500", "--plugin-memory-mib", "16"]);
    let t = server.tenant("acme");
    let cases = [
        ("spin_loop", "PLUGIN_TIMEOUT", &["deadline", "fuel"][..]),
        ("clock_sleeper", "PLUGIN_TIMEOUT", &["deadline"][..]),
        ("memory_hog", "PLUGIN_LIMIT", &["memory"][..]),
        ("panicker", "PLUGIN_TRAP", &["trap"][..]),
    ];
    for (name, expected, reasons) in cases {
        let queue = name.replace('_', "-");
        t.tenant_admin.install(name, "validator", &queue, "closed");
        let (uuid, token) = claimed_unjudged(&t, &queue);
        let (status, body) = complete(&t, &uuid, token);
        assert_eq!((status, code(&body)), (424, expected), "{name}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(reasons.iter().any(|r| detail.contains(r)), "{name}: reason says which limit: {detail}");
        assert_eq!(t.producer.job(&uuid)["state"], "processing", "fail closed: nothing happened");
        if name == "panicker" {
            let events = history(&t, &uuid);
            let e = events.iter().find(|e| e["action"] == "complete_refused").unwrap();
            assert!(e["detail"]["plugin"]["output"].as_str().unwrap().contains("plugin panicked on purpose"), "{e}");
        }
        // Fail open: the same failure lets the action through, and says so in the history.
        t.tenant_admin.install(name, "validator", &queue, "open");
        let (status, body) = complete(&t, &uuid, token);
        assert_eq!(status, 200, "{name} fail open: {body}");
        let events = history(&t, &uuid);
        let done = events.iter().find(|e| e["action"] == "complete").unwrap();
        assert_eq!(done["detail"]["plugin"]["outcome"], "failed");
        assert_eq!(done["detail"]["plugin"]["code"], expected);
    }

    // Reading a file fails inside the plugin: no directory is granted.
    t.tenant_admin.install("file_reader", "validator", "files", "closed");
    let (uuid, token) = claimed_unjudged(&t, "files");
    let (status, body) = complete(&t, &uuid, token);
    assert_eq!((status, code(&body)), (409, "PLUGIN_REJECTED"));
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("FILE_RESULT") && detail.matches("error").count() >= 2,
        "both reads failed inside the plugin: {detail}"
    );

    // A flood of output keeps only the bounded amount, in the history, none in the log.
    t.tenant_admin.install("flooder", "validator", "flood", "closed");
    let (uuid, token) = claimed_unjudged(&t, "flood");
    assert_eq!(complete(&t, &uuid, token).0, 200);
    let events = history(&t, &uuid);
    let output = events.iter().find(|e| e["action"] == "complete").unwrap()["detail"]["plugin"]["output"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(output.len() <= 16 * 1024 + 100, "output bounded: {} bytes", output.len());
    assert!(output.contains("more bytes of output dropped"), "the drop is noted");
    let log = std::fs::read(server.log_path()).unwrap();
    assert!(log.len() < 2 << 20, "the flood never reached the host log ({} bytes)", log.len());
}

/// Claim a job on a queue whose misbehaving validator would fail the claim
/// itself (validators judge claims too): unbind, claim, bind back.
fn claimed_unjudged(t: &Tenant, queue: &str) -> (String, u64) {
    let (_, bindings) = t.tenant_admin.get("/v1/bindings");
    let binding = bindings["bindings"].as_array().unwrap().iter().find(|b| b["queue"] == queue).cloned();
    if binding.is_some() {
        t.tenant_admin.delete(&format!("/v1/bindings/{queue}/validator/stable"));
    }
    let claimed = claimed(t, queue, json!({}));
    if let Some(b) = binding {
        let (status, _) = t.tenant_admin.put(
            &format!("/v1/bindings/{queue}/validator/stable"),
            json!({ "plugin": b["plugin"], "failure_policy": b["failure_policy"] }),
        );
        assert_eq!(status, 200);
    }
    claimed
}

/// Every call of `secret_keeper` (a claim and a complete per job) leaks a marker
/// and first checks that no earlier call's is in its memory: calls of the same
/// plugin back to back, which the pool gives the memory slot that plugin last
/// had, and of another tenant's copy in between.
#[test]
fn a_plugins_memory_never_reaches_another_call() {
    let server = Server::start();
    let tenants = [server.tenant("first"), server.tenant("second")];
    for t in &tenants {
        t.tenant_admin.install("secret_keeper", "validator", "q", "closed");
    }
    for _ in 0..10 {
        for t in &tenants {
            for _ in 0..2 {
                let (uuid, token) = claimed(t, "q", json!({}));
                let (status, body) = complete(t, &uuid, token);
                assert_eq!(status, 200, "a fresh memory each call, and a scan that sees its own marker: {body}");
            }
        }
    }
}

#[test]
fn a_looping_plugin_never_stops_another_tenant() {
    let server = Server::start_with(&["--plugin-deadline-ms", "300"]);
    let a = server.tenant("looper");
    let b = server.tenant("bystander");
    a.tenant_admin.install("spin_loop", "validator", "q", "closed");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loopers: Vec<_> = (0..4)
        .map(|_| {
            let (producer, stop) = (a.producer.clone(), stop.clone());
            let worker = a.worker.clone();
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    producer.insert("q", json!({}));
                    let (status, body) = worker.post("/v1/queues/q/claim", json!({ "worker": "w" }));
                    codes.push((status, code(&body).to_owned(), body["jobs"].as_array().map_or(0, |j| j.len())));
                }
                codes
            })
        })
        .collect();
    let mut b_requests = 0;
    for i in 0..150 {
        let job = b.producer.insert("q", json!({ "payload": { "i": i } }));
        let jobs = b.worker.claim("q", 1, 60_000);
        assert_eq!(jobs.len(), 1);
        let (status, _) = complete(&b, &uuid_of(&jobs[0]), jobs[0]["lease"]["token"].as_u64().unwrap());
        assert_eq!(status, 200);
        assert_eq!(b.producer.job(&uuid_of(&job))["state"], "completed");
        b_requests += 4;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let a_claims: Vec<(u16, String, usize)> = loopers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    println!(
        "tenant B: {b_requests} requests all succeeded; tenant A: {} claims judged by a looping plugin",
        a_claims.len()
    );
    assert!(!a_claims.is_empty());
    assert!(
        a_claims.iter().all(|(status, _, handed)| *status == 200 && *handed == 0),
        "A's claims are all vetoed (deferred)"
    );
    let looper_call = |l: &Value| l["message"] == "plugin call" && l["tenant"] == "looper";
    let lines = server.log_lines_until("the looping plugin's calls", |lines| lines.iter().any(looper_call));
    let timeouts = lines.into_iter().filter(looper_call).collect::<Vec<_>>();
    assert!(timeouts.iter().all(|l| l["code"] == "PLUGIN_TIMEOUT"), "every call of A's plugin ended in PLUGIN_TIMEOUT");
}

#[test]
fn taggers_and_configuration_merge_tags_by_their_rules() {
    let server = Server::start();
    let t = server.tenant("acme");
    let (status, config) = t.tenant_admin.put(
        "/v1/config",
        json!({ "default_tags": { "gdpr": true, "data_class": "confidential", "region": "eu", "team": "tenant" }, "min_retention_days": 1, "max_retention_days": 365 }),
    );
    assert_eq!(status, 200, "{config}");
    assert_eq!(t.tenant_admin.get("/v1/config").1, config);
    let (status, _) =
        t.tenant_admin.put("/v1/users/vip/config", json!({ "tags": { "data_class": "restricted", "tier": "gold" } }));
    assert_eq!(status, 200);
    assert_eq!(t.tenant_admin.get("/v1/users/vip/config").1["tags"]["tier"], "gold");
    assert_eq!(t.producer.put("/v1/config", json!({})).0, 403);

    t.tenant_admin.install("tag_all", "tagger", "q", "closed");
    let job = t
        .producer
        .insert("q", json!({ "user_id": "vip", "tags": { "gdpr": false, "retention_days": 30, "team": "request" } }));
    let tags = &job["tags"];
    assert_eq!(tags["gdpr"], true, "a request and a plugin cannot loosen gdpr");
    assert_eq!(tags["data_class"], "restricted", "the user's stricter class wins over the plugin's public");
    assert_eq!(tags["retention_days"], 30, "the plugin's 3650 cannot lengthen it");
    assert_eq!(tags["region"], "eu");
    assert_eq!(tags["team"], "request", "free-form: the request wins");
    assert_eq!(tags["tier"], "gold");
    assert_eq!(t.producer.job(&uuid_of(&job))["tags"], *tags, "the merged tags are stored");
    let events = history(&t, &uuid_of(&job));
    assert_eq!(events[0]["detail"]["plugin"]["outcome"], "tagged");

    let (status, body) = t.producer.post(
        "/v1/jobs",
        json!({ "queue": "q", "kind": "k", "user_id": "u", "payload": {}, "tags": { "retention_days": 9999 } }),
    );
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "outside the tenant's bounds: {body}");
    let (status, body) = t.producer.post(
        "/v1/jobs",
        json!({ "queue": "q", "kind": "k", "user_id": "u", "payload": {}, "tags": { "region": "us" } }),
    );
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "the tenant fixes the region: {body}");

    t.tenant_admin.install("pii_tagger", "tagger", "signup", "closed");
    let job = t.producer.insert("signup", json!({ "payload": { "email": "ada@example.org" } }));
    assert_eq!(job["tags"]["pii"], json!(["email"]));
    let job = t.producer.insert("signup", json!({ "payload": { "n": 1 } }));
    assert!(job["tags"]["pii"].is_null());
}

#[test]
fn bindings_swap_without_a_restart_and_survive_one() {
    let mut server = Server::start();
    let t = server.tenant("acme");
    let slow = t.tenant_admin.install("slow_allow", "validator", "q", "closed");
    // Claim with no validator judging twice: claims are judged by slow_allow too (allowed).
    let (uuid, token) = claimed(&t, "q", json!({}));
    let (uuid2, token2) = claimed(&t, "q", json!({}));
    let in_flight = {
        let w = t.worker.clone();
        let uuid = uuid.clone();
        std::thread::spawn(move || w.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token })))
    };
    std::thread::sleep(Duration::from_millis(100));
    let strict = t.tenant_admin.install("file_reader", "validator", "q", "closed");
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "the call in flight finished on the version it started with: {body}");
    let events = history(&t, &uuid);
    assert_eq!(events.iter().find(|e| e["action"] == "complete").unwrap()["detail"]["plugin"]["digest"], slow.as_str());
    let (status, body) = complete(&t, &uuid2, token2);
    assert_eq!((status, code(&body)), (409, "PLUGIN_REJECTED"), "new calls use the new binding at once");
    server.stop();
    server.restart();
    let (status, body) = complete(&t, &uuid2, token2);
    assert_eq!(status, 409, "the binding survived the restart: {body}");
    let (_, bindings) = t.tenant_admin.get("/v1/bindings");
    assert_eq!(bindings["bindings"][0]["plugin"], strict.as_str());
}

#[test]
fn ten_thousand_calls_keep_the_host_small() {
    let server = Server::start();
    let t = server.tenant("acme");
    t.tenant_admin.install("require_fields", "validator", "q", "closed");
    let mut calls = 0;
    let mut round = |n: usize| {
        for _ in 0..n / 1000 {
            let jobs: Vec<Value> =
                (0..500).map(|i| json!({ "queue": "q", "kind": "k", "user_id": "u", "payload": { "i": i } })).collect();
            assert_eq!(t.producer.post("/v1/jobs/batch", json!({ "jobs": jobs })).1["accepted"], 500);
            let mut left = 500;
            while left > 0 {
                let jobs = t.worker.claim("q", 100, 60_000);
                for j in &jobs {
                    let (status, _) = complete(&t, &uuid_of(j), j["lease"]["token"].as_u64().unwrap());
                    assert_eq!(status, 200);
                }
                left -= jobs.len();
                calls += 2 * jobs.len();
            }
        }
    };
    round(1000);
    let warm = server.rss_kib();
    round(10_000);
    let after = server.rss_kib();
    println!(
        "RSS after warm-up {} KiB, after 10,000 more validator calls {} KiB (+{} KiB); {calls} calls in all",
        warm,
        after,
        after as i64 - warm as i64
    );
    assert!(after < warm + 50 * 1024, "RSS grew by {} KiB", after - warm);
}
