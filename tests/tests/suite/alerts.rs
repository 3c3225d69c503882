//! Alerts: thresholds with a minimum duration and a clear level, acknowledgement,
//! history, metrics, an alert-policy plugin, and webhooks on loopback (allowed
//! explicitly) that fail their first calls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

/// What a receiver got: the bodies it accepted, and how many calls it answered.
type Received = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<usize>>);

/// A webhook receiver that answers 500 to its first `fail_first` calls.
fn receiver(fail_first: usize) -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (bodies, calls) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0usize)));
    let (b, c) = (bodies.clone(), calls.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let n = {
                let mut calls = c.lock().unwrap();
                *calls += 1;
                *calls
            };
            let status = if n <= fail_first {
                "500 Internal Server Error"
            } else {
                b.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                "200 OK"
            };
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, (bodies, calls))
}

fn alert(t: &Tenant, id: &str) -> Option<Value> {
    t.tenant_admin.get("/v1/alerts").1["alerts"].as_array().unwrap().iter().find(|a| a["id"] == id).cloned()
}

fn events(t: &Tenant, id: &str) -> Vec<String> {
    let (_, h) = t.tenant_admin.get("/v1/alerts/history");
    h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["alert"] == id)
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

fn insert_many(t: &Tenant, queue: &str, n: usize) {
    let jobs: Vec<Value> =
        (0..n).map(|i| json!({ "queue": queue, "kind": "k", "user_id": "u", "payload": { "i": i } })).collect();
    assert_eq!(t.producer.post("/v1/jobs/batch", json!({ "jobs": jobs })).1["accepted"], n);
}

#[test]
fn thresholds_fire_once_stay_resolve_and_reach_webhooks() {
    let (port, (bodies, calls)) = receiver(2);
    let allow = format!("127.0.0.1:{port}");
    let server =
        Server::start_with(&["--webhook-allow", &allow, "--alert-interval-ms", "100", "--stuck-interval-ms", "100"]);
    let t = server.tenant("acme");

    // Destinations must be on the operator's allow-list.
    for bad in ["http://127.0.0.1:1/hook", "http://10.0.0.1/hook", "ftp://127.0.0.1/x"] {
        let (status, body) = t.tenant_admin.put("/v1/config", json!({ "webhooks": [bad] }));
        assert_eq!((status, code(&body)), (422, "VALIDATION"), "{bad}: {body}");
    }
    let hook = format!("http://127.0.0.1:{port}/hook");
    assert_eq!(t.tenant_admin.put("/v1/config", json!({ "webhooks": [hook] })).0, 200);

    let rules = json!({ "alerts": { "depth": { "fire_above": 5, "clear_below": 2, "for_ms": 300 } } });
    assert_eq!(t.tenant_admin.put("/v1/queues/q", rules).0, 200);
    let (status, _) =
        t.tenant_admin.put("/v1/queues/q", json!({ "alerts": { "depth": { "fire_above": 1, "clear_below": 5 } } }));
    assert_eq!(status, 422, "clear level above the firing level is refused");
    insert_many(&t, "q", 3);
    std::thread::sleep(Duration::from_millis(600));
    assert!(alert(&t, "q:depth").is_none(), "depth 3 is under the threshold");

    insert_many(&t, "q", 5);
    let fired = wait_for(Duration::from_secs(10), "the depth alert", || {
        alert(&t, "q:depth").filter(|a| a["state"] == "firing")
    });
    assert_eq!(fired["value"], 8.0);
    // Between the clear level and the firing level it stays firing, once.
    t.worker.claim("q", 4, 60_000);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(alert(&t, "q:depth").unwrap()["state"], "firing", "no flapping above the clear level");
    let (status, acked) = t.tenant_admin.post("/v1/alerts/q:depth/ack", json!({}));
    assert_eq!(status, 200);
    assert!(acked["acknowledged_by"].as_str().unwrap().contains("tenant-admin"));
    let admin = server.admin();
    let metrics = admin.send(admin.request(reqwest::Method::GET, "/metrics")).1.as_str().unwrap().to_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_alerts_firing{") && l.contains("alert=\"depth\"") && l.ends_with(" 1")),
        "exported while firing"
    );

    t.worker.claim("q", 2, 60_000);
    wait_for(Duration::from_secs(10), "the depth alert to resolve", || {
        alert(&t, "q:depth").filter(|a| a["state"] == "resolved")
    });
    assert_eq!(events(&t, "q:depth"), vec!["fired", "acknowledged", "resolved"], "fired once, acknowledged, resolved");

    // The webhook failed its first two calls; the deliveries were retried.
    let delivered = wait_for(Duration::from_secs(30), "webhook deliveries", || {
        let bodies = bodies.lock().unwrap();
        let kinds: Vec<String> = bodies
            .iter()
            .filter(|b| b["alert"]["id"] == "q:depth")
            .map(|b| b["event"].as_str().unwrap_or("").to_owned())
            .collect();
        (kinds.contains(&"fired".to_owned()) && kinds.contains(&"resolved".to_owned())).then_some(kinds)
    });
    println!("webhook: {} calls, delivered {delivered:?}", calls.lock().unwrap());
    assert!(*calls.lock().unwrap() >= 4, "two refused calls, then the deliveries");

    // A stuck job fires the stuck alert.
    let stuck_rules =
        json!({ "pending_timeout_ms": 200, "alerts": { "stuck": { "fire_above": 0, "clear_below": 0 } } });
    assert_eq!(t.tenant_admin.put("/v1/queues/s", stuck_rules).0, 200);
    t.producer.insert("s", json!({}));
    wait_for(Duration::from_secs(10), "the stuck alert", || alert(&t, "s:stuck").filter(|a| a["state"] == "firing"));
    t.worker.claim("s", 1, 60_000);
    wait_for(Duration::from_secs(10), "the stuck alert to resolve", || {
        alert(&t, "s:stuck").filter(|a| a["state"] == "resolved")
    });
}

