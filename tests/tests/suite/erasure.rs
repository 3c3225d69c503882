//! The right to delete, end to end against the real binary: a user's jobs (with a
//! unique marker in their payloads) are stored, checkpointed, deleted by the
//! user's own key; once the receipt says erasure completed, neither the marker
//! nor the user id is anywhere in the bytes of the database file, the checkpoints
//! or the logs; and restoring an untouched copy of the old checkpoint does not
//! bring the user's jobs back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files whose raw bytes contain `needle`.
fn files_holding(files: &[PathBuf], needle: &str) -> Vec<PathBuf> {
    let needle = needle.as_bytes();
    files
        .iter()
        .filter(|f| std::fs::read(f).unwrap_or_default().windows(needle.len()).any(|w| w == needle))
        .cloned()
        .collect()
}

#[test]
fn a_deleted_user_is_gone_from_every_byte_the_host_holds() {
    let mut server = Server::start();
    let admin = server.admin();
    let t = server.tenant("era");
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let (user, marker) = (format!("user-{unique}"), format!("MARKER-{unique}"));

    // The user's jobs: some pending, some running under a worker's lease, some done.
    let mut uuids = Vec::new();
    for n in 0..20 {
        let payload = json!({ "note": format!("{marker} #{n}"), "n": n });
        let job = t.producer.insert("mail", json!({ "user_id": user, "payload": payload, "priority": n }));
        uuids.push(job["job_uuid"].as_str().unwrap().to_owned());
    }
    let other = t.producer.insert("mail", json!({ "user_id": "someone-else", "payload": { "keep": true } }));
    let claimed = t.worker.claim("mail", 8, 60_000);
    assert!(claimed.iter().all(|j| j["user_id"] == user.as_str()), "the user's jobs have priority");
    for job in &claimed[..3] {
        let path = format!("/v1/jobs/{}/complete", job["job_uuid"].as_str().unwrap());
        assert_eq!(t.worker.post(&path, json!({ "token": job["lease"]["token"] })).0, 200);
    }
    let (status, _) = t.tenant_admin.put(&format!("/v1/users/{user}/config"), json!({ "tags": { "gdpr": true } }));
    assert_eq!(status, 200);
    let (status, key) =
        t.tenant_admin.post("/v1/keys", json!({ "name": "self", "role": "user", "tenant": "era", "user_id": user }));
    assert_eq!(status, 201, "{key}");
    let own = Api::new(&server.url, key["secret"].as_str().unwrap());
    assert_eq!(own.list_all("").len(), 20, "a user key sees exactly its own jobs");

    let (status, checkpoint) = admin.post("/v1/admin/checkpoints", json!({}));
    assert_eq!(status, 201, "{checkpoint}");
    let checkpoint_id = checkpoint["id"].as_str().unwrap().to_owned();

    // First prove the data is there: in the database file or its journal (batches
    // reach the file itself at the next fold), and in the checkpoint.
    let data = server.data();
    let stored = files_holding(&files_under(&data), &marker);
    assert!(
        stored.contains(&data.join("sluice.redb")) || stored.contains(&data.join("sluice.journal")),
        "marker in the database file or its journal: {stored:?}"
    );
    assert!(stored.iter().any(|f| f.starts_with(data.join("checkpoints"))), "marker in the checkpoint: {stored:?}");
    let untouched = tempfile::tempdir().unwrap();
    for ext in ["redb", "json"] {
        let name = format!("{checkpoint_id}.{ext}");
        std::fs::copy(data.join("checkpoints").join(&name), untouched.path().join(&name)).unwrap();
    }

    // The user deletes itself.
    let (status, receipt) = own.delete(&format!("/v1/users/{user}/data"));
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["jobs_deleted"], 20);
    assert_eq!(receipt["leases_revoked"], 5, "the 5 running jobs lost their lease");
    assert_eq!(receipt["held_kept"], 0);
    assert_eq!(receipt["keys_deleted"], 1);
    assert!(!receipt.to_string().contains(&user), "the receipt holds no personal data: {receipt}");
    assert_eq!(own.get("/v1/jobs").0, 401, "the user's own key went with it");
    let running = &claimed[5];
    let path = format!("/v1/jobs/{}/complete", running["job_uuid"].as_str().unwrap());
    let (status, body) = t.worker.post(&path, json!({ "token": running["lease"]["token"] }));
    assert_eq!((status, code(&body)), (409, "LEASE_LOST"), "{body}");
    for job_uuid in &uuids {
        assert_eq!(t.producer.get(&format!("/v1/jobs/{job_uuid}")).0, 404);
    }
    let (status, body) = t.producer.post(
        "/v1/jobs",
        json!({ "job_uuid": uuids[0], "queue": "mail", "kind": "k", "payload": {}, "user_id": "new-user" }),
    );
    assert_eq!((status, code(&body)), (409, "DUPLICATE_JOB"), "a deleted job's uuid stays used");
    assert_eq!(t.producer.job(other["job_uuid"].as_str().unwrap())["payload"]["keep"], true);

    // Erasure from the files completes without an operator.
    let receipt_path = format!("/v1/deletions/{}", receipt["id"].as_str().unwrap());
    let done = wait_for(Duration::from_secs(60), "erasure to complete", || {
        let (_, r) = t.tenant_admin.get(&receipt_path);
        (!r["erasure_completed_at"].is_null()).then_some(r)
    });
    assert_eq!(done["checkpoints_rewritten"], 1, "{done}");

    let mut every_file = files_under(&data);
    every_file.push(server.log_path());
    for needle in [&marker, &user] {
        let hits = files_holding(&every_file, needle);
        assert!(hits.is_empty(), "{needle} still found in {hits:?}");
    }
    println!("searched {} files ({} bytes) for the marker and the user id: 0 hits", every_file.len(), {
        every_file.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum::<u64>()
    });

    // Restore an untouched copy of the old checkpoint: the deletion is re-applied.
    let copy_id = format!("cp-{}", uuid::Uuid::new_v4().simple());
    let mut sidecar: Value =
        serde_json::from_slice(&std::fs::read(untouched.path().join(format!("{checkpoint_id}.json"))).unwrap())
            .unwrap();
    sidecar["id"] = json!(copy_id);
    std::fs::write(data.join("checkpoints").join(format!("{copy_id}.json")), sidecar.to_string()).unwrap();
    std::fs::copy(
        untouched.path().join(format!("{checkpoint_id}.redb")),
        data.join("checkpoints").join(format!("{copy_id}.redb")),
    )
    .unwrap();
    assert_eq!(t.tenant_admin.post("/v1/queues/mail/pause", json!({})).0, 200);
    let (status, report) =
        admin.post(&format!("/v1/admin/checkpoints/{copy_id}/restore"), json!({ "tenant": "era", "confirm": true }));
    assert_eq!(status, 200, "{report}");
    for job_uuid in &uuids {
        assert_eq!(t.producer.get(&format!("/v1/jobs/{job_uuid}")).0, 404, "job {job_uuid} came back");
    }
    assert!(t.producer.list_all(&format!("user_id={user}")).is_empty());
    assert_eq!(t.producer.job(other["job_uuid"].as_str().unwrap())["payload"]["keep"], true);

    // The audit log has the deletion and its completion, and never the user id.
    let (status, audit) = admin.get("/v1/audit?tenant=era&limit=1000");
    assert_eq!(status, 200);
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["user_delete", "erasure_complete", "restore", "key_create"] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    assert!(!audit.to_string().contains(&user));

    server.stop();
    let dir = cap_std::fs::Dir::open_ambient_dir(server.data(), cap_std::ambient_authority()).unwrap();
    let store = sluice_host::store::RedbStore::open_in(&dir, "sluice.redb", &Default::default()).unwrap();
    assert_eq!(store.check_consistency(), Ok(1), "only the other user's job is left");
}

