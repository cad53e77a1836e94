//! The real `rustploy-agent` against the real server: it comes online within an interval, goes
//! stale and offline on schedule when stopped, rides out a server restart, keeps its id across
//! its own restarts, logs a refused token clearly and retries slowly, and `--once` reports by
//! its exit code.
//!
//! Short intervals keep these quick: the agent beats every second and the server checks every
//! 100 ms. Every process (and the one container) is removed when its guard drops, whatever way
//! the test ends.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustploy_e2e::{Outcome, Sandbox, Server, poll, server_bin};

use crate::deploying::{BASE_IMAGE, DockerScope};

/// The server's monitor tick in these tests.
const TICK: &str = "100";
/// Slack for timing assertions: a debug build on a busy two-core machine.
const SLACK_MS: i64 = 2_000;

fn agent_bin() -> PathBuf {
    let bin = server_bin().with_file_name("rustploy-agent");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first: cargo build --workspace --bins",
        bin.display()
    );
    bin
}

/// The agent binary pointed at `server` with `token`, its state in `state`, with the caller's
/// `RUSTPLOY_*` and proxy variables removed so that only the flags count.
fn agent_command(server: &str, token: &str, state: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(agent_bin());
    cmd.arg("--server")
        .arg(server)
        .arg("--token")
        .arg(token)
        .arg("--state-file")
        .arg(state)
        .args(extra)
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().to_string();
        if key.starts_with("RUSTPLOY_") || key.to_lowercase().ends_with("_proxy") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A running agent. Dropping it kills the process and, when the test is failing, prints its log.
struct Agent {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl Agent {
    fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting rustploy-agent");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            })
        };
        Self {
            child,
            logs,
            reader: Some(reader),
            exited: None,
        }
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    fn running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("polling rustploy-agent")
            .is_none()
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    fn stop(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on a child we own has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = poll(
            "rustploy-agent to exit after SIGTERM",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                self.child
                    .try_wait()
                    .expect("polling rustploy-agent")
                    .ok_or_else(|| "still running".to_string())
            },
        );
        self.exited = Some(status);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- rustploy-agent log ---\n{}\n--- end of log ---",
                self.logs()
            );
        }
    }
}

/// A migrated sandbox with an agent token and a read token.
fn prepared() -> (Sandbox, String, String) {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let agent = sandbox.create_token("host-1", "agent");
    let read = sandbox.create_token("viewer", "read");
    (sandbox, agent, read)
}

fn state_file(sandbox: &Sandbox) -> PathBuf {
    sandbox.tmp.path().join("agent-state").join("state.json")
}

