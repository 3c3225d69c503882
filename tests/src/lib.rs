//! Test harness: builds the real `sluice` binary, starts it on an ephemeral port
//! with a fresh data folder, and speaks HTTP to it like any client would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The workspace root (this crate lives in `tests/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Build the server in release mode once per test process and return its path;
/// `SLUICE_BIN` names a binary to use instead (to benchmark two builds side by side).
pub fn sluice_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SLUICE_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "-p", "sluice-host", "--bin", "sluice"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the sluice binary failed");
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
        target.join("release").join("sluice")
    })
}

/// A running server on its own data folder.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub port: u16,
    pub admin_key: String,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Start with extra `serve` arguments (kept for restarts).
    pub fn start_with(args: &[&str]) -> Server {
        let dir = tempfile::Builder::new().prefix("sluice-test-").tempdir().expect("temp dir");
        let mut server = Server {
            dir,
            url: String::new(),
            port: 0,
            admin_key: String::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.launch();
        server.admin_key = std::fs::read_to_string(server.data().join("bootstrap-admin.key"))
            .expect("bootstrap key file")
            .trim()
            .to_owned();
        server
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The JSON log lines the server wrote (stdout), across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The log lines once `ready` holds for them: the server writes its log from a
    /// logging thread, so a line may land a moment after the answer it belongs to.
    pub fn log_lines_until(&self, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        wait_for(Duration::from_secs(10), what, || {
            let lines = self.log_lines();
            ready(&lines).then_some(lines)
        })
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let listen = format!("127.0.0.1:{}", self.port);
        let mut child = Command::new(sluice_bin())
            .arg("serve")
            .arg("--data")
            .arg(self.data())
            .args(["--listen", &listen])
            .args(&self.extra_args)
            .stdout(log)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("sluice listening on http://") {
                    let _ = tx.send(Ok(addr.to_owned()));
                } else if line.starts_with("sluice:") {
                    let _ = tx.send(Err(line));
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(msg)) => panic!("server failed to start: {msg}"),
            Err(_) => panic!("server did not start within 60 s"),
        };
        self.port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        self.url = format!("http://{addr}");
        self.child = Some(child);
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// The server's resident set size, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// SIGKILL: no graceful anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().expect("wait for server")
    }

    /// Start again on the same data folder and port, with other `serve` arguments.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Start again on the same data folder and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.launch();
    }

    pub fn admin(&self) -> Api {
        Api::new(&self.url, &self.admin_key)
    }

    /// A fresh tenant with one key of each tenant-bound role.
    pub fn tenant(&self, id: &str) -> Tenant {
        let admin = self.admin();
        let (status, body) = admin.post("/v1/tenants", json!({ "id": id }));
        assert_eq!(status, 201, "create tenant: {body}");
        let key = |role: &str| {
            let (status, body) = admin.post("/v1/keys", json!({ "name": role, "role": role, "tenant": id }));
            assert_eq!(status, 201, "create key: {body}");
            Api::new(&self.url, body["secret"].as_str().expect("secret"))
        };
        Tenant {
            id: id.to_owned(),
            tenant_admin: key("tenant-admin"),
            producer: key("producer"),
            worker: key("worker"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Tenant {
    pub id: String,
    pub tenant_admin: Api,
    pub producer: Api,
    pub worker: Api,
}

/// A blocking HTTP client with one key (and optionally a `Sluice-Tenant` header).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    pub tenant: Option<String>,
    client: reqwest::blocking::Client,
}

impl Api {
    pub fn new(base: &str, key: &str) -> Api {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        Api { base: base.to_owned(), key: key.to_owned(), tenant: None, client }
    }

    pub fn for_tenant(&self, tenant: &str) -> Api {
        Api { tenant: Some(tenant.to_owned()), ..self.clone() }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut r = self.client.request(method, format!("{}{}", self.base, path)).bearer_auth(&self.key);
        if let Some(t) = &self.tenant {
            r = r.header("Sluice-Tenant", t);
        }
        r
    }

    pub fn send(&self, r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
        let response = r.send().expect("request");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Like `send`, but an unreachable server is an `Err` (for crash tests).
    pub fn try_send(&self, r: reqwest::blocking::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
        let response = r.send()?;
        let status = response.status().as_u16();
        let text = response.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::GET, path))
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
    }

    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::PUT, path).json(&body))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::DELETE, path))
    }

    /// Insert a job, asserting it was accepted; returns the stored job.
    pub fn insert(&self, queue: &str, extra: Value) -> Value {
        let mut body = json!({ "queue": queue, "kind": "test", "payload": { "n": 1 }, "user_id": "user-1" });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (status, job) = self.post("/v1/jobs", body);
        assert_eq!(status, 201, "insert: {job}");
        job
    }

    /// Every job matching `query` (e.g. `state=pending&queue=q`), following the cursor.
    pub fn list_all(&self, query: &str) -> Vec<Value> {
        let mut jobs = Vec::new();
        let mut cursor: Option<u64> = None;
        loop {
            let mut path = format!("/v1/jobs?{query}&limit=500");
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.get(&path);
            assert_eq!(status, 200, "list: {page}");
            jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_u64() {
                Some(c) => cursor = Some(c),
                None => return jobs,
            }
        }
    }

    /// Claim up to `limit` jobs with a lease of `lease_ms`.
    pub fn claim(&self, queue: &str, limit: u32, lease_ms: u64) -> Vec<Value> {
        let (status, body) = self.post(
            &format!("/v1/queues/{queue}/claim"),
            json!({ "worker": "test-worker", "limit": limit, "lease_ms": lease_ms }),
        );
        assert_eq!(status, 200, "claim: {body}");
        body["jobs"].as_array().cloned().unwrap_or_default()
    }

    pub fn job(&self, job_uuid: &str) -> Value {
        let (status, job) = self.get(&format!("/v1/jobs/{job_uuid}"));
        assert_eq!(status, 200, "get job: {job}");
        job
    }
}

