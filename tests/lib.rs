//! Shared helpers for the end-to-end tests: they run the real `rustploy-server` binary against
//! a real SQLite ledger in a fresh temporary directory, on a port the system picks.
//!
//! The binary is not built by these tests: `scripts/test` runs `cargo build --workspace --bins`
//! first, and [`server_bin`] finds the result (or `RUSTPLOY_SERVER_BIN`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a server may take to print its ready line. Generous, because a debug build on a
/// busy two-core machine running other tests in parallel can be slow to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace's root folder (where `scripts/` and `packaging/` are).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// The `rustploy-server` binary under test: `RUSTPLOY_SERVER_BIN` when set, else the debug
/// build in the workspace's target directory (honouring `CARGO_TARGET_DIR`).
pub fn server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RUSTPLOY_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "RUSTPLOY_SERVER_BIN={} is not a file",
            bin.display()
        );
        return bin;
    }
    let workspace = workspace();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        // A relative CARGO_TARGET_DIR is relative to where cargo ran, which for scripts/test
        // is the workspace root.
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let bin = target.join("debug").join("rustploy-server");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first: cargo build --workspace --bins (scripts/test does)",
        bin.display()
    );
    bin
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts the command succeeded, showing its output when it did not.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed with {}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts the command failed the way every command-line error must: exit code `code`, and
    /// exactly one non-empty line on stderr that starts `rustploy-server:` and is not a panic.
    /// Returns that line.
    pub fn assert_one_line_error(&self, what: &str, code: i32) -> &str {
        assert_eq!(
            self.status.code(),
            Some(code),
            "{what}: expected exit code {code}, got {}\nstderr: {}",
            self.status,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: stderr must be exactly one line, got {}:\n{}",
            lines.len(),
            self.stderr
        );
        let line = lines[0];
        assert!(
            line.starts_with("rustploy-server: ") && line.len() > "rustploy-server: ".len(),
            "{what}: the error line must start 'rustploy-server: ' and say something: {line:?}"
        );
        let lower = line.to_lowercase();
        assert!(
            !lower.contains("panicked") && !lower.contains("backtrace"),
            "{what}: the error must not be a panic: {line}"
        );
        line
    }
}

/// A fresh temporary directory with a data directory inside it, and ways to run the binary on
/// it. Dropping it deletes everything.
pub struct Sandbox {
    pub tmp: TempDir,
    pub data_dir: PathBuf,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("rustploy-e2e-")
            .tempdir()
            .expect("creating a temporary directory");
        let data_dir = tmp.path().join("data");
        Self { tmp, data_dir }
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.data_dir.join("rustploy.db")
    }

    /// The binary with `--data-dir` and `args`. It runs in the sandbox with every `RUSTPLOY_*`
    /// variable removed, so neither the caller's environment nor a `rustploy.toml` in the
    /// caller's directory can change what is tested.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_on(&self.data_dir, args)
    }

    /// Like [`Sandbox::command`], with another data directory.
    pub fn command_on(&self, data_dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(server_bin());
        cmd.current_dir(self.tmp.path())
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RUSTPLOY_") {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// Runs the binary to completion.
    pub fn run(&self, args: &[&str]) -> Outcome {
        run_to_end(self.command(args), None)
    }

    /// Runs the binary to completion with `input` on its standard input.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Outcome {
        run_to_end(self.command(args), Some(input))
    }

    /// Creates the ledger, as `admin` commands need it.
    pub fn migrate(&self) {
        self.run(&["migrate"]).assert_success("migrate");
    }

    /// Creates an API token with `scopes` (comma-separated) through the CLI and returns it.
    pub fn create_token(&self, name: &str, scopes: &str) -> String {
        let out = self.run(&["admin", "create-token", "--name", name, "--scopes", scopes]);
        out.assert_success("admin create-token");
        let token = out.stdout.trim().to_string();
        assert!(
            is_token(&token),
            "create-token printed {token:?}, not rp_<16 hex>_<64 hex>"
        );
        token
    }

    /// Starts `serve` on a port the system picks, with `extra` flags, and waits until it is ready.
    pub fn start(&self, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Server::spawn(self.command(&args))
    }

    /// Opens the ledger file directly, to check what the server left in it.
    pub fn open_ledger(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.ledger_path()).expect("opening the ledger");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("setting a busy timeout");
        conn
    }
}

