//! The state table (the README's "Jobs and their states"), written out by hand (not derived from the code's
//! own table), checked row by row against the real server over HTTP.

use serde_json::{Value, json};
use sluice_tests::*;

/// (action, state the job is in, override, expected outcome): a state name, an
/// error code, or `not_claimed` when a claim does not hand the job out.
const TABLE: &str = "
claim          pending     -      processing
claim          processing  -      not_claimed
claim          completed   -      not_claimed
claim          failed      -      not_claimed
claim          abandoned   -      not_claimed
heartbeat      pending     -      LEASE_LOST
heartbeat      processing  -      processing
heartbeat      completed   -      LEASE_LOST
heartbeat      failed      -      LEASE_LOST
heartbeat      abandoned   -      LEASE_LOST
complete       pending     -      LEASE_LOST
complete       processing  -      completed
complete       completed   -      LEASE_LOST
complete       failed      -      LEASE_LOST
complete       abandoned   -      LEASE_LOST
fail           pending     -      LEASE_LOST
fail           processing  -      failed
fail           completed   -      LEASE_LOST
fail           failed      -      LEASE_LOST
fail           abandoned   -      LEASE_LOST
fail_final     pending     -      LEASE_LOST
fail_final     processing  -      abandoned
fail_final     completed   -      LEASE_LOST
fail_final     failed      -      LEASE_LOST
fail_final     abandoned   -      LEASE_LOST
release        pending     -      LEASE_LOST
release        processing  -      pending
release        completed   -      LEASE_LOST
release        failed      -      LEASE_LOST
release        abandoned   -      LEASE_LOST
retry          pending     -      ILLEGAL_TRANSITION
retry          processing  -      ILLEGAL_TRANSITION
retry          completed   -      REPLAY_NEEDS_OVERRIDE
retry          failed      -      pending
retry          abandoned   -      REPLAY_NEEDS_OVERRIDE
replay         pending     false  ILLEGAL_TRANSITION
replay         processing  false  ILLEGAL_TRANSITION
replay         completed   false  REPLAY_NEEDS_OVERRIDE
replay         failed      false  ILLEGAL_TRANSITION
replay         abandoned   false  REPLAY_NEEDS_OVERRIDE
replay         pending     true   ILLEGAL_TRANSITION
replay         processing  true   ILLEGAL_TRANSITION
replay         completed   true   pending
replay         failed      true   ILLEGAL_TRANSITION
replay         abandoned   true   pending
cancel         pending     -      abandoned
cancel         processing  -      ILLEGAL_TRANSITION
cancel         completed   -      ILLEGAL_TRANSITION
cancel         failed      -      abandoned
cancel         abandoned   -      ILLEGAL_TRANSITION
";

struct Row<'a> {
    action: &'a str,
    state: &'a str,
    override_: &'a str,
    expected: &'a str,
}

fn rows() -> Vec<Row<'static>> {
    TABLE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "bad table row {l}");
            Row { action: f[0], state: f[1], override_: f[2], expected: f[3] }
        })
        .collect()
}

/// Bring a fresh job in its own queue into `state`; returns (job_uuid, a token the
/// job's lease had or has).
fn job_in_state(t: &Tenant, queue: &str, state: &str) -> (String, u64) {
    // Failed jobs must stay failed during the row: a long backoff.
    let (status, body) = t
        .tenant_admin
        .put(&format!("/v1/queues/{queue}"), json!({ "backoff_base_ms": 3_600_000, "backoff_cap_ms": 3_600_000 }));
    assert_eq!(status, 200, "{body}");
    let job = t.producer.insert(queue, json!({}));
    let uuid = job["job_uuid"].as_str().unwrap().to_owned();
    if state == "pending" {
        return (uuid, 1);
    }
    let claimed = t.worker.claim(queue, 1, 60_000);
    let token = claimed[0]["lease"]["token"].as_u64().unwrap();
    let path = |a: &str| format!("/v1/jobs/{uuid}/{a}");
    let (status, body) = match state {
        "processing" => (200, Value::Null),
        "completed" => t.worker.post(&path("complete"), json!({ "token": token })),
        "failed" => t.worker.post(&path("fail"), json!({ "token": token, "code": "E", "reason": "setup" })),
        "abandoned" => {
            t.worker.post(&path("fail"), json!({ "token": token, "code": "E", "reason": "setup", "retryable": false }))
        }
        other => panic!("unknown state {other}"),
    };
    assert_eq!(status, 200, "setup {state}: {body}");
    assert_eq!(t.producer.job(&uuid)["state"], state);
    (uuid, token)
}

#[test]
fn http_api_follows_the_state_table() {
    let server = Server::start();
    let t = server.tenant("machine");
    let rows = rows();
    assert_eq!(rows.len(), 50, "10 actions x 5 states");
    for (i, row) in rows.iter().enumerate() {
        let queue = format!("q{i}");
        let (uuid, token) = job_in_state(&t, &queue, row.state);
        let before = t.producer.job(&uuid);
        let path = |a: &str| format!("/v1/jobs/{uuid}/{a}");
        let outcome: (u16, Value) = match row.action {
            "claim" => {
                let jobs = t.worker.claim(&queue, 10, 60_000);
                let got = jobs.iter().any(|j| j["job_uuid"] == uuid.as_str());
                if got { (200, json!({ "state": "processing" })) } else { (200, json!({ "state": "not_claimed" })) }
            }
            "heartbeat" => t.worker.post(&path("heartbeat"), json!({ "token": token })),
            "complete" => t.worker.post(&path("complete"), json!({ "token": token })),
            "fail" => t.worker.post(&path("fail"), json!({ "token": token, "code": "E", "reason": "row" })),
            "fail_final" => t
                .worker
                .post(&path("fail"), json!({ "token": token, "code": "E", "reason": "row", "retryable": false })),
            "release" => t.worker.post(&path("release"), json!({ "token": token })),
            "retry" => t.tenant_admin.post(&path("retry"), json!({})),
            "replay" => t.tenant_admin.post(&path("replay"), json!({ "override": row.override_ == "true" })),
            "cancel" => t.tenant_admin.post(&path("cancel"), json!({})),
            other => panic!("unknown action {other}"),
        };
        let (status, body) = outcome;
        let after = t.producer.job(&uuid);
        let label = format!("row {i}: {} on {} (override {})", row.action, row.state, row.override_);
        if row.expected.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            assert_eq!(status, 409, "{label}: expected {}, got {status} {body}", row.expected);
            assert_eq!(code(&body), row.expected, "{label}: {body}");
            assert_eq!(before, after, "{label}: a refused action changed the job");
        } else if row.expected == "not_claimed" {
            assert_eq!(body["state"], "not_claimed", "{label}");
            assert_eq!(before, after, "{label}: an unclaimed job changed");
        } else {
            assert_eq!(status, 200, "{label}: {body}");
            assert_eq!(after["state"], row.expected, "{label}");
            assert!(after["revision"].as_u64() > before["revision"].as_u64(), "{label}: revision moved");
        }
    }
    // Illegal moves are logged.
    let expected = rows.iter().filter(|r| r.expected == "ILLEGAL_TRANSITION").count();
    let is_refusal = |l: &&Value| l["message"] == "action refused" && l["code"] == "ILLEGAL_TRANSITION";
    let lines =
        server.log_lines_until("the refusals' lines", |lines| lines.iter().filter(is_refusal).count() >= expected);
    let refused = lines.iter().filter(is_refusal).count();
    assert_eq!(refused, expected, "every illegal transition is logged once");
}
