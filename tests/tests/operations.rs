//! Operations: pause and resume per queue and for the whole host.

use serde_json::{Value, json};
use sluice_tests::*;

fn claim_body(api: &Api, queue: &str) -> Value {
    let (status, body) = api.post(&format!("/v1/queues/{queue}/claim"), json!({ "worker": "w", "limit": 10 }));
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn paused_queues_hand_out_nothing_but_take_inserts_and_manual_actions() {
    let mut server = Server::start();
    let t = server.tenant("acme");
    t.tenant_admin.put("/v1/queues/q", json!({ "backoff_base_ms": 3_600_000, "backoff_cap_ms": 3_600_000 }));
    let failed = t.producer.insert("q", json!({}))["job_uuid"].as_str().unwrap().to_owned();
    let token = t.worker.claim("q", 1, 60_000)[0]["lease"]["token"].as_u64().unwrap();
    t.worker.post(&format!("/v1/jobs/{failed}/fail"), json!({ "token": token, "code": "E", "reason": "r" }));

    let (status, body) = t.tenant_admin.post("/v1/queues/q/pause", json!({}));
    assert_eq!((status, &body["paused"]), (200, &json!(true)));
    let pending = t.producer.insert("q", json!({}))["job_uuid"].as_str().unwrap().to_owned();
    let body = claim_body(&t.worker, "q");
    assert_eq!((body["jobs"].as_array().unwrap().len(), &body["paused"]), (0, &json!(true)));
    assert_eq!(t.producer.job(&pending)["state"], "pending", "readable while paused");
    let (status, job) = t.tenant_admin.post(&format!("/v1/jobs/{failed}/retry"), json!({}));
    assert_eq!((status, job["state"].as_str()), (200, Some("pending")), "retry works while paused");
    let (status, _) = t.tenant_admin.post(&format!("/v1/jobs/{failed}/cancel"), json!({}));
    assert_eq!(status, 200, "cancel works while paused");
    let (status, _) = t.tenant_admin.post(&format!("/v1/jobs/{failed}/replay"), json!({ "override": true }));
    assert_eq!(status, 200, "replay works while paused");
    let (_, q) = t.producer.get("/v1/queues/q");
    assert_eq!(q["config"]["paused"], true);
    // Another queue of the tenant is not paused.
    t.producer.insert("other", json!({}));
    assert_eq!(t.worker.claim("other", 1, 60_000).len(), 1);

    // The pause survives a restart.
    server.kill();
    server.restart();
    assert_eq!(claim_body(&t.worker, "q")["paused"], true, "still paused after a restart");
    let (status, _) = t.producer.post("/v1/queues/q/pause", json!({}));
    assert_eq!(status, 403, "a producer cannot pause");
    let (status, _) = t.tenant_admin.post("/v1/queues/q/resume", json!({}));
    assert_eq!(status, 200);
    let body = claim_body(&t.worker, "q");
    assert_eq!(
        (body["jobs"].as_array().unwrap().len(), &body["paused"]),
        (2, &json!(false)),
        "both jobs are handed out after resuming"
    );

    let lines = server.log_lines();
    let audit: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "sluice::audit" && (l["action"] == "pause" || l["action"] == "resume"))
        .collect();
    assert_eq!(audit.len(), 2, "every pause and resume is logged");
    assert!(audit.iter().all(|l| l["actor"].as_str().unwrap().contains("tenant-admin")), "with who did it");
}