/// The plugins of `plugins/`, built for wasm32-wasip2 once per test process, by crate name.
pub fn plugin(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<std::collections::HashMap<String, PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| sluice_sdk::testing::build_components(&workspace().join("plugins/Cargo.toml")));
    let path = built.get(name).unwrap_or_else(|| panic!("plugin {name} was not built"));
    std::fs::read(path).expect("read plugin")
}

impl Api {
    /// Upload a component; returns (status, body).
    pub fn upload(&self, wasm: Vec<u8>, name: &str, kind: &str) -> (u16, Value) {
        let path = format!("/v1/plugins?name={name}&kind={kind}&version=1.0.0");
        self.send(self.request(reqwest::Method::POST, &path).header("content-type", "application/wasm").body(wasm))
    }

    /// Upload a plugin of `plugins/` and bind it; returns its digest.
    pub fn install(&self, plugin_name: &str, kind: &str, queue: &str, failure_policy: &str) -> String {
        let (status, body) = self.upload(plugin(plugin_name), plugin_name, kind);
        assert!(status == 201 || status == 200, "upload {plugin_name}: {body}");
        let digest = body["digest"].as_str().expect("digest").to_owned();
        let (status, body) = self.put(
            &format!("/v1/bindings/{queue}/{kind}/stable"),
            json!({ "plugin": digest, "failure_policy": failure_policy }),
        );
        assert_eq!(status, 200, "bind {plugin_name}: {body}");
        digest
    }
}

/// A small PRNG (xorshift64*) for load tests, seeded from a v4 uuid.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        Rng((uuid::Uuid::new_v4().as_u128() as u64) | 1)
    }

    /// A generator that replays from `seed` (splitmix64 of it, so nearby seeds start far apart).
    pub fn seeded(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi].
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

/// Milliseconds since the epoch of a server timestamp (RFC 3339).
pub fn ms_of(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp expected, got {v}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("bad timestamp {s}: {e}")).timestamp_millis()
}

/// Poll `check` until it returns Some, or panic after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The problem+json `code` of an error answer.
pub fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("")
}

/// A batch answer's items as (status, problem code or ""), in order.
pub fn batch_outcome(out: &Value) -> Vec<(u64, &str)> {
    let items = out["results"].as_array().expect("a batch answer lists its results");
    items.iter().map(|r| (r["status"].as_u64().unwrap(), code(&r["error"]))).collect()
}
