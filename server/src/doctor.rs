//! `rustploy-server doctor`: checks what the server needs from its host and says, one line
//! each, what is wrong and how to fix it. It changes nothing: no ledger is created or
//! migrated, no key is made, no port is held longer than the check.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use rustploy_actors::crypto::{SecretBox, env_context};
use rustploy_actors::ingress::LoadHandover;
use rustploy_actors::ledger::{SCHEMA_VERSION, inspect, now_ms};

use crate::config::{CaddyMode, Settings};
use crate::probes;

/// Below this much free space in the data directory, builds and backups may fail.
const MIN_FREE_BYTES: u64 = 1024 * 1024 * 1024;
/// How long any one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    /// What is wrong, and what to do about it.
    Fail {
        problem: String,
        fix: String,
    },
    /// Works, with a limit a person may want to lift: what it is, and how.
    Warn(String),
    /// Not relevant to these settings.
    Skip(String),
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

impl Check {
    fn pass(name: &'static str, what: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Pass(what.into()),
        }
    }

    fn fail(name: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Fail {
                problem: problem.into(),
                fix: fix.into(),
            },
        }
    }

    fn warn(name: &'static str, what: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Warn(what.into()),
        }
    }

    fn skip(name: &'static str, why: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Skip(why.into()),
        }
    }

    /// `ok    docker      ...`, `FAIL  data dir    ...: fix`, `warn  reloads     ...`,
    /// `skip  dns         ...`.
    pub fn line(&self) -> String {
        match &self.outcome {
            Outcome::Pass(what) => format!("ok    {:<11} {what}", self.name),
            Outcome::Fail { problem, fix } => format!("FAIL  {:<11} {problem}: {fix}", self.name),
            Outcome::Warn(what) => format!("warn  {:<11} {what}", self.name),
            Outcome::Skip(why) => format!("skip  {:<11} {why}", self.name),
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail { .. })
    }
}

/// Runs every check, in the order a person would fix them.
pub async fn run(settings: &Settings) -> Vec<Check> {
    let mut checks = vec![docker().await, compose().await];
    checks.extend(caddy(settings).await);
    checks.push(data_dir(&settings.data_dir));
    let ledger = inspect::summary(&settings.ledger_path());
    checks.push(ledger_check(&settings.ledger_path(), &ledger));
    let summary = ledger.ok().flatten();
    checks.push(secret_key(&settings.data_dir, summary.as_ref()));
    checks.push(clock(summary.as_ref()));
    checks.push(dns(settings).await);
    checks
}

async fn docker() -> Check {
    let found = probes::docker(PROBE_TIMEOUT).await;
    if found["ok"] == true {
        Check::pass(
            "docker",
            format!(
                "Docker Engine {} (API {}) answers",
                found["version"].as_str().unwrap_or("?"),
                found["api_version"].as_str().unwrap_or("?")
            ),
        )
    } else {
        Check::fail(
            "docker",
            found["error"]
                .as_str()
                .unwrap_or("the engine did not answer")
                .to_string(),
            "start the engine (systemctl start docker), add the server's user to the docker \
             group, or set DOCKER_HOST to the engine's socket",
        )
    }
}

async fn compose() -> Check {
    match rustploy_actors::deploy::docker::compose_cli().await {
        Ok(cli) => Check::pass("compose", cli.describe()),
        Err(e) => Check::fail(
            "compose",
            e,
            "install Debian's docker-compose package (or the compose plugin)",
        ),
    }
}

async fn caddy(settings: &Settings) -> Vec<Check> {
    let admin = probes::caddy(&settings.caddy_admin, PROBE_TIMEOUT).await;
    let answers = admin["ok"] == true;
    let caddy = match settings.caddy {
        CaddyMode::Off => return vec![Check::skip("caddy", "--caddy off: apps get no domains")],
        CaddyMode::External if answers => Check::pass(
            "caddy",
            format!("Caddy answers its admin API at {}", settings.caddy_admin),
        ),
        CaddyMode::External => Check::fail(
            "caddy",
            format!("no Caddy answers at {}", settings.caddy_admin),
            "start Caddy (systemctl start caddy) with its admin API there, or set --caddy-admin",
        ),
        CaddyMode::Managed => {
            match rustploy_actors::deploy::tools::program_setting(&settings.caddy_bin) {
                Ok(bin) => Check::pass(
                    "caddy",
                    if answers {
                        format!(
                            "{} found; a Caddy already answers at {}",
                            bin.display(),
                            settings.caddy_admin
                        )
                    } else {
                        format!("{} found; the server starts it", bin.display())
                    },
                ),
                Err(e) => Check::fail(
                    "caddy",
                    e,
                    "install Debian's caddy package, or set --caddy-bin to Caddy's path",
                ),
            }
        }
    };
    let mut checks = vec![caddy, reloads()];
    for (name, listen) in [
        ("http port", &settings.http_listen),
        ("https port", &settings.https_listen),
    ] {
        checks.push(port(name, listen, answers));
    }
    checks
}

