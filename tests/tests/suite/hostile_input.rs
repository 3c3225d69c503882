//! Hostile input. The documented bounds (body size, JSON depth, string lengths, header
//! size and count, batch size) answer problem+json with a stable code and store nothing.
//! A seeded fuzz over every route of the OpenAPI document, from several threads, never
//! gets a 5xx (but the documented 503s) nor an error that is not problem+json; afterwards
//! the API's counts, a full listing and the store's own consistency check agree. What the
//! fuzz found is pinned by tests of its own (huge durations, concurrent checkpoints).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Map, Value, json};
use sluice_tests::*;

const PROBLEM: &str = "application/problem+json";
const FUZZ_TENANTS: [&str; 2] = ["fuzz-a", "fuzz-b"];
const QUEUES: [&str; 4] = ["q", "emails", "reports", "video.encode"];
const JOB_KINDS: [&str; 3] = ["email", "resize", "report"];
const USERS: [&str; 4] = ["user-1", "user-2", "user-3", "user-4"];
const PLUGIN_KINDS: [&str; 4] = ["validator", "tagger", "migrator", "alert-policy"];
const THREADS: u64 = 8;
const REQUESTS_PER_THREAD: usize = 2_500;
/// Harvested values kept per pool (the newest win).
const POOL_SIZE: usize = 256;
/// The schema of a route without a body: anything goes.
static NO_SCHEMA: Value = Value::Null;

// ---------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------

/// An HTTP answer reduced to what the checks look at.
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