/// Runs `cmd` to completion with `input` (if any) on its standard input, capturing its output.
pub fn run_to_end(mut cmd: Command, input: Option<&str>) -> Outcome {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("starting rustploy-server");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A command that refuses its arguments exits without reading its input; that is for
        // the test to judge from the exit status, not a failure to write.
        match stdin.write_all(input.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                panic!("writing to rustploy-server's stdin: {e}")
            }
            _ => {}
        }
    }
    let out = child
        .wait_with_output()
        .expect("waiting for rustploy-server");
    Outcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether `s` has the shape of an API token: `rp_<16 hex>_<64 hex>`.
pub fn is_token(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    s.strip_prefix("rp_")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(id, secret)| hex(id, 16) && hex(secret, 64))
}

/// A running server process. Dropping it kills the process (and prints its log when the test
/// is failing), so no test leaves a server behind, whatever way it ends.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

const READY: &str = "rustploy-server ready on http://";

impl Server {
    /// Spawns `cmd` and waits for the ready line on its stderr, which names the real address.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting rustploy-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = {
            let logs = logs.clone();
            // Stderr is read to its end on a thread, so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(at) = line.find(READY) {
                        let addr = line[at + READY.len()..]
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let _ = ready_tx.send(addr);
                    }
                    logs.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            })
        };
        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().expect("placeholder address"),
            logs,
            reader: Some(reader),
            exited: None,
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                server.addr = addr.parse().unwrap_or_else(|e| {
                    panic!("the ready line names {addr:?}, not an address: {e}")
                });
            }
            Err(_) => {
                let status = server.wait_timeout(Duration::from_secs(2));
                panic!(
                    "rustploy-server did not report ready within {:?} (exit status: {status:?}); its log:\n{}",
                    START_TIMEOUT,
                    server.logs()
                );
            }
        }
        server
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// An API client for this server, authenticated with `token` when given.
    pub fn api(&self, token: Option<&str>) -> Api {
        Api::new(&self.base_url(), token)
    }

    /// Waits until the process has installed a handler for `signal`, as the kernel reports in
    /// `/proc/<pid>/status` (the `SigCgt` mask).
    ///
    /// The server installs its SIGTERM handler only when it starts waiting for shutdown, just
    /// after it prints the ready line; a SIGTERM in between kills it with the default action
    /// instead of stopping it gracefully. Tests of graceful shutdown wait for the handler so
    /// that they test the shutdown, not that race.
    pub fn wait_until_catching(&self, signal: i32) {
        let status = format!("/proc/{}/status", self.pid());
        let bit = 1u64 << (signal - 1);
        poll(
            &format!("rustploy-server to catch signal {signal}"),
            Duration::from_secs(10),
            Duration::from_millis(5),
            || {
                let text = std::fs::read_to_string(&status).map_err(|e| e.to_string())?;
                let mask = text
                    .lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                    .ok_or_else(|| format!("no SigCgt line in {status}"))?;
                if mask & bit != 0 {
                    Ok(())
                } else {
                    Err(format!("SigCgt is {mask:x}"))
                }
            },
        );
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with the pid of a child we own has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Kills the process at once (SIGKILL), as a crash or power loss would, and reaps it.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.child.wait().expect("reaping rustploy-server");
        self.exited = Some(status);
        self.join_reader();
    }

    /// Waits up to `timeout` for the process to exit, polling so that a hung server fails the
    /// test instead of hanging it.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited {
            return Some(status);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling rustploy-server") {
                self.exited = Some(status);
                self.join_reader();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.join_reader();
        if std::thread::panicking() {
            eprintln!(
                "--- rustploy-server log ({}) ---\n{}\n--- end of log ---",
                self.addr,
                self.logs()
            );
        }
    }
}

