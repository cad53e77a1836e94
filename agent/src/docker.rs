//! The Docker engine, asked over its API socket with plain HTTP/1.1 (hyper): the version, every
//! container by state, and CPU and memory of Rustploy's containers.
//!
//! A full Docker client would cost megabytes on every host for four GET requests. An engine that
//! cannot be asked is reported as `reachable: false` with the reason, never an error.

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustploy_api::agents::{ContainerCounts, ContainerUsage, Docker, MAX_CONTAINERS, MAX_ERROR};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::error::Elapsed;
use tokio::time::{Instant, timeout_at};

/// The labels Rustploy puts on every container it runs (see the server's runtime compose file).
pub const LABEL_APP: &str = "dev.rustploy.app";
pub const LABEL_DEPLOYMENT: &str = "dev.rustploy.deployment";
const LABEL_SERVICE: &str = "com.docker.compose.service";

/// The largest answer read (a container list of a busy host fits many times over).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(String),
    Tcp(String),
}

impl Endpoint {
    /// `unix:///path`, `tcp://host:port`, or a bare socket path.
    pub fn parse(host: &str) -> Result<Self, String> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(path.to_string()));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            return Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_string()));
        }
        if host.starts_with('/') {
            return Ok(Endpoint::Unix(host.to_string()));
        }
        Err(format!(
            "unsupported Docker host '{host}': use unix:///path/to/docker.sock or tcp://host:port"
        ))
    }
}

/// CPU counters of a container at the previous sample.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    container: u64,
    system: u64,
}

pub struct Engine {
    endpoint: Result<Endpoint, String>,
    label: String,
    budget: Duration,
    previous: HashMap<String, CpuMark>,
}

impl Engine {
    /// An engine at `host`, asked for at most `budget` per report: a slow or hung engine must
    /// not delay the heartbeat that carries its report (a late heartbeat looks like a dead
    /// host). Containers whose stats do not fit in the budget are listed without them.
    pub fn new(host: &str, budget: Duration) -> Self {
        Self {
            endpoint: Endpoint::parse(host),
            label: host.to_string(),
            budget,
            previous: HashMap::new(),
        }
    }

    /// What the engine says now, within the budget. Never fails: an engine that cannot be
    /// asked is reported so.
    pub async fn report(&mut self) -> Docker {
        let endpoint = match &self.endpoint {
            Ok(e) => e.clone(),
            Err(e) => return unreachable(e.clone()),
        };
        let deadline = Instant::now() + self.budget;
        let result = match endpoint {
            Endpoint::Unix(path) => {
                let stream = timeout_at(deadline, tokio::net::UnixStream::connect(path)).await;
                self.ask(stream, deadline).await
            }
            Endpoint::Tcp(addr) => {
                let stream = timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await;
                self.ask(stream, deadline).await
            }
        };
        result.unwrap_or_else(|e| {
            unreachable(format!(
                "cannot ask the Docker engine at {}: {e}",
                self.label
            ))
        })
    }

    async fn ask<S>(
        &mut self,
        stream: Result<std::io::Result<S>, Elapsed>,
        deadline: Instant,
    ) -> Result<Docker, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stream = stream
            .map_err(|_| too_slow(self.budget))?
            .map_err(|e| e.to_string())?;
        let mut conn = Conn::open(stream, deadline).await?;
        let version: Version = conn.get("/version").await?;
        let list: Vec<Listed> = conn.get("/containers/json?all=1").await?;
        let counts = count(&list);
        let mut ours: Vec<Listed> = list
            .into_iter()
            .filter(|c| c.labels.contains_key(LABEL_APP))
            .collect();
        let total = ours.len() as u32;
        // Running ones first, so a truncated list keeps the containers that use resources.
        ours.sort_by(|a, b| (a.state != "running", &a.id).cmp(&(b.state != "running", &b.id)));
        ours.truncate(MAX_CONTAINERS);
        let mut usage = Vec::with_capacity(ours.len());
        let mut seen = HashMap::with_capacity(ours.len());
        // Once a stats request runs out of time the connection is stuck behind it: the other
        // containers are listed without stats.
        let mut out_of_time = false;
        for c in ours {
            let mut u = ContainerUsage {
                id: c.id.chars().take(12).collect(),
                name: c
                    .names
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                app: c.labels.get(LABEL_APP).cloned().unwrap_or_default(),
                deployment: c.labels.get(LABEL_DEPLOYMENT).cloned(),
                service: c.labels.get(LABEL_SERVICE).cloned(),
                state: c.state.clone(),
                ..ContainerUsage::default()
            };
            if c.state == "running" && !out_of_time {
                // One-shot: the engine answers at once instead of waiting for a second reading;
                // the CPU share comes from our own previous reading.
                let path = format!("/containers/{}/stats?stream=false&one-shot=true", c.id);
                match conn.get::<Stats>(&path).await {
                    Ok(stats) => {
                        let mark = CpuMark {
                            container: stats.cpu_stats.cpu_usage.total_usage,
                            system: stats.cpu_stats.system_cpu_usage.unwrap_or(0),
                        };
                        let cpus = stats.cpu_stats.online_cpus.unwrap_or(1).max(1);
                        u.cpu_percent = self
                            .previous
                            .get(&c.id)
                            .and_then(|prev| cpu_percent(*prev, mark, cpus));
                        seen.insert(c.id.clone(), mark);
                        u.memory_bytes = stats.memory_stats.used();
                        u.memory_limit_bytes = stats.memory_stats.limit;
                    }
                    Err(e) => {
                        out_of_time = Instant::now() >= deadline;
                        // A container may also stop between the list and the stats.
                        tracing::debug!(container = %u.id, error = %e, "no stats");
                    }
                }
            }
            usage.push(u);
        }
        self.previous = seen;
        Ok(Docker {
            reachable: true,
            error: None,
            version: Some(version.version),
            api_version: Some(version.api_version),
            containers: Some(counts),
            rustploy: usage,
            rustploy_total: total,
        })
    }
}