impl Answer {
    fn of(response: reqwest::blocking::Response) -> Answer {
        let status = response.status().as_u16();
        let content_type = header_text(response.headers().get("content-type"));
        let text = response.text().unwrap_or_default();
        Answer { status, content_type, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }
}

fn header_text(value: Option<&HeaderValue>) -> String {
    value.and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// Jobs by state (and `stuck`), zeros left out.
type Counts = BTreeMap<String, u64>;

fn add(counts: &mut Counts, name: &str, n: u64) {
    if n > 0 {
        *counts.entry(name.to_owned()).or_default() += n;
    }
}

/// The job counts `/health` reports, over every tenant.
fn health_counts(server: &Server) -> Counts {
    let (_, health) = server.admin().get("/health");
    let mut counts = Counts::new();
    for (name, n) in health["jobs"].as_object().expect("/health jobs") {
        add(&mut counts, name, n.as_u64().unwrap_or(0));
    }
    counts
}

/// The number of jobs in `counts` (`stuck` is a flag, not a state).
fn job_total(counts: &Counts) -> u64 {
    counts.iter().filter(|(name, _)| *name != "stuck").map(|(_, n)| n).sum()
}

/// Assert a refusal: status, problem+json and code; and that no job was stored.
fn assert_refused(server: &Server, jobs_before: u64, label: &str, answer: Answer, status: u16, code_: &str) {
    let seen = (answer.status, answer.content_type.as_str(), code(&answer.body));
    assert_eq!(seen, (status, PROBLEM, code_), "{label}: {}", clip(&answer.body.to_string(), 500));
    assert_eq!(job_total(&health_counts(server)), jobs_before, "{label}: nothing may be stored");
}

/// A job insert as JSON text: defaults, with members replaced or added as raw JSON text.
fn job_text(members: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> =
        vec![("queue", "\"q\""), ("kind", "\"k\""), ("user_id", "\"user-1\""), ("payload", "{}")];
    for &(name, raw) in members {
        match all.iter_mut().find(|(n, _)| *n == name) {
            Some(member) => member.1 = raw,
            None => all.push((name, raw)),
        }
    }
    let members: Vec<String> = all.iter().map(|(name, raw)| format!("\"{name}\":{raw}")).collect();
    format!("{{{}}}", members.join(","))
}

/// `depth` objects, one inside the other.
fn nested_objects(depth: usize) -> String {
    format!("{}0{}", "{\"d\":".repeat(depth), "}".repeat(depth))
}

/// `depth` arrays, one inside the other.
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn json_string(text: &str) -> String {
    Value::from(text).to_string()
}

/// Write raw bytes on a fresh connection and parse the HTTP/1.1 answer, so that no
/// client library trims or refuses what is sent.
fn raw_exchange(port: u16, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    // The server may answer before it has read everything: a failed write is fine.
    let _ = stream.write_all(request);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    parse_response(&bytes)
}

/// Status line, headers and body (by Content-Length, chunked, or up to the close).
fn parse_response(bytes: &[u8]) -> Answer {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(bytes.len());
    let head = String::from_utf8_lossy(&bytes[..split]);
    let rest = bytes.get(split + 4..).unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut content_type, mut length, mut chunked) = (String::new(), rest.len(), false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_owned(),
            "content-length" => length = value.trim().parse().unwrap_or(length),
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let body = if chunked { dechunk(rest) } else { rest[..length.min(rest.len())].to_vec() };
    let text = String::from_utf8_lossy(&body).into_owned();
    Answer { status, content_type, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

/// The payload of a chunked body.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let chunk = &rest[line_end + 2..];
        if size == 0 || chunk.len() < size {
            break;
        }
        body.extend_from_slice(&chunk[..size]);
        rest = chunk[size..].strip_prefix(b"\r\n").unwrap_or(&chunk[size..]);
    }
    body
}

/// A job insert sent over a raw connection with `extra_headers` (each line ending in CRLF).
fn raw_insert(server: &Server, key: &str, extra_headers: &str) -> Answer {
    let body = job_text(&[]);
    let request = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        port = server.port,
        length = body.len(),
    );
    raw_exchange(server.port, request.as_bytes())
}

#[test]
fn hostile_bounds_answer_problems_and_store_nothing() {
    let server = Server::start();
    let tenant = server.tenant("acme");
    let post = |api: &Api, path: &str, body: String| {
        Answer::of(
            api.request(Method::POST, path).header("content-type", "application/json").body(body).send().expect("send"),
        )
    };
    let insert = |body: String| post(&tenant.producer, "/v1/jobs", body);
    let stored = job_total(&health_counts(&server));

    let over_a_mib = json_string(&"x".repeat(1 << 20));
    let answer = insert(job_text(&[("payload", &over_a_mib)]));
    assert_refused(&server, stored, "body over 1 MiB", answer, 413, "PAYLOAD_TOO_LARGE");

    let answer = insert(job_text(&[("payload", &nested_objects(65))]));
    assert_refused(&server, stored, "payload nested 65 deep", answer, 422, "VALIDATION");
    let answer = insert(job_text(&[("payload", &nested_arrays(10_000))]));
    assert_refused(&server, stored, "payload nested 10,000 deep", answer, 422, "VALIDATION");
    let answer = insert(job_text(&[("tags", &format!("{{\"deep\":{}}}", nested_objects(65)))]));
    assert_refused(&server, stored, "tags nested 65 deep", answer, 422, "VALIDATION");
    let answer = Answer::of(
        tenant
            .tenant_admin
            .request(Method::PUT, "/v1/config")
            .header("content-type", "application/json")
            .body(format!("{{\"default_tags\":{{\"deep\":{}}}}}", nested_objects(65)))
            .send()
            .expect("send"),
    );
    assert_refused(&server, stored, "configuration nested 65 deep", answer, 422, "VALIDATION");

    let answer = insert(job_text(&[("queue", &json_string(&"q".repeat(129)))]));
    assert_refused(&server, stored, "queue of 129 bytes", answer, 422, "VALIDATION");
    let answer = insert(job_text(&[("kind", &json_string(&"k".repeat(129)))]));
    assert_refused(&server, stored, "kind of 129 bytes", answer, 422, "VALIDATION");
    let answer = insert(job_text(&[("user_id", &json_string(&"u".repeat(257)))]));
    assert_refused(&server, stored, "user_id of 257 bytes", answer, 422, "VALIDATION");
    let answer = insert(job_text(&[("trace_id", &json_string(&"a".repeat(129)))]));
    assert_refused(&server, stored, "trace_id of 129 bytes", answer, 422, "VALIDATION");

    let key = &tenant.producer.key;
    let answer = raw_insert(&server, key, &format!("X-Padding: {}\r\n", "a".repeat(17 * 1024)));
    assert_refused(&server, stored, "one header of 17 KiB", answer, 431, "HEADERS_TOO_LARGE");
    let forty: String = (0..40).map(|i| format!("X-Padding-{i}: {}\r\n", "b".repeat(500))).collect();
    let answer = raw_insert(&server, key, &forty);
    assert_refused(&server, stored, "40 headers of 500 bytes", answer, 431, "HEADERS_TOO_LARGE");
    let hundred: String = (0..100).map(|i| format!("X-Fuzz-{i}: {i}\r\n")).collect();
    let answer = raw_insert(&server, key, &hundred);
    assert_refused(&server, stored, "100 small headers", answer, 431, "HEADERS_TOO_LARGE");

    let answer =
        post(&tenant.producer, "/v1/jobs/batch", format!("{{\"jobs\":[{}]}}", vec![job_text(&[]); 1001].join(",")));
    assert_refused(&server, stored, "a batch of 1001 jobs", answer, 422, "VALIDATION");
    let over_16_mib = json_string(&"x".repeat(16 << 20));
    let answer =
        post(&tenant.producer, "/v1/jobs/batch", format!("{{\"jobs\":[{}]}}", job_text(&[("payload", &over_16_mib)])));
    assert_refused(&server, stored, "a batch body over 16 MiB", answer, 413, "PAYLOAD_TOO_LARGE");

    let answer = insert(job_text(&[("payload", &nested_objects(60))]));
    assert_eq!(answer.status, 201, "a payload nested 60 deep is accepted: {}", clip(&answer.body.to_string(), 500));
    assert_eq!(job_total(&health_counts(&server)), stored + 1, "the accepted job is stored");
}

/// Found by the fuzz: durations past the calendar in a queue's configuration must be
/// refused, or be harmless to the inserts, claims and failures that use them.
#[test]
fn huge_queue_durations_never_break_writes() {
    let server = Server::start();
    let tenant = server.tenant("acme");
    let huge = i64::MAX;
    let config = json!({
        "pending_timeout_ms": huge,
        "processing_timeout_ms": huge,
        "parked_timeout_ms": huge,
        "backoff_base_ms": huge,
        "backoff_cap_ms": huge,
    });
    let (status, body) = tenant.tenant_admin.put("/v1/queues/q", config);
    assert!(matches!(status, 200 | 422), "configure huge durations: {status} {body}");
    let job = tenant.producer.insert("q", json!({}));
    let claimed = tenant.worker.claim("q", 1, 30_000);
    assert_eq!(claimed.len(), 1, "the job is claimed");
    let fail = json!({ "token": claimed[0]["lease"]["token"], "code": "E_TEST", "reason": "hostile backoff" });
    let (status, body) = tenant.worker.post(&format!("/v1/jobs/{}/fail", job["job_uuid"].as_str().unwrap()), fail);
    assert_eq!(status, 200, "fail under a huge backoff: {body}");
    tenant.producer.insert("another-queue", json!({}));
}

/// Found by the fuzz: checkpoints taken, listed and read for restores at the same time.
#[test]
fn concurrent_checkpoint_operations_never_fail_with_5xx() {
    let server = Server::start();
    server.tenant("acme");
    let admin = server.admin();
    let (status, checkpoint) = admin.post("/v1/admin/checkpoints", json!({}));
    assert_eq!(status, 201, "checkpoint: {checkpoint}");
    let restore = format!("/v1/admin/checkpoints/{}/restore", checkpoint["id"].as_str().unwrap());
    let answers: Vec<(&str, u16, Value)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..12)
            .map(|i| {
                let (admin, restore) = (&admin, &restore);
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    for _ in 0..10 {
                        let (what, (status, body)) = match i % 3 {
                            0 => ("dry-run restore", admin.post(restore, json!({ "tenant": "acme" }))),
                            1 => ("create", admin.post("/v1/admin/checkpoints", json!({}))),
                            _ => ("list", admin.get("/v1/admin/checkpoints")),
                        };
                        answers.push((what, status, body));
                    }
                    answers
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().expect("client thread")).collect()
    });
    let failures: BTreeSet<String> = answers
        .iter()
        .filter(|(_, status, _)| *status >= 500)
        .map(|(what, status, body)| format!("{what}: {status} {}", body["detail"]))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// Fuzz
// ---------------------------------------------------------------------------

/// The fuzz seed: `SLUICE_FUZZ_SEED`, else a fresh one.
fn fuzz_seed() -> u64 {
    match std::env::var("SLUICE_FUZZ_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("SLUICE_FUZZ_SEED is not a u64: {text:?}")),
        Err(_) => Rng::new().next_u64(),
    }
}

/// One documented operation.
struct Operation {
    method: Method,
    template: String,
    /// Documented parameters that are not in the path (name, schema): sent in the query.
    query: Vec<(String, Value)>,
    /// The request body's media type and schema.
    body: Option<(String, Value)>,
}

