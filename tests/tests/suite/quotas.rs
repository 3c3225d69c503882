//! Quotas per tenant and per user, against the real binary: each refusal names
//! its limit, has the documented status and code, and stores nothing; a tenant
//! at its rate limit does not stop another tenant.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

fn refused(response: (u16, Value), status: u16, code_: &str, limit: &str) {
    let (got, body) = response;
    assert_eq!((got, code(&body), body["limit"].as_str()), (status, code_, Some(limit)), "{body}");
}

fn insert(api: &Api, queue: &str, user: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({ "queue": queue, "kind": "k", "payload": { "n": 1 }, "user_id": user });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    api.post("/v1/jobs", body)
}

#[test]
fn every_limit_refuses_with_its_code_and_stores_nothing() {
    let defaults = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(defaults.path(), r#"{"max_payload_bytes": 1000}"#).unwrap();
    let server = Server::start_with(&["--limits", defaults.path().to_str().unwrap(), "--webhook-allow", "127.0.0.1"]);
    let admin = server.admin();
    let t = server.tenant("qa");
    let other = server.tenant("qb");

    // The host default applies to a tenant without limits of its own.
    assert_eq!(t.tenant_admin.get("/v1/limits").1["max_payload_bytes"], 1000);
    let big = json!({ "payload": { "blob": "x".repeat(2000) } });
    refused(insert(&t.producer, "q1", "u1", big.clone()), 413, "PAYLOAD_TOO_LARGE", "tenant.max_payload_bytes");

    let limits = json!({
        "max_pending": 6, "max_payload_bytes": 500, "max_retention_days": 30, "max_queues": 2,
        "max_plugins": 1, "max_bindings": 1, "max_webhooks": 1,
        "user": { "max_pending": 4 }
    });
    assert_eq!(t.tenant_admin.put("/v1/limits", limits.clone()).0, 403, "only an admin sets limits");
    let (status, set) = admin.for_tenant("qa").put("/v1/limits", limits);
    assert_eq!(status, 200, "{set}");
    refused(insert(&t.producer, "q1", "u1", big), 413, "PAYLOAD_TOO_LARGE", "tenant.max_payload_bytes");

    // A user's own quota, within the tenant's limits.
    let (status, body) = t.tenant_admin.put("/v1/users/u1/config", json!({ "quota": { "max_pending": 99 } }));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "above the tenant's limit: {body}");
    let (status, body) = t.tenant_admin.put("/v1/users/u1/config", json!({ "quota": { "max_pending": 2 } }));
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        assert_eq!(insert(&t.producer, "q1", "u1", json!({})).0, 201);
    }
    refused(insert(&t.producer, "q1", "u1", json!({})), 429, "QUOTA_EXCEEDED", "user.max_pending");
    for _ in 0..4 {
        assert_eq!(insert(&t.producer, "q1", "u2", json!({})).0, 201, "u2 has the default user quota of 4");
    }
    refused(insert(&t.producer, "q1", "u3", json!({})), 429, "QUOTA_EXCEEDED", "tenant.max_pending");
    // In a batch, each job is held to the limits on its own.
    let (status, batch) = t
        .producer
        .post("/v1/jobs/batch", json!({ "jobs": [{ "queue": "q1", "kind": "k", "payload": {}, "user_id": "u3" }] }));
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["error"]["code"], "QUOTA_EXCEEDED", "{batch}");
    assert_eq!(t.producer.list_all("").len(), 6, "refused inserts stored nothing");

    // Usage, per tenant and per user.
    let usage = t.tenant_admin.get("/v1/usage").1;
    assert_eq!((usage["usage"]["pending"].as_u64(), usage["usage"]["queues"].as_u64()), (Some(6), Some(1)), "{usage}");
    let u1 = t.tenant_admin.get("/v1/users/u1/usage").1;
    assert_eq!((u1["pending"].as_u64(), u1["quota"]["max_pending"].as_u64()), (Some(2), Some(2)), "{u1}");

    // Retention: longer than allowed is refused; none given means the longest allowed.
    let claimed = t.worker.claim("q1", 6, 30_000);
    for job in &claimed {
        let path = format!("/v1/jobs/{}/complete", job["job_uuid"].as_str().unwrap());
        assert_eq!(t.worker.post(&path, json!({ "token": job["lease"]["token"] })).0, 200);
    }
    let long = json!({ "tags": { "retention_days": 60 } });
    refused(insert(&t.producer, "q1", "u2", long), 429, "QUOTA_EXCEEDED", "tenant.max_retention_days");
    let (status, job) = insert(&t.producer, "q1", "u2", json!({}));
    assert_eq!((status, &job["tags"]["retention_days"]), (201, &json!(30)), "{job}");

    // Queues, plugins, bindings, webhooks.
    assert_eq!(insert(&t.producer, "q2", "u2", json!({})).0, 201);
    refused(insert(&t.producer, "q3", "u2", json!({})), 429, "QUOTA_EXCEEDED", "tenant.max_queues");
    refused(t.tenant_admin.put("/v1/queues/q3", json!({})), 429, "QUOTA_EXCEEDED", "tenant.max_queues");
    assert_eq!(t.tenant_admin.upload(plugin("require_fields"), "first", "validator").0, 201);
    refused(t.tenant_admin.upload(plugin("tag_all"), "second", "tagger"), 429, "QUOTA_EXCEEDED", "tenant.max_plugins");
    assert_eq!(t.tenant_admin.get("/v1/plugins").1["plugins"].as_array().unwrap().len(), 1);
    let digest = t.tenant_admin.get("/v1/plugins").1["plugins"][0]["digest"].as_str().unwrap().to_owned();
    let bind = |queue: &str| {
        t.tenant_admin.put(&format!("/v1/bindings/{queue}/validator/stable"), json!({ "plugin": digest }))
    };
    assert_eq!(bind("q1").0, 200);
    refused(bind("q2"), 429, "QUOTA_EXCEEDED", "tenant.max_bindings");
    let hooks = json!({ "webhooks": ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"] });
    refused(t.tenant_admin.put("/v1/config", hooks), 429, "QUOTA_EXCEEDED", "tenant.max_webhooks");

    // The other tenant never noticed.
    assert_eq!(other.tenant_admin.get("/v1/limits").1["max_pending"], Value::Null);
    for n in 0..20 {
        assert_eq!(insert(&other.producer, &format!("q{n}"), "u1", json!({})).0, 201);
    }

    // Refusals are counted by tenant and limit, never by user.
    let metrics = reqwest::blocking::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(&server.admin_key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let line = metrics.lines().find(|l| l.starts_with("sluice_quota_refusals_total") && l.contains("user.max_pending"));
    assert!(line.is_some_and(|l| l.contains("tenant=\"qa\"")), "{metrics}");
    assert!(!metrics.lines().any(|l| l.starts_with("sluice_quota") && l.contains("u1")), "no user ids as labels");

    // Limit and quota changes are audited.
    let audit = admin.get("/v1/audit?tenant=qa&limit=1000").1;
    let actions: Vec<&str> = audit["events"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"limits_change") && actions.contains(&"quota_change"), "{actions:?}");
    let cli = std::process::Command::new(sluice_bin())
        .args(["--url", &server.url, "--key", &server.admin_key, "--json", "audit", "--of-tenant", "qa"])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let listed: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert!(listed["events"].as_array().unwrap().iter().any(|e| e["action"] == "limits_change"), "{listed}");
}

#[test]
fn a_tenant_at_its_rate_limit_does_not_slow_another_to_refusals() {
    let server = Server::start();
    let admin = server.admin();
    let noisy = server.tenant("noisy");
    let quiet = server.tenant("quiet");
    let limits = json!({ "insert_rate": { "per_second": 20, "burst": 20 } });
    assert_eq!(admin.for_tenant("noisy").put("/v1/limits", limits).0, 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let (api, stop) = (noisy.producer.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut accepted, mut limited, mut retry_after) = (0u64, 0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = json!({ "queue": "q", "kind": "k", "payload": {}, "user_id": "loud" });
                let response = api.request(reqwest::Method::POST, "/v1/jobs").json(&body).send().unwrap();
                match response.status().as_u16() {
                    201 => accepted += 1,
                    429 => {
                        limited += 1;
                        retry_after.push(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap());
                        let body: Value = response.json().unwrap();
                        assert_eq!((code(&body), body["limit"].as_str()), ("RATE_LIMITED", Some("tenant.insert_rate")));
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            (accepted, limited, retry_after)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    for n in 0..200 {
        let (status, body) = insert(&quiet.producer, "q", &format!("user-{}", n % 7), json!({}));
        assert_eq!(status, 201, "the quiet tenant was refused: {body}");
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (accepted, limited, retry_after) = hammer.join().unwrap();
    assert!(limited > 0, "the noisy tenant hit its limit");
    assert!(retry_after.iter().all(|&s| s >= 1), "Retry-After is whole seconds, at least 1");
    assert_eq!(noisy.producer.list_all("").len() as u64, accepted, "refused inserts stored nothing");
    println!("noisy tenant: {accepted} accepted, {limited} rate limited; quiet tenant: 200 of 200 accepted");
}
