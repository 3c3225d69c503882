//! The load benchmark: a real server on a fresh data folder on disk, driven over
//! HTTP by concurrent keep-alive clients on the same machine, beside the BullMQ
//! peer (../shared/peers/bullmq/run.sh) run alternately on the same disk.
//!
//! Usage: cargo run --release -p sluice-tests --bin sluice-bench -- [--runs 3] [--n 20000]
//!        [--no-peer] [--scale 0,100000,1000000]
//! (`--runs 0 --scale ...` measures only the scaling, in one round.)
//!
//! Every job has a random UUIDv4 job_uuid and a ~60-byte JSON payload;
//! authentication, quotas (set, not limiting), info-level JSON logs to a file and
//! metrics are on; every acknowledgement is durable (one journal fsync per group
//! commit).
//! Each Sluice run ends by killing the server with SIGKILL, restarting it and
//! recounting the acknowledged jobs. Figures are medians of the runs, with the
//! peer's beside them as ratios.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sluice_tests::{Server, plugin, workspace};

const CLIENTS: usize = 50;
const BATCH: usize = 1000;

struct Options {
    runs: usize,
    n: usize,
    peer: bool,
    scale: Vec<usize>,
}

fn options() -> Options {
    let mut o = Options { runs: 3, n: 20_000, peer: true, scale: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--runs" => o.runs = value().parse().expect("--runs N"),
            "--n" => o.n = value().parse().expect("--n N"),
            "--scale" => o.scale = value().split(',').map(|s| s.parse().expect("--scale 0,100000")).collect(),
            "--no-peer" => o.peer = false,
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// An async client with one key, for one tenant.
#[derive(Clone)]
struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str, key: &str) -> Api {
        let http = reqwest::Client::builder().pool_max_idle_per_host(512).build().expect("client");
        Api { base: base.to_owned(), key: key.to_owned(), http }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            r = r.json(b);
        }
        let response = r.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// A keep-alive connection of its own, for one load-generating task.
    async fn connect(&self) -> Conn {
        let host = self.base.trim_start_matches("http://");
        let stream = tokio::net::TcpStream::connect(host).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        Conn {
            send,
            connection: Box::pin(connection),
            host: HeaderValue::from_str(host).expect("host"),
            authorization: HeaderValue::from_str(&format!("Bearer {}", self.key)).expect("key"),
        }
    }
}

/// One HTTP/1.1 keep-alive connection, driven by the task that sends on it: a
/// request goes straight onto its socket, with no pool, no URL parsing and no
/// second task per request. The load generator shares the machine's two cores
/// with the server it measures, so what it saves goes to the server.
struct Conn {
    send: SendRequest<Full<Bytes>>,
    connection: Pin<Box<Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>>>,
    host: HeaderValue,
    authorization: HeaderValue,
}

impl Conn {
    /// POST an already encoded JSON body; the answer comes back unparsed, so the
    /// load generator spends its CPU on sending.
    async fn post(&mut self, path: &str, body: Bytes) -> (u16, Bytes) {
        let request = hyper::Request::post(path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))
            .expect("request");
        let send = &mut self.send;
        let exchange = async move {
            // Ready once the previous exchange is fully done on the connection.
            send.ready().await.expect("connection");
            let response = send.send_request(request).await.expect("request");
            let status = response.status().as_u16();
            (status, response.into_body().collect().await.expect("answer").to_bytes())
        };
        tokio::select! {
            answer = exchange => answer,
            closed = &mut self.connection => panic!("the server closed the connection: {closed:?}"),
        }
    }
}

/// Jobs `0..n` as request bodies, encoded before the clock starts.
fn encoded_jobs(queue: &str, n: usize) -> Vec<Bytes> {
    (0..n).map(|i| serde_json::to_vec(&job(queue, i)).expect("job").into()).collect()
}

fn job(queue: &str, i: usize) -> Value {
    json!({
        "job_uuid": uuid::Uuid::new_v4(),
        "queue": queue,
        "kind": "bench",
        "user_id": format!("user-{}", i % 1000),
        "payload": { "i": i, "kind": "bench", "note": "x".repeat(32) },
    })
}