/// (agent id, state, last heartbeat ms) of every agent, from the ledger.
fn agents(sandbox: &Sandbox) -> Vec<(i64, String, Option<i64>)> {
    let db = sandbox.open_ledger();
    let mut stmt = db
        .prepare("SELECT id, state, last_heartbeat_at FROM agents ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn heartbeats(sandbox: &Sandbox) -> i64 {
    sandbox
        .open_ledger()
        .query_row("SELECT COUNT(*) FROM agent_heartbeats", [], |r| r.get(0))
        .unwrap()
}

/// Waits until the one agent has a heartbeat received after `after_ms` (server clock), and
/// returns its id.
fn wait_for_heartbeat(sandbox: &Sandbox, after_ms: i64, timeout: Duration) -> i64 {
    poll(
        "a heartbeat",
        timeout,
        Duration::from_millis(50),
        || match agents(sandbox).as_slice() {
            [(id, state, Some(at))] if *at > after_ms && state == "online" => Ok(*id),
            other => Err(format!("{other:?}")),
        },
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn an_agent_is_online_within_an_interval_then_stale_and_offline_on_schedule() {
    let (sandbox, token, read) = prepared();
    let server = sandbox.start(&["--heartbeat-tick-ms", TICK]);
    let started = Instant::now();
    let mut agent = Agent::spawn(agent_command(
        &server.base_url(),
        &token,
        &state_file(&sandbox),
        &["--interval", "1"],
    ));
    let id = wait_for_heartbeat(&sandbox, 0, Duration::from_secs(10));
    let first = started.elapsed();
    eprintln!("first heartbeat {first:?} after the agent started");
    assert!(
        first < Duration::from_millis(1_000 + SLACK_MS as u64),
        "the agent took {first:?} to report (interval 1 s)"
    );

    // The API shows it online with a real sample of this host.
    let view = server
        .api(Some(&read))
        .get(&format!("/api/v1/agents/{id}"))
        .expect_status(200, "the agent");
    assert_eq!(view.body["state"], "online", "{}", view.text);
    let sample = &view.body["latest_sample"];
    assert!(
        sample["memory"]["total_bytes"].as_u64() > Some(0),
        "{sample}"
    );
    assert!(sample["cpu"]["cores"].as_u64() >= Some(1), "{sample}");
    assert!(sample["docker"]["reachable"].is_boolean(), "{sample}");
    // Beats keep coming once a second.
    let count = heartbeats(&sandbox);
    poll(
        "two more heartbeats",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let n = heartbeats(&sandbox);
            if n >= count + 2 {
                Ok(())
            } else {
                Err(n.to_string())
            }
        },
    );

    let status = agent.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    let last = agents(&sandbox)[0].2.expect("a last heartbeat");

    poll(
        "the agent to go offline",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || match agents(&sandbox)[0].1.as_str() {
            "offline" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    let db = sandbox.open_ledger();
    let moves: Vec<(String, String, i64)> = db
        .prepare("SELECT from_state, to_state, at FROM agent_transitions WHERE agent_id = ?1 ORDER BY id")
        .unwrap()
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let names: Vec<(&str, &str)> = moves
        .iter()
        .map(|(a, b, _)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(names, [("online", "stale"), ("stale", "offline")]);
    // Stale after two missed intervals, offline after five, by the server's clock.
    let stale_after = moves[0].2 - last;
    let offline_after = moves[1].2 - last;
    eprintln!("stale {stale_after} ms and offline {offline_after} ms after the last heartbeat");
    assert!(
        (2_000..2_000 + SLACK_MS).contains(&stale_after),
        "stale {stale_after} ms after the last heartbeat"
    );
    assert!(
        (5_000..5_000 + SLACK_MS).contains(&offline_after),
        "offline {offline_after} ms after the last heartbeat"
    );
}

#[test]
fn the_agent_reconnects_by_itself_after_a_server_restart() {
    let (sandbox, token, _) = prepared();
    let mut server = sandbox.start(&["--heartbeat-tick-ms", TICK]);
    let addr = server.addr.to_string();
    let mut agent = Agent::spawn(agent_command(
        &server.base_url(),
        &token,
        &state_file(&sandbox),
        &["--interval", "1", "--max-backoff", "2"],
    ));
    let id = wait_for_heartbeat(&sandbox, 0, Duration::from_secs(10));

    server.kill9();
    // While the server is away the agent keeps trying, and says so.
    poll(
        "the agent to notice the server is gone",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let n = agent.lines_with("unreachable").len();
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} lines"))
            }
        },
    );
    assert!(
        agent.running(),
        "the agent must not exit while the server is down"
    );

    let down_until = now_ms();
    let server =
        Server::spawn(sandbox.command(&["serve", "--listen", &addr, "--heartbeat-tick-ms", TICK]));
    assert_eq!(server.addr.to_string(), addr);
    let again = wait_for_heartbeat(&sandbox, down_until, Duration::from_secs(15));
    assert_eq!(again, id, "the agent must come back as the same agent");
    assert_eq!(agents(&sandbox).len(), 1);
    // The server records the heartbeat before the agent reads the answer and logs it.
    poll(
        "the agent to say it is back",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            if agent.lines_with("reached the server again").is_empty() {
                Err(agent.logs())
            } else {
                Ok(())
            }
        },
    );
}

#[test]
fn a_revoked_token_is_logged_clearly_and_retried_slowly() {
    let (sandbox, token, _) = prepared();
    let admin = sandbox.create_token("admin", "admin");
    let server = sandbox.start(&["--heartbeat-tick-ms", TICK]);
    let mut agent = Agent::spawn(agent_command(
        &server.base_url(),
        &token,
        &state_file(&sandbox),
        &["--interval", "1", "--auth-retry", "3"],
    ));
    wait_for_heartbeat(&sandbox, 0, Duration::from_secs(10));

    // Revoke it through the API, as a person would.
    let api = server.api(Some(&admin));
    let tokens = api.get("/api/v1/tokens").expect_status(200, "tokens");
    let token_id = tokens.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "host-1")
        .and_then(|t| t["id"].as_i64())
        .expect("the agent's token is listed");
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let status = client
        .delete(format!("{}/api/v1/tokens/{token_id}", server.base_url()))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 204, "revoking the token");

    let first = poll(
        "the agent to log the refused token",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            agent
                .lines_with("authentication failed")
                .first()
                .cloned()
                .map(|_| Instant::now())
                .ok_or_else(|| "no auth error yet".to_string())
        },
    );
    let line = agent.lines_with("authentication failed")[0].clone();
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("401") && line.contains("revoked"), "{line}");
    // Seven seconds at one retry per three: three lines at most, not one a second.
    while first.elapsed() < Duration::from_secs(7) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = agent.lines_with("authentication failed").len();
    assert!(
        (2..=4).contains(&lines),
        "expected a retry every 3 s, got {lines} auth errors in 7 s:\n{}",
        agent.logs()
    );
    assert!(agent.running(), "a refused token must not stop the daemon");
    let stored = heartbeats(&sandbox);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        heartbeats(&sandbox),
        stored,
        "nothing is stored after the revocation"
    );
}

