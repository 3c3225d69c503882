//! Every action is one JSON log line with the job's identifiers; raw user ids and
//! payloads never reach the host's log.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

#[test]
fn a_jobs_whole_life_is_in_the_log() {
    let server = Server::start();
    let t = server.tenant("acme");
    t.tenant_admin.put("/v1/queues/q", json!({ "backoff_base_ms": 100, "backoff_cap_ms": 100 }));
    let job = t.producer.insert(
        "q",
        json!({ "user_id": "alice@example.com", "trace_id": "trace-life", "payload": { "secret": "PAYLOAD-MARKER" } }),
    );
    let uuid = job["job_uuid"].as_str().unwrap().to_owned();
    let token = t.worker.claim("q", 1, 60_000)[0]["lease"]["token"].as_u64().unwrap();
    t.worker.post(&format!("/v1/jobs/{uuid}/fail"), json!({ "token": token, "code": "E", "reason": "r" }));
    let again = wait_for(Duration::from_secs(10), "the retry", || {
        let jobs = t.worker.claim("q", 1, 60_000);
        (!jobs.is_empty()).then_some(jobs)
    });
    let token = again[0]["lease"]["token"].as_u64().unwrap();
    t.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token }));
    let (status, _) = t.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token }));
    assert_eq!(status, 409);

    let of_job = |l: &&Value| l["job_uuid"] == uuid.as_str();
    let all = server.log_lines_until("the job's log lines", |lines| lines.iter().filter(of_job).count() >= 7);
    let lines: Vec<&Value> = all.iter().filter(of_job).collect();
    let steps: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_owned(),
                l["from"].as_str().unwrap_or("").to_owned(),
                l["to"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("insert", "-", "pending"),
        ("claim", "pending", "processing"),
        ("fail", "processing", "failed"),
        ("reschedule", "failed", "pending"),
        ("claim", "pending", "processing"),
        ("complete", "processing", "completed"),
    ];
    for (i, (a, f, to)) in expected.iter().enumerate() {
        assert_eq!(steps[i], (a.to_string(), f.to_string(), to.to_string()), "line {i}: {}", lines[i]);
    }
    assert_eq!(lines[6]["code"], "LEASE_LOST", "the refused complete is logged too");
    let pseudonym = lines[0]["user"].as_str().unwrap().to_owned();
    assert_eq!(pseudonym.len(), 16);
    for l in &lines[..6] {
        assert_eq!(l["trace_id"], "trace-life", "{l}");
        assert_eq!(l["tenant"], "acme");
        assert_eq!(l["queue"], "q");
        assert_eq!(l["user"], pseudonym.as_str(), "one stable pseudonym");
        assert!(l["actor"].as_str().unwrap().starts_with("key:") || l["actor"] == "host:scheduler", "{l}");
        assert_eq!(l["level"], "INFO");
    }
    assert_eq!(lines[3]["actor"], "host:scheduler");
    let text = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(!text.contains("alice@example.com"), "no raw user id in the log");
    assert!(!text.contains("PAYLOAD-MARKER"), "no payload in the log");
}

#[test]
fn a_deleted_users_new_jobs_log_under_a_new_pseudonym() {
    let server = Server::start();
    let t = server.tenant("acme");
    let pseudonym_of = |job: &Value| {
        let uuid = job["job_uuid"].as_str().unwrap().to_owned();
        let lines = server.log_lines_until("the insert's log line", |lines| {
            lines.iter().any(|l| l["job_uuid"] == uuid.as_str() && l["action"] == "insert")
        });
        let line = lines.iter().find(|l| l["job_uuid"] == uuid.as_str() && l["action"] == "insert").unwrap();
        line["user"].as_str().unwrap().to_owned()
    };
    let before = pseudonym_of(&t.producer.insert("q", json!({ "user_id": "bob" })));
    assert_eq!(pseudonym_of(&t.producer.insert("q", json!({ "user_id": "bob" }))), before, "stable while kept");
    let (status, receipt) = t.tenant_admin.delete("/v1/users/bob/data");
    assert_eq!(status, 202, "{receipt}");
    let after = pseudonym_of(&t.producer.insert("q", json!({ "user_id": "bob" })));
    assert_eq!(after.len(), 16);
    assert_ne!(after, before, "the old log lines stay unlinkable to the user's new jobs");
}
