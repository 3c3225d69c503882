//! The safe upgrade path, with producers and workers in flight:
//! `sluice admin pause`, `sluice admin checkpoint create`, stop, start the new
//! binary on the same data, `sluice admin resume`. Counted on the client side.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice_tests::*;

fn admin_cli(server: &Server, args: &[&str]) -> String {
    let out = std::process::Command::new(sluice_bin())
        .env("SLUICE_URL", &server.url)
        .env("SLUICE_KEY", &server.admin_key)
        .args(["admin"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "sluice admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Default)]
struct Counts {
    acked_inserts: HashSet<String>,
    completes: HashMap<String, u32>,
}

#[test]
fn upgrade_path_loses_nothing_and_picks_up_where_it_left_off() {
    let mut server = Server::start();
    let t = server.tenant("acme");
    t.tenant_admin.put(
        "/v1/queues/load",
        json!({ "backoff_base_ms": 100, "backoff_cap_ms": 200, "max_attempts": 100, "breaker_threshold": 1_000_000 }),
    );
    // A queue nobody works on, to check that pending order survives.
    let ordered: Vec<String> = (0..20)
        .map(|i| t.producer.insert("ordered", json!({ "priority": i % 3 }))["job_uuid"].as_str().unwrap().to_owned())
        .collect();
    // A job whose worker saves progress, then vanishes across the upgrade.
    let vanished = t.producer.insert("vanish", json!({}))["job_uuid"].as_str().unwrap().to_owned();
    let lease = t.worker.claim("vanish", 1, 3_000)[0]["lease"]["token"].as_u64().unwrap();
    let (status, _) = t.worker.post(
        &format!("/v1/jobs/{vanished}/heartbeat"),
        json!({ "token": lease, "lease_ms": 3_000, "progress": { "step": "half", "data": { "n": 5 } } }),
    );
    assert_eq!(status, 200);

    let counts = Arc::new(Mutex::new(Counts::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for p in 0..2 {
        let (api, counts, stop) = (t.producer.clone(), counts.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let uuid = uuid::Uuid::new_v4().to_string();
                let body = json!({ "job_uuid": uuid, "queue": "load", "kind": "k", "user_id": "u", "payload": { "p": p, "n": n } });
                if let Ok((201, _)) = api.try_send(api.request(reqwest::Method::POST, "/v1/jobs").json(&body)) {
                    counts.lock().unwrap().acked_inserts.insert(uuid);
                } else {
                    std::thread::sleep(Duration::from_millis(50));
                }
                n += 1;
            }
        }));
    }
    for _ in 0..2 {
        let (api, counts, stop) = (t.worker.clone(), counts.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let claim = api
                    .request(reqwest::Method::POST, "/v1/queues/load/claim")
                    .json(&json!({ "worker": "w", "limit": 5, "lease_ms": 2_000 }));
                let Ok((200, body)) = api.try_send(claim) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                for job in body["jobs"].as_array().cloned().unwrap_or_default() {
                    let uuid = job["job_uuid"].as_str().unwrap().to_owned();
                    let token = job["lease"]["token"].as_u64().unwrap();
                    let done = api
                        .request(reqwest::Method::POST, &format!("/v1/jobs/{uuid}/complete"))
                        .json(&json!({ "token": token }));
                    if let Ok((200, _)) = api.try_send(done) {
                        *counts.lock().unwrap().completes.entry(uuid).or_default() += 1;
                    }
                }
                if body["paused"] == true {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));

    // The documented path.
    assert!(admin_cli(&server, &["pause"]).contains("paused"));
    let checkpoint = admin_cli(&server, &["checkpoint", "create"]);
    assert!(checkpoint.contains("checkpoint cp-"), "{checkpoint}");
    let status = server.stop();
    assert!(status.success(), "a clean stop");
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    let (_, body) = t.worker.post("/v1/queues/load/claim", json!({ "worker": "w" }));
    assert_eq!(body["paused"], true, "still paused after the restart");
    assert!(admin_cli(&server, &["resume"]).contains("resumed"));
    let at_resume = {
        let c = counts.lock().unwrap();
        (c.acked_inserts.len(), c.completes.len())
    };
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }

    // Drain what is left, then count.
    wait_for(Duration::from_secs(60), "the load queue to drain", || {
        for job in t.worker.claim("load", 100, 10_000) {
            let (uuid, token) = (job["job_uuid"].as_str().unwrap().to_owned(), job["lease"]["token"].as_u64().unwrap());
            if t.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token })).0 == 200 {
                *counts.lock().unwrap().completes.entry(uuid).or_default() += 1;
            }
        }
        let left = ["pending", "processing", "failed"]
            .iter()
            .map(|s| t.producer.list_all(&format!("queue=load&state={s}")).len())
            .sum::<usize>();
        (left == 0).then_some(())
    });
    let counts = counts.lock().unwrap();
    // The load ran through the new binary too, not only before the stop.
    assert!(
        counts.acked_inserts.len() > at_resume.0 && counts.completes.len() > at_resume.1,
        "inserts and completes after the resume: {} and {} at the resume, {} and {} at the end",
        at_resume.0,
        at_resume.1,
        counts.acked_inserts.len(),
        counts.completes.len()
    );
    let stored: HashSet<String> =
        t.producer.list_all("queue=load").iter().map(|j| j["job_uuid"].as_str().unwrap().to_owned()).collect();
    let lost: Vec<&String> = counts.acked_inserts.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
    let twice: Vec<_> = counts.completes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs with two successful completes: {twice:?}");
    println!(
        "upgrade: {} inserts acknowledged, {} jobs completed once each, none lost",
        counts.acked_inserts.len(),
        counts.completes.len()
    );

    // The vanished worker's job is rescued when its lease expires, progress kept.
    let job = wait_for(Duration::from_secs(20), "the vanished worker's job to be rescued", || {
        let job = t.producer.job(&vanished);
        (job["state"] != "processing").then_some(job)
    });
    assert_eq!(job["errors"][0]["code"], "LEASE_EXPIRED");
    assert_eq!(job["progress"]["step"], "half", "progress kept across the upgrade");

    // Pending order is unchanged: priority, then insertion.
    let mut expected = ordered.clone();
    expected.sort_by_key(|u| std::cmp::Reverse(ordered.iter().position(|o| o == u).unwrap() % 3));
    let claimed: Vec<String> =
        (0..20).map(|_| t.worker.claim("ordered", 1, 60_000)[0]["job_uuid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(claimed, expected);
}