#[test]
fn alert_policy_plugins_turn_statistics_into_alerts() {
    let server = Server::start_with(&["--alert-interval-ms", "100"]);
    let t = server.tenant("acme");
    let digest = t.tenant_admin.install("depth_alert", "alert-policy", "p", "closed");
    insert_many(&t, "p", 50);
    std::thread::sleep(Duration::from_millis(500));
    assert!(alert(&t, "p:queue-depth").is_none());
    insert_many(&t, "p", 60);
    let fired = wait_for(Duration::from_secs(10), "the plugin's alert", || {
        alert(&t, "p:queue-depth").filter(|a| a["state"] == "firing")
    });
    assert_eq!(fired["source"], format!("plugin:{digest}"));
    assert_eq!(fired["severity"], "warning");
    t.worker.claim("p", 100, 60_000);
    wait_for(Duration::from_secs(10), "the plugin's alert to resolve", || {
        alert(&t, "p:queue-depth").filter(|a| a["state"] == "resolved")
    });
    assert_eq!(events(&t, "p:queue-depth"), vec!["fired", "resolved"]);
}

#[test]
fn thresholds_can_come_from_a_configuration_file() {
    let mut server = Server::start();
    let t = server.tenant("acme");
    server.stop();
    let file = server.dir.path().join("alert-rules.json");
    let rules =
        json!([{ "tenant": "acme", "queue": "f", "alerts": { "depth": { "fire_above": 1, "clear_below": 0 } } }]);
    std::fs::write(&file, rules.to_string()).unwrap();
    server.restart_with(&["--alert-rules", file.to_str().unwrap(), "--alert-interval-ms", "100"]);
    assert_eq!(t.producer.get("/v1/queues/f").1["config"]["alerts"]["depth"]["fire_above"], 1.0);
    insert_many(&t, "f", 2);
    wait_for(Duration::from_secs(10), "the configured alert", || {
        alert(&t, "f:depth").filter(|a| a["state"] == "firing")
    });
}

/// Lost leases and illegal transitions count per queue even when no validator is
/// bound (the host then reads the job only on refusal): their rates fire alerts.
#[test]
fn lost_leases_and_illegal_transitions_fire_their_rate_alerts() {
    let server = Server::start();
    let t = server.tenant("acme");
    let rules = json!({ "alerts": {
        "lease_lost_per_minute": { "fire_above": 1, "clear_below": 0 },
        "illegal_transitions_per_minute": { "fire_above": 1, "clear_below": 0 },
    } });
    let (status, body) = t.tenant_admin.put("/v1/queues/r", rules);
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        t.producer.insert("r", json!({}));
    }
    for job in t.worker.claim("r", 2, 60_000) {
        let (uuid, token) = (job["job_uuid"].as_str().unwrap(), job["lease"]["token"].as_u64().unwrap());
        let (status, body) = t.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token + 1 }));
        assert_eq!((status, code(&body)), (409, "LEASE_LOST"));
        let (status, body) = t.tenant_admin.post(&format!("/v1/jobs/{uuid}/retry"), json!({}));
        assert_eq!((status, code(&body)), (409, "ILLEGAL_TRANSITION"), "{body}");
    }
    for id in ["r:lease_lost_per_minute", "r:illegal_transitions_per_minute"] {
        wait_for(Duration::from_secs(10), id, || alert(&t, id).filter(|a| a["state"] == "firing"));
    }
}