/// Latencies of one kind of request.
#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn quantile(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0[i].as_secs_f64() * 1000.0
    }
}

/// Insert `n` jobs one per request from `clients` concurrent callers; jobs/s and latencies.
async fn single_inserts(api: &Api, queue: &str, n: usize, clients: usize) -> (f64, Latencies) {
    let next = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(encoded_jobs(queue, n));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (api, next, bodies) = (api.clone(), next.clone(), bodies.clone());
            tokio::spawn(async move {
                let mut conn = api.connect().await;
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return lat;
                    }
                    let body = bodies[i].clone();
                    let t = Instant::now();
                    let (status, answer) = conn.post("/v1/jobs", body).await;
                    assert_eq!(status, 201, "insert: {}", String::from_utf8_lossy(&answer));
                    lat.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut all = Latencies::default();
    for t in tasks {
        all.0.extend(t.await.expect("inserter"));
    }
    (n as f64 / started.elapsed().as_secs_f64(), all)
}

/// Insert `n` jobs in batches of 1,000 from one client, in sequence; jobs/s.
async fn batch_inserts(api: &Api, queue: &str, n: usize) -> f64 {
    let batches: Vec<Bytes> = (0..n)
        .step_by(BATCH)
        .map(|start| {
            let jobs: Vec<Value> = (start..(start + BATCH).min(n)).map(|i| job(queue, i)).collect();
            serde_json::to_vec(&json!({ "jobs": jobs })).expect("batch").into()
        })
        .collect();
    let mut conn = api.connect().await;
    let started = Instant::now();
    for body in batches {
        let (status, answer) = conn.post("/v1/jobs/batch", body).await;
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        assert!(status == 200 && answer["refused"] == 0, "batch: {status} {}", answer["results"][0]);
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// What a worker reads of a claim's answer (serde skips the rest unparsed).
#[derive(serde::Deserialize)]
struct ClaimAnswer {
    jobs: Vec<ClaimedJob>,
    completed: Option<BatchAnswer>,
}

#[derive(serde::Deserialize)]
struct ClaimedJob {
    job_uuid: uuid::Uuid,
    lease: Lease,
}

#[derive(serde::Deserialize)]
struct Lease {
    token: u64,
}

#[derive(serde::Serialize)]
struct Completion {
    job_uuid: uuid::Uuid,
    token: u64,
}

/// A worker's claim, handing in the jobs it finished.
#[derive(serde::Serialize)]
struct Claim<'a> {
    worker: &'a str,
    limit: usize,
    wait_ms: u64,
    complete: &'a [Completion],
}

#[derive(serde::Deserialize)]
struct BatchAnswer {
    refused: usize,
}

/// Claim and complete `n` jobs with `in_flight` jobs in flight: workers that each
/// claim up to 10 jobs at a time and complete them with their next claim (one
/// request, as the peer's worker fetches its next job with each completion); jobs/s
/// and the latencies of those requests. Answers are read into the few fields a
/// worker needs, so the load generator leaves the machine's CPU to the server.
async fn drain(api: &Api, queue: &str, n: usize, in_flight: usize) -> (f64, Latencies) {
    const PER_CLAIM: usize = 10;
    let (claimed, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // The clock stops at the n-th acknowledged completion, as the peer's does.
    let finished = Arc::new(OnceLock::new());
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight.div_ceil(PER_CLAIM))
        .map(|w| {
            let (api, queue) = (api.clone(), queue.to_owned());
            let (claimed, done, finished) = (claimed.clone(), done.clone(), finished.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let path = format!("/v1/queues/{queue}/claim");
                let mut conn = api.connect().await;
                let worker = format!("w{w}");
                let mut held: Vec<Completion> = Vec::new();
                let count_done = |k: usize| {
                    if done.fetch_add(k, Ordering::Relaxed) + k >= n {
                        finished.get_or_init(Instant::now);
                    }
                };
                while claimed.load(Ordering::Relaxed) < n {
                    // Waiting for a job is for a worker with nothing to hand in.
                    let wait_ms = if held.is_empty() { 200 } else { 0 };
                    let claim = Claim { worker: &worker, limit: PER_CLAIM, wait_ms, complete: &held };
                    let t = Instant::now();
                    let (status, body) = conn.post(&path, serde_json::to_vec(&claim).expect("claim").into()).await;
                    assert_eq!(status, 200, "claim: {}", String::from_utf8_lossy(&body));
                    let answer: ClaimAnswer = serde_json::from_slice(&body).expect("claim answer");
                    if !held.is_empty() {
                        let refused = answer.completed.map(|c| c.refused);
                        assert_eq!(refused, Some(0), "complete: {}", String::from_utf8_lossy(&body));
                        count_done(held.len());
                    }
                    held =
                        answer.jobs.iter().map(|j| Completion { job_uuid: j.job_uuid, token: j.lease.token }).collect();
                    if !held.is_empty() {
                        lat.push(t.elapsed());
                        claimed.fetch_add(held.len(), Ordering::Relaxed);
                    }
                }
                // Every job is claimed: hand in the last ones alone.
                if !held.is_empty() {
                    let body = serde_json::to_vec(&json!({ "jobs": held })).expect("completions");
                    let (status, answer) = conn.post("/v1/jobs/batch/complete", body.into()).await;
                    let refused = serde_json::from_slice::<BatchAnswer>(&answer).ok().map(|a| a.refused);
                    assert!(
                        status == 200 && refused == Some(0),
                        "complete: {status} {}",
                        String::from_utf8_lossy(&answer)
                    );
                    count_done(held.len());
                }
                lat
            })
        })
        .collect();
    let mut all = Latencies::default();
    for t in tasks {
        all.0.extend(t.await.expect("worker"));
    }
    let elapsed = finished.get().expect("n jobs completed").duration_since(started);
    (n as f64 / elapsed.as_secs_f64(), all)
}

/// 50 producers and 50 workers at once on one queue, `n` jobs; jobs/s and the
/// insert and claim latencies.
async fn mixed(producer: &Api, worker: &Api, queue: &str, n: usize) -> (f64, Latencies, Latencies) {
    let started = Instant::now();
    let (inserted, drained) =
        tokio::join!(single_inserts(producer, queue, n, CLIENTS), drain(worker, queue, n, CLIENTS));
    (n as f64 / started.elapsed().as_secs_f64(), inserted.1, drained.1)
}

/// A fresh server with a tenant whose quotas are set but far from limiting.
struct Target {
    server: Server,
    producer: Api,
    worker: Api,
}

fn target(tenant: &str, server: Option<Server>) -> Target {
    let server = server.unwrap_or_else(|| Server::start_with(&["--retention-interval-ms", "5000"]));
    let t = server.tenant(tenant);
    let limits = json!({
        "max_pending": 100_000_000u64, "insert_rate": { "per_second": 1e7, "burst": 10_000_000 },
        "max_payload_bytes": 65536, "max_queues": 1000,
        "user": { "max_pending": 100_000_000u64, "insert_rate": { "per_second": 1e7, "burst": 10_000_000 } }
    });
    let (status, body) = server.admin().for_tenant(tenant).put("/v1/limits", limits);
    assert_eq!(status, 200, "limits: {body}");
    Target { producer: Api::new(&server.url, &t.producer.key), worker: Api::new(&server.url, &t.worker.key), server }
}

/// Bind the reference validator and tagger to `queue`; every completed job must
/// carry the field `i` (the validator checks it).
fn bind_plugins(tenant: &sluice_tests::Api, queue: &str) {
    for (name, kind) in [("require_fields", "validator"), ("pii_tagger", "tagger")] {
        let (status, body) = tenant.upload(plugin(name), name, kind);
        assert!(status == 201 || status == 200, "upload {name}: {body}");
        let digest = body["digest"].as_str().unwrap();
        let (status, body) = tenant.put(
            &format!("/v1/bindings/{queue}/{kind}/stable"),
            json!({ "plugin": digest, "failure_policy": "closed" }),
        );
        assert_eq!(status, 200, "bind {name}: {body}");
    }
    let (status, body) = tenant.put("/v1/config", json!({ "default_tags": { "required_fields": ["i"] } }));
    assert_eq!(status, 200, "config: {body}");
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

type Figures = BTreeMap<&'static str, f64>;

/// CPU time (user and system) per job over one row: of the server process, of its
/// writer thread, and of this load generator (which shares the machine's two cores
/// with the server). Steadier than jobs/s on a shared machine, and it says which
/// side a change made cheaper.
struct CpuMeter {
    pid: u32,
    start: [f64; 3],
}

impl CpuMeter {
    fn start(pid: u32) -> CpuMeter {
        CpuMeter { pid, start: cpu_seconds(pid) }
    }

    /// (server, writer, client) CPU microseconds per job since `start`.
    fn per_job(&self, jobs: usize) -> [f64; 3] {
        let now = cpu_seconds(self.pid);
        std::array::from_fn(|i| (now[i] - self.start[i]) * 1e6 / jobs as f64)
    }
}

/// CPU seconds used so far by the server process (its threads, live and ended), by
/// its thread named `sluice-writer`, and by this process. `/proc` counts in USER_HZ,
/// 100 per second on Linux.
fn cpu_seconds(pid: u32) -> [f64; 3] {
    let ticks = |stat: &str| -> f64 {
        // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
        (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
    };
    let stat = |path: &std::path::Path| ticks(&std::fs::read_to_string(path).unwrap_or_default());
    let writer = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .find(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "sluice-writer"))
        .map_or(0.0, |task| stat(&task.path().join("stat")));
    [stat(format!("/proc/{pid}/stat").as_ref()), writer, stat("/proc/self/stat".as_ref())]
}

/// Record the CPU per job (server, writer, client) of the row `meter` watched.
fn record_cpu(f: &mut Figures, meter: CpuMeter, jobs: usize, row: &str) {
    for (side, per_job) in ["server", "writer", "client"].into_iter().zip(meter.per_job(jobs)) {
        // The figures' names live as long as the run.
        f.insert(format!("{side} CPU µs/job, {row}").leak(), per_job);
    }
}

/// One Sluice run: every row, then kill -9, restart and recount.
fn sluice_run(rt: &tokio::runtime::Runtime, n: usize) -> Figures {
    let mut f = Figures::new();
    let mut t = target("bench", None);
    let sync_tenant = t.server.tenant("bench-plugins");
    bind_plugins(&sync_tenant.tenant_admin, "plug");
    let plug_producer = Api::new(&t.server.url, &sync_tenant.producer.key);
    let plug_worker = Api::new(&t.server.url, &sync_tenant.worker.key);
    let mut acknowledged = 0usize;
    let pid = t.server.pid();
    rt.block_on(async {
        let meter = CpuMeter::start(pid);
        let (rate, mut lat) = single_inserts(&t.producer, "single", n, CLIENTS).await;
        record_cpu(&mut f, meter, n, "single inserts");
        f.insert("single inserts/s", rate);
        f.insert("insert p50 ms (50 clients)", lat.quantile(0.5));
        f.insert("insert p99 ms (50 clients)", lat.quantile(0.99));
        f.insert("batch inserts/s", batch_inserts(&t.producer, "batch", n).await);
        acknowledged += 2 * n;
        let meter = CpuMeter::start(pid);
        let (rate, mut lat) = drain(&t.worker, "single", n, CLIENTS).await;
        record_cpu(&mut f, meter, n, "drain");
        f.insert("drain jobs/s", rate);
        f.insert("claim p50 ms (drain)", lat.quantile(0.5));
        f.insert("claim p99 ms (drain)", lat.quantile(0.99));
        let meter = CpuMeter::start(pid);
        let (rate, _) = single_inserts(&plug_producer, "plug", n, CLIENTS).await;
        record_cpu(&mut f, meter, n, "inserts, tagger on");
        f.insert("single inserts/s, tagger on", rate);
        acknowledged += n;
        let meter = CpuMeter::start(pid);
        let (rate, _) = drain(&plug_worker, "plug", n, CLIENTS).await;
        record_cpu(&mut f, meter, n, "drain, validator on");
        f.insert("drain jobs/s, validator on", rate);
        let (rate, mut ins, mut claim) = mixed(&t.producer, &t.worker, "mixed", n).await;
        f.insert("mixed jobs/s", rate);
        f.insert("mixed insert p99 ms", ins.quantile(0.99));
        f.insert("mixed claim p99 ms", claim.quantile(0.99));
        let (rate, mut ins, mut claim) = mixed(&plug_producer, &plug_worker, "plug-mixed", n).await;
        f.insert("mixed jobs/s, plugins on", rate);
        f.insert("mixed insert p99 ms, plugins on", ins.quantile(0.99));
        f.insert("mixed claim p99 ms, plugins on", claim.quantile(0.99));
        acknowledged += 2 * n;
    });
    rt.block_on(noisy_neighbours(&t, &mut f, n / 4));
    acknowledged += f.remove("neighbour inserts").unwrap_or(0.0) as usize;
    f.insert("server peak RSS MiB", peak_rss_mib(t.server.pid()));
    let (_, health) = t.server.admin().get("/health");
    f.insert("commits", health["writer"]["commits"].as_f64().unwrap_or(0.0));
    f.insert("fsyncs", health["writer"]["fsyncs"].as_f64().unwrap_or(0.0));
    f.insert("folds", health["writer"]["folds"].as_f64().unwrap_or(0.0));
    f.insert("write requests", health["writer"]["requests"].as_f64().unwrap_or(0.0));
    t.server.kill();
    t.server.restart();
    let (_, health) = t.server.admin().get("/health");
    let stored: u64 = ["pending", "processing", "completed", "failed", "abandoned"]
        .iter()
        .map(|s| health["jobs"][s].as_u64().unwrap_or(0))
        .sum();
    f.insert("acknowledged jobs", acknowledged as f64);
    f.insert("found after kill -9", stored as f64);
    assert_eq!(stored as usize, acknowledged, "every acknowledged job survives kill -9");
    f
}

/// The quiet tenant's p99 insert latency alone, beside a tenant whose plugin
/// loops, and beside a tenant at its rate limit.
async fn noisy_neighbours(t: &Target, f: &mut Figures, n: usize) {
    let quiet = t.producer.clone();
    let (_, mut alone) = single_inserts(&quiet, "quiet", n, 10).await;
    f.insert("quiet tenant insert p99 ms, alone", alone.quantile(0.99));

    let looping = t.server.tenant("looping");
    let (status, body) = looping.tenant_admin.upload(plugin("spin_loop"), "spin", "validator");
    assert!(status == 201 || status == 200, "{body}");
    let bind = json!({ "plugin": body["digest"], "failure_policy": "closed" });
    assert_eq!(looping.tenant_admin.put("/v1/bindings/spin/validator/stable", bind).0, 200);
    let loop_producer = Api::new(&t.server.url, &looping.producer.key);
    let loop_worker = Api::new(&t.server.url, &looping.worker.key);
    batch_inserts(&loop_producer, "spin", 1000).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noisy: Vec<_> = (0..4)
        .map(|w| {
            let (api, stop) = (loop_worker.clone(), stop.clone());
            tokio::spawn(async move {
                let claim = json!({ "worker": format!("spin{w}"), "limit": 1 });
                while !stop.load(Ordering::Relaxed) {
                    api.post("/v1/queues/spin/claim", &claim).await;
                }
            })
        })
        .collect();
    let (_, mut beside_loop) = single_inserts(&quiet, "quiet", n, 10).await;
    stop.store(true, Ordering::Relaxed);
    for task in noisy {
        task.await.expect("noisy worker");
    }
    f.insert("quiet tenant insert p99 ms, beside a looping plugin", beside_loop.quantile(0.99));

    let limited = t.server.tenant("limited");
    let limits = json!({ "insert_rate": { "per_second": 100, "burst": 100 } });
    assert_eq!(t.server.admin().for_tenant("limited").put("/v1/limits", limits).0, 200);
    let limited_producer = Api::new(&t.server.url, &limited.producer.key);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let hammer: Vec<_> = (0..10)
        .map(|w| {
            let (api, stop, accepted) = (limited_producer.clone(), stop.clone(), accepted.clone());
            tokio::spawn(async move {
                let mut i = w * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if api.post("/v1/jobs", &job("hammer", i)).await.0 == 201 {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let (_, mut beside_limited) = single_inserts(&quiet, "quiet", n, 10).await;
    stop.store(true, Ordering::Relaxed);
    for task in hammer {
        task.await.expect("hammer");
    }
    f.insert("quiet tenant insert p99 ms, beside a rate-limited tenant", beside_limited.quantile(0.99));
    f.insert("neighbour inserts", (3 * n + 1000 + accepted.load(Ordering::Relaxed)) as f64);
}

/// Insert throughput and claim latency with `stored` jobs already in the store.
/// The inserts run long enough (5 n) that folds of the journal fall inside them
/// at every size, not only after a fill.
fn scaling_run(rt: &tokio::runtime::Runtime, stored: usize, n: usize) -> Figures {
    let mut f = Figures::new();
    let t = target("scale", None);
    let fill_started = Instant::now();
    rt.block_on(async {
        for start in (0..stored).step_by(100_000) {
            batch_inserts(&t.producer, "backlog", (stored - start).min(100_000)).await;
        }
    });
    if stored > 0 {
        println!("  filled {stored} jobs in {:.0} s", fill_started.elapsed().as_secs_f64());
    }
    let commits = || t.server.admin().get("/health").1["writer"]["commits"].as_f64().unwrap_or(0.0);
    let commits_before = commits();
    let meter = CpuMeter::start(t.server.pid());
    let (rate, _) = rt.block_on(single_inserts(&t.producer, "backlog", 5 * n, CLIENTS));
    record_cpu(&mut f, meter, 5 * n, "single inserts");
    f.insert("single inserts/s", rate);
    f.insert("single inserts per commit", (5 * n) as f64 / (commits() - commits_before).max(1.0));
    rt.block_on(async {
        // n jobs are n / 10 claims: enough that one journal fold (which holds every
        // claim in flight for its duration) lands above the p99, in the max.
        let (_, mut lat) = drain(&t.worker, "backlog", n, CLIENTS).await;
        f.insert("claim p50 ms", lat.quantile(0.5));
        f.insert("claim p99 ms", lat.quantile(0.99));
        f.insert("claim max ms", lat.quantile(1.0));
    });
    // Bytes on disk: the journal grows in steps and is sparse past its records.
    let bytes: u64 = ["sluice.redb", "sluice.journal"]
        .iter()
        .map(|name| std::fs::metadata(t.server.data().join(name)).map(|m| m.blocks() * 512).unwrap_or(0))
        .sum();
    f.insert("data files MiB (database and journal)", bytes as f64 / (1 << 20) as f64);
    f.insert("server peak RSS MiB", peak_rss_mib(t.server.pid()));
    f
}

/// One run of the peer: (config, mode) -> its JSON line.
fn peer_run() -> Vec<Value> {
    let script = std::env::var("SLUICE_PEER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace().join("../shared/peers/bullmq/run.sh"));
    let out_dir = tempfile::tempdir_in(workspace().join("target")).expect("peer folder");
    let status = Command::new("bash")
        .arg(&script)
        .args(["1", "always everysec"])
        .env("OUT_DIR", out_dir.path())
        .status()
        .expect("run the peer");
    assert!(status.success(), "the peer benchmark failed");
    std::fs::read_to_string(out_dir.path().join("results.jsonl"))
        .expect("peer results")
        .lines()
        .map(|l| serde_json::from_str(l).expect("peer JSON line"))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// The peer's median for (config, mode, phase).
fn peer_median(peer: &[Value], config: &str, mode: &str, phase: &str) -> Option<f64> {
    let v: Vec<f64> = peer
        .iter()
        .filter(|r| r["config"] == config && r["mode"] == mode)
        .filter_map(|r| r[phase]["jobs_per_s"].as_f64())
        .collect();
    (!v.is_empty()).then(|| median(v))
}

fn main() {
    let o = options();
    // One thread drives every client: the load generator shares the machine with
    // the server it measures, and a second thread only adds wake-ups between them.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut sluice: Vec<Figures> = Vec::new();
    let mut peer: Vec<Value> = Vec::new();
    for run in 1..=o.runs {
        println!("run {run}/{}: sluice", o.runs);
        sluice.push(sluice_run(&rt, o.n));
        if o.peer {
            println!("run {run}/{}: peer (BullMQ on Redis, always and everysec)", o.runs);
            peer.extend(peer_run());
        }
    }
    let med = |key: &str| median(sluice.iter().filter_map(|f| f.get(key).copied()).collect());
    println!();
    println!(
        "Durability: each group commit is appended to the journal and fdatasynced before any acknowledgement; \
         redb commits it without a sync and folds the journal in with a durable commit every 64 MiB or 10 s."
    );
    println!(
        "Server writer (median run): {:.0} write requests, {:.0} commits, {:.0} folds, {:.0} fsyncs; acknowledged jobs {:.0}, found after kill -9 and restart {:.0}.",
        med("write requests"),
        med("commits"),
        med("folds"),
        med("fsyncs"),
        med("acknowledged jobs"),
        med("found after kill -9")
    );
    println!();
    println!(
        "| row ({} jobs, medians of {} runs) | sluice | BullMQ always | ratio | BullMQ everysec | ratio |",
        o.n, o.runs
    );
    println!("|---|---|---|---|---|---|");
    let rows: [(&str, Option<(&str, &str)>); 6] = [
        ("single inserts/s", Some(("add", "enqueue"))),
        ("batch inserts/s", Some(("bulk", "enqueue"))),
        ("drain jobs/s", Some(("add", "process"))),
        ("single inserts/s, tagger on", Some(("add", "enqueue"))),
        ("drain jobs/s, validator on", Some(("add", "process"))),
        ("mixed jobs/s", None),
    ];
    for (row, peer_row) in rows {
        let ours = med(row);
        let cell = |config: &str| match peer_row.and_then(|(mode, phase)| peer_median(&peer, config, mode, phase)) {
            Some(p) => format!("{p:.0} | {:.2}x", ours / p),
            None => "- | -".into(),
        };
        println!("| {row} | {ours:.0} | {} | {} |", cell("always"), cell("everysec"));
    }
    println!();
    println!("| Sluice only | median |");
    println!("|---|---|");
    for key in sluice.first().map(|f| f.keys().copied().collect::<Vec<_>>()).unwrap_or_default() {
        if !key.contains("inserts/s") && !key.contains("jobs/s") || key.starts_with("mixed") {
            println!("| {key} | {:.2} |", med(key));
        }
    }
    // Scaling: the store sizes in turn, `--runs` rounds (at least one), medians; each
    // figure is also shown as a ratio to the first size's in the same rounds.
    let mut scaled: Vec<Vec<Figures>> = vec![Vec::new(); o.scale.len()];
    for round in 1..=o.runs.max(1) {
        for (i, &stored) in o.scale.iter().enumerate() {
            println!("scaling round {round}: {stored} jobs stored");
            scaled[i].push(scaling_run(&rt, stored, o.n));
        }
    }
    let scaled_median = |i: usize, key: &str| median(scaled[i].iter().map(|f| f[key]).collect());
    for (i, stored) in o.scale.iter().enumerate() {
        println!();
        for key in scaled[i].first().map(|f| f.keys().copied().collect::<Vec<_>>()).unwrap_or_default() {
            let (here, base) = (scaled_median(i, key), scaled_median(0, key));
            println!("| {stored} stored | {key} | {here:.2} | {:+.0} % |", (here / base - 1.0) * 100.0);
        }
    }
}