/// The `{name}` parameters of a path template.
fn placeholders(template: &str) -> Vec<String> {
    template.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).map(str::to_owned).collect()
}

/// Every operation of the OpenAPI document.
fn operations(doc: &Value) -> Vec<Operation> {
    let mut operations = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        let in_path = placeholders(template);
        for (method, operation) in item.as_object().expect("path item") {
            if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch" | "head" | "options") {
                continue;
            }
            let query = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| matches!(p["in"].as_str(), Some("path" | "query")))
                .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["schema"].clone())))
                .filter(|(name, _)| !in_path.contains(name))
                .collect();
            let body = operation["requestBody"]["content"]
                .as_object()
                .and_then(|content| content.iter().next())
                .map(|(media, spec)| (media.clone(), spec["schema"].clone()));
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            operations.push(Operation { method, template: template.clone(), query, body });
        }
    }
    operations
}

/// Who a fuzz request claims to be.
struct Actor {
    label: String,
    authorization: Option<String>,
    tenant: Option<HeaderValue>,
}

impl Actor {
    fn bearer(label: impl Into<String>, secret: &str, tenant: Option<&str>) -> Actor {
        Actor {
            label: label.into(),
            authorization: Some(format!("Bearer {secret}")),
            tenant: tenant.map(|t| HeaderValue::from_str(t).expect("tenant header")),
        }
    }
}

/// Create a key with the admin key; returns (id, secret).
fn create_key(admin: &Api, role: &str, tenant: Option<&str>, user_id: Option<&str>) -> (String, String) {
    let mut body = json!({ "name": format!("fuzz-{role}"), "role": role });
    if let Some(tenant) = tenant {
        body["tenant"] = json!(tenant);
    }
    if let Some(user_id) = user_id {
        body["user_id"] = json!(user_id);
    }
    let (status, key) = admin.post("/v1/keys", body);
    assert_eq!(status, 201, "create a {role} key: {key}");
    (key["id"].as_str().expect("key id").to_owned(), key["secret"].as_str().expect("secret").to_owned())
}

/// The callers the fuzz picks from: valid keys of every role (the first `keyed`), then
/// bad credentials and no key.
fn actors(server: &Server, tenants: &[Tenant]) -> (Vec<Actor>, usize) {
    let admin = server.admin();
    let admin_key = server.admin_key.as_str();
    let mut actors = vec![
        Actor::bearer("admin without Sluice-Tenant", admin_key, None),
        Actor::bearer("admin naming an unknown tenant", admin_key, Some("no-such-tenant")),
        Actor::bearer("operator@fuzz-a", &create_key(&admin, "operator", None, None).1, Some("fuzz-a")),
        Actor::bearer("producer@fuzz-a naming fuzz-b", &tenants[0].producer.key, Some("fuzz-b")),
    ];
    for tenant in tenants {
        let id = tenant.id.as_str();
        actors.push(Actor::bearer(format!("admin@{id}"), admin_key, Some(id)));
        actors.push(Actor::bearer(format!("tenant-admin@{id}"), &tenant.tenant_admin.key, None));
        actors.push(Actor::bearer(format!("producer@{id}"), &tenant.producer.key, None));
        actors.push(Actor::bearer(format!("worker@{id}"), &tenant.worker.key, None));
        actors.push(Actor::bearer(format!("auditor@{id}"), &create_key(&admin, "auditor", Some(id), None).1, None));
        let user = create_key(&admin, "user", Some(id), Some("user-1")).1;
        actors.push(Actor::bearer(format!("user-1@{id}"), &user, None));
    }
    let keyed = actors.len();
    let (revoked_id, revoked) = create_key(&admin, "producer", Some(tenants[0].id.as_str()), None);
    let (status, body) = admin.delete(&format!("/v1/keys/{revoked_id}"));
    assert_eq!(status, 200, "revoke: {body}");
    actors.extend([
        Actor::bearer("revoked key", &revoked, None),
        Actor::bearer("unknown key", "sk_00000000000000000000000000000000", None),
        Actor { label: "basic auth".into(), authorization: Some("Basic Zm9vOmJhcg==".into()), tenant: None },
        Actor { label: "empty bearer".into(), authorization: Some("Bearer ".into()), tenant: None },
        Actor {
            label: "admin with a Sluice-Tenant that is not text".into(),
            authorization: Some(format!("Bearer {admin_key}")),
            tenant: Some(HeaderValue::from_bytes(b"\xff\xfe").expect("opaque header")),
        },
        Actor { label: "no key".into(), authorization: None, tenant: None },
    ]);
    (actors, keyed)
}

/// One request the fuzz sends.
struct FuzzRequest {
    method: Method,
    template: String,
    /// Path and query, percent-encoded.
    path: String,
    actor: usize,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
}

/// One answer.
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// What is wrong with an answer, if anything: a 5xx but the documented 503s, or an error
/// with a body that is not problem+json with a `code` and the same `status`.
fn judge(template: &str, reply: &Reply) -> Result<(), String> {
    let health_not_ready = template == "/health" && reply.status == 503;
    let problem: Value = if reply.content_type == PROBLEM {
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let code_ = code(&problem);
    let documented_503 = reply.status == 503 && matches!(code_, "OVERLOADED" | "RESTORE_IN_PROGRESS");
    if reply.status >= 500 && !health_not_ready && !documented_503 {
        return Err(format!("{} {}", reply.status, if code_.is_empty() { "without a code" } else { code_ }));
    }
    if reply.status >= 300 && !reply.body.is_empty() && !health_not_ready {
        if reply.content_type != PROBLEM {
            return Err(format!("{} answered as {:?}, not problem+json", reply.status, reply.content_type));
        }
        if code_.is_empty() {
            return Err(format!("{} problem+json without a code", reply.status));
        }
        if problem["status"] != reply.status {
            return Err(format!("{} problem+json whose status member is {}", reply.status, problem["status"]));
        }
    }
    Ok(())
}

/// At most `max` characters of `text`.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
        None => text.to_owned(),
    }
}

/// Percent-encode every byte but the unreserved ones.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn random_uuid(rng: &mut Rng) -> String {
    let bytes = (((rng.next_u64() as u128) << 64) | rng.next_u64() as u128).to_le_bytes();
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

fn hex(rng: &mut Rng, len: usize) -> String {
    (0..len).map(|_| char::from_digit(rng.below(16) as u32, 16).expect("hex digit")).collect()
}

