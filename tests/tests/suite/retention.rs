//! Retention and legal holds against the real binary, with retention days
//! shortened to one second (`--retention-day-seconds 1`): terminal jobs past
//! their retention are deleted with their history, held jobs (by job or by user)
//! are kept and reported, and lifting a hold lets retention take its course.

use std::time::Duration;

use serde_json::json;
use sluice_tests::*;

/// Claim and complete every pending job of `queue`.
fn complete_all(t: &Tenant, queue: &str) {
    for job in t.worker.claim(queue, 100, 30_000) {
        let path = format!("/v1/jobs/{}/complete", job["job_uuid"].as_str().unwrap());
        assert_eq!(t.worker.post(&path, json!({ "token": job["lease"]["token"] })).0, 200);
    }
}

#[test]
fn retention_deletes_what_no_hold_keeps() {
    let server = Server::start_with(&["--retention-day-seconds", "1", "--retention-interval-ms", "200"]);
    let t = server.tenant("ret");
    let short = |user: &str| {
        t.producer.insert("q", json!({ "user_id": user, "tags": { "retention_days": 2 } }))["job_uuid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let plain: Vec<String> = (0..5).map(|_| short("u-plain")).collect();
    let job_held = short("u-plain");
    let user_held: Vec<String> = (0..2).map(|_| short("u-held")).collect();
    let forever = t.producer.insert("q", json!({ "user_id": "u-plain" }))["job_uuid"].as_str().unwrap().to_owned();
    let cancelled = short("u-plain");
    assert_eq!(t.tenant_admin.post(&format!("/v1/jobs/{cancelled}/cancel"), json!({})).0, 200);

    // Holds by API and by CLI.
    let (status, held) = t.tenant_admin.put(&format!("/v1/jobs/{job_held}/hold"), json!({ "reason": "case 1" }));
    assert_eq!((status, &held["legal_hold"]), (200, &json!(true)), "{held}");
    let cli = std::process::Command::new(sluice_bin())
        .args(["--url", &server.url, "--key", &t.tenant_admin.key, "holds", "place", "--user", "u-held"])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(t.producer.job(&user_held[0])["user_hold"], true);
    let later_held = short("u-held");
    assert_eq!(t.producer.job(&later_held)["user_hold"], true, "a user's hold covers its new jobs too");
    assert_eq!(t.producer.put(&format!("/v1/jobs/{forever}/hold"), json!({})).0, 403, "producers place no holds");

    complete_all(&t, "q");
    let all_short: Vec<&String> =
        plain.iter().chain([&job_held, &cancelled]).chain(&user_held).chain([&later_held]).collect();
    for job_uuid in &all_short {
        let state = t.producer.job(job_uuid)["state"].as_str().unwrap().to_owned();
        assert!(state == "completed" || state == "abandoned", "{job_uuid}: {state}");
    }

    // Two retention days later, only held jobs and the one without retention remain.
    wait_for(Duration::from_secs(30), "retention to delete the unheld jobs", || {
        plain.iter().chain([&cancelled]).all(|j| t.producer.get(&format!("/v1/jobs/{j}")).0 == 404).then_some(())
    });
    for job_uuid in plain.iter().chain([&cancelled]) {
        assert_eq!(t.producer.get(&format!("/v1/jobs/{job_uuid}/history")).0, 404, "history goes with the job");
    }
    for job_uuid in [&job_held, &user_held[0], &user_held[1], &later_held, &forever] {
        assert_eq!(t.producer.get(&format!("/v1/jobs/{job_uuid}")).0, 200, "{job_uuid} must be kept");
    }
    let (status, body) = t.producer.post(
        "/v1/jobs",
        json!({ "job_uuid": plain[0], "queue": "q", "kind": "k", "payload": {}, "user_id": "u-plain" }),
    );
    assert_eq!((status, code(&body)), (409, "DUPLICATE_JOB"), "a deleted job's uuid stays used");

    // The report names the held jobs kept past their retention.
    let report = wait_for(Duration::from_secs(10), "the report to list the kept jobs", || {
        let (_, r) = t.tenant_admin.get("/v1/retention");
        (r["kept"].as_array().map_or(0, |k| k.len()) == 4).then_some(r)
    });
    assert!(report["deleted"].as_u64().unwrap() >= 6, "{report}");
    assert_eq!(report["held_jobs"], 4);
    assert_eq!(report["user_holds"][0]["user_id"], "u-held");
    let cli = std::process::Command::new(sluice_bin())
        .args(["--url", &server.url, "--key", &t.tenant_admin.key, "--json", "retention"])
        .output()
        .unwrap();
    assert!(cli.status.success() && String::from_utf8_lossy(&cli.stdout).contains(&job_held));

    // Lifting the holds lets retention delete them.
    assert_eq!(t.tenant_admin.delete(&format!("/v1/jobs/{job_held}/hold")).0, 200);
    assert_eq!(t.tenant_admin.delete("/v1/users/u-held/hold").0, 200);
    assert_eq!(t.tenant_admin.delete("/v1/users/u-held/hold").0, 404, "no hold left to lift");
    wait_for(Duration::from_secs(30), "retention after the holds are lifted", || {
        [&job_held, &user_held[0], &user_held[1], &later_held]
            .iter()
            .all(|j| t.producer.get(&format!("/v1/jobs/{j}")).0 == 404)
            .then_some(())
    });
    assert_eq!(t.producer.get(&format!("/v1/jobs/{forever}")).0, 200, "a job without retention stays");
    let audit = server.admin().get("/v1/audit?tenant=ret").1;
    let actions: Vec<&str> = audit["events"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["legal_hold_place", "user_hold_place", "legal_hold_lift", "user_hold_lift"] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
}