/// An HTTP answer: the status and the body parsed as JSON (`Value::Null` when it is not JSON),
/// plus the raw text for bodies that are not JSON.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: String,
}

impl Reply {
    /// Asserts the status, showing the body when it differs.
    pub fn expect_status(self, status: u16, what: &str) -> Self {
        assert_eq!(
            self.status, status,
            "{what}: expected HTTP {status}, got {}: {}",
            self.status, self.text
        );
        self
    }

    /// The `error.code` of an error body, asserting the body has the error shape.
    pub fn error_code(&self) -> &str {
        let error = &self.body["error"];
        assert!(
            error.is_object()
                && error["message"].is_string()
                && error.as_object().is_some_and(|o| o.contains_key("details")),
            "expected an error body {{\"error\":{{code,message,details}}}}, got: {}",
            self.text
        );
        error["code"].as_str().expect("error.code is a string")
    }
}

/// A small blocking client for the server's HTTP API.
pub struct Api {
    client: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Self {
        let client = reqwest::blocking::Client::builder()
            // A proxy configured in the environment must not intercept requests to localhost.
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("building an HTTP client");
        Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)))
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.client.post(self.url(path)).json(body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.send(self.client.delete(self.url(path)))
    }

    /// A POST without a body, for actions such as cancel.
    pub fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.client.put(self.url(path)).json(body))
    }

    pub fn post_empty(&self, path: &str) -> Reply {
        self.send(self.client.post(self.url(path)))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(&self, mut request: reqwest::blocking::RequestBuilder) -> Reply {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .expect("sending a request to rustploy-server");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().expect("reading the response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            content_type,
        }
    }

    /// Every job, following `next_cursor` page by page with pages of `limit`, optionally only
    /// those in `state`. Panics if a page repeats an id, which would mean the cursor is broken.
    pub fn all_jobs(&self, state: Option<&str>, limit: u32) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/jobs?limit={limit}");
            if let Some(s) = state {
                path.push_str(&format!("&state={s}"));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path).expect_status(200, "listing jobs");
            let items = page.body["items"].as_array().expect("items is an array");
            assert!(
                items.len() <= limit as usize,
                "a page has more than {limit} items"
            );
            for item in items {
                assert!(
                    !out.iter().any(|j| j["id"] == item["id"]),
                    "job {} appeared on two pages",
                    item["id"]
                );
                out.push(item.clone());
            }
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return out,
            }
        }
    }
}

/// Calls `check` every `every` until it returns `Ok`, and returns that value. After `timeout`
/// the test fails, naming `what` and the last thing `check` observed.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last observed: {last}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Runs `cmd` to its end in a process group of its own, capturing its output. After `timeout`
/// the group gets SIGTERM, then SIGKILL, and the answer is an error with the output so far.
/// It never panics, so guards can use it while a failing test unwinds.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<Outcome, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().map_err(|e| format!("starting {shown}: {e}"))?;
    // Read on threads into shared buffers, so a timeout can report what arrived without
    // waiting for pipes that a stray grandchild may still hold.
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });
        (buf, reader)
    };
    let (out, out_reader) = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let (err, err_reader) = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let text = |buf: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    };
    let group = child.id() as i32;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let _ = out_reader.join();
                let _ = err_reader.join();
                return Ok(Outcome {
                    status,
                    stdout: text(&out),
                    stderr: text(&err),
                });
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => break,
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    }
    // SAFETY: kill(2) on the process group our own child leads.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let grace = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
    Err(format!(
        "{shown} did not finish within {timeout:?} and was killed\nstdout: {}\nstderr: {}",
        text(&out),
        text(&err)
    ))
}

/// [`run_bounded`] for a test's own steps: a command that runs out of time, or cannot start,
/// fails the test with its output so far.
pub fn run_within(cmd: Command, timeout: Duration) -> Outcome {
    run_bounded(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}
