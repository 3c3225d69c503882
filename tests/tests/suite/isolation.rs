//! Permissions and tenant isolation, route by route. PERMISSIONS.md is written by
//! hand and is this test's oracle: it must name exactly the routes of
//! `/openapi.json`, and every route, called by every role acting in the tenant that
//! owns the object (iso-a) and in another tenant (iso-b), must answer as it says.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sluice_tests::*;

/// The tenant that owns every fixture object.
const OWNER: &str = "iso-a";
/// The tenant whose keys must not reach them.
const OTHER: &str = "iso-b";
/// The user whose jobs the fixtures create; the `user` keys of both tenants speak for it.
const USER: &str = "iso-user";
/// Another user of the owner tenant.
const OTHER_USER: &str = "iso-other-user";
/// The matrix's role columns, in order.
const ROLES: [&str; 7] = ["admin", "operator", "tenant-admin", "producer", "worker", "auditor", "user"];
/// Public, and not in the OpenAPI document itself.
const OPENAPI: &str = "GET /openapi.json";

/// One row of PERMISSIONS.md.
struct Row {
    /// `404`, `2xx` or `n/a`: what an allowed role gets acting in another tenant.
    cross_tenant: String,
    /// Role -> `yes`, `no`, `own` or `public`.
    cells: HashMap<&'static str, String>,
}

impl Row {
    fn is_public(&self) -> bool {
        self.cells.values().all(|c| c == "public")
    }

    /// What `role`, acting in `tenant`, must get on an object of the owner tenant.
    fn expect(&self, role: &str, tenant: &str) -> Expect {
        match self.cells[role].as_str() {
            "no" => Expect::Problem(403, "FORBIDDEN"),
            _ if tenant == OTHER && self.cross_tenant == "404" => Expect::Problem(404, "NOT_FOUND"),
            _ => Expect::Success,
        }
    }
}

/// The cells of a markdown table line, trimmed and without code quotes.
fn cells(line: &str) -> Vec<String> {
    line.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_owned()).collect()
}