/// Runs `cmd` to its end, killing it and failing the test if that takes longer than a minute.
fn run_bounded(mut cmd: Command) -> Outcome {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting rustploy-agent");
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling rustploy-agent") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rustploy-agent did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn once(sandbox: &Sandbox, server: &str, token: &str) -> Outcome {
    run_bounded(agent_command(
        server,
        token,
        &state_file(sandbox),
        &["--once"],
    ))
}

#[test]
fn once_sends_one_heartbeat_and_restarts_keep_the_agent_id() {
    let (sandbox, token, _) = prepared();
    let server = sandbox.start(&["--heartbeat-tick-ms", TICK]);
    let url = server.base_url();

    let out = once(&sandbox, &url, &token);
    out.assert_success("--once");
    assert!(out.stdout.contains("heartbeat recorded"), "{}", out.stdout);
    assert_eq!(heartbeats(&sandbox), 1);
    let id = agents(&sandbox)[0].0;
    let state = state_file(&sandbox);
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state file is for its owner only");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["agent_id"], id);

    // Again, and then as a daemon: still the same agent.
    once(&sandbox, &url, &token).assert_success("--once again");
    assert_eq!(heartbeats(&sandbox), 2);
    let since = now_ms();
    let mut agent = Agent::spawn(agent_command(&url, &token, &state, &["--interval", "1"]));
    assert_eq!(
        wait_for_heartbeat(&sandbox, since, Duration::from_secs(10)),
        id
    );
    agent.stop();
    assert_eq!(agents(&sandbox).len(), 1, "restarts must not create agents");

    // Failures are exit code 1 with one line saying why.
    let bad = format!("rp_{}_{}", "0".repeat(16), "0".repeat(64));
    let out = once(&sandbox, &url, &bad);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rustploy-agent: ") && last.contains("401"),
        "{}",
        out.stderr
    );
    drop(server);
    let out = once(&sandbox, &url, &token);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot reach the server"),
        "{}",
        out.stderr
    );
    // Bad settings are a usage error.
    let out = run_bounded(agent_command(
        &url,
        &token,
        &state,
        &["--interval", "0", "--once"],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

/// A busy container with Rustploy's labels shows up in the agent's sample with its CPU share
/// and memory, read from the real engine.
#[test]
fn the_agent_reports_rustploy_containers_with_their_cpu_and_memory() {
    let scope = DockerScope::new();
    let name = format!("{}-busy", scope.prefix);
    let app = format!("{}-app", scope.prefix);
    let started = Command::new("docker")
        .args(["run", "-d", "--init", "--name", &name])
        .args(["--label", &format!("dev.rustploy.app={app}")])
        .args(["--label", "dev.rustploy.deployment=1"])
        .args([BASE_IMAGE, "sh", "-c", "while true; do :; done"])
        .output()
        .expect("running docker");
    assert!(
        started.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let (sandbox, token, read) = prepared();
    let server = sandbox.start(&["--heartbeat-tick-ms", TICK]);
    let _agent = Agent::spawn(agent_command(
        &server.base_url(),
        &token,
        &state_file(&sandbox),
        &["--interval", "1"],
    ));
    let api = server.api(Some(&read));
    let seen = poll(
        "the container's CPU and memory in a sample",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let list = api.get("/api/v1/agents").expect_status(200, "agents");
            let docker = &list.body["items"][0]["latest_sample"]["docker"];
            let ours = docker["rustploy"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["app"] == app.as_str()).cloned());
            match ours {
                Some(c) if c["cpu_percent"].as_f64().is_some() => Ok(c),
                _ => Err(docker.to_string()),
            }
        },
    );
    assert_eq!(seen["name"], name.as_str());
    assert_eq!(seen["deployment"], "1");
    assert_eq!(seen["state"], "running");
    assert!(seen["cpu_percent"].as_f64() > Some(10.0), "{seen}");
    assert!(seen["memory_bytes"].as_u64() > Some(0), "{seen}");
}
