//! Tenants and keys: bootstrap admin, keys shown once and revocable at once, and
//! one tenant never seeing or touching another's objects.

use serde_json::json;
use sluice_tests::*;

#[test]
fn keys_are_shown_once_listed_without_secrets_and_revoked_at_once() {
    let server = Server::start();
    let admin = server.admin();
    let (status, _) = admin.post("/v1/tenants", json!({ "id": "acme" }));
    assert_eq!(status, 201);
    let (status, body) = admin.post("/v1/tenants", json!({ "id": "acme" }));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "a tenant id is taken once: {body}");
    let (status, body) = admin.post("/v1/tenants", json!({ "id": "Not Valid" }));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "{body}");

    let (status, created) = admin.post("/v1/keys", json!({ "name": "ci", "role": "producer", "tenant": "acme" }));
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, list) = admin.get("/v1/keys");
    let text = list.to_string();
    assert!(text.contains(&id));
    assert!(!text.contains(&secret), "the secret is never listed");
    assert!(!text.contains("hash"), "nor its hash");
    let stored = std::fs::read(server.data().join("sluice.redb")).unwrap();
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()), "only a hash is stored");

    let producer = Api::new(&server.url, &secret);
    producer.insert("q", json!({}));
    let (status, body) = admin.delete(&format!("/v1/keys/{id}"));
    assert_eq!(status, 200, "{body}");
    assert!(body["revoked_at"].is_string());
    let (status, body) = producer.post("/v1/jobs", json!({ "queue": "q", "kind": "k", "payload": {}, "user_id": "u" }));
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "a revoked key stops at once: {body}");

    // Role rules: a producer cannot manage keys; a tenant admin only for its tenant.
    let t = server.tenant("other");
    let (status, body) = t.producer.post("/v1/keys", json!({ "name": "x", "role": "producer" }));
    assert_eq!((status, code(&body)), (403, "FORBIDDEN"), "{body}");
    let (status, body) = t.tenant_admin.post("/v1/keys", json!({ "name": "x", "role": "worker", "tenant": "acme" }));
    assert_eq!((status, code(&body)), (404, "NOT_FOUND"), "another tenant is not found: {body}");
    let (status, body) = t.tenant_admin.post("/v1/keys", json!({ "name": "x", "role": "admin" }));
    assert_eq!((status, code(&body)), (403, "FORBIDDEN"), "{body}");
    let (status, body) = t.tenant_admin.post("/v1/keys", json!({ "name": "x", "role": "worker" }));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tenant"], "other");
    let (_, list) = t.tenant_admin.get("/v1/keys");
    assert!(
        list["keys"].as_array().unwrap().iter().all(|k| k["tenant"] == "other"),
        "a tenant admin lists its own keys"
    );

    // No key, a bad key.
    let anonymous = Api::new(&server.url, "sk_nope");
    let (status, body) = anonymous.get("/v1/jobs");
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"));
    let client = reqwest::blocking::Client::new();
    let r = client.get(format!("{}/v1/jobs", server.url)).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[test]
fn bootstrap_key_survives_restart_and_is_not_recreated() {
    let mut server = Server::start();
    let first = server.admin_key.clone();
    let keys = |server: &Server| {
        let (status, list) = server.admin().get("/v1/keys");
        assert_eq!(status, 200, "{list}");
        list["keys"].as_array().expect("keys").iter().map(|k| k["id"].clone()).collect::<Vec<_>>()
    };
    let before = keys(&server);
    assert_eq!(before.len(), 1, "the bootstrap key is the only key");
    server.stop();
    server.restart();
    let key = std::fs::read_to_string(server.data().join("bootstrap-admin.key")).unwrap();
    assert_eq!(key.trim(), first);
    assert_eq!(keys(&server), before, "the restart made no second key");
}

#[test]
fn tenants_never_see_each_other() {
    let server = Server::start();
    let a = server.tenant("tenant-a");
    let b = server.tenant("tenant-b");
    // Same queue name in both tenants: nothing shared.
    let mut a_jobs = Vec::new();
    let mut b_jobs = Vec::new();
    for i in 0..20 {
        a_jobs.push(a.producer.insert("emails", json!({ "payload": { "i": i } }))["job_uuid"].clone());
        b_jobs.push(b.producer.insert("emails", json!({ "payload": { "i": i } }))["job_uuid"].clone());
    }
    let claimed_a = a.worker.claim("emails", 100, 60_000);
    let claimed_b = b.worker.claim("emails", 100, 60_000);
    assert_eq!(claimed_a.len(), 20);
    assert_eq!(claimed_b.len(), 20);
    assert!(claimed_a.iter().all(|j| j["tenant"] == "tenant-a" && a_jobs.contains(&j["job_uuid"])));
    assert!(claimed_b.iter().all(|j| j["tenant"] == "tenant-b" && b_jobs.contains(&j["job_uuid"])));

    // B's keys get 404 on A's job, for every route on it.
    let uuid = a_jobs[0].as_str().unwrap();
    let token = claimed_a.iter().find(|j| j["job_uuid"] == uuid).unwrap()["lease"]["token"].as_u64().unwrap();
    for path in [format!("/v1/jobs/{uuid}"), format!("/v1/jobs/{uuid}/history")] {
        let (status, body) = b.producer.get(&path);
        assert_eq!((status, code(&body)), (404, "NOT_FOUND"), "{path}");
    }
    for action in ["complete", "heartbeat", "release"] {
        let (status, body) = b.worker.post(&format!("/v1/jobs/{uuid}/{action}"), json!({ "token": token }));
        assert_eq!((status, code(&body)), (404, "NOT_FOUND"), "{action}: {body}");
    }
    for action in ["retry", "cancel"] {
        let (status, _) = b.tenant_admin.post(&format!("/v1/jobs/{uuid}/{action}"), json!({}));
        assert_eq!(status, 404, "{action}");
    }
    // Naming the other tenant in the header with a tenant key is also "not found".
    let (status, _) = b.producer.for_tenant("tenant-a").get(&format!("/v1/jobs/{uuid}"));
    assert_eq!(status, 404);
    let (_, list) = b.producer.get("/v1/jobs?limit=500");
    assert!(list["jobs"].as_array().unwrap().iter().all(|j| j["tenant"] == "tenant-b"));
    assert_eq!(a.producer.job(uuid)["state"], "processing", "B changed nothing");

    // An admin key names the tenant with Sluice-Tenant; without it, a clear error.
    let admin = server.admin();
    let (status, body) = admin.get(&format!("/v1/jobs/{uuid}"));
    assert_eq!((status, code(&body)), (422, "VALIDATION"), "{body}");
    let (status, _) = admin.for_tenant("tenant-a").get(&format!("/v1/jobs/{uuid}"));
    assert_eq!(status, 200);
    let (status, _) = admin.for_tenant("tenant-b").get(&format!("/v1/jobs/{uuid}"));
    assert_eq!(status, 404);
    let (status, _) = admin.for_tenant("no-such-tenant").get("/v1/jobs");
    assert_eq!(status, 404);
}
