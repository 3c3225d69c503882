//! Bad input gets problem+json with a stable code and changes nothing.

use serde_json::{Value, json};
use sluice_tests::*;

fn assert_problem(response: reqwest::blocking::Response, status: u16, code_: &str, label: &str) {
    assert_eq!(response.status().as_u16(), status, "{label}");
    assert_eq!(response.headers()["content-type"], "application/problem+json", "{label}");
    let body: Value = response.json().unwrap();
    assert_eq!(body["code"], code_, "{label}: {body}");
    assert_eq!(body["status"], status, "{label}");
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(), "{label}: {body}");
}

#[test]
fn bad_requests_get_problems_and_change_nothing() {
    let server = Server::start();
    let t = server.tenant("acme");
    let job = t.producer.insert("q", json!({}));
    let uuid = job["job_uuid"].as_str().unwrap().to_owned();
    let raw = |method: reqwest::Method, path: &str, body: &str, content_type: Option<&str>| {
        // Each route with a key whose role may use it.
        let api = if path.contains("/claim") || path.contains("/complete") {
            &t.worker
        } else if method == reqwest::Method::PUT {
            &t.tenant_admin
        } else {
            &t.producer
        };
        let mut r = api.request(method, path).body(body.to_owned());
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r.send().unwrap()
    };
    let json_ct = Some("application/json");
    let cases: Vec<(&str, reqwest::blocking::Response, u16, &str)> = vec![
        ("malformed JSON", raw(reqwest::Method::POST, "/v1/jobs", "{\"queue\": ", json_ct), 400, "VALIDATION"),
        (
            "wrong type",
            raw(
                reqwest::Method::POST,
                "/v1/jobs",
                r#"{"queue":"q","kind":"k","payload":{},"user_id":"u","priority":"high"}"#,
                json_ct,
            ),
            422,
            "VALIDATION",
        ),
        (
            "unknown field",
            raw(
                reqwest::Method::POST,
                "/v1/jobs",
                r#"{"queue":"q","kind":"k","payload":{},"user_id":"u","colour":"red"}"#,
                json_ct,
            ),
            422,
            "VALIDATION",
        ),
        (
            "missing field",
            raw(reqwest::Method::POST, "/v1/jobs", r#"{"queue":"q","kind":"k","payload":{}}"#, json_ct),
            422,
            "VALIDATION",
        ),
        (
            "missing payload",
            raw(reqwest::Method::POST, "/v1/jobs", r#"{"queue":"q","kind":"k","user_id":"u"}"#, json_ct),
            422,
            "VALIDATION",
        ),
        (
            "bad queue name",
            raw(reqwest::Method::POST, "/v1/jobs", r#"{"queue":"a b","kind":"k","payload":{},"user_id":"u"}"#, json_ct),
            422,
            "VALIDATION",
        ),
        (
            "priority out of range",
            raw(
                reqwest::Method::POST,
                "/v1/jobs",
                r#"{"queue":"q","kind":"k","payload":{},"user_id":"u","priority":5000}"#,
                json_ct,
            ),
            422,
            "VALIDATION",
        ),
        (
            "run_at and delay",
            raw(
                reqwest::Method::POST,
                "/v1/jobs",
                r#"{"queue":"q","kind":"k","payload":{},"user_id":"u","delay_ms":5,"run_at":"2030-01-01T00:00:00Z"}"#,
                json_ct,
            ),
            422,
            "VALIDATION",
        ),
        (
            "no content type",
            raw(reqwest::Method::POST, "/v1/jobs", r#"{"queue":"q","kind":"k","payload":{},"user_id":"u"}"#, None),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "body over the limit",
            raw(
                reqwest::Method::POST,
                "/v1/jobs",
                &format!(r#"{{"queue":"q","kind":"k","user_id":"u","payload":"{}"}}"#, "x".repeat(2 << 20)),
                json_ct,
            ),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "unknown job",
            raw(reqwest::Method::GET, "/v1/jobs/4a4a4a4a-0000-4000-8000-000000000000", "", None),
            404,
            "NOT_FOUND",
        ),
        ("not a uuid", raw(reqwest::Method::GET, "/v1/jobs/not-a-uuid", "", None), 422, "VALIDATION"),
        ("unknown route", raw(reqwest::Method::GET, "/v1/nothing", "", None), 404, "NOT_FOUND"),
        ("wrong method", raw(reqwest::Method::DELETE, "/v1/jobs", "", None), 405, "METHOD_NOT_ALLOWED"),
        (
            "unknown field in an action",
            raw(reqwest::Method::POST, &format!("/v1/jobs/{uuid}/complete"), r#"{"token":1,"force":true}"#, json_ct),
            422,
            "VALIDATION",
        ),
        ("bad list filter", raw(reqwest::Method::GET, "/v1/jobs?limit=0", "", None), 422, "VALIDATION"),
        ("unknown query parameter", raw(reqwest::Method::GET, "/v1/jobs?colour=red", "", None), 422, "VALIDATION"),
        (
            "claim limit",
            raw(reqwest::Method::POST, "/v1/queues/q/claim", r#"{"worker":"w","limit":0}"#, json_ct),
            422,
            "VALIDATION",
        ),
        (
            "lease too short",
            raw(reqwest::Method::POST, "/v1/queues/q/claim", r#"{"worker":"w","lease_ms":5}"#, json_ct),
            422,
            "VALIDATION",
        ),
        (
            "bad queue config",
            raw(reqwest::Method::PUT, "/v1/queues/q", r#"{"max_attempts":0}"#, json_ct),
            422,
            "VALIDATION",
        ),
    ];
    for (label, response, status, code_) in cases {
        assert_problem(response, status, code_, label);
    }
    // Nothing changed: one job, as it was; the queue config is the default.
    let (_, list) = t.producer.get("/v1/jobs?limit=500");
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(list["jobs"][0], job);
    let (_, q) = t.producer.get("/v1/queues/q");
    assert_eq!(q["config"]["max_attempts"], 5);
    assert_eq!(q["counts"]["pending"], 1);
    // A worker's refused claim took nothing.
    assert_eq!(t.worker.claim("q", 1, 30_000).len(), 1);
}
