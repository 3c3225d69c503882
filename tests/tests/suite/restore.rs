//! Restoring a checkpoint within one tenant's paused queues, against the real
//! server: every checkpointed job returns field by field, except what must move
//! forward; jobs created since are kept; newer leases are refused; other tenants
//! never pause.

use std::collections::HashMap;

use serde_json::{Value, json};
use sluice_tests::*;

fn uuid_of(v: &Value) -> String {
    v["job_uuid"].as_str().unwrap().to_owned()
}

fn complete(t: &Tenant, job: &Value) -> u16 {
    let body = json!({ "token": job["lease"]["token"] });
    t.worker.post(&format!("/v1/jobs/{}/complete", uuid_of(job)), body).0
}

/// The job without the fields a restore moves forward.
fn comparable(job: &Value) -> Value {
    let mut j = job.clone();
    for key in ["revision", "last_token", "updated_at"] {
        j.as_object_mut().unwrap().remove(key);
    }
    if let Some(lease) = j.get_mut("lease").and_then(|l| l.as_object_mut()) {
        lease.remove("token");
    }
    j
}

#[test]
fn restore_puts_a_tenants_jobs_back_and_keeps_the_rest() {
    let server = Server::start();
    let a = server.tenant("alpha");
    let b = server.tenant("beta");
    for q in ["q1", "q2"] {
        a.tenant_admin
            .put(&format!("/v1/queues/{q}"), json!({ "backoff_base_ms": 3_600_000, "backoff_cap_ms": 3_600_000 }));
    }
    for i in 0..30 {
        a.producer.insert(if i % 2 == 0 { "q1" } else { "q2" }, json!({ "payload": { "i": i } }));
    }
    let claimed = a.worker.claim("q1", 10, 600_000);
    for job in &claimed[..4] {
        assert_eq!(complete(&a, job), 200);
    }
    for job in &claimed[4..7] {
        let body = json!({ "token": job["lease"]["token"], "code": "E", "reason": "r" });
        assert_eq!(a.worker.post(&format!("/v1/jobs/{}/fail", uuid_of(job)), body).0, 200);
    }
    let body = json!({ "token": claimed[7]["lease"]["token"], "progress": { "step": "half", "data": { "n": 1 } } });
    assert_eq!(a.worker.post(&format!("/v1/jobs/{}/heartbeat", uuid_of(&claimed[7])), body).0, 200);
    let q2 = a.worker.claim("q2", 3, 600_000);
    let to_cancel = a.producer.list_all("queue=q2&state=pending");
    assert_eq!(a.tenant_admin.post(&format!("/v1/jobs/{}/cancel", uuid_of(&to_cancel[0])), json!({})).0, 200);

    let admin = server.admin();
    let (status, checkpoint) = admin.post("/v1/admin/checkpoints", json!({}));
    assert_eq!(status, 201);
    let id = checkpoint["id"].as_str().unwrap().to_owned();
    let saved: HashMap<String, Value> = a.producer.list_all("").into_iter().map(|j| (uuid_of(&j), j)).collect();
    assert_eq!(saved.len(), 30);

    // Change many jobs in every way, and insert new ones.
    for job in &claimed[7..10] {
        assert_eq!(complete(&a, job), 200);
    }
    for job in &q2 {
        let body = json!({ "token": job["lease"]["token"], "code": "E", "reason": "r", "retryable": false });
        assert_eq!(a.worker.post(&format!("/v1/jobs/{}/fail", uuid_of(job)), body).0, 200);
    }
    for job in &claimed[4..7] {
        assert_eq!(a.tenant_admin.post(&format!("/v1/jobs/{}/retry", uuid_of(job)), json!({})).0, 200);
    }
    assert_eq!(
        a.tenant_admin.post(&format!("/v1/jobs/{}/replay", uuid_of(&claimed[0])), json!({ "override": true })).0,
        200
    );
    let newer_lease = a.worker.claim("q1", 1, 600_000).remove(0);
    let more = a.worker.claim("q1", 5, 600_000);
    for job in &more {
        assert_eq!(complete(&a, job), 200);
    }
    let created: Vec<String> =
        (0..10).map(|i| uuid_of(&a.producer.insert("q1", json!({ "payload": { "new": i } })))).collect();

    // The scope must be paused first.
    let restore = |confirm: bool| {
        admin.post(&format!("/v1/admin/checkpoints/{id}/restore"), json!({ "tenant": "alpha", "confirm": confirm }))
    };
    let (status, body) = restore(false);
    assert_eq!((status, code(&body)), (409, "NOT_PAUSED"), "{body}");
    for q in ["q1", "q2"] {
        assert_eq!(a.tenant_admin.post(&format!("/v1/queues/{q}/pause"), json!({})).0, 200);
    }
    let before_dry = a.producer.list_all("");
    let (status, report) = restore(false);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["jobs_in_checkpoint"], 30);
    assert_eq!(report["created_since"], 10);
    assert!(report["going_back"].as_u64().unwrap() >= 10, "{report}");
    assert!(report["run_again"].as_u64().unwrap() >= 8, "completed jobs that will run again are listed: {report}");
    assert_eq!(a.producer.list_all(""), before_dry, "a dry run changes nothing");

    // Another tenant is never paused and keeps working throughout.
    b.producer.insert("q1", json!({}));
    let (_, claim) = b.worker.post("/v1/queues/q1/claim", json!({ "worker": "w" }));
    assert_eq!((claim["paused"].as_bool(), claim["jobs"].as_array().unwrap().len()), (Some(false), 1));

    let (status, report) = restore(true);
    assert_eq!((status, report["dry_run"].as_bool()), (200, Some(false)), "{report}");

    let now: HashMap<String, Value> = a.producer.list_all("").into_iter().map(|j| (uuid_of(&j), j)).collect();
    for (uuid, then) in &saved {
        let job = &now[uuid];
        assert_eq!(comparable(job), comparable(then), "job {uuid} is back as it was");
        assert!(job["revision"].as_u64() > then["revision"].as_u64(), "revision moved forward");
        // Compared as instants: RFC 3339 text omits a zero fraction, so "…:05Z" sorts after "…:05.3Z".
        let at = |j: &Value| chrono::DateTime::parse_from_rfc3339(j["updated_at"].as_str().unwrap()).unwrap();
        assert!(at(job) > at(then), "updated_at moved forward: {} then, {} now", then["updated_at"], job["updated_at"]);
        if !then["lease"].is_null() {
            assert!(job["lease"]["token"].as_u64() > then["lease"]["token"].as_u64(), "lease token moved forward");
        }
    }
    for uuid in &created {
        assert_eq!(now[uuid]["state"], "pending", "jobs created since are intact");
    }
    let (status, body) = a.worker.post(
        &format!("/v1/jobs/{}/complete", uuid_of(&newer_lease)),
        json!({ "token": newer_lease["lease"]["token"] }),
    );
    assert_eq!((status, code(&body)), (409, "LEASE_LOST"), "a lease from after the checkpoint is refused");
    let events = a.producer.get(&format!("/v1/jobs/{}/history", uuid_of(&claimed[0]))).1;
    assert!(
        events["events"].as_array().unwrap().iter().any(|e| e["action"] == "restore"),
        "the restore is in the history"
    );
    let restore_line = |l: &Value| l["action"] == "restore" && l["target"] == "sluice::audit";
    server.log_lines_until("the restore is logged with its report", |lines| lines.iter().any(restore_line));
    assert_eq!(b.producer.get("/v1/queues/q1").1["config"]["paused"], false);
    let (status, _) = admin.post(&format!("/v1/admin/checkpoints/{id}/restore"), json!({ "tenant": "nobody" }));
    assert_eq!(status, 404);
}