fn too_slow(budget: Duration) -> String {
    format!("the engine did not answer within {budget:?}")
}

fn unreachable(error: String) -> Docker {
    let mut error = error;
    if error.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
    }
    Docker {
        reachable: false,
        error: Some(error),
        ..Docker::default()
    }
}

/// A container's CPU use between two readings, as a share of one core (100 = one core busy),
/// the way `docker stats` computes it.
fn cpu_percent(prev: CpuMark, now: CpuMark, cpus: u32) -> Option<f64> {
    let container = now.container.checked_sub(prev.container)?;
    let system = now.system.checked_sub(prev.system)?;
    if system == 0 {
        return None;
    }
    Some(container as f64 / system as f64 * cpus as f64 * 100.0)
}

fn count(list: &[Listed]) -> ContainerCounts {
    let mut c = ContainerCounts {
        total: list.len() as u32,
        ..ContainerCounts::default()
    };
    for l in list {
        match l.state.as_str() {
            "running" => c.running += 1,
            "paused" => c.paused += 1,
            "restarting" => c.restarting += 1,
            "exited" => c.exited += 1,
            "created" => c.created += 1,
            "dead" => c.dead += 1,
            "removing" => c.removing += 1,
            _ => {}
        }
    }
    c
}

/// One HTTP/1.1 connection to the engine, reused for every request of a report.
struct Conn {
    sender: http1::SendRequest<Empty<&'static [u8]>>,
    task: tokio::task::JoinHandle<()>,
    /// When the report's budget runs out.
    deadline: Instant,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    async fn open<S>(stream: S, deadline: Instant) -> Result<Self, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // Dropped with the Conn: the task is aborted then.
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the Docker engine connection ended");
            }
        });
        Ok(Self {
            sender,
            task,
            deadline,
        })
    }

    async fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, String> {
        let exchange = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let request = Request::get(path)
                .header(hyper::header::HOST, "docker")
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(format!("GET {path}: HTTP {status}: {}", text.trim()));
            }
            serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))
        };
        timeout_at(self.deadline, exchange)
            .await
            .map_err(|_| format!("GET {path}: the engine did not answer in time"))?
    }
}

#[derive(Deserialize)]
struct Version {
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "ApiVersion")]
    api_version: String,
}

/// A field the engine may leave out or send as `null`: either way its empty value. The engine
/// sends `"Labels": null` for a container made through its API without labels, and one such
/// container on the host made the whole listing unreadable.
fn or_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Names", default, deserialize_with = "or_empty")]
    names: Vec<String>,
    #[serde(rename = "State", default, deserialize_with = "or_empty")]
    state: String,
    #[serde(rename = "Labels", default, deserialize_with = "or_empty")]
    labels: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Stats {
    #[serde(default)]
    cpu_stats: CpuStats,
    #[serde(default)]
    memory_stats: MemoryStats,
}

#[derive(Deserialize, Default)]
struct CpuStats {
    #[serde(default)]
    cpu_usage: CpuUsage,
    system_cpu_usage: Option<u64>,
    online_cpus: Option<u32>,
}

#[derive(Deserialize, Default)]
struct CpuUsage {
    #[serde(default)]
    total_usage: u64,
}

#[derive(Deserialize, Default)]
struct MemoryStats {
    usage: Option<u64>,
    limit: Option<u64>,
    #[serde(default, deserialize_with = "or_empty")]
    stats: HashMap<String, u64>,
}

impl MemoryStats {
    /// Memory in use without the page cache that can be dropped, as `docker stats` shows it
    /// (cgroup v2 `inactive_file`, v1 `total_inactive_file`).
    fn used(&self) -> Option<u64> {
        let usage = self.usage?;
        let cache = self
            .stats
            .get("inactive_file")
            .or_else(|| self.stats.get("total_inactive_file"))
            .copied()
            .unwrap_or(0);
        Some(usage.saturating_sub(cache))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts_parse() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock"),
            Ok(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375/"),
            Ok(Endpoint::Tcp("127.0.0.1:2375".into()))
        );
        assert_eq!(
            Endpoint::parse("/run/docker.sock"),
            Ok(Endpoint::Unix("/run/docker.sock".into()))
        );
        assert!(Endpoint::parse("ssh://host").is_err());
    }