/// Whether a configuration load (a domain or TLS change) can reset a connection arriving at
/// that instant: see `LoadHandover`.
fn reloads() -> Check {
    let handover = LoadHandover::read();
    match handover.advice() {
        None => Check::pass(
            "reloads",
            "net.ipv4.tcp_migrate_req is 1: connections queued while Caddy loads a domain \
             change move to its new socket",
        ),
        Some(advice) => Check::warn("reloads", advice),
    }
}

/// Whether Caddy can listen on `listen`: free, or already held while a Caddy answers (taken
/// to be that Caddy's).
fn port(name: &'static str, listen: &str, caddy_answers: bool) -> Check {
    let Some(port) = rustploy_actors::ingress::listen_port(listen) else {
        return Check::fail(
            name,
            format!("'{listen}' has no port"),
            "give it as [host]:port",
        );
    };
    let host = listen
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .filter(|h| !h.is_empty())
        .unwrap_or("0.0.0.0");
    match TcpListener::bind((host, port)) {
        Ok(_) => Check::pass(name, format!("{listen} is free")),
        Err(e) if e.kind() == ErrorKind::AddrInUse && caddy_answers => Check::pass(
            name,
            format!("{listen} is in use while Caddy answers its admin API (taken to be Caddy's)"),
        ),
        Err(e) if e.kind() == ErrorKind::AddrInUse => Check::fail(
            name,
            format!("{listen} is in use by another program"),
            format!("stop it (ss -ltnp 'sport = :{port}' names it) or choose another address"),
        ),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Check::pass(
            name,
            format!(
                "{listen} is free but this user may not bind it; Caddy may (Debian's caddy \
                 package grants it CAP_NET_BIND_SERVICE)"
            ),
        ),
        Err(e) => Check::fail(name, format!("{listen}: {e}"), "check the address"),
    }
}

