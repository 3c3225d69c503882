//! Writes from many clients share durable commits (group commit).

use serde_json::json;
use sluice_tests::*;

#[test]
fn fifty_clients_share_commits() {
    let server = Server::start();
    let t = server.tenant("acme");
    let (_, before) = reqwest::blocking::get(format!("{}/health", server.url))
        .map(|r| ((), r.json::<serde_json::Value>().unwrap()))
        .unwrap();
    let per_client = 60;
    let threads: Vec<_> = (0..50)
        .map(|c| {
            let api = t.producer.clone();
            std::thread::spawn(move || {
                for i in 0..per_client {
                    let (status, body) = api.post(
                        "/v1/jobs",
                        json!({ "queue": "q", "kind": "k", "payload": { "c": c, "i": i }, "user_id": "u" }),
                    );
                    assert_eq!(status, 201, "{body}");
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let after: serde_json::Value = reqwest::blocking::get(format!("{}/health", server.url)).unwrap().json().unwrap();
    let requests = after["writer"]["requests"].as_u64().unwrap() - before["writer"]["requests"].as_u64().unwrap();
    let commits = after["writer"]["commits"].as_u64().unwrap() - before["writer"]["commits"].as_u64().unwrap();
    println!(
        "group commit: {requests} write requests in {commits} commits, largest batch {}",
        after["writer"]["largest_batch"]
    );
    assert!(requests >= 3000, "every insert is a write request");
    assert!(commits * 2 < requests, "far fewer commits ({commits}) than requests ({requests})");
    let (_, q) = t.producer.get("/v1/queues/q");
    assert_eq!(q["counts"]["pending"], 3000, "every acknowledged insert is stored");
}