    #[test]
    fn a_container_listed_with_null_fields_is_read_with_them_empty() {
        let listed: Vec<Listed> = serde_json::from_str(
            r#"[{"Id":"aaaa","Names":["/rp-shop-d1-web-1"],"State":"running",
                 "Labels":{"dev.rustploy.app":"shop"}},
                {"Id":"bbbb","Names":null,"State":null,"Labels":null},
                {"Id":"cccc"}]"#,
        )
        .unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].labels["dev.rustploy.app"], "shop");
        assert!(listed[1].labels.is_empty() && listed[1].names.is_empty());
        assert_eq!(listed[1].state, "");
        assert!(listed[2].labels.is_empty());
        let stats: Stats =
            serde_json::from_str(r#"{"memory_stats":{"usage":10,"stats":null}}"#).unwrap();
        assert!(stats.memory_stats.stats.is_empty());
    }

    #[test]
    fn cpu_share_is_per_core_like_docker_stats() {
        let prev = CpuMark {
            container: 1_000,
            system: 10_000,
        };
        // Half of all CPU time on a two-core host: one full core.
        let now = CpuMark {
            container: 6_000,
            system: 20_000,
        };
        assert_eq!(cpu_percent(prev, now, 2), Some(100.0));
        // Counters that went backwards (a restarted container) give no reading.
        assert_eq!(cpu_percent(now, prev, 2), None);
    }

    #[test]
    fn memory_leaves_out_the_page_cache() {
        let stats: MemoryStats = serde_json::from_str(
            r#"{"usage": 1000, "limit": 4000, "stats": {"inactive_file": 300, "active_file": 5}}"#,
        )
        .unwrap();
        assert_eq!(stats.used(), Some(700));
        let v1: MemoryStats =
            serde_json::from_str(r#"{"usage": 1000, "stats": {"total_inactive_file": 100}}"#)
                .unwrap();
        assert_eq!(v1.used(), Some(900));
    }

    /// A stand-in engine on a unix socket: answers `/version` and the container list at once,
    /// and never answers a stats request (as a hung engine would not).
    async fn slow_stats_engine(sock: std::path::PathBuf) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 1024];
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("").to_string();
                        let body = if path == "/version" {
                            r#"{"Version":"99.0","ApiVersion":"1.99"}"#.to_string()
                        } else if path.starts_with("/containers/json") {
                            r#"[{"Id":"aaaaaaaaaaaaaaaa","Names":["/rp-shop-d1-web-1"],"State":"running",
                                 "Labels":{"dev.rustploy.app":"shop","dev.rustploy.deployment":"1"}},
                                {"Id":"bbbbbbbbbbbbbbbb","Names":["/other"],"State":"exited","Labels":{}}]"#
                                .to_string()
                        } else {
                            std::future::pending::<()>().await;
                            unreachable!()
                        };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn hung_stats_cost_at_most_the_budget_and_the_rest_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("engine.sock");
        let server = tokio::spawn(slow_stats_engine(sock.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let budget = Duration::from_millis(300);
        let mut engine = Engine::new(&format!("unix://{}", sock.display()), budget);
        let started = std::time::Instant::now();
        let report = engine.report().await;
        let took = started.elapsed();
        assert!(took < budget + Duration::from_millis(200), "took {took:?}");
        assert!(report.reachable, "{report:?}");
        assert_eq!(report.version.as_deref(), Some("99.0"));
        assert_eq!(report.api_version.as_deref(), Some("1.99"));
        let counts = report.containers.unwrap();
        assert_eq!((counts.total, counts.running, counts.exited), (2, 1, 1));
        assert_eq!(report.rustploy_total, 1);
        let c = &report.rustploy[0];
        assert_eq!((c.id.as_str(), c.app.as_str()), ("aaaaaaaaaaaa", "shop"));
        assert_eq!(c.deployment.as_deref(), Some("1"));
        assert_eq!(c.name, "rp-shop-d1-web-1");
        assert_eq!((c.cpu_percent, c.memory_bytes), (None, None));
        server.abort();
    }

    #[tokio::test]
    async fn an_engine_that_never_answers_is_unreachable_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("mute.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let budget = Duration::from_millis(300);
        let mut engine = Engine::new(&format!("unix://{}", sock.display()), budget);
        let started = std::time::Instant::now();
        let report = engine.report().await;
        assert!(started.elapsed() < budget + Duration::from_millis(200));
        assert!(!report.reachable);
        let error = report.error.unwrap();
        assert!(error.contains("did not answer"), "{error}");
        server.abort();
    }

    #[tokio::test]
    async fn a_missing_engine_is_reported_not_raised() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("no-docker.sock");
        let budget = Duration::from_secs(1);
        let mut engine = Engine::new(&format!("unix://{}", sock.display()), budget);
        let report = engine.report().await;
        assert!(!report.reachable);
        let error = report.error.unwrap();
        assert!(error.contains("no-docker.sock"), "{error}");
        let mut bad = Engine::new("ssh://nowhere", budget);
        assert!(!bad.report().await.reachable);
    }
}