fn word(rng: &mut Rng) -> String {
    let len = rng.range(3, 10) as usize;
    (0..len).map(|_| char::from(b'a' + rng.below(26) as u8)).collect()
}

/// Printable ASCII, quotes, slashes and all.
fn garbage(rng: &mut Rng, max_len: u64) -> String {
    let len = rng.range(1, max_len) as usize;
    (0..len).map(|_| char::from(rng.range(0x20, 0x7e) as u8)).collect()
}

const UNICODE: [&str; 8] =
    ["ünïcødé", "队列", "🚀🔥", "\u{202e}gnp.exe", "e\u{301}\u{301}", "\u{200b}", "\u{fffd}\u{feff}", "𝕦𝕤𝕖𝕣"];
const PERCENT_JUNK: [&str; 10] = [
    "%00",
    "%ff%fe",
    "%2F..%2Fetc%2Fpasswd",
    "%ZZ",
    "%",
    "%%41",
    "%E2%82",
    "%0d%0aX-Injected:%20yes",
    "%u0041",
    "%C0%AF",
];
const ODD_SEGMENTS: [&str; 8] = ["..", ".", "%2e%2e", "*", "-1", "0", "null", "%20"];
const ODD_METHODS: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"];
const WRONG_CONTENT_TYPES: [&str; 6] = [
    "text/plain",
    "application/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=utf-16",
    "application/wasm",
];
const MALFORMED: [&str; 10] = [
    "{",
    "{\"a\":}",
    "[1,2",
    "{'single':'quotes'}",
    "{\"a\":NaN}",
    "\u{feff}{}",
    "{\"a\":1}{\"b\":2}",
    "{\"a\":\"\\ud800\"}",
    "tru",
    "{\"a\":1,}",
];
const HUGE_NUMBERS: [&str; 7] =
    ["1e400", "-1e400", "18446744073709551616", "-9223372036854775809", "1.5", "-0", "123456789012345678901234567890"];

/// A path segment meant to break routing or parsing (percent-encoded where needed).
fn hostile_segment(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => random_uuid(rng),
        1 => encode(&garbage(rng, 40)),
        2 => "a".repeat(rng.range(1_000, 6_000) as usize),
        3 => encode(rng.pick::<&str>(&UNICODE)),
        4 => rng.pick(&PERCENT_JUNK).to_string(),
        _ => rng.pick(&ODD_SEGMENTS).to_string(),
    }
}

/// A string value meant to break validation.
fn hostile_string(rng: &mut Rng) -> String {
    match rng.below(7) {
        0 => String::new(),
        1 => "x".repeat(rng.range(129, 300) as usize),
        2 => "y".repeat(rng.range(4_000, 20_000) as usize),
        3 => rng.pick(&UNICODE).to_string(),
        4 => garbage(rng, 40),
        5 => "\u{0}\u{1b}[31m\r\n".into(),
        _ => rng
            .pick(&["../../etc/passwd", "<script>alert(1)</script>", "' OR 1=1 --", "%s%n%x", "${jndi:ldap://x}"])
            .to_string(),
    }
}

/// Integers at the edges of the types, and durations (in ms) past any calendar.
fn hostile_integer(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => json!(-1),
        1 => json!(0),
        2 => json!(i64::MAX),
        3 => json!(i64::MIN),
        4 => json!(u64::MAX),
        5 => json!(1u64 << 32),
        6 => json!(1u64 << 62),
        _ => json!(100_000_000_000_000_000u64),
    }
}

/// A plausible integer for a field; claims wait at most 20 ms so no thread blocks long.
fn integer(rng: &mut Rng, field: &str) -> Value {
    if rng.chance(0.2) {
        return hostile_integer(rng);
    }
    let (lo, hi) = match field {
        "wait_ms" => (0, 20),
        "priority" => return json!(rng.range(0, 2_000) as i64 - 1_000),
        "token" => (0, 4),
        "limit" => (1, 20),
        "lease_ms" => (1_000, 60_000),
        "delay_ms" => (0, 3_000),
        "max_attempts" | "schema_version" => (1, 5),
        "retention_days" => (1, 30),
        "schema_versions" => (1, 3),
        _ if rng.chance(0.3) => (100, 100_000),
        _ => (0, 100),
    };
    json!(rng.range(lo, hi))
}

fn number(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!(0.0),
        1 => json!(-1.5),
        2 => json!(1e300),
        _ => json!(rng.range(0, 10_000) as f64 / 100.0),
    }
}

fn date_time(rng: &mut Rng) -> String {
    if rng.chance(0.1) {
        return rng
            .pick(&["yesterday", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2024-02-30T00:00:00Z"])
            .to_string();
    }
    let at = chrono::Utc::now() + chrono::Duration::seconds(rng.range(0, 7_200) as i64 - 3_600);
    at.to_rfc3339()
}

/// Any JSON, `depth` levels at most.
fn random_json(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(0.5)),
        2 => json!(rng.range(0, 200) as i64 - 100),
        3 => json!(if rng.chance(0.8) { word(rng) } else { hostile_string(rng) }),
        4 => number(rng),
        5 => Value::Array((0..rng.range(0, 4)).map(|_| random_json(rng, depth - 1)).collect()),
        _ => random_object(rng, depth - 1),
    }
}

fn random_object(rng: &mut Rng, depth: usize) -> Value {
    let members = rng.range(0, 4);
    Value::Object((0..members).map(|_| (word(rng), random_json(rng, depth))).collect())
}

/// Tags with the compliance keys the host merges (and now and then a key of its own).
fn compliance_tags(rng: &mut Rng) -> Value {
    let mut tags = Map::new();
    if rng.chance(0.4) {
        tags.insert("gdpr".into(), json!(rng.chance(0.5)));
    }
    if rng.chance(0.4) {
        tags.insert("pii".into(), json!([rng.pick(&["email", "name", "address"])]));
    }
    if rng.chance(0.4) {
        let class = *rng.pick(&["public", "internal", "confidential", "restricted", "secret"]);
        tags.insert("data_class".into(), json!(class));
    }
    if rng.chance(0.5) {
        tags.insert("retention_days".into(), integer(rng, "retention_days"));
    }
    if rng.chance(0.3) {
        tags.insert("region".into(), json!(rng.pick(&["eu", "us"])));
    }
    if rng.chance(0.2) {
        tags.insert(word(rng), random_json(rng, 1));
    }
    Value::Object(tags)
}