/// PERMISSIONS.md by route (`METHOD /path`). A malformed table fails here.
fn read_matrix() -> BTreeMap<String, Row> {
    let path = workspace().join("PERMISSIONS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = text.lines().map(str::trim).filter(|l| l.starts_with('|'));
    let header = cells(lines.next().expect("PERMISSIONS.md has a table"));
    let columns: Vec<&str> = ["method", "path", "cli", "cross-tenant"].into_iter().chain(ROLES).collect();
    assert_eq!(header, columns, "PERMISSIONS.md: the table's columns");
    let mut rows = BTreeMap::new();
    for line in lines {
        let c = cells(line);
        if c.iter().all(|cell| !cell.is_empty() && cell.chars().all(|ch| ch == '-' || ch == ':')) {
            continue; // the separator line
        }
        assert_eq!(c.len(), columns.len(), "PERMISSIONS.md: wrong number of cells in {line}");
        let route = format!("{} {}", c[0], c[1]);
        assert!(!c[2].is_empty(), "PERMISSIONS.md, {route}: empty cli cell (write - for none)");
        assert!(["404", "2xx", "n/a"].contains(&c[3].as_str()), "PERMISSIONS.md, {route}: cross-tenant `{}`", c[3]);
        let cells: HashMap<&'static str, String> = ROLES.into_iter().zip(c[4..].iter().cloned()).collect();
        for (role, cell) in &cells {
            let allowed: &[&str] =
                if *role == "user" { &["yes", "no", "own", "public"] } else { &["yes", "no", "public"] };
            assert!(allowed.contains(&cell.as_str()), "PERMISSIONS.md, {route}: `{cell}` for {role}");
        }
        let public = cells.values().filter(|c| *c == "public").count();
        assert!(public == 0 || public == ROLES.len(), "PERMISSIONS.md, {route}: public is for the whole row");
        let row = Row { cross_tenant: c[3].clone(), cells };
        assert!(rows.insert(route.clone(), row).is_none(), "PERMISSIONS.md: two rows for {route}");
    }
    rows
}

/// `METHOD /path` of every operation in the server's OpenAPI document.
fn documented_routes(server: &Server) -> BTreeSet<String> {
    let doc: Value = reqwest::blocking::get(format!("{}/openapi.json", server.url)).unwrap().json().unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

/// What a request must get.
#[derive(Clone, Copy)]
enum Expect {
    /// Any 2xx status.
    Success,
    /// This status with this problem code.
    Problem(u16, &'static str),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Success => write!(f, "2xx"),
            Expect::Problem(status, code) => write!(f, "{status} {code}"),
        }
    }
}

/// The start of a body, for messages.
fn excerpt(body: &Value) -> String {
    body.to_string().chars().take(200).collect()
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Compare an answer with what was expected; a mismatch is noted in `mismatches`.
/// A batch of one answers 200 with the item's own status and problem inside;
/// the item's outcome is the one that counts.
fn check(mismatches: &mut Vec<String>, what: &str, expect: Expect, answer: &(u16, Value)) {
    let (status, body) = match answer.1["results"].as_array().map(Vec::as_slice) {
        Some([item]) if answer.0 == 200 => (&(item["status"].as_u64().unwrap_or(0) as u16), &item["error"]),
        _ => (&answer.0, &answer.1),
    };
    let matches = match expect {
        Expect::Success => is_success(*status),
        Expect::Problem(s, c) => *status == s && code(body) == c,
    };
    if !matches {
        mismatches.push(format!("{what}: expected {expect}, got {status} {}", excerpt(body)));
    }
}

/// A fixture step's answer, which must be a success.
fn ok(what: &str, (status, body): (u16, Value)) -> Result<Value, String> {
    if is_success(status) { Ok(body) } else { Err(format!("{what}: {status} {}", excerpt(&body))) }
}

fn text(v: &Value) -> Result<String, String> {
    v.as_str().map(str::to_owned).ok_or_else(|| format!("expected a string, got {v}"))
}

fn job_input(queue: &str, user_id: &str) -> Value {
    json!({ "queue": queue, "kind": "iso", "user_id": user_id, "payload": { "n": 1 } })
}

/// A request's body.
enum Body {
    Empty,
    Json(Value),
    Wasm(Vec<u8>),
}

/// A request: method, path (with its query) and body.
struct Call {
    method: Method,
    path: String,
    body: Body,
}

/// A request against an object of the owner tenant, and the user a `user` key must
/// speak for to call it as its own.
struct Fixture {
    call: Call,
    user_id: String,
}

/// Builds fixture objects in the owner tenant (with the bootstrap admin key) and
/// holds the keys of every role.
struct Lab {
    /// The bootstrap admin key, naming no tenant.
    admin: Api,
    /// The bootstrap admin key acting in the owner tenant.
    owner: Api,
    operator: Api,
    /// Keys of tenant-bound roles by (role, tenant, user id; empty but for `user`).
    keys: HashMap<(String, String, String), Api>,
    anonymous: reqwest::blocking::Client,
    /// For fresh names.
    next: u32,
}

impl Lab {
    /// Both tenants and an operator key.
    fn new(server: &Server) -> Lab {
        let admin = server.admin();
        for tenant in [OWNER, OTHER] {
            let (status, body) = admin.post("/v1/tenants", json!({ "id": tenant }));
            assert_eq!(status, 201, "create tenant {tenant}: {body}");
        }
        let (status, body) = admin.post("/v1/keys", json!({ "name": "iso-operator", "role": "operator" }));
        assert_eq!(status, 201, "create the operator key: {body}");
        let operator = Api::new(&server.url, body["secret"].as_str().expect("secret"));
        Lab {
            owner: admin.for_tenant(OWNER),
            admin,
            operator,
            keys: HashMap::new(),
            anonymous: reqwest::blocking::Client::new(),
            next: 0,
        }
    }

    /// The key of `role` acting in `tenant` (a `user` key speaks for `user_id`).
    fn key(&mut self, role: &str, tenant: &str, user_id: &str) -> Result<Api, String> {
        match role {
            "admin" => return Ok(self.admin.for_tenant(tenant)),
            "operator" => return Ok(self.operator.for_tenant(tenant)),
            _ => {}
        }
        let user_id = if role == "user" { user_id } else { "" };
        let id = (role.to_owned(), tenant.to_owned(), user_id.to_owned());
        if let Some(key) = self.keys.get(&id) {
            return Ok(key.clone());
        }
        let mut body = json!({ "name": format!("iso-{role}"), "role": role, "tenant": tenant });
        if role == "user" {
            body["user_id"] = json!(user_id);
        }
        let created = ok(&format!("create a {role} key for {tenant}"), self.admin.post("/v1/keys", body))?;
        let key = Api::new(&self.admin.base, &text(&created["secret"])?);
        self.keys.insert(id, key.clone());
        Ok(key)
    }

    /// Send `call` with `key`, or with no key at all.
    fn send(&self, key: Option<&Api>, call: &Call) -> (u16, Value) {
        let request = match key {
            Some(key) => key.request(call.method.clone(), &call.path),
            None => self.anonymous.request(call.method.clone(), format!("{}{}", self.admin.base, call.path)),
        };
        let request = match &call.body {
            Body::Empty => request,
            Body::Json(body) => request.json(body),
            Body::Wasm(bytes) => request.header("content-type", "application/wasm").body(bytes.clone()),
        };
        self.admin.send(request)
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{}", self.next)
    }

    /// A new queue of the owner tenant with this configuration.
    fn queue(&mut self, config: Value) -> Result<String, String> {
        let queue = self.fresh("iso-q");
        ok("configure a queue", self.owner.put(&format!("/v1/queues/{queue}"), config))?;
        Ok(queue)
    }

    fn pause_queue(&self, queue: &str) -> Result<(), String> {
        ok("pause a queue", self.owner.post(&format!("/v1/queues/{queue}/pause"), json!({}))).map(drop)
    }

    /// A pending job of `user_id`, alone in a new queue; returns its job_uuid.
    fn pending_job(&mut self, user_id: &str) -> Result<String, String> {
        let queue = self.fresh("iso-q");
        text(&ok("insert a job", self.owner.post("/v1/jobs", job_input(&queue, user_id)))?["job_uuid"])
    }

    /// A job of the user, claimed from a new queue with this configuration: (job_uuid, lease token).
    fn claimed_job(&mut self, config: Value) -> Result<(String, u64), String> {
        let queue = self.queue(config)?;
        ok("insert a job", self.owner.post("/v1/jobs", job_input(&queue, USER)))?;
        let claim = json!({ "worker": "iso-fixture", "limit": 1, "lease_ms": 600_000 });
        let claimed = ok("claim a job", self.owner.post(&format!("/v1/queues/{queue}/claim"), claim))?;
        let job = &claimed["jobs"][0];
        let token = job["lease"]["token"].as_u64().ok_or_else(|| format!("claim: no lease in {claimed}"))?;
        Ok((text(&job["job_uuid"])?, token))
    }

    /// A claimed job finished with `action` (`complete`, `fail`) and this body.
    fn finished_job(&mut self, config: Value, action: &str, mut body: Value) -> Result<String, String> {
        let (job, token) = self.claimed_job(config)?;
        body["token"] = json!(token);
        ok(&format!("{action} a job"), self.owner.post(&format!("/v1/jobs/{job}/{action}"), body))?;
        Ok(job)
    }

    /// Upload a plugin of `plugins/` to the owner tenant; returns its digest.
    fn plugin(&self, name: &str, kind: &str) -> Result<String, String> {
        text(&ok(&format!("upload {name}"), self.owner.upload(plugin(name), name, kind))?["digest"])
    }

    fn checkpoint(&self) -> Result<String, String> {
        text(&ok("take a checkpoint", self.owner.post("/v1/admin/checkpoints", json!({})))?["id"])
    }

    /// A firing alert of the owner tenant; returns its id.
    fn alert(&mut self) -> Result<String, String> {
        let queue = self.queue(json!({ "alerts": { "depth": { "fire_above": 0, "clear_below": 0 } } }))?;
        ok("insert a job", self.owner.post("/v1/jobs", job_input(&queue, OTHER_USER)))?;
        let id = format!("{queue}:depth");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, list) = self.owner.get("/v1/alerts");
            if list["alerts"].as_array().is_some_and(|alerts| alerts.iter().any(|a| a["id"] == id)) {
                return Ok(id);
            }
            if Instant::now() > deadline {
                return Err(format!("alert {id} did not fire: {}", excerpt(&list)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A valid request for `route` against a fresh object of the owner tenant.
    fn fixture(&mut self, route: &str) -> Result<Fixture, String> {
        let (method, template) = route.split_once(' ').ok_or("a route is METHOD /path")?;
        let hold = json!({ "reason": "isolation test" });
        let mut user_id = USER.to_owned();
        let mut params: Vec<(&str, String)> = Vec::new();
        let mut query = "";
        let body = match route {
            _ if method == "GET" && !template.contains('{') => Body::Empty,
            "POST /v1/admin/pause" | "POST /v1/admin/resume" | "POST /v1/admin/checkpoints" => Body::Empty,
            "POST /v1/tenants" => Body::Json(json!({ "id": self.fresh("iso-t") })),
            "POST /v1/keys" => Body::Json(json!({ "name": "iso-new", "role": "producer" })),
            "DELETE /v1/keys/{key_id}" => {
                let key = json!({ "name": "iso-revoked", "role": "producer", "tenant": OWNER });
                params.push(("key_id", text(&ok("create a key", self.admin.post("/v1/keys", key))?["id"])?));
                Body::Empty
            }
            "GET /v1/queues/{queue}" | "POST /v1/queues/{queue}/breaker/reset" | "POST /v1/queues/{queue}/pause" => {
                params.push(("queue", self.queue(json!({}))?));
                Body::Empty
            }
            "PUT /v1/queues/{queue}" => {
                params.push(("queue", self.queue(json!({}))?));
                Body::Json(json!({ "max_attempts": 3 }))
            }
            "POST /v1/queues/{queue}/resume" => {
                let queue = self.queue(json!({}))?;
                self.pause_queue(&queue)?;
                params.push(("queue", queue));
                Body::Empty
            }
            "POST /v1/queues/{queue}/claim" => {
                let queue = self.queue(json!({}))?;
                ok("insert a job", self.owner.post("/v1/jobs", job_input(&queue, USER)))?;
                params.push(("queue", queue));
                Body::Json(json!({ "worker": "iso", "limit": 1, "lease_ms": 60_000 }))
            }
            "GET /v1/admin/checkpoints/{id}" | "DELETE /v1/admin/checkpoints/{id}" => {
                params.push(("id", self.checkpoint()?));
                Body::Empty
            }
            "POST /v1/admin/checkpoints/{id}/restore" => {
                let queue = self.queue(json!({}))?;
                self.pause_queue(&queue)?;
                params.push(("id", self.checkpoint()?));
                Body::Json(json!({ "tenant": OWNER, "queues": [queue], "confirm": false }))
            }
            "POST /v1/alerts/{id}/ack" => {
                params.push(("id", self.alert()?));
                Body::Empty
            }
            "POST /v1/jobs" => Body::Json(job_input(&self.fresh("iso-q"), USER)),
            "POST /v1/jobs/batch" => Body::Json(json!({ "jobs": [job_input(&self.fresh("iso-q"), USER)] })),
            "GET /v1/jobs/{job_uuid}" | "GET /v1/jobs/{job_uuid}/history" | "POST /v1/jobs/{job_uuid}/cancel" => {
                params.push(("job_uuid", self.pending_job(USER)?));
                Body::Empty
            }
            "PUT /v1/jobs/{job_uuid}/hold" => {
                params.push(("job_uuid", self.pending_job(USER)?));
                Body::Json(hold)
            }
            "DELETE /v1/jobs/{job_uuid}/hold" => {
                let job = self.pending_job(USER)?;
                ok("hold a job", self.owner.put(&format!("/v1/jobs/{job}/hold"), hold))?;
                params.push(("job_uuid", job));
                Body::Empty
            }
            "POST /v1/jobs/{job_uuid}/heartbeat"
            | "POST /v1/jobs/{job_uuid}/complete"
            | "POST /v1/jobs/{job_uuid}/release" => {
                let (job, token) = self.claimed_job(json!({}))?;
                params.push(("job_uuid", job));
                Body::Json(json!({ "token": token }))
            }
            "POST /v1/jobs/batch/complete" => {
                let (job, token) = self.claimed_job(json!({}))?;
                Body::Json(json!({ "jobs": [{ "job_uuid": job, "token": token }] }))
            }
            "POST /v1/jobs/{job_uuid}/fail" => {
                let (job, token) = self.claimed_job(json!({}))?;
                params.push(("job_uuid", job));
                Body::Json(json!({ "token": token, "code": "ISO", "reason": "isolation test" }))
            }
            "POST /v1/jobs/{job_uuid}/retry" => {
                // A backoff of an hour keeps the job failed while the cases run.
                let config = json!({ "backoff_base_ms": 3_600_000, "backoff_cap_ms": 3_600_000 });
                let failure = json!({ "code": "ISO", "reason": "isolation fixture" });
                params.push(("job_uuid", self.finished_job(config, "fail", failure)?));
                Body::Empty
            }
            "POST /v1/jobs/{job_uuid}/replay" => {
                params.push(("job_uuid", self.finished_job(json!({}), "complete", json!({}))?));
                Body::Json(json!({ "override": true }))
            }
            "POST /v1/plugins" => {
                query = "?name=iso-upload&kind=tagger&version=1.0.0";
                Body::Wasm(plugin("pii_tagger"))
            }
            "GET /v1/plugins/{digest}" | "DELETE /v1/plugins/{digest}" => {
                params.push(("digest", self.plugin("require_fields", "validator")?));
                Body::Empty
            }
            "PUT /v1/bindings/{queue}/{kind}/{stage}" | "DELETE /v1/bindings/{queue}/{kind}/{stage}" => {
                // Another plugin than the one deleted above: a bound plugin cannot be deleted.
                let binding = json!({ "plugin": self.plugin("slow_allow", "validator")?, "failure_policy": "open" });
                let queue = self.fresh("iso-q");
                let path = format!("/v1/bindings/{queue}/validator/stable");
                params.extend([("queue", queue), ("kind", "validator".into()), ("stage", "stable".into())]);
                if method == "PUT" {
                    Body::Json(binding)
                } else {
                    ok("bind a plugin", self.owner.put(&path, binding))?;
                    Body::Empty
                }
            }
            "PUT /v1/config" => Body::Json(json!({ "default_tags": {} })),
            "GET /v1/users/{user_id}/config" | "GET /v1/users/{user_id}/usage" => {
                params.push(("user_id", USER.into()));
                Body::Empty
            }
            "PUT /v1/users/{user_id}/config" => {
                params.push(("user_id", USER.into()));
                Body::Json(json!({ "tags": { "team": "iso" } }))
            }
            "PUT /v1/limits" => Body::Json(json!({ "max_pending": 100_000 })),
            "PUT /v1/users/{user_id}/hold" => {
                params.push(("user_id", self.fresh("iso-held")));
                Body::Json(hold)
            }
            "DELETE /v1/users/{user_id}/hold" => {
                let held = self.fresh("iso-held");
                ok("hold a user", self.owner.put(&format!("/v1/users/{held}/hold"), hold))?;
                params.push(("user_id", held));
                Body::Empty
            }
            "DELETE /v1/users/{user_id}/data" => {
                // A user of its own: the deletion also deletes the user's keys.
                user_id = self.fresh("iso-leaving");
                self.pending_job(&user_id)?;
                params.push(("user_id", user_id.clone()));
                Body::Empty
            }
            "GET /v1/deletions/{receipt_id}" => {
                let leaving = self.fresh("iso-left");
                self.pending_job(&leaving)?;
                let receipt = ok("delete a user's data", self.owner.delete(&format!("/v1/users/{leaving}/data")))?;
                params.push(("receipt_id", text(&receipt["id"])?));
                Body::Empty
            }
            _ => return Err("isolation.rs writes no request for this route".into()),
        };
        let mut path = template.to_owned();
        for (name, value) in params {
            path = path.replace(&format!("{{{name}}}"), &value);
        }
        if path.contains('{') {
            return Err(format!("a path parameter is left in {path}"));
        }
        let method = method.parse().map_err(|_| format!("method {method}"))?;
        Ok(Fixture { call: Call { method, path: path + query, body }, user_id })
    }

    /// Call `route` without a key, then as every role acting in both tenants; a
    /// success that may have used the object up gets a fresh one for the next call.
    fn run(&mut self, route: &str, row: &Row, cases: &mut usize, mismatches: &mut Vec<String>) -> Result<(), String> {
        let mut fixture = self.fixture(route)?;
        let anonymous = if row.is_public() { Expect::Success } else { Expect::Problem(401, "UNAUTHENTICATED") };
        check(mismatches, &format!("{route} without a key"), anonymous, &self.send(None, &fixture.call));
        for role in ROLES {
            for tenant in [OWNER, OTHER] {
                let key = self.key(role, tenant, &fixture.user_id)?;
                let answer = self.send(Some(&key), &fixture.call);
                *cases += 1;
                check(mismatches, &format!("{route} as {role} in {tenant}"), row.expect(role, tenant), &answer);
                if is_success(answer.0) && fixture.call.method != Method::GET {
                    if route == "POST /v1/admin/pause" {
                        ok("resume the host", self.admin.post("/v1/admin/resume", json!({})))?;
                    }
                    fixture = self.fixture(route)?;
                }
            }
        }
        Ok(())
    }
}

/// Fail with every mismatch at once.
fn assert_none(mismatches: &[String], out_of: &str) {
    assert!(mismatches.is_empty(), "{} mismatches {out_of}:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn the_matrix_has_one_row_per_documented_route() {
    let server = Server::start();
    let matrix = read_matrix();
    let documented = documented_routes(&server);
    let mut mismatches = Vec::new();
    for route in documented.iter().filter(|r| !matrix.contains_key(*r)) {
        mismatches.push(format!("{route} is in /openapi.json but has no row in PERMISSIONS.md"));
    }
    for route in matrix.keys().filter(|r| *r != OPENAPI && !documented.contains(*r)) {
        mismatches.push(format!("{route} has a row in PERMISSIONS.md but is not in /openapi.json"));
    }
    assert_none(&mismatches, "between PERMISSIONS.md and /openapi.json");
}

#[test]
fn every_route_answers_every_role_in_its_tenant_and_another_as_the_matrix_says() {
    let server = Server::start();
    let matrix = read_matrix();
    let mut routes = documented_routes(&server);
    routes.insert(OPENAPI.to_owned());
    let mut lab = Lab::new(&server);
    let (mut cases, mut mismatches) = (0, Vec::new());
    for route in &routes {
        // A route without a row is reported by the test above.
        let Some(row) = matrix.get(route) else { continue };
        if let Err(e) = lab.run(route, row, &mut cases, &mut mismatches) {
            mismatches.push(format!("{route}: stopped: {e}"));
        }
    }
    println!("isolation: {cases} (route, role, tenant) cases over {} routes", routes.len());
    assert_none(&mismatches, &format!("in {cases} cases"));
}

#[test]
fn a_user_key_sees_its_own_user_only() {
    let server = Server::start();
    let mut lab = Lab::new(&server);
    let mine = lab.pending_job(USER).unwrap();
    let theirs = lab.pending_job(OTHER_USER).unwrap();
    let user = lab.key("user", OWNER, USER).unwrap();
    let not_found = Expect::Problem(404, "NOT_FOUND");
    let mut mismatches = Vec::new();
    let mut verify = |what: &str, expect: Expect, answer: (u16, Value)| check(&mut mismatches, what, expect, &answer);
    verify("its own job", Expect::Success, user.get(&format!("/v1/jobs/{mine}")));
    verify("another user's job", not_found, user.get(&format!("/v1/jobs/{theirs}")));
    verify("another user's job history", not_found, user.get(&format!("/v1/jobs/{theirs}/history")));
    verify("another user's usage", not_found, user.get(&format!("/v1/users/{OTHER_USER}/usage")));
    verify("another user's deletion", not_found, user.delete(&format!("/v1/users/{OTHER_USER}/data")));
    let (status, list) = user.get("/v1/jobs");
    let listed: Vec<&Value> = list["jobs"].as_array().map(|jobs| jobs.iter().collect()).unwrap_or_default();
    if status != 200 || listed.len() != 1 || listed[0]["job_uuid"] != mine.as_str() {
        mismatches
            .push(format!("GET /v1/jobs as a user: expected its one job {mine}, got {status} {}", excerpt(&list)));
    }
    let (status, job) = lab.owner.get(&format!("/v1/jobs/{theirs}"));
    if status != 200 {
        mismatches.push(format!("the other user's job is gone after the refused deletion: {status} {job}"));
    }
    assert_none(&mismatches, "for a user key");
}