#[test]
fn legally_held_jobs_survive_a_deletion_and_are_counted() {
    let server = Server::start();
    let t = server.tenant("held");
    let jobs: Vec<String> = (0..3)
        .map(|_| t.producer.insert("q", json!({ "user_id": "u-held" }))["job_uuid"].as_str().unwrap().to_owned())
        .collect();
    let (status, held) = t.tenant_admin.put(&format!("/v1/jobs/{}/hold", jobs[0]), json!({ "reason": "case 7" }));
    assert_eq!((status, &held["legal_hold"]), (200, &json!(true)), "{held}");
    let (status, receipt) = t.tenant_admin.delete("/v1/users/u-held/data");
    assert_eq!(status, 202, "{receipt}");
    assert_eq!((receipt["jobs_deleted"].as_u64(), receipt["held_kept"].as_u64()), (Some(2), Some(1)));
    assert_eq!(t.producer.job(&jobs[0])["user_id"], "u-held", "the held job stays");
    assert_eq!(t.producer.get(&format!("/v1/jobs/{}", jobs[1])).0, 404);
    // A user key of another user finds no such user (PERMISSIONS.md: another
    // user's id is 404), and a producer may not delete anyone; the held job stays.
    let (status, key) = t
        .tenant_admin
        .post("/v1/keys", json!({ "name": "other", "role": "user", "tenant": t.id, "user_id": "u-other" }));
    assert_eq!(status, 201, "{key}");
    let other_user = Api::new(&server.url, key["secret"].as_str().unwrap());
    let (status, body) = other_user.delete("/v1/users/u-held/data");
    assert_eq!((status, code(&body)), (404, "NOT_FOUND"), "{body}");
    assert_eq!(t.producer.delete("/v1/users/u-held/data").0, 403);
    assert_eq!(t.producer.job(&jobs[0])["legal_hold"], true, "the refused deletions changed nothing");
}
