//! Insert, duplicates, batches, ordering, delays and reading.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use sluice_tests::*;

#[test]
fn insert_stores_every_field_and_fills_defaults() {
    let server = Server::start();
    let t = server.tenant("acme");
    let job = t.producer.insert(
        "emails",
        json!({ "payload": { "to": "a@example.com", "n": [1, 2.5, null] }, "tags": { "team": "x" } }),
    );
    assert_eq!(job["state"], "pending");
    assert_eq!(job["tenant"], "acme");
    assert_eq!(job["payload"], json!({ "to": "a@example.com", "n": [1, 2.5, null] }));
    assert_eq!(job["tags"], json!({ "team": "x" }));
    assert_eq!(job["schema_version"], 1);
    assert_eq!(job["format_version"], 1);
    assert_eq!(job["max_attempts"], 5, "queue default");
    assert_eq!(job["stage"], "stable");
    assert!(job["created_at"].is_string());
    let uuid: uuid::Uuid = job["job_uuid"].as_str().unwrap().parse().unwrap();
    assert_eq!(uuid.get_version_num(), 7, "generated job_uuid is a UUIDv7");
    assert_eq!(job["trace_id"].as_str().unwrap().len(), 32, "generated trace id");
    assert_eq!(t.producer.job(&uuid.to_string()), job, "GET returns what was stored");

    // trace_id from a W3C traceparent header, or from the body.
    let req = t
        .producer
        .request(reqwest::Method::POST, "/v1/jobs")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .json(&json!({ "queue": "emails", "kind": "k", "payload": {}, "user_id": "u" }));
    let (status, job) = t.producer.send(req);
    assert_eq!(status, 201);
    assert_eq!(job["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let job = t.producer.insert("emails", json!({ "trace_id": "my-trace" }));
    assert_eq!(job["trace_id"], "my-trace");

    // Schema versions the queue does not accept are refused until it accepts them.
    let (status, body) = t.producer.post(
        "/v1/jobs",
        json!({ "queue": "emails", "kind": "k", "payload": {}, "user_id": "u", "schema_version": 2 }),
    );
    assert_eq!((status, code(&body)), (422, "SCHEMA_UNSUPPORTED"), "{body}");
    let (status, q) = t.tenant_admin.put("/v1/queues/emails", json!({ "schema_versions": [1, 2], "max_attempts": 9 }));
    assert_eq!(status, 200, "{q}");
    assert_eq!(q["config"]["schema_versions"], json!([1, 2]));
    let job = t.producer.insert("emails", json!({ "schema_version": 2 }));
    assert_eq!(job["schema_version"], 2);
    assert_eq!(job["max_attempts"], 9);
    let (_, q) = t.producer.get("/v1/queues/emails");
    assert_eq!(q["config"]["backoff_base_ms"], 1000, "untouched fields keep their defaults");
    let (status, body) = t.producer.get("/v1/queues/never-used");
    assert_eq!((status, code(&body)), (404, "NOT_FOUND"));
}

#[test]
fn duplicates_are_refused_and_the_first_job_kept() {
    let server = Server::start();
    let t = server.tenant("acme");
    let uuid = uuid::Uuid::new_v4().to_string();
    let first = t.producer.insert("q", json!({ "job_uuid": uuid, "payload": { "v": 1 } }));
    let (status, body) = t.producer.post(
        "/v1/jobs",
        json!({ "job_uuid": uuid, "queue": "other", "kind": "k", "payload": { "v": 2 }, "user_id": "u" }),
    );
    assert_eq!((status, code(&body)), (409, "DUPLICATE_JOB"));
    assert!(body["detail"].as_str().unwrap().contains(&uuid), "the reason names the job: {body}");
    assert_eq!(t.producer.job(&uuid), first, "the stored job is unchanged");
    // The same uuid in another tenant is another job.
    let other = server.tenant("other");
    other.producer.insert("q", json!({ "job_uuid": uuid }));

    // 100 concurrent inserts of one job_uuid: exactly one succeeds.
    let contested = uuid::Uuid::new_v4().to_string();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let api = t.producer.clone();
            let contested = contested.clone();
            std::thread::spawn(move || {
                api.post("/v1/jobs", json!({ "job_uuid": contested, "queue": "race", "kind": "k", "payload": { "i": i }, "user_id": "u" }))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let won: Vec<_> = results.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(won.len(), 1, "exactly one insert wins");
    assert!(results.iter().filter(|(s, _)| *s != 201).all(|(s, b)| *s == 409 && code(b) == "DUPLICATE_JOB"));
    assert_eq!(t.producer.job(&contested)["payload"], won[0].1["payload"]);
    let (_, list) = t.producer.get("/v1/jobs?queue=race");
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[test]
fn batch_accepts_and_refuses_each_job_on_its_own() {
    let server = Server::start();
    let t = server.tenant("acme");
    let taken = t.producer.insert("q", json!({}))["job_uuid"].clone();
    let ok = |i: i32| json!({ "queue": "q", "kind": "k", "payload": { "i": i }, "user_id": "u" });
    let jobs = json!([ok(0), { "queue": "q" }, ok(2), { "job_uuid": taken, "queue": "q", "kind": "k", "payload": {}, "user_id": "u" }, { "queue": "q", "kind": "k", "payload": {}, "user_id": "u", "priority": "high" }, ok(5)]);
    let (status, out) = t.producer.post("/v1/jobs/batch", json!({ "jobs": jobs }));
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["accepted"], 3);
    assert_eq!(out["refused"], 3);
    let statuses: Vec<u64> = out["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 422, 201, 409, 422, 201]);
    assert_eq!(out["results"][3]["error"]["code"], "DUPLICATE_JOB");
    assert_eq!(out["results"][1]["error"]["code"], "VALIDATION");
    let (_, list) = t.producer.get("/v1/jobs?queue=q");
    assert_eq!(list["jobs"].as_array().unwrap().len(), 4);

    let big: Vec<_> = (0..1001).map(ok).collect();
    let (status, body) = t.producer.post("/v1/jobs/batch", json!({ "jobs": big }));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "at most 1,000 per batch");
    let full: Vec<_> = (0..1000).map(ok).collect();
    let (status, out) = t.producer.post("/v1/jobs/batch", json!({ "jobs": full }));
    assert_eq!(status, 200);
    assert_eq!(out["accepted"], 1000);
}

#[test]
fn claims_follow_priority_then_run_at_then_insertion_and_wait_for_delays() {
    let server = Server::start();
    let t = server.tenant("acme");
    let past = |s: i64| (seconds_ago(s)).to_string();
    let a = t.producer.insert("q", json!({ "priority": 0 }))["job_uuid"].clone();
    let b = t.producer.insert("q", json!({ "priority": 5 }))["job_uuid"].clone();
    let c = t.producer.insert("q", json!({ "priority": 0, "run_at": past(60) }))["job_uuid"].clone();
    let d = t.producer.insert("q", json!({ "priority": 0 }))["job_uuid"].clone();
    let e = t.producer.insert("q", json!({ "priority": -3 }))["job_uuid"].clone();
    let delayed = t.producer.insert("q", json!({ "priority": 9, "delay_ms": 1500 }))["job_uuid"].clone();
    let order: Vec<_> = (0..5).map(|_| t.worker.claim("q", 1, 60_000)[0]["job_uuid"].clone()).collect();
    assert_eq!(order, vec![b, c, a, d, e], "priority, then run_at, then insertion");
    assert!(t.worker.claim("q", 1, 60_000).is_empty(), "the delayed job is not ready yet");
    // A long-poll claim waits for it.
    let (status, body) = t.worker.post("/v1/queues/q/claim", json!({ "worker": "w", "wait_ms": 10_000 }));
    assert_eq!(status, 200);
    assert_eq!(body["jobs"][0]["job_uuid"], delayed);
    assert_eq!(body["paused"], false);
    // A long-poll claim wakes when a job is inserted.
    let worker = t.worker.clone();
    let waiter =
        std::thread::spawn(move || worker.post("/v1/queues/late/claim", json!({ "worker": "w", "wait_ms": 20_000 })));
    std::thread::sleep(Duration::from_millis(300));
    let late = t.producer.insert("late", json!({}))["job_uuid"].clone();
    let (_, body) = waiter.join().unwrap();
    assert_eq!(body["jobs"][0]["job_uuid"], late);
}

/// RFC 3339 time `s` seconds ago.
fn seconds_ago(s: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(s)).to_rfc3339()
}

#[test]
fn list_filters_and_pages_with_a_cursor() {
    let server = Server::start();
    let t = server.tenant("acme");
    for i in 0..25 {
        let queue = if i % 2 == 0 { "even" } else { "odd" };
        let user = format!("user-{}", i % 3);
        t.producer.insert(queue, json!({ "user_id": user, "kind": if i < 5 { "early" } else { "late" } }));
    }
    let mut seen = HashSet::new();
    let mut cursor: Option<u64> = None;
    let mut pages = 0;
    loop {
        let path = match cursor {
            Some(c) => format!("/v1/jobs?limit=7&cursor={c}"),
            None => "/v1/jobs?limit=7".into(),
        };
        let (status, page) = t.producer.get(&path);
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for j in page["jobs"].as_array().unwrap() {
            assert!(seen.insert(j["job_uuid"].as_str().unwrap().to_owned()), "no job twice across pages");
        }
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(pages, 4);
    let count = |q: &str| t.producer.get(&format!("/v1/jobs?{q}&limit=500")).1["jobs"].as_array().unwrap().len();
    assert_eq!(count("queue=even"), 13);
    assert_eq!(count("kind=early"), 5);
    assert_eq!(count("user_id=user-0"), 9);
    assert_eq!(count("user_id=user-0&queue=odd"), 4);
    assert_eq!(count("state=pending"), 25);
    t.worker.claim("odd", 3, 60_000);
    assert_eq!(count("state=processing"), 3);
    assert_eq!(count("state=pending&queue=odd"), 9);
    assert_eq!(count("parked=false"), 25);
    let (status, body) = t.producer.get("/v1/jobs?state=sleeping");
    assert_eq!((status, code(&body)), (422, "VALIDATION"));
}
