//! Load for the webhook benchmark, against a running server: signed GitHub push deliveries.
//!
//! 1. Acknowledgement latency: rounds of `--concurrency` deliveries sent at once, each on its
//!    own connection, to an app connected to GitHub; every answer's time from send to response.
//!    First pushes to the app's branch (each to be deployed: they coalesce), then pushes to
//!    another branch (ignored: the acknowledgement path alone).
//! 2. Acknowledgement to deployment start: `--starts` pushes one after another to an app whose
//!    repository (a local git repository made here, with one commit per push) is recorded in the
//!    ledger; for each, the time from the answer to the deployment's `created_at` (queued by
//!    WebhookIntake) and to its `started_at` (begun by a Deployer), both server timestamps.
//!
//! With `--reference URL` (a `bare_http` server), the same rounds of 200 are then sent to it,
//! with the same client, bodies and signatures: what answering that many requests costs on
//! these cores with nothing behind the handler, the floor the server's numbers stand on.
//!
//! 0. Receiver memory (first, so that the server's peak RSS is this load's): `--concurrency`
//!    senders post 25 MiB bodies, `--flood-rounds` each, while one signed push is sent every
//!    100 ms to a connected app; the server's RSS (`--pid`, read from `/proc/<pid>/status`) is
//!    sampled every 20 ms. First unsigned bodies (refused before they are read), then bodies
//!    with a signature of the right shape that no secret made (read within the server's
//!    memory budget, the rest shed with 503).
//!
//! The server must run with `--allow-local-repos` and a rate limit above the load. Prints
//! `key=value` lines for scripts/bench.
//!
//! Usage: webhook_bench --url URL --token TOKEN --ledger PATH --scratch DIR [--pid PID]
//!                      [--concurrency 200] [--rounds 5] [--starts 20] [--flood-rounds 3]
//!                      [--reference URL]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

struct Args {
    url: String,
    token: String,
    ledger: PathBuf,
    scratch: PathBuf,
    concurrency: usize,
    rounds: usize,
    starts: usize,
    pid: Option<u32>,
    flood_rounds: usize,
    reference: Option<String>,
    reference_pid: Option<u32>,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        url: String::new(),
        token: String::new(),
        ledger: PathBuf::new(),
        scratch: PathBuf::new(),
        concurrency: 200,
        rounds: 5,
        starts: 20,
        pid: None,
        flood_rounds: 3,
        reference: None,
        reference_pid: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value,
            "--token" => a.token = value,
            "--ledger" => a.ledger = value.into(),
            "--scratch" => a.scratch = value.into(),
            "--concurrency" => a.concurrency = value.parse().expect("a number"),
            "--rounds" => a.rounds = value.parse().expect("a number"),
            "--starts" => a.starts = value.parse().expect("a number"),
            "--pid" => a.pid = Some(value.parse().expect("a process id")),
            "--flood-rounds" => a.flood_rounds = value.parse().expect("a number"),
            "--reference" => a.reference = Some(value),
            "--reference-pid" => a.reference_pid = Some(value.parse().expect("a process id")),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !a.url.is_empty() && !a.token.is_empty(),
        "usage: webhook_bench --url URL --token TOKEN --ledger PATH --scratch DIR"
    );
    a
}

fn main() {
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(a));
}

struct Hook {
    app: String,
    repo: String,
    secret: String,
}

