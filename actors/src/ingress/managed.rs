//! `--caddy managed`: Rustploy runs `caddy run` itself with its base Caddyfile, restarts it
//! when it exits (with backoff), and stops it with the server. Caddy dies with the server even
//! on `kill -9` (parent-death signal), so a restarted server never finds an orphan holding
//! its ports.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::admin::CaddyAdmin;
use crate::deploy::process::harden;

/// How to run Caddy.
#[derive(Debug, Clone)]
pub struct ManagedSpec {
    /// The `caddy` binary, an absolute path resolved at start-up.
    pub bin: PathBuf,
    /// The base Caddyfile; it reads `RUSTPLOY_CADDY_ADMIN` and `RUSTPLOY_CADDY_STORAGE`.
    pub caddyfile: PathBuf,
    pub admin_listen: String,
    pub storage: PathBuf,
    /// Caddy's home (its own config and data directories), under Rustploy's data directory.
    pub home: PathBuf,
}

/// The running supervisor loop. Dropping it stops Caddy.
pub struct ManagedCaddy {
    cancel: CancellationToken,
}

impl Drop for ManagedCaddy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// How long a Caddy that just started has to open its admin endpoint.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long Caddy gets to stop on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl ManagedCaddy {
    /// Starts Caddy and keeps it running. `on_ready` is called each time a (re)started Caddy
    /// answers on its admin endpoint: its configuration is then the base one and must be
    /// replaced.
    pub fn start(
        spec: ManagedSpec,
        admin: Arc<dyn CaddyAdmin>,
        on_ready: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let cancel = CancellationToken::new();
        tokio::spawn(supervise(spec, admin, on_ready, cancel.clone()));
        Self { cancel }
    }
}

async fn supervise(
    spec: ManagedSpec,
    admin: Arc<dyn CaddyAdmin>,
    on_ready: impl Fn() + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let outcome = run_once(&spec, admin.as_ref(), &on_ready, &cancel).await;
        // Stopped because the server stops: nothing went wrong, and nothing restarts.
        if cancel.is_cancelled() {
            return;
        }
        match outcome {
            Ok(status) => tracing::warn!(%status, "Caddy exited; restarting it"),
            Err(e) => tracing::error!("Caddy could not be started: {e}"),
        }
        // A Caddy that ran for a while starts over with a short wait.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn run_once(
    spec: &ManagedSpec,
    admin: &dyn CaddyAdmin,
    on_ready: &(impl Fn() + Send + Sync),
    cancel: &CancellationToken,
) -> Result<std::process::ExitStatus, String> {
    for dir in [&spec.storage, &spec.home] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // The fixed child environment, plus Caddy's own settings: nothing of the server's
    // environment (its secrets) reaches Caddy.
    let mut cmd = crate::deploy::process::command(&spec.bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&spec.caddyfile)
        .arg("--adapter")
        .arg("caddyfile")
        .env("RUSTPLOY_CADDY_ADMIN", &spec.admin_listen)
        .env("RUSTPLOY_CADDY_STORAGE", &spec.storage)
        .env("HOME", &spec.home)
        .env("XDG_CONFIG_HOME", spec.home.join("config"))
        .env("XDG_DATA_HOME", spec.home.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    harden(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running {} failed: {e}", spec.bin.display()))?;
    tracing::info!(pid = child.id(), admin = %spec.admin_listen, "started Caddy");
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_log(stderr));
    }

    // Wait for the admin endpoint, then let RouterSync load the real configuration.
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut ready = false;
    while !ready && Instant::now() < deadline {
        tokio::select! {
            status = child.wait() => {
                return status.map_err(|e| e.to_string());
            }
            _ = cancel.cancelled() => return stop(&mut child).await,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                ready = admin.config().await.is_ok();
            }
        }
    }
    if ready {
        on_ready();
    } else {
        tracing::error!(
            "Caddy did not open its admin endpoint at {} within {} s",
            spec.admin_listen,
            READY_TIMEOUT.as_secs()
        );
    }
    tokio::select! {
        status = child.wait() => status.map_err(|e| e.to_string()),
        _ = cancel.cancelled() => stop(&mut child).await,
    }
}

/// SIGTERM, then SIGKILL after a grace period.
async fn stop(child: &mut tokio::process::Child) -> Result<std::process::ExitStatus, String> {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid of our own child.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => status.map_err(|e| e.to_string()),
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await.map_err(|e| e.to_string())
        }
    }
}

/// Caddy logs JSON lines on stderr: errors become warnings of ours, the rest debug lines.
async fn forward_log(stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        let level = parsed
            .as_ref()
            .and_then(|v| v["level"].as_str().map(str::to_string))
            .unwrap_or_default();
        if matches!(level.as_str(), "error" | "fatal" | "panic") {
            tracing::warn!(target: "caddy", "{line}");
        } else {
            tracing::debug!(target: "caddy", "{line}");
        }
    }
}