/// A valid-ish object with one member removed, replaced or added.
fn mutate(rng: &mut Rng, value: Value) -> Value {
    let Value::Object(mut object) = value else { return random_json(rng, 2) };
    let names: Vec<String> = object.keys().cloned().collect();
    match rng.below(4) {
        0 if !names.is_empty() => {
            object.remove(rng.pick(&names));
        }
        1 if !names.is_empty() => {
            let name = rng.pick(&names).clone();
            object.insert(name, random_json(rng, 2));
        }
        2 if !names.is_empty() => {
            let name = rng.pick(&names).clone();
            object.insert(name, json!(hostile_string(rng)));
        }
        _ => {
            object.insert("colour".into(), json!("red"));
        }
    }
    Value::Object(object)
}

/// Bytes that are not JSON, or not quite.
fn malformed(rng: &mut Rng, valid: &Value) -> Vec<u8> {
    let text = valid.to_string().into_bytes();
    match rng.below(4) {
        0 if text.len() > 1 => text[..rng.below(text.len())].to_vec(),
        1 => (0..rng.range(1, 200)).map(|_| rng.next_u64() as u8).collect(),
        2 => b"{\"queue\":\"\xff\xfe\"}".to_vec(),
        _ => rng.pick(&MALFORMED).as_bytes().to_vec(),
    }
}

/// JSON text nested 60 to 20,000 deep.
fn deep_text(rng: &mut Rng) -> String {
    let depth = *rng.pick(&[60, 64, 65, 66, 100, 129, 1_000, 20_000]);
    if rng.chance(0.5) { nested_arrays(depth) } else { nested_objects(depth) }
}

/// `object` as JSON text with member `name` set to the raw text `raw`.
fn with_member(object: &Value, name: &str, raw: &str) -> String {
    let mut members: Vec<String> = object
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(n, _)| *n != name)
        .map(|(n, v)| format!("{}:{v}", json_string(n)))
        .collect();
    members.push(format!("{}:{raw}", json_string(name)));
    format!("{{{}}}", members.join(","))
}

/// A component upload: random bytes, half of them behind a component header.
fn wasm_body(rng: &mut Rng) -> (Option<&'static str>, Option<Vec<u8>>) {
    let mut bytes = if rng.chance(0.5) { b"\0asm\x0d\0\x01\0".to_vec() } else { Vec::new() };
    let len = rng.range(0, 2_048);
    bytes.extend((0..len).map(|_| rng.next_u64() as u8));
    let content_type = match rng.below(10) {
        0 => None,
        1 => Some("application/json"),
        _ => Some("application/wasm"),
    };
    (content_type, Some(bytes))
}

/// A query string value as text.
fn query_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The pool of harvested values a path parameter draws from.
fn param_pool(template: &str, name: &str) -> String {
    match name {
        "id" if template.contains("checkpoints") => "checkpoint".into(),
        "id" if template.contains("alerts") => "alert".into(),
        "receipt_id" => "receipt".into(),
        _ => name.to_owned(),
    }
}

/// The pool the `id` members of an answer feed. Key ids come only from keys the fuzz
/// created, so it never revokes the keys it sends.
fn id_pool(method: &Method, template: &str) -> Option<&'static str> {
    if template.starts_with("/v1/admin/checkpoints") {
        Some("checkpoint")
    } else if template.starts_with("/v1/alerts") {
        Some("alert")
    } else if template.starts_with("/v1/deletions") || template.ends_with("/data") {
        Some("receipt")
    } else if *method == Method::POST && template == "/v1/keys" {
        Some("key_id")
    } else {
        None
    }
}

/// A plausible value for a path parameter when no harvested one is at hand.
fn plausible(rng: &mut Rng, name: &str) -> String {
    match name {
        "job_uuid" => random_uuid(rng),
        "queue" => rng.pick(&QUEUES).to_string(),
        "kind" => rng.pick(&PLUGIN_KINDS).to_string(),
        "stage" => "stable".into(),
        "user_id" => rng.pick(&USERS).to_string(),
        "digest" => hex(rng, 64),
        "id" => format!("{}:depth", rng.pick(&QUEUES)),
        _ => word(rng),
    }
}

