//! Failures, backoff, the failure breaker, retry, replay and cancel.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

fn claim_one(t: &Tenant, queue: &str) -> (String, u64) {
    let jobs = wait_for(Duration::from_secs(20), "a job to claim", || {
        let jobs = t.worker.claim(queue, 1, 60_000);
        (!jobs.is_empty()).then_some(jobs)
    });
    (jobs[0]["job_uuid"].as_str().unwrap().to_owned(), jobs[0]["lease"]["token"].as_u64().unwrap())
}

fn fail(t: &Tenant, uuid: &str, token: u64, extra: Value) -> Value {
    let mut body = json!({ "token": token, "code": "SMTP_DOWN", "reason": "mail server refused", "traceback": "at send()\nat main()", "step": "send" });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, job) = t.worker.post(&format!("/v1/jobs/{uuid}/fail"), body);
    assert_eq!(status, 200, "{job}");
    job
}

#[test]
fn failed_attempts_are_recorded_backed_off_and_finally_abandoned() {
    let server = Server::start();
    let t = server.tenant("acme");
    t.tenant_admin.put("/v1/queues/q", json!({ "backoff_base_ms": 200, "backoff_cap_ms": 400, "max_attempts": 3 }));
    let uuid = t.producer.insert("q", json!({}))["job_uuid"].as_str().unwrap().to_owned();
    for attempt in 1..=3u64 {
        let (claimed, token) = claim_one(&t, "q");
        assert_eq!(claimed, uuid);
        let job = fail(&t, &uuid, token, json!({}));
        let errors = job["errors"].as_array().unwrap();
        assert_eq!(errors.len() as u64, attempt, "one error record per attempt");
        let last = errors.last().unwrap();
        assert_eq!(last["code"], "SMTP_DOWN");
        assert_eq!(last["reason"], "mail server refused");
        assert_eq!(last["traceback"], "at send()\nat main()");
        assert_eq!(last["step"], "send");
        assert_eq!(last["attempt"], attempt);
        if attempt < 3 {
            assert_eq!(job["state"], "failed");
            assert!(job["due_at"].is_string(), "waits out its backoff");
        } else {
            assert_eq!(job["state"], "abandoned", "no attempts left");
        }
    }
    let (_, history) = t.producer.get(&format!("/v1/jobs/{uuid}/history"));
    let actions: Vec<&str> =
        history["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["insert", "claim", "fail", "reschedule", "claim", "fail", "reschedule", "claim", "fail"]);

    // Not retryable: abandoned at once.
    let uuid = t.producer.insert("q2", json!({}))["job_uuid"].as_str().unwrap().to_owned();
    let (_, token) = claim_one(&t, "q2");
    let job = fail(&t, &uuid, token, json!({ "retryable": false }));
    assert_eq!(job["state"], "abandoned");
    assert_eq!(job["errors"][0]["retryable"], false);
}

#[test]
fn the_breaker_parks_failing_jobs_until_reset() {
    let server = Server::start();
    let t = server.tenant("acme");
    t.tenant_admin.put(
        "/v1/queues/q",
        json!({ "backoff_base_ms": 100, "backoff_cap_ms": 100, "breaker_threshold": 3, "breaker_window_ms": 60_000 }),
    );
    let uuids: Vec<String> =
        (0..4).map(|_| t.producer.insert("q", json!({}))["job_uuid"].as_str().unwrap().to_owned()).collect();
    let mut states = Vec::new();
    for _ in 0..4 {
        let (uuid, token) = claim_one(&t, "q");
        let job = fail(&t, &uuid, token, json!({}));
        states.push((job["state"].clone(), job["parked"].clone()));
    }
    assert_eq!(states[0], (json!("failed"), json!(false)));
    assert_eq!(states[1], (json!("failed"), json!(false)));
    assert_eq!(states[2], (json!("failed"), json!(true)), "the third failure opens the breaker");
    assert_eq!(states[3], (json!("failed"), json!(true)));
    let (_, q) = t.producer.get("/v1/queues/q");
    assert_eq!(q["breakers"][0]["state"], "open", "{q}");
    assert_eq!(q["breakers"][0]["kind"], "test");
    // Parked jobs are not rescheduled; the unparked ones come back.
    std::thread::sleep(Duration::from_millis(800));
    let (_, parked) = t.producer.get("/v1/jobs?parked=true");
    assert_eq!(parked["jobs"].as_array().unwrap().len(), 2);
    let (_, pending) = t.producer.get("/v1/jobs?state=pending");
    assert_eq!(pending["jobs"].as_array().unwrap().len(), 2);
    // Reset: breaker closed, parked jobs pending again.
    let (status, body) = t.tenant_admin.post("/v1/queues/q/breaker/reset", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unparked"], 2);
    let (_, q) = t.producer.get("/v1/queues/q");
    assert_eq!(q["breakers"], json!([]));
    for uuid in &uuids {
        let job = t.producer.job(uuid);
        assert_eq!((job["state"].as_str(), job["parked"].as_bool()), (Some("pending"), Some(false)));
    }
    // A parked job can also be retried by hand.
    let (uuid, token) = claim_one(&t, "q");
    t.tenant_admin.put("/v1/queues/q", json!({ "breaker_threshold": 1 }));
    let job = fail(&t, &uuid, token, json!({}));
    assert_eq!(job["parked"], true);
    let (status, job) = t.tenant_admin.post(&format!("/v1/jobs/{uuid}/retry"), json!({}));
    assert_eq!(status, 200);
    assert_eq!((job["state"].as_str(), job["parked"].as_bool()), (Some("pending"), Some(false)));
}

#[test]
fn retry_keeps_progress_replay_needs_override_cancel_ends() {
    let server = Server::start();
    let t = server.tenant("acme");
    t.tenant_admin
        .put("/v1/queues/q", json!({ "backoff_base_ms": 3_600_000, "backoff_cap_ms": 3_600_000, "max_attempts": 2 }));
    let uuid = t.producer.insert("q", json!({}))["job_uuid"].as_str().unwrap().to_owned();
    let (_, token) = claim_one(&t, "q");
    let (status, job) = t.worker.post(
        &format!("/v1/jobs/{uuid}/heartbeat"),
        json!({ "token": token, "lease_ms": 90_000, "progress": { "step": "resize", "data": { "done": 3 } } }),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["progress"]["step"], "resize");
    fail(&t, &uuid, token, json!({}));
    let (status, job) = t.tenant_admin.post(&format!("/v1/jobs/{uuid}/retry"), json!({}));
    assert_eq!(status, 200);
    assert_eq!(job["state"], "pending");
    assert_eq!(job["attempt"], 0, "a fresh attempt budget");
    assert_eq!(job["progress"]["data"], json!({ "done": 3 }), "retry keeps progress");
    assert_eq!(job["errors"].as_array().unwrap().len(), 1, "and the error history");
    let (_, token) = claim_one(&t, "q");
    let (status, _) = t.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token }));
    assert_eq!(status, 200);

    let (status, body) = t.tenant_admin.post(&format!("/v1/jobs/{uuid}/replay"), json!({}));
    assert_eq!((status, code(&body)), (409, "REPLAY_NEEDS_OVERRIDE"));
    let (status, job) =
        t.tenant_admin.post(&format!("/v1/jobs/{uuid}/replay"), json!({ "override": true, "resume": true }));
    assert_eq!(status, 200);
    assert_eq!(job["progress"]["step"], "resize", "resume keeps progress");
    let (_, token) = claim_one(&t, "q");
    t.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token }));
    let (_, job) = t.tenant_admin.post(&format!("/v1/jobs/{uuid}/replay"), json!({ "override": true }));
    assert_eq!(job["progress"], Value::Null, "a replay starts from scratch");
    let (status, job) = t.tenant_admin.post(&format!("/v1/jobs/{uuid}/cancel"), json!({}));
    assert_eq!(status, 200);
    assert_eq!(job["state"], "abandoned");

    let (_, history) = t.producer.get(&format!("/v1/jobs/{uuid}/history"));
    let events = history["events"].as_array().unwrap();
    let replays: Vec<&Value> = events.iter().filter(|e| e["action"] == "replay").collect();
    assert_eq!(replays.len(), 2, "every replay is in the history");
    assert_eq!(replays[0]["detail"]["override"], true);
    for e in events.iter().filter(|e| ["retry", "replay", "cancel"].contains(&e["action"].as_str().unwrap())) {
        assert_eq!(e["actor"]["role"], "tenant-admin", "who did it: {e}");
        assert!(e["actor"]["key_id"].is_string());
    }
    let saved: Vec<&Value> = events.iter().filter(|e| e["action"] == "heartbeat").collect();
    assert_eq!(saved[0]["detail"]["step"], "resize", "saved progress is in the history");
}