async fn run(a: Args) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(a.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client");
    let server = Server {
        http,
        url: a.url.clone(),
        token: a.token.clone(),
    };

    // 0. Receiver memory under a flood of large bodies.
    if let Some(pid) = a.pid {
        let hook = server.connect("wh-flood", "flood").await;
        println!(
            "idle_rss_mib={:.1}",
            status_kib(pid, "VmRSS").unwrap_or(0) as f64 / 1024.0
        );
        for (key, signature) in [("flood_unsigned", None), ("flood_forged", Some(FORGED))] {
            flood(
                &server,
                &hook,
                pid,
                signature,
                a.concurrency,
                a.flood_rounds,
                key,
            )
            .await;
        }
    }

    // 1. Acknowledgement latency: pushes to the app's branch (each to deploy, coalescing), then
    // pushes to another branch (ignored: the acknowledgement path alone).
    let ack_hook = server.connect("wh-ack", "ack").await;
    ack_rounds(
        &server,
        &ack_hook,
        "main",
        a.concurrency,
        a.rounds,
        "ack",
        a.pid,
    )
    .await;
    let deployments = server
        .get("/api/v1/apps/wh-ack/deployments?limit=200")
        .await;
    println!(
        "ack_deployments={}",
        deployments["items"].as_array().map_or(0, Vec::len)
    );
    ack_rounds(
        &server,
        &ack_hook,
        "elsewhere",
        a.concurrency,
        a.rounds,
        "ack_ignored",
        a.pid,
    )
    .await;
    if let Some(url) = &a.reference {
        // The same rounds, client, bodies and signatures, to a handler with nothing behind it.
        let reference = Server {
            url: url.clone(),
            ..server.clone()
        };
        ack_rounds(
            &reference,
            &ack_hook,
            "main",
            a.concurrency,
            a.rounds,
            "reference",
            a.reference_pid,
        )
        .await;
    }

    // 2. Acknowledgement to deployment start.
    let start_hook = server.connect("wh-start", "start").await;
    let repo = a.scratch.join("repo");
    let shas = make_repo(&repo, a.starts);
    record_import(&a.ledger, &start_hook.app, &repo);
    let (mut queued, mut started) = (Vec::new(), Vec::new());
    for (n, sha) in shas.iter().enumerate() {
        let id = format!("start-{n}");
        let body = push_body(&start_hook.repo, "main", sha);
        let signature = sign(&start_hook.secret, &body);
        let status = server.deliver(&id, body, &signature).await;
        let acked = now_ms_f64();
        assert_eq!(status.ok(), Some(202), "push {n} was not accepted");
        let deployment = wait_for(|| {
            let (server, id) = (server.clone(), id.clone());
            async move {
                let list = server
                    .get("/api/v1/webhooks/deliveries?app=wh-start&limit=1")
                    .await;
                let item = &list["items"][0];
                (item["delivery_id"] == id.as_str())
                    .then(|| item["deployment_id"].as_i64())
                    .flatten()
            }
        })
        .await;
        let path = format!("/api/v1/deployments/{deployment}");
        let d = wait_for(|| {
            let (server, path) = (server.clone(), path.clone());
            async move {
                let d = server.get(&path).await;
                d["started_at"].is_string().then_some(d)
            }
        })
        .await;
        queued.push(millis_of(&d["created_at"]) - acked);
        started.push(millis_of(&d["started_at"]) - acked);
        // The next push must find the app idle: let this deployment end (it fails early, since
        // the repository holds nothing to deploy).
        wait_for(|| {
            let (server, path) = (server.clone(), path.clone());
            async move {
                let d = server.get(&path).await;
                (!matches!(d["state"].as_str(), Some("queued" | "running"))).then_some(())
            }
        })
        .await;
    }
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let (queued, started) = (sorted(queued), sorted(started));
    let at = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p / 100.0).round() as usize];
    println!("start_samples={}", started.len());
    println!("start_p50_ms={:.1}", at(&started, 50.0));
    println!("start_p99_ms={:.1}", at(&started, 99.0));
    println!(
        "start_max_ms={:.1}",
        started.last().copied().unwrap_or_default()
    );
    println!("queued_p50_ms={:.1}", at(&queued, 50.0));
    println!(
        "queued_max_ms={:.1}",
        queued.last().copied().unwrap_or_default()
    );
}

/// The server under load, reached with an admin token.
#[derive(Clone)]
struct Server {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Server {
    /// Creates `app` and connects it to `bench/<repo>`, for its secret.
    async fn connect(&self, app: &str, repo: &str) -> Hook {
        let created = self
            .http
            .post(format!("{}/api/v1/apps", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "name": app }))
            .send()
            .await
            .expect("creating an app");
        assert_eq!(created.status().as_u16(), 201, "creating app {app}");
        let put: Value = self
            .http
            .put(format!("{}/api/v1/apps/{app}/github", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "owner": "bench", "repo": repo, "branch": "main" }))
            .send()
            .await
            .expect("connecting an app")
            .json()
            .await
            .expect("an integration");
        Hook {
            app: app.to_string(),
            repo: repo.to_string(),
            secret: put["secret"].as_str().expect("a secret").to_string(),
        }
    }

    /// Posts a signed push delivery, as GitHub does (no token), and reads the whole answer.
    async fn deliver(
        &self,
        id: &str,
        body: String,
        signature: &str,
    ) -> Result<u16, reqwest::Error> {
        let r = self
            .http
            .post(format!("{}/api/v1/webhooks/github", self.url))
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", id)
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        r.bytes().await?;
        Ok(status)
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("a GET")
            .json()
            .await
            .unwrap_or(Value::Null)
    }
}