/// Every string member (name, value) of `value`, a few levels deep.
fn string_members(value: &Value, depth: usize, out: &mut Vec<(String, String)>) {
    if depth > 8 {
        return;
    }
    match value {
        Value::Object(members) => {
            for (name, member) in members {
                match member {
                    Value::String(s) => out.push((name.clone(), s.clone())),
                    other => string_members(other, depth + 1, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| string_members(item, depth + 1, out)),
        _ => {}
    }
}

/// One kind of bad answer: when it was first seen (requests sent before), how often, an example.
struct Finding {
    first: usize,
    count: usize,
    example: String,
}

/// The fuzz: what it may send, what it learned from answers, what it saw.
struct Fuzz {
    base: String,
    doc: Value,
    operations: Vec<Operation>,
    /// Indexes of the job operations (inserts, claims, actions), where the state machine is.
    hot: Vec<usize>,
    actors: Vec<Actor>,
    /// The first `keyed` actors hold valid keys.
    keyed: usize,
    /// Path parameter names whose values are harvested by member name.
    harvested: BTreeSet<String>,
    pools: Mutex<HashMap<String, VecDeque<String>>>,
    /// Statuses by "METHOD /template"; 0 is no answer.
    tally: Mutex<BTreeMap<String, BTreeMap<u16, usize>>>,
    /// Bad answers by "METHOD /template: issue".
    findings: Mutex<BTreeMap<String, Finding>>,
    sent: AtomicUsize,
    /// Requests sent again on a new connection after a kept-alive one failed.
    redials: AtomicUsize,
}

impl Fuzz {
    fn new(base: &str, doc: Value, actors: Vec<Actor>, keyed: usize) -> Fuzz {
        let operations = operations(&doc);
        let harvested = operations
            .iter()
            .flat_map(|op| placeholders(&op.template))
            .filter(|name| !matches!(name.as_str(), "id" | "key_id" | "receipt_id" | "kind" | "stage"))
            .collect();
        let hot = (0..operations.len())
            .filter(|&i| {
                let op = &operations[i];
                op.method == Method::POST && (op.template.starts_with("/v1/jobs") || op.template.ends_with("/claim"))
            })
            .collect();
        Fuzz {
            base: base.to_owned(),
            doc,
            operations,
            hot,
            actors,
            keyed,
            harvested,
            pools: Mutex::default(),
            tally: Mutex::default(),
            findings: Mutex::default(),
            sent: AtomicUsize::new(0),
            redials: AtomicUsize::new(0),
        }
    }

    /// One client thread.
    fn run(&self, seed: u64) {
        let mut rng = Rng::seeded(seed);
        let client = || reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
        let pooled = client().build().expect("client");
        let fresh = client().pool_max_idle_per_host(0).build().expect("client");
        for _ in 0..REQUESTS_PER_THREAD {
            let request = self.request(&mut rng);
            let reply = self.send(&pooled, &request).or_else(|first| {
                // The server closes a kept-alive connection after refusing a request whose
                // body it did not read, without saying so: try once more on a new connection.
                self.redials.fetch_add(1, Ordering::Relaxed);
                self.send(&fresh, &request).map_err(|again| format!("{first}; on a new connection: {again}"))
            });
            self.record(&request, reply);
        }
    }

    fn request(&self, rng: &mut Rng) -> FuzzRequest {
        // A quarter of the requests go to the job operations.
        let op = if rng.chance(0.25) && !self.hot.is_empty() {
            &self.operations[*rng.pick(&self.hot)]
        } else {
            rng.pick(&self.operations)
        };
        let method = if rng.chance(0.08) {
            Method::from_bytes(rng.pick(&ODD_METHODS).as_bytes()).expect("method")
        } else {
            op.method.clone()
        };
        let path = format!("{}{}", self.path(rng, &op.template), self.query(rng, op));
        let (content_type, body) = self.body(rng, op);
        let callers = if rng.chance(0.5) { self.keyed } else { self.actors.len() };
        let actor = rng.below(callers);
        FuzzRequest { method, template: op.template.clone(), path, actor, content_type, body }
    }

    fn path(&self, rng: &mut Rng, template: &str) -> String {
        let mut path = String::new();
        for segment in template.split('/').skip(1) {
            path.push('/');
            match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(_) if rng.chance(0.3) => path.push_str(&hostile_segment(rng)),
                Some(name) => {
                    let harvested = self.pooled(rng, &param_pool(template, name)).filter(|_| rng.chance(0.8));
                    path.push_str(&encode(&harvested.unwrap_or_else(|| plausible(rng, name))));
                }
                None => path.push_str(segment),
            }
        }
        path
    }

    fn query(&self, rng: &mut Rng, op: &Operation) -> String {
        let mut pairs = Vec::new();
        for (name, schema) in &op.query {
            if rng.chance(0.5) {
                continue;
            }
            let value = if rng.chance(0.15) {
                clip(&hostile_string(rng), 3_000)
            } else {
                query_text(&self.value(rng, schema, name, 0))
            };
            pairs.push(format!("{}={}", encode(name), encode(&value)));
        }
        if rng.chance(0.05) {
            pairs.push("colour=red".into());
        }
        if rng.chance(0.03) {
            pairs.push(rng.pick(&["&&", "=", "%zz=%zz", "limit", "limit=1&limit=2"]).to_string());
        }
        if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) }
    }

    /// A body: mostly shaped by the route's schema, otherwise hostile. (content type, bytes)
    fn body(&self, rng: &mut Rng, op: &Operation) -> (Option<&'static str>, Option<Vec<u8>>) {
        let schema = match &op.body {
            Some((media, _)) if media == "application/wasm" => return wasm_body(rng),
            Some((_, schema)) => schema,
            None if rng.chance(0.85) => return (None, None),
            None => &NO_SCHEMA,
        };
        let json = Some("application/json");
        let valid = self.value(rng, schema, "", 0);
        match rng.below(100) {
            0..55 => (json, Some(valid.to_string().into_bytes())),
            55..65 => (json, Some(mutate(rng, valid).to_string().into_bytes())),
            65..72 => (json, Some(random_json(rng, 3).to_string().into_bytes())),
            72..78 => (json, Some(malformed(rng, &valid))),
            78..81 => (Some(*rng.pick(&WRONG_CONTENT_TYPES)), Some(valid.to_string().into_bytes())),
            81..83 => (None, Some(valid.to_string().into_bytes())),
            83..87 => {
                let member = if valid.get("payload").is_some() { "payload".to_owned() } else { word(rng) };
                (json, Some(with_member(&valid, &member, &deep_text(rng)).into_bytes()))
            }
            87..91 => {
                let numeric: Vec<String> = valid
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| v.is_number())
                    .map(|(n, _)| n.clone())
                    .collect();
                let member = if numeric.is_empty() { "limit".to_owned() } else { rng.pick(&numeric).clone() };
                (json, Some(with_member(&valid, &member, rng.pick::<&str>(&HUGE_NUMBERS)).into_bytes()))
            }
            91..94 => (json, Some(b"null".to_vec())),
            94..97 => (json, Some(Vec::new())),
            _ => (None, None),
        }
    }

    /// A value shaped by `schema` (OpenAPI 3.1 as utoipa writes it), for member `field`.
    fn value(&self, rng: &mut Rng, schema: &Value, field: &str, depth: usize) -> Value {
        if depth > 8 {
            return Value::Null;
        }
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.rsplit('/').next().unwrap_or_default();
            return self.value(rng, &self.doc["components"]["schemas"][name], field, depth + 1);
        }
        if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
            let concrete: Vec<&Value> = options.iter().filter(|o| o["type"] != "null").collect();
            if concrete.is_empty() || (concrete.len() < options.len() && rng.chance(0.15)) {
                return Value::Null;
            }
            let chosen = *rng.pick(&concrete);
            return self.value(rng, chosen, field, depth + 1);
        }
        if let Some(parts) = schema["allOf"].as_array() {
            let mut merged = Map::new();
            for part in parts {
                if let Value::Object(members) = self.value(rng, part, field, depth + 1) {
                    merged.extend(members);
                }
            }
            return Value::Object(merged);
        }
        if let Some(values) = schema["enum"].as_array().filter(|v| !v.is_empty()) {
            return if rng.chance(0.05) { json!(word(rng)) } else { rng.pick(values).clone() };
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ if schema["properties"].is_object() => vec!["object"],
            _ => return random_json(rng, 2),
        };
        let concrete: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
        if concrete.is_empty() || (concrete.len() < types.len() && rng.chance(0.15)) {
            return Value::Null;
        }
        match *rng.pick(&concrete) {
            "object" if matches!(field, "tags" | "default_tags") && rng.chance(0.7) => compliance_tags(rng),
            "object" => self.object(rng, schema, depth),
            "array" => {
                let len = if field == "jobs" { rng.range(1, 5) } else { rng.range(0, 3) };
                Value::Array((0..len).map(|_| self.value(rng, &schema["items"], field, depth + 1)).collect())
            }
            "integer" => integer(rng, field),
            "number" => number(rng),
            "boolean" => Value::Bool(rng.chance(0.5)),
            "string" => json!(self.string(rng, field, schema["format"].as_str())),
            _ => Value::Null,
        }
    }

    fn object(&self, rng: &mut Rng, schema: &Value, depth: usize) -> Value {
        let Some(properties) = schema["properties"].as_object() else { return random_object(rng, 2) };
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mut object = Map::new();
        for (name, property) in properties {
            if rng.chance(if required.contains(&name.as_str()) { 0.97 } else { 0.5 }) {
                object.insert(name.clone(), self.value(rng, property, name, depth + 1));
            }
        }
        Value::Object(object)
    }

    fn string(&self, rng: &mut Rng, field: &str, format: Option<&str>) -> String {
        if rng.chance(0.08) {
            return hostile_string(rng);
        }
        match (format, field) {
            (Some("uuid"), _) => {
                let harvested = self.pooled(rng, "job_uuid").filter(|_| rng.chance(0.6));
                harvested.unwrap_or_else(|| random_uuid(rng))
            }
            (Some("date-time"), _) => date_time(rng),
            (_, "queue" | "queues") => rng.pick(&QUEUES).to_string(),
            (_, "kind") => rng.pick(&JOB_KINDS).to_string(),
            (_, "user_id") => rng.pick(&USERS).to_string(),
            (_, "tenant") => rng.pick(&FUZZ_TENANTS).to_string(),
            (_, "worker") => format!("worker-{}", rng.below(4)),
            (_, "plugin" | "digest") => self.pooled(rng, "digest").unwrap_or_else(|| hex(rng, 64)),
            (_, "trace_id") => hex(rng, 32),
            (_, "id") => format!("fz-{}", hex(rng, 6)),
            (_, "webhooks") => "https://hooks.example.com/sluice".into(),
            _ => word(rng),
        }
    }

    fn pooled(&self, rng: &mut Rng, pool: &str) -> Option<String> {
        let pools = self.pools.lock().expect("pools");
        let values = pools.get(pool).filter(|v| !v.is_empty())?;
        Some(values[rng.below(values.len())].clone())
    }

    /// Keep the ids an answer names (jobs, queues, users, checkpoints ...) for later paths.
    fn harvest(&self, method: &Method, template: &str, body: &Value) {
        let mut members = Vec::new();
        string_members(body, 0, &mut members);
        let ids_feed = id_pool(method, template);
        let mut pools = self.pools.lock().expect("pools");
        for (name, value) in members {
            let pool = match (name.as_str(), ids_feed) {
                ("id", Some(pool)) => pool.to_owned(),
                _ if self.harvested.contains(&name) => name,
                _ => continue,
            };
            let values = pools.entry(pool).or_default();
            if !values.contains(&value) {
                if values.len() == POOL_SIZE {
                    values.pop_front();
                }
                values.push_back(value);
            }
        }
    }

    fn send(&self, client: &reqwest::blocking::Client, request: &FuzzRequest) -> Result<Reply, String> {
        let actor = &self.actors[request.actor];
        let mut builder = client.request(request.method.clone(), format!("{}{}", self.base, request.path));
        if let Some(authorization) = &actor.authorization {
            builder = builder.header("authorization", authorization);
        }
        if let Some(tenant) = &actor.tenant {
            builder = builder.header("sluice-tenant", tenant.clone());
        }
        if let Some(content_type) = request.content_type {
            builder = builder.header("content-type", content_type);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let response = builder.send().map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let content_type = header_text(response.headers().get("content-type"));
        let body = response.bytes().map_err(|e| format!("reading the body: {e:?}"))?.to_vec();
        Ok(Reply { status, content_type, body })
    }

    fn record(&self, request: &FuzzRequest, reply: Result<Reply, String>) {
        let order = self.sent.fetch_add(1, Ordering::Relaxed);
        let route = format!("{} {}", request.method, request.template);
        let status = reply.as_ref().map_or(0, |r| r.status);
        *self.tally.lock().expect("tally").entry(route.clone()).or_default().entry(status).or_default() += 1;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => return self.finding(order, &route, "no answer", request, &error),
        };
        if let Err(issue) = judge(&request.template, &reply) {
            self.finding(order, &route, &issue, request, &String::from_utf8_lossy(&reply.body));
        }
        if (200..300).contains(&reply.status)
            && let Ok(body) = serde_json::from_slice::<Value>(&reply.body)
        {
            self.harvest(&request.method, &request.template, &body);
        }
    }

    fn finding(&self, order: usize, route: &str, issue: &str, request: &FuzzRequest, answer: &str) {
        let body = String::from_utf8_lossy(request.body.as_deref().unwrap_or_default());
        let example = format!(
            "{} {} as {} (content-type {:?}, body {}) -> {}",
            request.method,
            clip(&request.path, 200),
            self.actors[request.actor].label,
            request.content_type,
            clip(&body, 300),
            clip(answer, 300)
        );
        let mut findings = self.findings.lock().expect("findings");
        let finding =
            findings.entry(format!("{route}: {issue}")).or_insert(Finding { first: order, count: 0, example });
        finding.count += 1;
    }

    /// Print statuses by route, the summary line and the findings.
    fn report(&self, seed: u64, elapsed: Duration) {
        let tally = self.tally.lock().expect("tally");
        let mut overall: BTreeMap<u16, usize> = BTreeMap::new();
        for (route, statuses) in tally.iter() {
            println!("  {route:<55} {statuses:?}");
            for (status, n) in statuses {
                *overall.entry(*status).or_default() += n;
            }
        }
        println!(
            "hostile_input fuzz: {} requests over {} documented operations ({} method/route pairs), {THREADS} threads, \
             seed {seed}, {:.1} s; statuses {overall:?}; {} sent again on a new connection",
            self.sent.load(Ordering::Relaxed),
            self.operations.len(),
            tally.len(),
            elapsed.as_secs_f64(),
            self.redials.load(Ordering::Relaxed)
        );
        // In the order first seen: the first is the likeliest cause of those after it.
        let findings = self.findings.lock().expect("findings");
        let mut in_order: Vec<(&String, &Finding)> = findings.iter().collect();
        in_order.sort_by_key(|(_, f)| f.first);
        for (issue, f) in in_order {
            println!("FINDING {issue} (x{}, first after {} requests): {}", f.count, f.first, f.example);
        }
    }
}

