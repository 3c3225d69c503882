//! The real `sluice` binary used as a person or a script would, against a real server.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

struct Cli<'s> {
    server: &'s Server,
    key: String,
    tenant: Option<String>,
}

impl Cli<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(sluice_bin());
        c.env("SLUICE_URL", &self.server.url).env("SLUICE_KEY", &self.key).env_remove("SLUICE_TENANT");
        if let Some(t) = &self.tenant {
            c.args(["--tenant", t]);
        }
        c.args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run sluice")
    }

    /// Run, expect success, and return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "sluice {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// Run, expect failure with `exit` and `needle` in stderr.
    fn fails(&self, args: &[&str], exit: i32, needle: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(exit), "sluice {args:?}: {stderr}");
        assert!(stderr.contains(needle), "sluice {args:?}: expected {needle:?} in {stderr}");
    }
}

fn admin_cli(server: &Server) -> Cli<'_> {
    Cli { server, key: server.admin_key.clone(), tenant: None }
}

#[test]
fn every_subcommand_has_a_happy_and_an_error_path() {
    let server = Server::start();
    let admin = admin_cli(&server);
    assert!(admin.ok(&["tenants", "create", "acme"]).contains("tenant acme created"));
    admin.fails(&["tenants", "create", "acme"], 1, "VALIDATION");
    assert!(admin.ok(&["tenants", "list"]).contains("acme"));
    assert_eq!(admin.json(&["tenants", "list"])["tenants"][0]["id"], "acme");

    let key = admin.json(&["keys", "create", "--name", "ci", "--role", "tenant-admin", "--for-tenant", "acme"]);
    let secret = key["secret"].as_str().unwrap().to_owned();
    let listed = admin.ok(&["keys", "list"]);
    assert!(listed.contains(key["id"].as_str().unwrap()) && !listed.contains(&secret));
    admin.fails(&["keys", "create", "--name", "x", "--role", "wizard"], 1, "VALIDATION");
    admin.fails(&["keys", "revoke", "nosuchkey"], 1, "NOT_FOUND");
    let doomed = admin.json(&["keys", "create", "--name", "doomed", "--role", "producer", "--for-tenant", "acme"]);
    assert!(admin.ok(&["keys", "revoke", doomed["id"].as_str().unwrap()]).contains("revoked"));
    let revoked = Cli { server: &server, key: doomed["secret"].as_str().unwrap().into(), tenant: None };
    revoked.fails(&["jobs", "list"], 4, "refused the API key");

    let acme = Cli { server: &server, key: secret, tenant: None };
    let producer_key = admin.json(&["keys", "create", "--name", "app", "--role", "producer", "--for-tenant", "acme"]);
    let producer = Cli { server: &server, key: producer_key["secret"].as_str().unwrap().into(), tenant: None };
    let job = producer.json(&[
        "jobs",
        "add",
        "--queue",
        "emails",
        "--kind",
        "send",
        "--user",
        "u-1",
        "--payload",
        r#"{"to":"a@b.c"}"#,
        "--priority",
        "3",
    ]);
    let uuid = job["job_uuid"].as_str().unwrap().to_owned();
    assert_eq!(job["priority"], 3);
    producer.fails(
        &["jobs", "add", "--queue", "emails", "--kind", "send", "--user", "u-1", "--payload", "{not json"],
        2,
        "--payload: not valid JSON",
    );
    producer.fails(
        &["jobs", "add", "--queue", "emails", "--kind", "send", "--user", "u-1", "--job-uuid", &uuid],
        1,
        "DUPLICATE_JOB",
    );
    assert!(acme.ok(&["jobs", "get", &uuid]).contains("send"));
    acme.fails(&["jobs", "get", "4a4a4a4a-0000-4000-8000-000000000000"], 1, "NOT_FOUND");
    let table = acme.ok(&["jobs", "list", "--queue", "emails"]);
    assert!(table.contains("JOB_UUID") && table.contains(&uuid));
    acme.fails(&["jobs", "list", "--state", "sleeping"], 1, "VALIDATION");
    assert!(acme.ok(&["jobs", "history", &uuid]).contains("insert"));
    acme.fails(&["jobs", "history", "4a4a4a4a-0000-4000-8000-000000000000"], 1, "NOT_FOUND");
    acme.fails(&["jobs", "retry", &uuid], 1, "ILLEGAL_TRANSITION");
    assert!(acme.ok(&["jobs", "cancel", &uuid]).contains("abandoned"));
    acme.fails(&["jobs", "cancel", &uuid], 1, "ILLEGAL_TRANSITION");
    acme.fails(&["jobs", "replay", &uuid], 1, "REPLAY_NEEDS_OVERRIDE");
    assert!(acme.ok(&["jobs", "replay", &uuid, "--override"]).contains("pending"));

    let q = acme.json(&["queues", "set", "emails", "--max-attempts", "7", "--schema-versions", "1,2"]);
    assert_eq!(q["config"]["max_attempts"], 7);
    assert_eq!(q["config"]["schema_versions"], json!([1, 2]));
    assert!(acme.ok(&["queues", "show", "emails"]).contains("max_attempts"));
    acme.fails(&["queues", "show", "nothing-here"], 1, "NOT_FOUND");
    acme.fails(&["queues", "set", "emails"], 2, "nothing to set");
    acme.fails(&["queues", "set", "emails", "--max-attempts", "0"], 1, "VALIDATION");
    assert!(acme.ok(&["queues", "reset-breaker", "emails"]).contains("0 parked jobs"));
    acme.fails(&["queues", "reset-breaker", "nothing-here"], 1, "NOT_FOUND");

    // The admin key spans tenants: --tenant names one.
    let scoped = Cli { server: &server, key: server.admin_key.clone(), tenant: Some("acme".into()) };
    assert!(scoped.ok(&["jobs", "list"]).contains(&uuid));
    admin.fails(&["jobs", "list"], 1, "Sluice-Tenant");

    // An unreachable server, a missing key.
    let mut gone = Command::new(sluice_bin());
    let out = gone.env("SLUICE_KEY", "k").args(["--url", "http://127.0.0.1:9", "tenants", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"));
    let out = Command::new(sluice_bin())
        .env_remove("SLUICE_KEY")
        .args(["--url", &server.url, "tenants", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API key"));

    // Help says what each command does, with an example.
    for sub in [
        vec!["--help"],
        vec!["jobs", "add", "--help"],
        vec!["work", "--help"],
        vec!["queues", "set", "--help"],
        vec!["keys", "create", "--help"],
    ] {
        let text = admin.ok(&sub);
        assert!(text.contains("Example"), "help of {sub:?} has an example");
    }
}

/// The tenant's own commands beside the job ones: pausing queues, limits and
/// usage, alerts, the right to delete and its receipts.
#[test]
fn queue_quota_alert_and_privacy_subcommands_have_a_happy_and_an_error_path() {
    let server = Server::start();
    let t = server.tenant("acme");
    let acme = Cli { server: &server, key: t.tenant_admin.key.clone(), tenant: None };
    let producer = Cli { server: &server, key: t.producer.key.clone(), tenant: None };
    let admin = Cli { server: &server, key: server.admin_key.clone(), tenant: Some("acme".into()) };
    for n in 0..3 {
        t.producer.insert("emails", json!({ "payload": { "n": n } }));
    }

    assert!(acme.ok(&["queues", "pause", "emails"]).contains("queue emails paused"));
    assert_eq!(t.worker.post("/v1/queues/emails/claim", json!({ "worker": "w" })).1["paused"], true);
    assert!(acme.ok(&["queues", "resume", "emails"]).contains("queue emails resumed"));
    assert_eq!(t.worker.claim("emails", 1, 60_000).len(), 1, "claims hand out jobs again");
    acme.fails(&["queues", "pause", "bad~name"], 1, "VALIDATION");
    producer.fails(&["queues", "pause", "emails"], 1, "FORBIDDEN");

    let limits = admin.json(&["limits", "set", r#"{"max_pending": 500, "max_queues": 7}"#]);
    assert_eq!((limits["max_pending"].as_u64(), limits["max_queues"].as_u64()), (Some(500), Some(7)));
    assert_eq!(acme.json(&["limits", "get"])["max_pending"], 500);
    admin.fails(&["limits", "set", "{not json"], 2, "not valid JSON");
    acme.fails(&["limits", "set", r#"{"max_pending": 1}"#], 1, "FORBIDDEN");
    assert_eq!(acme.json(&["limits", "get"])["max_pending"], 500, "a refused change changes nothing");

    let usage = acme.json(&["usage"]);
    assert_eq!((usage["tenant"].as_str(), usage["usage"]["pending"].as_u64()), (Some("acme"), Some(2)));
    assert!(acme.ok(&["usage"]).contains("pending"));
    let user = acme.json(&["usage", "--user", "user-1"]);
    assert_eq!((user["user_id"].as_str(), user["pending"].as_u64()), (Some("user-1"), Some(2)));

    assert!(acme.ok(&["alerts", "list"]).contains("SEVERITY"));
    assert_eq!(acme.json(&["alerts", "history"])["events"], json!([]));
    acme.fails(&["alerts", "ack", "emails:depth"], 1, "NOT_FOUND");

    producer.fails(&["users", "delete", "user-1"], 1, "FORBIDDEN");
    let receipt = acme.json(&["users", "delete", "user-1"]);
    assert_eq!(receipt["jobs_deleted"], 3);
    assert!(t.producer.list_all("queue=emails").is_empty(), "the user's jobs are gone");
    let id = receipt["id"].as_str().unwrap();
    assert!(acme.ok(&["deletions", "list"]).contains(id));
    assert_eq!(acme.json(&["deletions", "show", id])["jobs_deleted"], 3);
    acme.fails(&["deletions", "show", "no-such-receipt"], 1, "NOT_FOUND");
}

#[test]
fn bulk_add_ten_thousand_jobs() {
    let server = Server::start();
    let t = server.tenant("bulk");
    let file = server.dir.path().join("jobs.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    for i in 0..10_000 {
        writeln!(
            f,
            "{}",
            json!({ "queue": "bulk", "kind": "k", "user_id": format!("u{}", i % 10), "payload": { "i": i } })
        )
        .unwrap();
    }
    writeln!(f, "{}", json!({ "queue": "bulk", "kind": "k" })).unwrap();
    drop(f);
    let cli = Cli { server: &server, key: t.producer.key.clone(), tenant: None };
    let summary = cli.json(&["jobs", "add-bulk", "--file", file.to_str().unwrap()]);
    assert_eq!(summary["accepted"], 10_000);
    assert_eq!(summary["refused"], 1);
    assert_eq!(summary["refusals"][0]["job"], 10_001, "the refused line is named");
    let (_, q) = t.producer.get("/v1/queues/bulk");
    assert_eq!(q["counts"]["pending"], 10_000);
    cli.fails(&["jobs", "add-bulk", "--file", "/no/such/file.jsonl"], 2, "cannot open");
}

const SCRIPT: &str = r#"#!/bin/sh
# Test worker: the payload's "mode" says what to do.
payload=$(cat)
case "$payload" in
  *'"ok"'*) echo "done $SLUICE_JOB_UUID"; exit 0 ;;
  *'"fail"'*) echo "boom: disk on fire" >&2; exit 7 ;;
  *'"final"'*) echo "bad input, never retry" >&2; exit 100 ;;
  *'"sleep"'*) sleep "${SLEEP_SECS:-1}"; exit 0 ;;
  *'"resume"'*)
    if [ -n "$SLUICE_PROGRESS" ]; then
      echo "$SLUICE_PROGRESS" > "$MARKER_DIR/$SLUICE_JOB_UUID.resumed"
      exit 0
    fi
    echo '{"step":"half","data":{"n":1}}' >> "$SLUICE_PROGRESS_FILE"
    echo "crashed after half" >&2
    exit 3 ;;
esac
exit 9
"#;

fn script(server: &Server) -> String {
    let path = server.dir.path().join("worker.sh");
    std::fs::write(&path, SCRIPT).unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path.to_str().unwrap().to_owned()
}

fn insert_mode(t: &Tenant, queue: &str, mode: &str) -> String {
    t.producer.insert(queue, json!({ "payload": { "mode": mode } }))["job_uuid"].as_str().unwrap().to_owned()
}

#[test]
fn work_runs_a_script_per_job() {
    let server = Server::start();
    let t = server.tenant("work");
    t.tenant_admin.put("/v1/queues/w", json!({ "backoff_base_ms": 100, "backoff_cap_ms": 200, "max_attempts": 2 }));
    let ok = insert_mode(&t, "w", "ok");
    let fail = insert_mode(&t, "w", "fail");
    let final_ = insert_mode(&t, "w", "final");
    let resume = insert_mode(&t, "w", "resume");
    let markers = server.dir.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let cli = Cli { server: &server, key: t.worker.key.clone(), tenant: None };
    let script = script(&server);
    let mut worker = cli
        .command(&["work", "--queue", "w", "--concurrency", "3", "--lease-ms", "5000", "--", &script])
        .env("MARKER_DIR", &markers)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let finished = |uuid: &str| {
        let state = t.producer.job(uuid)["state"].as_str().unwrap().to_owned();
        (state == "completed" || state == "abandoned").then_some(state)
    };
    for uuid in [&ok, &fail, &final_, &resume] {
        wait_for(Duration::from_secs(60), "jobs to finish", || finished(uuid));
    }
    let _ = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
    assert!(worker.wait().unwrap().success(), "the worker stops cleanly on SIGTERM");

    assert_eq!(t.producer.job(&ok)["state"], "completed");
    let failed = t.producer.job(&fail);
    assert_eq!(failed["state"], "abandoned", "two attempts, both failed");
    let errors = failed["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["code"], "EXIT_7");
    assert!(errors[0]["traceback"].as_str().unwrap().contains("boom: disk on fire"), "stderr tail is the traceback");
    assert_eq!(errors[0]["retryable"], true);
    let final_job = t.producer.job(&final_);
    assert_eq!(final_job["state"], "abandoned");
    assert_eq!(final_job["errors"].as_array().unwrap().len(), 1, "exit 100 is not retried");
    assert_eq!(final_job["errors"][0]["retryable"], false);
    let resumed = t.producer.job(&resume);
    assert_eq!(resumed["state"], "completed");
    assert_eq!(resumed["attempt"], 2);
    assert_eq!(resumed["errors"][0]["step"], "half", "the failure names the step it reached");
    let seen: Value =
        serde_json::from_str(&std::fs::read_to_string(markers.join(format!("{resume}.resumed"))).unwrap()).unwrap();
    assert_eq!(seen["step"], "half", "the retry resumed from the saved progress");
    assert_eq!(seen["data"], json!({ "n": 1 }));
}

#[test]
fn work_stops_gracefully_and_survives_a_server_restart() {
    let mut server = Server::start();
    let t = server.tenant("grace");
    let script = script(&server);
    let cli = Cli { server: &server, key: t.worker.key.clone(), tenant: None };
    let spawn = |grace: &str, sleep: &str| {
        cli.command(&["work", "--queue", "g", "--grace-ms", grace, "--lease-ms", "10000", "--", &script])
            .env("SLEEP_SECS", sleep)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Within the grace period the running job finishes.
    let short = insert_mode(&t, "g", "sleep");
    let mut worker = spawn("20000", "2");
    wait_for(Duration::from_secs(20), "the job to start", || {
        (t.producer.job(&short)["state"] == "processing").then_some(())
    });
    let _ = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
    assert!(worker.wait().unwrap().success());
    assert_eq!(t.producer.job(&short)["state"], "completed", "finished within the grace period");

    // Past the grace period the command is killed and the job released, no attempt spent.
    let long = insert_mode(&t, "g", "sleep");
    let mut worker = spawn("300", "60");
    wait_for(Duration::from_secs(20), "the job to start", || {
        (t.producer.job(&long)["state"] == "processing").then_some(())
    });
    let _ = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
    assert!(worker.wait().unwrap().success());
    let job = t.producer.job(&long);
    assert_eq!((job["state"].as_str(), job["attempt"].as_u64()), (Some("pending"), Some(0)), "released: {job}");
    let (_, history) = t.producer.get(&format!("/v1/jobs/{long}/history"));
    assert!(history["events"].as_array().unwrap().iter().any(|e| e["action"] == "release"));

    // The worker keeps going across a server restart.
    let (_, cancelled) = t.tenant_admin.post(&format!("/v1/jobs/{long}/cancel"), json!({}));
    assert_eq!(cancelled["state"], "abandoned");
    let mut worker = spawn("1000", "0");
    let before = insert_mode(&t, "g", "ok");
    wait_for(Duration::from_secs(20), "the first job", || {
        (t.producer.job(&before)["state"] == "completed").then_some(())
    });
    server.kill();
    std::thread::sleep(Duration::from_millis(1500));
    server.restart();
    let after = insert_mode(&t, "g", "ok");
    wait_for(Duration::from_secs(30), "a job after the restart", || {
        (t.producer.job(&after)["state"] == "completed").then_some(())
    });
    let _ = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
    assert!(worker.wait().unwrap().success());
}

#[test]
fn plugins_subcommands() {
    let server = Server::start();
    let t = server.tenant("plug");
    let cli = Cli { server: &server, key: t.tenant_admin.key.clone(), tenant: None };
    let dir = server.dir.path();
    let good = dir.join("require_fields.wasm");
    std::fs::write(&good, plugin("require_fields")).unwrap();
    let bad = dir.join("socket_user.wasm");
    std::fs::write(&bad, plugin("socket_user")).unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());

    assert!(cli.ok(&["plugins", "check", good, "--kind", "validator"]).contains("passes the upload checks"));
    cli.fails(&["plugins", "check", bad, "--kind", "validator"], 1, "wasi:sockets");
    cli.fails(&["plugins", "check", good, "--kind", "tagger"], 1, "missing export");

    let plugin = cli.json(&["plugins", "upload", good, "--name", "req", "--kind", "validator", "--version", "1.0.0"]);
    let digest = plugin["digest"].as_str().unwrap().to_owned();
    cli.fails(
        &["plugins", "upload", bad, "--name", "net", "--kind", "validator", "--version", "1"],
        1,
        "PLUGIN_INVALID",
    );
    cli.fails(
        &["plugins", "upload", "/no/such.wasm", "--name", "x", "--kind", "validator", "--version", "1"],
        2,
        "cannot read",
    );
    assert!(cli.ok(&["plugins", "list"]).contains(&digest));
    assert_eq!(cli.json(&["plugins", "show", &digest])["name"], "req");
    cli.fails(&["plugins", "show", "nope"], 1, "NOT_FOUND");

    assert!(
        cli.ok(&["plugins", "bind", "--queue", "q", "--kind", "validator", "--plugin", &digest]).contains("bound to q")
    );
    cli.fails(&["plugins", "bind", "--queue", "q", "--kind", "validator", "--plugin", "nope"], 1, "NOT_FOUND");
    cli.fails(&["plugins", "bind", "--queue", "q", "--kind", "wizard", "--plugin", &digest], 2, "--kind");
    assert!(cli.ok(&["plugins", "bindings"]).contains(&digest));
    cli.fails(&["plugins", "delete", &digest], 1, "PLUGIN_IN_USE");
    assert!(cli.ok(&["plugins", "unbind", "--queue", "q", "--kind", "validator"]).contains("unbound"));
    cli.fails(&["plugins", "unbind", "--queue", "q", "--kind", "validator"], 1, "NOT_FOUND");
    assert!(cli.ok(&["plugins", "delete", &digest]).contains("deleted"));
    assert!(cli.ok(&["plugins", "--help"]).contains("upload"));
    assert!(cli.ok(&["plugins", "bind", "--help"]).contains("Example"));
}