/// A signature of the right shape that no secret made.
const FORGED: &str = "sha256=0000000000000000000000000000000000000000000000000000000000000000";

/// The largest body GitHub sends.
const FLOOD_BODY: usize = 25 * 1024 * 1024;

/// `concurrency` senders post `rounds` 25 MiB bodies each (with `signature`, or none), each on
/// its own connection, while a signed push goes to `hook` every 100 ms and the server's RSS is
/// sampled. Prints the statuses of both, the signed pushes' latencies and the RSS.
async fn flood(
    server: &Server,
    hook: &Hook,
    pid: u32,
    signature: Option<&'static str>,
    concurrency: usize,
    rounds: usize,
    key: &str,
) {
    // One buffer shared by every request (a refcount, not a copy): JSON that names the
    // connected repository, padded to 25 MiB.
    let mut body = push_body(&hook.repo, "main", &fake_sha(7)).into_bytes();
    body.pop();
    body.extend_from_slice(b",\"padding\":\"");
    body.resize(FLOOD_BODY - 2, b'x');
    body.extend_from_slice(b"\"}");
    let body = axum::body::Bytes::from(body);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "VmRSS").unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let (url, body) = (
            format!("{}/api/v1/webhooks/github", server.url),
            body.clone(),
        );
        senders.spawn(async move {
            // A client per sender: each request on a connection of its own.
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("a client");
            let mut outcomes = Vec::new();
            for round in 0..rounds {
                let mut request = http
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("X-GitHub-Event", "push")
                    .header("X-GitHub-Delivery", format!("flood-{i}-{round}"))
                    .body(body.clone());
                if let Some(signature) = signature {
                    request = request.header("X-Hub-Signature-256", signature);
                }
                outcomes.push(match request.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        Some(status)
                    }
                    // The server answered before the body was sent and closed the connection.
                    Err(_) => None,
                });
            }
            outcomes
        });
    }
    // Real deliveries meanwhile, one every 100 ms, until the flood is over.
    let mut latencies = Vec::new();
    let mut real_statuses = std::collections::BTreeMap::<String, usize>::new();
    let mut flood_statuses = std::collections::BTreeMap::<String, usize>::new();
    let mut n = 0;
    while !senders.is_empty() {
        let id = format!("{key}-real-{n}");
        let push = push_body(&hook.repo, "main", &fake_sha(1_000_000 + n));
        let signature = sign(&hook.secret, &push);
        let sent = Instant::now();
        let status = server.deliver(&id, push, &signature).await;
        latencies.push(sent.elapsed());
        let status = status.map_or_else(|e| format!("error({e})"), |s| s.to_string());
        *real_statuses.entry(status).or_default() += 1;
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Some(done) = senders.try_join_next() {
            for outcome in done.expect("a flood sender") {
                let status = outcome.map_or_else(|| "closed".to_string(), |s| s.to_string());
                *flood_statuses.entry(status).or_default() += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the flood took over 10 minutes"
        );
    }
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.expect("the RSS sampler");
    latencies.sort();
    println!("{key}_requests={}", concurrency * rounds);
    println!(
        "{key}_statuses={}",
        flood_statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("{key}_secs={:.1}", took.as_secs_f64());
    println!("{key}_rss_peak_mib={:.1}", peak as f64 / 1024.0);
    println!(
        "{key}_hwm_mib={:.1}",
        status_kib(pid, "VmHWM").unwrap_or(0) as f64 / 1024.0
    );
    println!("{key}_real_samples={}", latencies.len());
    println!(
        "{key}_real_statuses={}",
        real_statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("{key}_real_p50_ms={:.1}", ms(pct(&latencies, 50.0)));
    println!(
        "{key}_real_max_ms={:.1}",
        ms(latencies.last().copied().unwrap_or_default())
    );
}

/// The CPU time process `pid` has spent, in nanoseconds: the sum of its threads' run times
/// (`/proc/<pid>/task/*/schedstat`), which unlike `/proc/<pid>/stat` is not counted in 10 ms
/// ticks. A thread that ended meanwhile is not counted.
fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// A `VmRSS`/`VmHWM` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Polls `check` every 2 ms for up to 30 s.
async fn wait_for<T, Fut>(mut check: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the server"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Rounds of `concurrency` signed pushes to `branch`, sent at once; prints the latencies of
/// the accepted ones under `key`, and, given the server's `pid`, the CPU time it spent per
/// delivery over the measured rounds. Round 0 only opens the connections.
async fn ack_rounds(
    server: &Server,
    hook: &Hook,
    branch: &str,
    concurrency: usize,
    rounds: usize,
    key: &str,
    pid: Option<u32>,
) {
    let mut cpu_from = None;
    let mut latencies = Vec::new();
    let mut errors = 0usize;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..=rounds {
        if round == 1 {
            cpu_from = pid.and_then(cpu_ns);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..concurrency {
            let server = server.clone();
            let id = format!("{key}-{round}-{i}");
            let body = push_body(&hook.repo, branch, &fake_sha(round * 100_000 + i));
            let signature = sign(&hook.secret, &body);
            tasks.spawn(async move {
                let started = Instant::now();
                let r = server.deliver(&id, body, &signature).await;
                (r, started.elapsed())
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (status, took) = done.expect("a delivery task");
            if round == 0 {
                continue;
            }
            match status {
                Ok(s) => {
                    *statuses.entry(s).or_default() += 1;
                    if s == 200 || s == 202 {
                        latencies.push(took);
                    } else {
                        errors += 1;
                    }
                }
                Err(_) => errors += 1,
            }
        }
    }
    if let (Some(from), Some(to)) = (cpu_from, pid.and_then(cpu_ns)) {
        println!(
            "{key}_cpu_us={:.0}",
            to.saturating_sub(from) as f64 / 1000.0 / (concurrency * rounds) as f64
        );
    }
    latencies.sort();
    println!("{key}_samples={}", latencies.len());
    println!("{key}_errors={errors}");
    println!(
        "{key}_statuses={}",
        statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("{key}_p50_ms={:.2}", ms(pct(&latencies, 50.0)));
    println!("{key}_p99_ms={:.2}", ms(pct(&latencies, 99.0)));
    println!(
        "{key}_max_ms={:.2}",
        ms(latencies.last().copied().unwrap_or_default())
    );
}

fn push_body(repo: &str, branch: &str, sha: &str) -> String {
    let commit = json!({
        "id": sha,
        "message": "bench",
        "timestamp": "2024-05-01T12:00:00Z",
        "author": { "name": "bench", "email": "bench@example.com" },
        "added": [], "removed": [], "modified": ["README"],
    });
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000001",
        "after": sha,
        "created": false,
        "deleted": false,
        "forced": false,
        "commits": [commit],
        "head_commit": commit,
        "repository": { "name": repo, "full_name": format!("bench/{repo}") },
        "pusher": { "name": "bench" },
        "sender": { "login": "bench" },
    })
    .to_string()
}

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn fake_sha(n: usize) -> String {
    format!("{:040x}", n + 1)
}

/// A git repository with `n` commits and nothing deployable in it; returns the commits.
fn make_repo(dir: &Path, n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).expect("the repository directory");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com")
            .output()
            .expect("running git");
        assert!(out.status.success(), "git {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "main"]);
    (0..n)
        .map(|i| {
            git(&["commit", "-q", "--allow-empty", "-m", &format!("bench {i}")]);
            git(&["rev-parse", "HEAD"])
        })
        .collect()
}

/// Records `repo` as the app's repository, as an import would (without cloning it).
fn record_import(ledger: &Path, app: &str, repo: &Path) {
    let c = rusqlite::Connection::open(ledger).expect("opening the ledger");
    c.busy_timeout(Duration::from_secs(5))
        .expect("a busy timeout");
    c.execute(
        "INSERT INTO app_import_configs (app_id, repo_url, branch, compose_path, build_mode, imported_at)
         SELECT id, ?2, 'main', 'compose.yaml', 'compose', 0 FROM apps WHERE name = ?1",
        rusqlite::params![app, repo.to_string_lossy()],
    )
    .expect("recording the app's repository");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn millis_of(v: &Value) -> f64 {
    let s = v.as_str().expect("a timestamp");
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("an RFC 3339 timestamp");
    t.unix_timestamp_nanos() as f64 / 1_000_000.0
}