/// Give every tenant jobs to act on: a batch each, some of them claimed.
fn seed_jobs(fuzz: &Fuzz, tenants: &[Tenant]) {
    for tenant in tenants {
        let jobs: Vec<Value> = (0..60)
            .map(|n| {
                json!({
                    "queue": QUEUES[n % QUEUES.len()],
                    "kind": JOB_KINDS[n % JOB_KINDS.len()],
                    "user_id": USERS[n % USERS.len()],
                    "payload": { "n": n },
                })
            })
            .collect();
        let (status, outcome) = tenant.producer.post("/v1/jobs/batch", json!({ "jobs": jobs }));
        assert_eq!(status, 200, "seed jobs: {outcome}");
        fuzz.harvest(&Method::POST, "/v1/jobs/batch", &outcome);
        for queue in QUEUES {
            let claimed = tenant.worker.claim(queue, 5, 60_000);
            fuzz.harvest(&Method::POST, "/v1/queues/{queue}/claim", &json!({ "jobs": claimed }));
        }
    }
}

/// The server process still runs (not a zombie), is live, and is ready within a few
/// seconds (a maintenance loop that some input stopped keeps it unready).
fn assert_alive_and_ready(server: &Server) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("server process");
    let state = status.lines().find_map(|l| l.strip_prefix("State:")).unwrap_or("").trim().to_owned();
    assert!(!state.starts_with('Z'), "the server process died: {state}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, health) = server.admin().get("/health");
        assert!(health["live"] == true, "/health after the fuzz: {status} {health}");
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "not ready 10 s after the fuzz: {health}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn listed_counts(jobs: &[Value]) -> Counts {
    let mut counts = Counts::new();
    for job in jobs {
        add(&mut counts, job["state"].as_str().unwrap_or("(no state)"), 1);
        if job["stuck"] == true {
            add(&mut counts, "stuck", 1);
        }
    }
    counts
}

