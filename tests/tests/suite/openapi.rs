//! `/openapi.json` is generated from the router's own registrations; compare it with
//! the routes the core defines, written out by hand.

use sluice_tests::*;

const ROUTES: &str = "
GET    /health
POST   /v1/tenants
GET    /v1/tenants
POST   /v1/keys
GET    /v1/keys
DELETE /v1/keys/{key_id}
GET    /v1/queues/{queue}
PUT    /v1/queues/{queue}
POST   /v1/queues/{queue}/claim
POST   /v1/queues/{queue}/breaker/reset
POST   /v1/jobs
GET    /v1/jobs
POST   /v1/jobs/batch
GET    /v1/jobs/{job_uuid}
GET    /v1/jobs/{job_uuid}/history
POST   /v1/jobs/{job_uuid}/heartbeat
POST   /v1/jobs/{job_uuid}/complete
POST   /v1/jobs/batch/complete
POST   /v1/jobs/{job_uuid}/fail
POST   /v1/jobs/{job_uuid}/release
POST   /v1/jobs/{job_uuid}/retry
POST   /v1/jobs/{job_uuid}/replay
POST   /v1/jobs/{job_uuid}/cancel
GET    /metrics
GET    /v1/stats
GET    /v1/alerts
GET    /v1/alerts/history
POST   /v1/alerts/{id}/ack
POST   /v1/queues/{queue}/pause
POST   /v1/queues/{queue}/resume
POST   /v1/admin/pause
POST   /v1/admin/resume
POST   /v1/admin/checkpoints
GET    /v1/admin/checkpoints
GET    /v1/admin/checkpoints/{id}
DELETE /v1/admin/checkpoints/{id}
POST   /v1/admin/checkpoints/{id}/restore
POST   /v1/plugins
GET    /v1/plugins
GET    /v1/plugins/{digest}
DELETE /v1/plugins/{digest}
GET    /v1/bindings
PUT    /v1/bindings/{queue}/{kind}/{stage}
DELETE /v1/bindings/{queue}/{kind}/{stage}
GET    /v1/config
PUT    /v1/config
GET    /v1/users/{user_id}/config
PUT    /v1/users/{user_id}/config
GET    /v1/limits
PUT    /v1/limits
GET    /v1/usage
GET    /v1/users/{user_id}/usage
PUT    /v1/jobs/{job_uuid}/hold
DELETE /v1/jobs/{job_uuid}/hold
PUT    /v1/users/{user_id}/hold
DELETE /v1/users/{user_id}/hold
GET    /v1/retention
DELETE /v1/users/{user_id}/data
GET    /v1/deletions
GET    /v1/deletions/{receipt_id}
GET    /v1/audit
";

#[test]
fn openapi_lists_exactly_the_routes() {
    let server = Server::start();
    let doc: serde_json::Value =
        reqwest::blocking::get(format!("{}/openapi.json", server.url)).unwrap().json().unwrap();
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {}", method.to_uppercase(), path));
        }
    }
    documented.sort();
    let mut expected: Vec<String> = ROUTES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Every documented route answers (not the router's 404).
    let admin = server.admin();
    for route in &expected {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{job_uuid}", "00000000-0000-4000-8000-000000000000")
            .replace("{queue}", "q")
            .replace("{key_id}", "k");
        let (_, body) = admin.send(admin.request(method.parse().unwrap(), &path));
        assert!(!body["detail"].as_str().unwrap_or("").starts_with("no route"), "{route} is routed");
    }
}