#[test]
fn pausing_the_host_pauses_every_tenant() {
    let server = Server::start();
    let a = server.tenant("a");
    let b = server.tenant("b");
    a.producer.insert("q", json!({}));
    b.producer.insert("q", json!({}));
    let admin = server.admin();
    let (status, _) = a.tenant_admin.post("/v1/admin/pause", json!({}));
    assert_eq!(status, 403, "a tenant admin cannot pause the host");
    let (status, _) = admin.post("/v1/admin/pause", json!({}));
    assert_eq!(status, 200);
    let health: Value = reqwest::blocking::get(format!("{}/health", server.url)).unwrap().json().unwrap();
    assert_eq!(health["paused"], true);
    for t in [&a, &b] {
        assert_eq!(claim_body(&t.worker, "q")["paused"], true);
        t.producer.insert("q", json!({}));
    }
    admin.post("/v1/admin/resume", json!({}));
    for t in [&a, &b] {
        let body = claim_body(&t.worker, "q");
        assert_eq!(body["jobs"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn stuck_jobs_are_flagged_listed_and_unflagged() {
    let server = Server::start_with(&["--stuck-interval-ms", "100"]);
    let t = server.tenant("acme");
    let (status, body) = t.tenant_admin.put(
        "/v1/queues/q",
        json!({ "pending_timeout_ms": 400, "processing_timeout_ms": 400, "parked_timeout_ms": 0 }),
    );
    assert_eq!(status, 200, "{body}");
    let waiting = t.producer.insert("q", json!({}))["job_uuid"].as_str().unwrap().to_owned();
    let stuck_of = |uuid: &str| t.producer.job(uuid)["stuck"].as_bool().unwrap();
    wait_for(std::time::Duration::from_secs(10), "the pending job to be flagged", || stuck_of(&waiting).then_some(()));
    let (_, listed) = t.producer.get("/v1/jobs?stuck=true");
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "the API lists stuck jobs");
    assert_eq!(t.producer.get("/v1/queues/q").1["counts"]["stuck"], 1);
    let events = t.producer.get(&format!("/v1/jobs/{waiting}/history")).1["events"].as_array().unwrap().clone();
    assert!(events.iter().any(|e| e["action"] == "stuck" && e["actor"]["service"] == "stuck_detector"));

    // Claiming it is progress: the flag goes.
    let token = t.worker.claim("q", 1, 60_000)[0]["lease"]["token"].as_u64().unwrap();
    assert!(!stuck_of(&waiting));
    // Processing without saving progress gets it flagged again; a bare heartbeat
    // keeps the lease but is not progress.
    wait_for(std::time::Duration::from_secs(10), "the processing job to be flagged", || {
        stuck_of(&waiting).then_some(())
    });
    let (status, job) = t.worker.post(&format!("/v1/jobs/{waiting}/heartbeat"), json!({ "token": token }));
    assert_eq!((status, job["stuck"].as_bool()), (200, Some(true)), "a bare heartbeat does not unflag");
    let (_, job) = t.worker.post(
        &format!("/v1/jobs/{waiting}/heartbeat"),
        json!({ "token": token, "progress": { "step": "s", "data": {} } }),
    );
    assert_eq!(job["stuck"], false, "saving progress unflags");

    // A longer timeout unflags stuck jobs of the queue at once.
    let other = t.producer.insert("q", json!({}))["job_uuid"].as_str().unwrap().to_owned();
    wait_for(std::time::Duration::from_secs(10), "the second job to be flagged", || stuck_of(&other).then_some(()));
    t.tenant_admin.put("/v1/queues/q", json!({ "pending_timeout_ms": 3_600_000 }));
    assert!(!stuck_of(&other), "no longer stuck under the new timeout");
    assert_eq!(t.producer.get("/v1/jobs?stuck=true").1["jobs"].as_array().unwrap().len(), 1, "only the processing one");
}

/// The value of one Prometheus sample line that has all these labels.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| l.starts_with(&format!("{name}{{"))).find_map(|l| {
        let all = labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")));
        all.then(|| l.rsplit(' ').next().and_then(|v| v.parse().ok())).flatten()
    })
}

#[test]
fn health_metrics_and_stats_agree_with_the_api_after_a_crash() {
    let mut server = Server::start();
    let t = server.tenant("acme");
    let other = server.tenant("other");
    other.producer.insert("q", json!({}));
    for _ in 0..30 {
        t.producer.insert("q", json!({}));
    }
    let claimed = t.worker.claim("q", 12, 60_000);
    for (i, job) in claimed.iter().enumerate() {
        let uuid = job["job_uuid"].as_str().unwrap();
        let token = job["lease"]["token"].as_u64().unwrap();
        match i % 3 {
            0 => assert_eq!(t.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token })).0, 200),
            1 => {
                let body = json!({ "token": token, "code": "BAD", "reason": "r", "retryable": false });
                assert_eq!(t.worker.post(&format!("/v1/jobs/{uuid}/fail"), body).0, 200);
            }
            _ => {}
        }
    }
    server.kill();
    server.restart();

    let api_counts: Vec<(&str, usize)> = ["pending", "processing", "completed", "failed", "abandoned"]
        .into_iter()
        .map(|s| (s, t.producer.list_all(&format!("queue=q&state={s}")).len()))
        .collect();
    assert_eq!(api_counts, vec![("pending", 18), ("processing", 4), ("completed", 4), ("failed", 0), ("abandoned", 4)]);

    let response = reqwest::blocking::get(format!("{}/health", server.url)).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let health: Value = response.json().unwrap();
    assert_eq!((health["live"].as_bool(), health["ready"].as_bool()), (Some(true), Some(true)), "{health}");
    assert_eq!(health["jobs"]["pending"], 19, "all tenants, no tenant names");
    assert!(!health.to_string().contains("acme"), "no tenant data in /health");
    let names: Vec<&str> = health["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["database", "writer", "plugin_engine", "maintenance"]);

    let admin = server.admin();
    let text = admin.send(admin.request(reqwest::Method::GET, "/metrics")).1.as_str().unwrap().to_owned();
    for (state, n) in &api_counts {
        let gauge = sample(&text, "sluice_jobs", &[("tenant", "acme"), ("queue", "q"), ("state", state)]);
        assert_eq!(gauge, Some(*n as f64), "sluice_jobs for {state} agrees with the API after a kill -9");
    }
    assert_eq!(sample(&text, "sluice_queue_depth", &[("tenant", "acme"), ("queue", "q")]), Some(18.0));
    assert!(sample(&text, "sluice_queue_oldest_pending_seconds", &[("tenant", "acme"), ("queue", "q")]).is_some());
    assert!(text.contains("sluice_writer_commits"));
    assert!(!text.contains("user_id") && !text.contains("user-1"), "no user ids in metrics");

    let (status, stats) = t.producer.get("/v1/stats");
    assert_eq!(status, 200);
    assert_eq!(stats["queues"].as_array().unwrap().len(), 1, "only the tenant's own queues");
    assert_eq!(stats["queues"][0]["jobs"]["pending"], 18);
    assert_eq!(stats["queues"][0]["jobs"]["abandoned"], 4);
}