fn stats_counts(stats: &Value) -> Counts {
    let mut counts = Counts::new();
    for queue in stats["queues"].as_array().into_iter().flatten() {
        for (name, n) in queue["jobs"].as_object().into_iter().flatten() {
            add(&mut counts, name, n.as_u64().unwrap_or(0));
        }
    }
    counts
}

/// The job total once the API agrees with itself: each tenant's /v1/stats equals a full
/// listing of its jobs, and /health equals their sum. Background loops move jobs
/// (expired leases, due retries, stuck flags), so a snapshot that moved is taken again.
fn agreed_job_total(server: &Server, tenants: &[Tenant]) -> u64 {
    let admin = server.admin();
    let (status, list) = admin.get("/v1/tenants");
    assert_eq!(status, 200, "tenants: {list}");
    let readers: Vec<(String, Api)> = list["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            let id = t["id"].as_str().expect("tenant id").to_owned();
            let own = tenants.iter().find(|own| own.id == id);
            let reader = own.map_or_else(|| admin.for_tenant(&id), |own| own.tenant_admin.clone());
            (id, reader)
        })
        .collect();
    let mut disagreement = String::new();
    for _ in 0..20 {
        let before = health_counts(server);
        let mut listed_everywhere = Counts::new();
        let mut mismatch = None;
        for (id, reader) in &readers {
            let (status, stats) = reader.get("/v1/stats");
            assert_eq!(status, 200, "stats of {id}: {stats}");
            let listed = listed_counts(&reader.list_all(""));
            let counted = stats_counts(&stats);
            if listed != counted {
                mismatch.get_or_insert(format!("tenant {id}: /v1/stats {counted:?}, listing {listed:?}"));
            }
            for (name, n) in &listed {
                add(&mut listed_everywhere, name, *n);
            }
        }
        let after = health_counts(server);
        match mismatch {
            None if before == after && after == listed_everywhere => return job_total(&after),
            Some(tenant_mismatch) => disagreement = tenant_mismatch,
            None => disagreement = format!("/health {before:?} then {after:?}; listings {listed_everywhere:?}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the API's counts never agreed with a full listing: {disagreement}");
}

#[test]
fn fuzz_every_route_then_check_consistency() {
    let seed = fuzz_seed();
    println!("hostile_input fuzz seed {seed} (replay with SLUICE_FUZZ_SEED={seed})");
    let mut server = Server::start();
    let tenants: Vec<Tenant> = FUZZ_TENANTS.iter().map(|id| server.tenant(id)).collect();
    let (actors, keyed) = actors(&server, &tenants);
    let doc: Value =
        reqwest::blocking::get(format!("{}/openapi.json", server.url)).and_then(|r| r.json()).expect("/openapi.json");
    let fuzz = Fuzz::new(&server.url, doc, actors, keyed);
    seed_jobs(&fuzz, &tenants);

    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let fuzz = &fuzz;
            scope.spawn(move || fuzz.run(seed.wrapping_add(thread.wrapping_mul(0x9E37_79B9_7F4A_7C15))));
        }
    });
    fuzz.report(seed, started.elapsed());
    assert_alive_and_ready(&server);
    let sent = fuzz.sent.load(Ordering::Relaxed);
    assert!(sent >= 10_000, "only {sent} requests were sent");
    let tally = fuzz.tally.lock().expect("tally");
    for op in &fuzz.operations {
        assert!(
            tally.contains_key(&format!("{} {}", op.method, op.template)),
            "{} {} was never sent",
            op.method,
            op.template
        );
    }
    drop(tally);

    // (a) The API's counts against a full listing, per tenant and over the host.
    let total = agreed_job_total(&server, &tenants);
    // (b) The store's own check of every index against the job records.
    let exit = server.stop();
    assert!(exit.success(), "the server did not stop cleanly after the fuzz: {exit}");
    let data = cap_std::fs::Dir::open_ambient_dir(server.data(), cap_std::ambient_authority()).expect("data folder");
    let store =
        sluice_host::store::RedbStore::open_in(&data, "sluice.redb", &sluice_host::store::StoreOptions::default())
            .expect("open the data file");
    let checked = store.check_consistency().unwrap_or_else(|e| panic!("the store is inconsistent after the fuzz: {e}"));
    assert_eq!(checked, total, "jobs the store checked vs jobs the API lists");
    println!("hostile_input consistency: {total} jobs; /v1/stats, /health, full listings and the store check agree");

    let findings = fuzz.findings.lock().expect("findings");
    assert!(findings.is_empty(), "{} kinds of bad answers (printed above as FINDING lines)", findings.len());
}
