use serde_json::json;
use sluice_tests::*;

#[test]
fn insert_claim_complete() {
    let server = Server::start();
    let acme = server.tenant("acme");
    let job = acme.producer.insert("emails", json!({}));
    let claimed = acme.worker.claim("emails", 1, 30_000);
    assert_eq!(claimed[0]["job_uuid"], job["job_uuid"]);
    let token = claimed[0]["lease"]["token"].as_u64().unwrap();
    let uuid = job["job_uuid"].as_str().unwrap();
    let (status, done) = acme.worker.post(&format!("/v1/jobs/{uuid}/complete"), json!({ "token": token }));
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "completed");
}