fn data_dir(dir: &Path) -> Check {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Check::pass(
                "data dir",
                format!(
                    "{} does not exist yet; the server makes it 0700",
                    dir.display()
                ),
            );
        }
        Err(e) => {
            return Check::fail(
                "data dir",
                format!("{}: {e}", dir.display()),
                "make it readable by the server's user",
            );
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Check::fail(
            "data dir",
            format!(
                "{} is {mode:04o}: other users can read the ledger, keys and backups",
                dir.display()
            ),
            format!("chmod 700 {}", dir.display()),
        );
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Check::fail(
            "data dir",
            format!(
                "{} belongs to uid {}, not to this user (uid {me})",
                dir.display(),
                meta.uid()
            ),
            format!("chown -R the server's user {}", dir.display()),
        );
    }
    match free_bytes(dir) {
        Some(free) if free < MIN_FREE_BYTES => Check::fail(
            "data dir",
            format!(
                "{} has {} MiB free: builds, logs and backups need room",
                dir.display(),
                free / (1024 * 1024)
            ),
            "free at least 1 GiB on its file system",
        ),
        Some(free) => Check::pass(
            "data dir",
            format!(
                "{} is 0700, {} GiB free",
                dir.display(),
                free / (1024 * 1024 * 1024)
            ),
        ),
        None => Check::pass("data dir", format!("{} is 0700", dir.display())),
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a valid out-pointer for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

fn ledger_check(
    path: &Path,
    summary: &Result<Option<inspect::Summary>, rustploy_actors::ledger::LedgerError>,
) -> Check {
    match summary {
        Ok(None) => Check::pass(
            "ledger",
            format!("{} does not exist yet; the server makes it", path.display()),
        ),
        Ok(Some(s)) if s.schema_version > SCHEMA_VERSION => Check::fail(
            "ledger",
            format!(
                "{} is at schema version {}, newer than this build's {SCHEMA_VERSION}",
                path.display(),
                s.schema_version
            ),
            "run the release that wrote it, or a newer one",
        ),
        Ok(Some(s)) if s.schema_version < SCHEMA_VERSION => Check::pass(
            "ledger",
            format!(
                "{} is at schema version {}; the server copies it to backups/ and migrates it \
                 to {SCHEMA_VERSION} at its next start",
                path.display(),
                s.schema_version
            ),
        ),
        Ok(Some(_)) => Check::pass(
            "ledger",
            format!("{} is at schema version {SCHEMA_VERSION}", path.display()),
        ),
        Err(e) => Check::fail(
            "ledger",
            format!("{} cannot be read: {e}", path.display()),
            "restore it from a backup (rustploy-server backup makes one)",
        ),
    }
}

fn secret_key(dir: &Path, ledger: Option<&inspect::Summary>) -> Check {
    let env_key = std::env::var("RUSTPLOY_SECRET_KEY").ok();
    let file = dir.join("secret.key");
    let sample = ledger.and_then(|l| l.sealed_sample.as_ref());
    if env_key.is_none() && !file.exists() {
        return match sample {
            None => Check::pass(
                "secret key",
                "none yet; the server makes secret.key at its first start",
            ),
            Some(_) => Check::fail(
                "secret key",
                format!(
                    "the ledger holds sealed values but {} is missing",
                    file.display()
                ),
                "restore secret.key from the backup it was kept with, or set RUSTPLOY_SECRET_KEY",
            ),
        };
    }
    if env_key.is_none()
        && let Ok(meta) = std::fs::metadata(&file)
        && meta.permissions().mode() & 0o077 != 0
    {
        return Check::fail(
            "secret key",
            format!(
                "{} is {:04o}: other users can read it",
                file.display(),
                meta.permissions().mode() & 0o777
            ),
            format!("chmod 600 {}", file.display()),
        );
    }
    let key = match SecretBox::load(dir, env_key.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            return Check::fail(
                "secret key",
                e.to_string(),
                "restore the key from your backup (64 hex characters)",
            );
        }
    };
    let from = if env_key.is_some() {
        "RUSTPLOY_SECRET_KEY".to_string()
    } else {
        file.display().to_string()
    };
    match sample {
        None => Check::pass(
            "secret key",
            format!("{from} is valid (no sealed values to try it on)"),
        ),
        Some(s) => match key.open_string(&env_context(s.app_id, &s.key), &s.value_enc) {
            Ok(_) => Check::pass(
                "secret key",
                format!("{from} opens the ledger's sealed values"),
            ),
            Err(_) => Check::fail(
                "secret key",
                format!("{from} does not open the ledger's sealed values: it is another key"),
                "put back the key this ledger was written with",
            ),
        },
    }
}

fn clock(ledger: Option<&inspect::Summary>) -> Check {
    let now = now_ms();
    let newest = ledger.and_then(|l| l.newest_record_at);
    match newest {
        Some(newest) if newest > now + 60_000 => Check::fail(
            "clock",
            format!(
                "the clock is {} s behind the ledger's newest record: leases, retries and \
                 sessions would misbehave",
                (newest - now) / 1000
            ),
            "set the time right (timedatectl set-ntp true, or your NTP client)",
        ),
        _ => {
            let synced = std::process::Command::new("timedatectl")
                .args(["show", "-p", "NTPSynchronized", "--value"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "yes");
            match synced {
                Some(false) => Check::fail(
                    "clock",
                    "the clock is not synchronised (timedatectl)",
                    "timedatectl set-ntp true",
                ),
                Some(true) => {
                    Check::pass("clock", "synchronised, and ahead of the ledger's records")
                }
                None => Check::pass("clock", "ahead of the ledger's newest record"),
            }
        }
    }
}

async fn dns(settings: &Settings) -> Check {
    let Some((base, _)) = &settings.base_domain else {
        return Check::skip("dns", "no --base-domain");
    };
    // Any name under the base domain: apps are served at <name>.<base domain>.
    let host = format!("rustploy-doctor.{base}");
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host((host.as_str(), 443))).await {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            Check::pass("dns", format!("*.{base} resolves to {}", ips.join(", ")))
        }
        Ok(Err(e)) => Check::fail(
            "dns",
            format!("{host} does not resolve ({e})"),
            format!("add a wildcard record *.{base} (A/AAAA) pointing at this server"),
        ),
        Err(_) => Check::fail(
            "dns",
            format!("resolving {host} took over {} s", PROBE_TIMEOUT.as_secs()),
            "check the resolver in /etc/resolv.conf",
        ),
    }
}
