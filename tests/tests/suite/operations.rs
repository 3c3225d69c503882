//! Operations: pause and resume per queue and for the whole host.

use std::time::Duration;

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

    let is_pause = |l: &&Value| l["target"] == "sluice::audit" && (l["action"] == "pause" || l["action"] == "resume");
    let lines = server.log_lines_until("pause and resume lines", |lines| lines.iter().filter(is_pause).count() >= 2);
    let audit: Vec<&Value> = lines.iter().filter(is_pause).collect();
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

    let (status, stats) = t.tenant_admin.get("/v1/stats");
    assert_eq!(status, 200);
    assert_eq!(stats["queues"].as_array().unwrap().len(), 1, "only the tenant's own queues");
    assert_eq!(stats["queues"][0]["jobs"]["pending"], 18);
    assert_eq!(stats["queues"][0]["jobs"]["abandoned"], 4);
}

#[test]
fn checkpoints_are_taken_while_the_host_runs() {
    let server = Server::start();
    let t = server.tenant("acme");
    for _ in 0..4 {
        let jobs: Vec<Value> =
            (0..50).map(|i| json!({ "queue": "q", "kind": "k", "user_id": "u", "payload": { "i": i } })).collect();
        t.producer.post("/v1/jobs/batch", json!({ "jobs": jobs }));
    }
    for job in t.worker.claim("q", 50, 60_000).iter().take(20) {
        let (uuid, token) = (job["job_uuid"].as_str().unwrap(), job["lease"]["token"].as_u64().unwrap());
        assert_eq!(t.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token })).0, 200);
    }
    // Producers keep inserting while checkpoints are taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (api, stop) = (t.producer.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) =
                    api.post("/v1/jobs", json!({ "queue": "live", "kind": "k", "user_id": "u", "payload": {} }));
                assert_eq!(status, 201, "inserts go on during a checkpoint");
                n += 1;
            }
            n
        })
    };
    let admin = server.admin();
    let (status, first) = admin.post("/v1/admin/checkpoints", json!({}));
    assert_eq!(status, 201, "{first}");
    let (_, second) = admin.post("/v1/admin/checkpoints", json!({}));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let inserted_meanwhile = producer.join().unwrap();
    println!("{inserted_meanwhile} inserts succeeded while two checkpoints were taken");

    assert_eq!(first["schema_version"], sluice_host::store::SCHEMA_VERSION);
    assert_eq!(first["jobs"]["processing"], 30);
    assert_eq!(first["jobs"]["completed"], 20);
    assert!(first["jobs"]["pending"].as_u64().unwrap() >= 150);
    let id = first["id"].as_str().unwrap().to_owned();
    let folder = server.data().join("checkpoints");
    assert!(folder.join(format!("{id}.redb")).exists(), "a redb file under the data folder");
    assert_eq!(std::fs::metadata(folder.join(format!("{id}.redb"))).unwrap().len(), first["bytes"].as_u64().unwrap());

    // The file is a complete database: open it with the store and count again.
    let dir = cap_std::fs::Dir::open_ambient_dir(&folder, cap_std::ambient_authority()).unwrap();
    let store = sluice_host::store::RedbStore::open_in(&dir, &format!("{id}.redb"), &Default::default()).unwrap();
    use sluice_host::store::Store;
    let counted: u64 = store.counts().unwrap().iter().filter(|r| r.state.is_some()).map(|r| r.jobs).sum();
    let reported: u64 = first["jobs"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(counted, reported, "the file holds exactly what the checkpoint reports");
    drop(store);

    let (_, list) = admin.get("/v1/admin/checkpoints");
    let ids: Vec<&str> = list["checkpoints"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id.as_str(), second["id"].as_str().unwrap()]);
    assert_eq!(admin.get(&format!("/v1/admin/checkpoints/{id}")).1, first);
    assert_eq!(t.tenant_admin.post("/v1/admin/checkpoints", json!({})).0, 403, "tenants cannot take checkpoints");
    assert_eq!(admin.get("/v1/admin/checkpoints/..%2Fsluice").0, 404);
    assert_eq!(admin.delete(&format!("/v1/admin/checkpoints/{id}")).0, 200);
    assert_eq!(admin.get(&format!("/v1/admin/checkpoints/{id}")).0, 404);
    assert!(!folder.join(format!("{id}.redb")).exists(), "deleting removes the file");
}

#[test]
fn startup_refuses_a_data_file_from_a_newer_version() {
    let mut server = Server::start();
    server.stop();
    let path = server.data().join("sluice.redb");
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(redb::TableDefinition::<&str, u64>::new("meta")).unwrap();
            meta.insert("schema_version", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    let out = std::process::Command::new(sluice_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(server.data())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected =
        format!("storage schema version 99, newer than this binary's {}", sluice_host::store::SCHEMA_VERSION);
    assert!(stderr.contains(&expected), "{stderr}");
}

/// The server's request threads, by the name tokio gives them.
fn request_threads(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", server.pid()))
        .unwrap()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.as_ref().unwrap().path().join("comm")).unwrap_or_default();
            comm.trim_end() == "tokio-rt-worker"
        })
        .count()
}

#[test]
fn the_server_leaves_a_core_to_its_writer_unless_told_its_thread_count() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(request_threads(&Server::start()), (cores - 1).max(1), "{cores} cores");
    let server = Server::start_with(&["--workers", "3"]);
    assert_eq!(request_threads(&server), 3);
    assert_eq!(server.admin().get("/health").0, 200, "and it serves");
    let data = tempfile::tempdir().unwrap();
    let mut refused = std::process::Command::new(sluice_bin())
        .args(["serve", "--workers", "0", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status =
        wait_for(std::time::Duration::from_secs(10), "serve --workers 0 to exit", || refused.try_wait().unwrap());
    assert_eq!(status.code(), Some(2));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("--workers"), "{stderr}");
}

/// Past `--max-in-flight` requests at once, a request is answered at once with
/// 503 `OVERLOADED` and `Retry-After` and changes nothing; once the load has
/// passed, requests are served again.
#[test]
fn a_request_past_the_in_flight_limit_is_shed_and_changes_nothing() {
    let server = Server::start_with(&["--max-in-flight", "1"]);
    let t = server.tenant("busy");
    // A claim long-polling an empty queue holds the one place for 3 s.
    let worker = t.worker.clone();
    let holder =
        std::thread::spawn(move || worker.post("/v1/queues/idle/claim", json!({ "worker": "w", "wait_ms": 3000 })));
    let shed = wait_for(Duration::from_secs(2), "a request to be shed", || {
        let response = t.producer.request(reqwest::Method::GET, "/v1/jobs").send().expect("request");
        (response.status() == 503).then_some(response)
    });
    assert_eq!(shed.headers()["content-type"], "application/problem+json");
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.json::<Value>().unwrap()["code"], "OVERLOADED");
    let job_uuid = uuid::Uuid::new_v4().to_string();
    let insert = json!({ "job_uuid": job_uuid, "queue": "q", "kind": "k", "user_id": "u", "payload": {} });
    let (status, body) = t.producer.post("/v1/jobs", insert.clone());
    assert_eq!((status, code(&body)), (503, "OVERLOADED"), "the claim still holds the place: {body}");

    let (status, claimed) = holder.join().unwrap();
    assert_eq!((status, claimed["jobs"].as_array().map(Vec::len)), (200, Some(0)), "{claimed}");
    assert_eq!(t.producer.get(&format!("/v1/jobs/{job_uuid}")).0, 404, "the shed insert stored nothing");
    assert_eq!(t.producer.post("/v1/jobs", insert).0, 201, "served again once the place is free");
}
