//! Command line and settings. Each setting is layered: built-in default, then `rustploy.toml`,
//! then its `RUSTPLOY_*` environment variable, then its flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rustploy_actors::ingress::{IngressConfig, Lookup, TlsMode};
use rustploy_actors::router_sync::RouterSettings;
use serde::Deserialize;

use crate::domain::DomainName;
use crate::http::client::TrustedProxies;

#[derive(Debug, Parser)]
#[command(
    name = "rustploy-server",
    version,
    about = "Rustploy: a self-hosted platform-as-a-service"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Settings file (TOML). Default: ./rustploy.toml when it exists.
    #[arg(long, global = true, env = "RUSTPLOY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the ledger, repositories and keys live. Default: ./rustploy-data
    #[arg(long, global = true, env = "RUSTPLOY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

// Parsed once at start-up: the size of `Serve` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Manage users and tokens from the host.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Apply pending ledger migrations and exit.
    Migrate,
    /// Copy the ledger to PATH with SQLite's online backup (safe while the server runs).
    Backup { path: PathBuf },
    /// Check the host (Docker, compose, Caddy, ports, the data dir, the secret key, the clock,
    /// DNS) with the settings `serve` would use (it takes the same flags) and say what to fix;
    /// exits 0 only when every check passes. Changes nothing.
    Doctor(ServeArgs),
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Address the API and dashboard listen on. Default: 127.0.0.1:8080
    #[arg(long, env = "RUSTPLOY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The URL people reach the dashboard at, used in links the server prints.
    #[arg(long, env = "RUSTPLOY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How apps are routed: `managed` (run `caddy` as a child process), `external` (a Caddy
    /// you run, reached at --caddy-admin), or `off`. Default: external when --caddy-admin is
    /// given, else off.
    #[arg(long, env = "RUSTPLOY_CADDY", value_parser = ["off", "managed", "external"])]
    pub caddy: Option<String>,
    /// Caddy's admin endpoint. Default: http://127.0.0.1:2019
    #[arg(long, env = "RUSTPLOY_CADDY_ADMIN")]
    pub caddy_admin: Option<String>,
    /// The caddy binary `--caddy managed` runs. Default: caddy (from PATH)
    #[arg(long, env = "RUSTPLOY_CADDY_BIN")]
    pub caddy_bin: Option<PathBuf>,
    /// Where Caddy serves apps over HTTP, as [host]:port. Default: :80
    #[arg(long, env = "RUSTPLOY_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Where Caddy serves apps over HTTPS, as [host]:port. Default: :443
    #[arg(long, env = "RUSTPLOY_HTTPS_LISTEN")]
    pub https_listen: Option<String>,
    /// Every app also answers at <app>.<base domain>.
    #[arg(long, env = "RUSTPLOY_BASE_DOMAIN")]
    pub base_domain: Option<String>,
    /// TLS of the base-domain hosts: auto, internal or off. Default: auto
    #[arg(long, env = "RUSTPLOY_BASE_DOMAIN_TLS")]
    pub base_domain_tls: Option<String>,
    /// The dashboard's own host, routed through Caddy to this server.
    #[arg(long, env = "RUSTPLOY_DASHBOARD_DOMAIN")]
    pub dashboard_domain: Option<String>,
    /// TLS of the dashboard's host: auto, internal or off. Default: auto
    #[arg(long, env = "RUSTPLOY_DASHBOARD_TLS")]
    pub dashboard_tls: Option<String>,
    /// How long a replaced release keeps running after traffic moved to the new one, in
    /// seconds. Default: 10
    #[arg(long, env = "RUSTPLOY_DRAIN_SECS")]
    pub drain_secs: Option<u64>,
    /// The image new postgres services run. Default: postgres:17
    #[arg(long, env = "RUSTPLOY_POSTGRES_IMAGE")]
    pub postgres_image: Option<String>,
    /// The image new redis services run. Default: redis:7
    #[arg(long, env = "RUSTPLOY_REDIS_IMAGE")]
    pub redis_image: Option<String>,
    /// The image new mariadb (mysql) services run. Default: mariadb:11
    #[arg(long, env = "RUSTPLOY_MARIADB_IMAGE")]
    pub mariadb_image: Option<String>,
    /// How many finished backups of each service are kept. Default: 7
    #[arg(long, env = "RUSTPLOY_BACKUP_RETENTION")]
    pub backup_retention: Option<u32>,
    /// How long RouterSync gathers changes before one load into Caddy, in ms. Default: 50
    #[arg(long, env = "RUSTPLOY_ROUTER_DEBOUNCE_MS")]
    pub router_debounce_ms: Option<u64>,
    /// How often RouterSync compares Caddy's live configuration with its own, in ms. Default: 2000
    #[arg(long, env = "RUSTPLOY_ROUTER_CHECK_MS")]
    pub router_check_ms: Option<u64>,
    /// How long Caddy keeps the address of an app's live release before looking it up again,
    /// in ms: a redeploy's switch takes at most this long. Default: 100
    #[arg(long, env = "RUSTPLOY_ROUTE_REFRESH_MS")]
    pub route_refresh_ms: Option<u64>,
    /// How many apps may deploy at the same time. Default: 2
    #[arg(long, env = "RUSTPLOY_DEPLOY_CONCURRENCY")]
    pub deploy_concurrency: Option<usize>,
    /// How long a claimed job's lease lasts before another worker may take it over. Default: 60
    #[arg(long, env = "RUSTPLOY_JOB_LEASE_SECS")]
    pub job_lease_secs: Option<u64>,
    /// How often the job queue sweeps the ledger as a safety net. Default: 30
    #[arg(long, env = "RUSTPLOY_JOB_SWEEP_SECS")]
    pub job_sweep_secs: Option<u64>,
    /// Delay before the first retry of a failed job; later ones double. Default: 2000
    #[arg(long, env = "RUSTPLOY_JOB_RETRY_BASE_MS")]
    pub job_retry_base_ms: Option<u64>,
    /// How long shutdown waits for running work. Default: 20
    #[arg(long, env = "RUSTPLOY_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// How often agents are checked for missed heartbeats. Default: 5000
    #[arg(long, env = "RUSTPLOY_HEARTBEAT_TICK_MS")]
    pub heartbeat_tick_ms: Option<u64>,
    /// Where password reset mails go out: smtp://user:pass@host:587?tls=required (STARTTLS),
    /// smtps://user:pass@host:465 (TLS), or smtp://host:25 (plain, for a relay on this host).
    /// Without it, reset links are written to the server log.
    #[arg(long, env = "RUSTPLOY_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The From address of mails. Default: rustploy@<public URL host>
    #[arg(long, env = "RUSTPLOY_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Allow importing `file://` URLs and absolute paths (for tests and single-host setups).
    #[arg(long, env = "RUSTPLOY_ALLOW_LOCAL_REPOS")]
    pub allow_local_repos: bool,
    /// Prefix of every compose project, volume and image this server creates. Default: rp
    #[arg(long, env = "RUSTPLOY_PROJECT_PREFIX")]
    pub project_prefix: Option<String>,
    /// The Docker bridge network routed services join (created when missing). Default: rustploy
    #[arg(long, env = "RUSTPLOY_DOCKER_NETWORK")]
    pub docker_network: Option<String>,
    /// The longest a deployment's build (and its start) may take, in seconds. Default: 900
    #[arg(long, env = "RUSTPLOY_BUILD_TIMEOUT_SECS")]
    pub build_timeout_secs: Option<u64>,
    /// How long a new release has to become healthy, in seconds. Default: 120
    #[arg(long, env = "RUSTPLOY_HEALTH_DEADLINE_SECS")]
    pub health_deadline_secs: Option<u64>,
    /// The longest one git command may take, in seconds. Default: 300
    #[arg(long, env = "RUSTPLOY_GIT_TIMEOUT_SECS")]
    pub git_timeout_secs: Option<u64>,
    /// How long a replaced release's containers get to stop, in seconds (0: kill). Default: 10
    #[arg(long, env = "RUSTPLOY_STOP_GRACE_SECS")]
    pub stop_grace_secs: Option<u64>,
    /// Webhook deliveries accepted per minute from one source address (a token bucket that
    /// holds a minute's worth); beyond it the answer is 429 with Retry-After. Default: 300
    #[arg(long, env = "RUSTPLOY_WEBHOOK_RATE_PER_MINUTE")]
    pub webhook_rate_per_minute: Option<u32>,
    /// Proxies whose X-Forwarded-For is believed, as IP addresses or networks (comma-separated,
    /// e.g. 10.0.0.0/8,192.0.2.7). With --caddy managed or external, this host's loopback
    /// addresses are trusted too. Default: none
    #[arg(long, env = "RUSTPLOY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Who sees /metrics and the details of /readyz: `loopback` (clients on this host, or a
    /// token with the read scope), `token` (only such a token), or `public`. Default: loopback
    #[arg(long, env = "RUSTPLOY_OPS_ACCESS", value_parser = ["loopback", "token", "public"])]
    pub ops_access: Option<String>,
    /// Deployments kept per app, with their logs; the live release and the one a rollback would
    /// take are kept besides. Default: 50
    #[arg(long, env = "RUSTPLOY_KEEP_DEPLOYMENTS")]
    pub keep_deployments: Option<u32>,
    /// Days token audit events are kept. Default: 90
    #[arg(long, env = "RUSTPLOY_AUDIT_DAYS")]
    pub audit_days: Option<u32>,
    /// Days handled webhook deliveries are kept. Default: 30
    #[arg(long, env = "RUSTPLOY_DELIVERIES_DAYS")]
    pub deliveries_days: Option<u32>,
    /// Days finished jobs are kept (the newest of each kind per app stays). Default: 7
    #[arg(long, env = "RUSTPLOY_JOBS_DAYS")]
    pub jobs_days: Option<u32>,
    /// Days an agent that registered again is kept after it went offline. Default: 30
    #[arg(long, env = "RUSTPLOY_AGENTS_DAYS")]
    pub agents_days: Option<u32>,
    /// How often retention runs, in seconds (and once at start). Default: 600
    #[arg(long, env = "RUSTPLOY_HOUSEKEEPING_SECS")]
    pub housekeeping_secs: Option<u64>,
    /// Memory for webhook bodies being read or waiting to be checked, in MiB, shared by all
    /// requests; a request that does not fit is answered 503 with Retry-After. Default: 64
    #[arg(long, env = "RUSTPLOY_WEBHOOK_MEMORY_MIB")]
    pub webhook_memory_mib: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user. The password is read from standard input.
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["owner", "maintainer", "viewer"])]
        role: String,
        /// Read the password from standard input (required: passwords never go in arguments).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Create an API token and print it once.
    CreateToken {
        #[arg(long)]
        name: String,
        /// Comma-separated: read, deploy, admin, agent.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Days until the token expires. Default: never.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Print a new one-time setup link for creating the owner (only while no user exists).
    SetupLink,
    /// Print a one-time password reset link for a user.
    ResetPassword {
        #[arg(long)]
        email: String,
    },
}

/// `rustploy.toml`: the same settings as the flags, all optional. Unknown keys are refused so
/// that a typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    pub caddy: Option<String>,
    pub caddy_admin: Option<String>,
    pub caddy_bin: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub https_listen: Option<String>,
    pub base_domain: Option<String>,
    pub base_domain_tls: Option<String>,
    pub dashboard_domain: Option<String>,
    pub dashboard_tls: Option<String>,
    pub drain_secs: Option<u64>,
    pub postgres_image: Option<String>,
    pub redis_image: Option<String>,
    pub mariadb_image: Option<String>,
    pub backup_retention: Option<u32>,
    pub router_debounce_ms: Option<u64>,
    pub router_check_ms: Option<u64>,
    pub route_refresh_ms: Option<u64>,
    pub deploy_concurrency: Option<usize>,
    pub job_lease_secs: Option<u64>,
    pub job_sweep_secs: Option<u64>,
    pub job_retry_base_ms: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub heartbeat_tick_ms: Option<u64>,
    pub smtp_url: Option<String>,
    pub smtp_from: Option<String>,
    pub allow_local_repos: Option<bool>,
    pub project_prefix: Option<String>,
    pub docker_network: Option<String>,
    pub build_timeout_secs: Option<u64>,
    pub health_deadline_secs: Option<u64>,
    pub git_timeout_secs: Option<u64>,
    pub stop_grace_secs: Option<u64>,
    pub webhook_rate_per_minute: Option<u32>,
    pub trusted_proxies: Option<Vec<String>>,
    pub ops_access: Option<String>,
    pub keep_deployments: Option<u32>,
    pub audit_days: Option<u32>,
    pub deliveries_days: Option<u32>,
    pub jobs_days: Option<u32>,
    pub agents_days: Option<u32>,
    pub housekeeping_secs: Option<u64>,
    pub webhook_memory_mib: Option<u32>,
}

impl FileConfig {
    /// Reads `explicit`, or `./rustploy.toml` when it exists.
    pub fn load(explicit: Option<&Path>) -> Result<Self, String> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("rustploy.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(e) => return Err(format!("cannot read settings file {}: {e}", path.display())),
        };
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().to_string();
            format!("settings file {} is invalid: {msg}", path.display())
        })
    }
}

/// The resolved settings of a running server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub public_url: String,
    pub caddy: CaddyMode,
    pub caddy_admin: String,
    pub caddy_bin: PathBuf,
    pub http_listen: String,
    pub https_listen: String,
    pub base_domain: Option<(DomainName, TlsMode)>,
    pub dashboard: Option<(DomainName, TlsMode)>,
    pub drain: Duration,
    pub services: rustploy_actors::services::ServiceSettings,
    pub router_debounce: Duration,
    pub router_check: Duration,
    pub route_refresh: Duration,
    pub deploy_concurrency: usize,
    pub job_lease: Duration,
    pub job_sweep: Duration,
    pub job_retry_base: Duration,
    pub shutdown_grace: Duration,
    pub heartbeat_tick: Duration,
    pub smtp: Option<Smtp>,
    pub allow_local_repos: bool,
    pub project_prefix: String,
    pub docker_network: String,
    pub build_timeout: Duration,
    pub health_deadline: Duration,
    pub git_timeout: Duration,
    pub stop_grace: Duration,
    /// Webhook deliveries per minute and source address.
    pub webhook_rate_per_minute: u32,
    /// What the Housekeeper deletes, and when.
    pub retention: rustploy_actors::ledger::retention::RetentionConfig,
    pub housekeeping_every: Duration,
    /// Whose X-Forwarded-For tells the client's address.
    pub trusted_proxies: TrustedProxies,
    /// Who sees /metrics and the details of /readyz.
    pub ops_access: OpsAccess,
    /// Bytes of webhook bodies held at once (being read or waiting to be checked).
    pub webhook_memory: usize,
}

/// Who sees the operations details (`/metrics`, the components of `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsAccess {
    /// Clients on this host, or a token with the read scope.
    Loopback,
    /// Only a token with the read scope.
    Token,
    /// Everyone.
    Public,
}

/// How apps are routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaddyMode {
    Off,
    Managed,
    External,
}

/// A Caddy listen address: `[host]:port`.
fn listen_address(value: String, what: &str) -> Result<String, String> {
    let port_ok = rustploy_actors::ingress::listen_port(&value).is_some_and(|p| p > 0);
    if port_ok && !value.contains(['/', ' ']) {
        Ok(value)
    } else {
        Err(format!(
            "{what} must be [host]:port, such as :80 or 127.0.0.1:8080; got '{value}'"
        ))
    }
}

/// A host and its TLS mode (`custom` needs files, so it is not offered here).
fn host_with_tls(
    host: Option<String>,
    tls: Option<String>,
    what: &str,
) -> Result<Option<(DomainName, TlsMode)>, String> {
    let Some(host) = host else { return Ok(None) };
    let host = DomainName::parse(&host).map_err(|e| format!("{what}: {e}"))?;
    let tls = tls.as_deref().unwrap_or("auto");
    let tls = tls
        .parse::<TlsMode>()
        .ok()
        .filter(|m| *m != TlsMode::Custom)
        .ok_or_else(|| format!("{what} TLS must be auto, internal or off; got '{tls}'"))?;
    if host.is_wildcard() {
        return Err(format!("{what} must be a single hostname, not a wildcard"));
    }
    Ok(Some((host, tls)))
}

/// Outgoing mail. The URL may hold a password, so it is never printed.
#[derive(Clone)]
pub struct Smtp {
    pub url: String,
    pub from: String,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub fn resolve(
        global: &GlobalArgs,
        serve: &ServeArgs,
        file: FileConfig,
    ) -> Result<Self, String> {
        let listen = serve
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid default"));
        let dashboard = host_with_tls(
            serve.dashboard_domain.clone().or(file.dashboard_domain),
            serve.dashboard_tls.clone().or(file.dashboard_tls),
            "the dashboard domain",
        )?;
        // People reach the dashboard at its own domain when it has one, so links the server
        // prints (the setup link above all) name that, not the loopback listener.
        let public_url = serve
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_else(|| match &dashboard {
                Some((host, TlsMode::Off)) => format!("http://{host}"),
                Some((host, _)) => format!("https://{host}"),
                None => format!("http://{listen}"),
            });
        let public_url = public_url.trim_end_matches('/').to_string();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(format!(
                "public URL must start with http:// or https://, got {public_url}"
            ));
        }
        let deploy_concurrency = serve
            .deploy_concurrency
            .or(file.deploy_concurrency)
            .unwrap_or(2);
        if deploy_concurrency == 0 {
            return Err("deploy concurrency must be at least 1".into());
        }
        let secs = |flag: Option<u64>, file: Option<u64>, default: u64, what: &str| {
            let v = flag.or(file).unwrap_or(default);
            if v == 0 {
                Err(format!("{what} must be greater than 0"))
            } else {
                Ok(v)
            }
        };
        let smtp = match serve.smtp_url.clone().or(file.smtp_url) {
            None => None,
            Some(url) => {
                if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                    return Err("the SMTP URL must start with smtp:// or smtps://".into());
                }
                let host = public_url.split("://").nth(1).unwrap_or("localhost");
                let host = host.split([':', '/']).next().unwrap_or("localhost");
                let from = serve
                    .smtp_from
                    .clone()
                    .or(file.smtp_from)
                    .unwrap_or_else(|| format!("rustploy@{host}"));
                Some(Smtp { url, from })
            }
        };
        let project_prefix = serve
            .project_prefix
            .clone()
            .or(file.project_prefix)
            .unwrap_or_else(|| "rp".into());
        let prefix_ok = (1..=20).contains(&project_prefix.len())
            && project_prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && project_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !prefix_ok {
            return Err(format!(
                "project prefix '{project_prefix}' must be 1 to 20 lowercase letters, digits and \
                 hyphens, starting with a letter"
            ));
        }
        let docker_network = serve
            .docker_network
            .clone()
            .or(file.docker_network)
            .unwrap_or_else(|| "rustploy".into());
        let network_ok = (1..=64).contains(&docker_network.len())
            && docker_network.starts_with(|c: char| c.is_ascii_alphanumeric())
            && docker_network
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !network_ok {
            return Err(format!(
                "docker network '{docker_network}' must be 1 to 64 letters, digits, '_', '.' and '-', \
                 starting with a letter or digit"
            ));
        }
        let build_timeout = Duration::from_secs(secs(
            serve.build_timeout_secs,
            file.build_timeout_secs,
            900,
            "build timeout",
        )?);
        let health_deadline = Duration::from_secs(secs(
            serve.health_deadline_secs,
            file.health_deadline_secs,
            120,
            "health deadline",
        )?);
        let git_timeout = Duration::from_secs(secs(
            serve.git_timeout_secs,
            file.git_timeout_secs,
            300,
            "git timeout",
        )?);
        let stop_grace =
            Duration::from_secs(serve.stop_grace_secs.or(file.stop_grace_secs).unwrap_or(10));
        let webhook_rate_per_minute = secs(
            serve.webhook_rate_per_minute.map(u64::from),
            file.webhook_rate_per_minute.map(u64::from),
            300,
            "webhook rate per minute",
        )? as u32;
        let days = |flag: Option<u32>, file: Option<u32>, default: u64, what: &str| {
            secs(flag.map(u64::from), file.map(u64::from), default, what)
                .map(|d| Duration::from_secs(d * 24 * 3600))
        };
        let retention = rustploy_actors::ledger::retention::RetentionConfig {
            keep_deployments: secs(
                serve.keep_deployments.map(u64::from),
                file.keep_deployments.map(u64::from),
                50,
                "deployments kept per app",
            )? as usize,
            audit_for: days(serve.audit_days, file.audit_days, 90, "audit days")?,
            deliveries_for: days(
                serve.deliveries_days,
                file.deliveries_days,
                30,
                "deliveries days",
            )?,
            jobs_for: days(serve.jobs_days, file.jobs_days, 7, "jobs days")?,
            agents_for: days(serve.agents_days, file.agents_days, 30, "agents days")?,
            ..Default::default()
        };
        let housekeeping_every = Duration::from_secs(secs(
            serve.housekeeping_secs,
            file.housekeeping_secs,
            600,
            "housekeeping interval",
        )?);
        let webhook_memory = secs(
            serve.webhook_memory_mib.map(u64::from),
            file.webhook_memory_mib.map(u64::from),
            64,
            "webhook memory (MiB)",
        )? as usize
            * 1024
            * 1024;
        let caddy_admin = serve.caddy_admin.clone().or(file.caddy_admin);
        let caddy = match serve.caddy.clone().or(file.caddy).as_deref() {
            Some("managed") => CaddyMode::Managed,
            Some("external") => CaddyMode::External,
            Some("off") => CaddyMode::Off,
            Some(other) => {
                return Err(format!(
                    "caddy must be off, managed or external; got '{other}'"
                ));
            }
            None if caddy_admin.is_some() => CaddyMode::External,
            None => CaddyMode::Off,
        };
        let mut trusted_proxies = TrustedProxies::parse(
            &serve
                .trusted_proxies
                .clone()
                .or(file.trusted_proxies)
                .unwrap_or_default(),
        )?;
        if caddy != CaddyMode::Off {
            // The Caddy RouterSync drives reaches the dashboard at the listen address (loopback
            // when it is unspecified), so when it runs on this host (always, when managed) its
            // connections come from here. Trusting them is harmless otherwise: only this
            // host's own processes connect from these addresses.
            for net in ["127.0.0.0/8", "::1/128"] {
                trusted_proxies.add(net.parse().expect("a valid network"));
            }
            if !listen.ip().is_unspecified() {
                trusted_proxies.add(listen.ip().into());
            }
        }
        let ops_access = match serve.ops_access.clone().or(file.ops_access).as_deref() {
            None | Some("loopback") => OpsAccess::Loopback,
            Some("token") => OpsAccess::Token,
            Some("public") => OpsAccess::Public,
            Some(other) => {
                return Err(format!(
                    "ops access must be loopback, token or public; got '{other}'"
                ));
            }
        };
        let caddy_admin = caddy_admin
            .unwrap_or_else(|| "http://127.0.0.1:2019".into())
            .trim_end_matches('/')
            .to_string();
        if rustploy_actors::ingress::admin::listen_of(&caddy_admin).is_none() {
            return Err(format!(
                "the Caddy admin endpoint must be an http:// URL with a host and port, such as \
                 http://127.0.0.1:2019; got '{caddy_admin}'"
            ));
        }
        let http_listen = listen_address(
            serve
                .http_listen
                .clone()
                .or(file.http_listen)
                .unwrap_or_else(|| ":80".into()),
            "the HTTP listen address",
        )?;
        let https_listen = listen_address(
            serve
                .https_listen
                .clone()
                .or(file.https_listen)
                .unwrap_or_else(|| ":443".into()),
            "the HTTPS listen address",
        )?;
        let base_domain = host_with_tls(
            serve.base_domain.clone().or(file.base_domain),
            serve.base_domain_tls.clone().or(file.base_domain_tls),
            "the base domain",
        )?;
        let router_debounce = Duration::from_millis(
            serve
                .router_debounce_ms
                .or(file.router_debounce_ms)
                .unwrap_or(50),
        );
        let router_check = Duration::from_millis(secs(
            serve.router_check_ms,
            file.router_check_ms,
            2000,
            "router check interval",
        )?);
        let route_refresh = Duration::from_millis(secs(
            serve.route_refresh_ms,
            file.route_refresh_ms,
            100,
            "route refresh interval",
        )?);
        Ok(Self {
            caddy,
            caddy_bin: serve
                .caddy_bin
                .clone()
                .or(file.caddy_bin)
                .unwrap_or_else(|| PathBuf::from("caddy")),
            http_listen,
            https_listen,
            base_domain,
            dashboard,
            drain: Duration::from_secs(serve.drain_secs.or(file.drain_secs).unwrap_or(10)),
            services: {
                let d = rustploy_actors::services::ServiceSettings::default();
                rustploy_actors::services::ServiceSettings {
                    postgres_image: serve
                        .postgres_image
                        .clone()
                        .or(file.postgres_image)
                        .unwrap_or(d.postgres_image),
                    redis_image: serve
                        .redis_image
                        .clone()
                        .or(file.redis_image)
                        .unwrap_or(d.redis_image),
                    mariadb_image: serve
                        .mariadb_image
                        .clone()
                        .or(file.mariadb_image)
                        .unwrap_or(d.mariadb_image),
                    backup_retention: serve
                        .backup_retention
                        .or(file.backup_retention)
                        .unwrap_or(d.backup_retention)
                        .max(1),
                    backup_timeout: d.backup_timeout,
                }
            },
            router_debounce,
            router_check,
            route_refresh,
            webhook_rate_per_minute,
            trusted_proxies,
            ops_access,
            retention,
            housekeeping_every,
            webhook_memory,
            smtp,
            allow_local_repos: serve.allow_local_repos || file.allow_local_repos.unwrap_or(false),
            project_prefix,
            docker_network,
            build_timeout,
            health_deadline,
            git_timeout,
            stop_grace,
            data_dir: global
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("rustploy-data")),
            listen,
            public_url,
            caddy_admin,
            deploy_concurrency,
            job_lease: Duration::from_secs(secs(
                serve.job_lease_secs,
                file.job_lease_secs,
                60,
                "job lease",
            )?),
            job_sweep: Duration::from_secs(secs(
                serve.job_sweep_secs,
                file.job_sweep_secs,
                30,
                "job sweep",
            )?),
            job_retry_base: Duration::from_millis(secs(
                serve.job_retry_base_ms,
                file.job_retry_base_ms,
                2000,
                "job retry base",
            )?),
            shutdown_grace: Duration::from_secs(secs(
                serve.shutdown_grace_secs,
                file.shutdown_grace_secs,
                20,
                "shutdown grace",
            )?),
            heartbeat_tick: Duration::from_millis(secs(
                serve.heartbeat_tick_ms,
                file.heartbeat_tick_ms,
                5000,
                "heartbeat tick",
            )?),
        })
    }

    /// How the Deployers work on this host.
    pub fn deploy_config(&self) -> rustploy_actors::deploy::DeployConfig {
        rustploy_actors::deploy::DeployConfig {
            data_dir: self.data_dir.clone(),
            project_prefix: self.project_prefix.clone(),
            network: self.docker_network.clone(),
            build_timeout: self.build_timeout,
            health_deadline: self.health_deadline,
            git_timeout: self.git_timeout,
            allow_local_repos: self.allow_local_repos,
            stop_grace: self.stop_grace,
            drain: self.drain,
            services: self.services.clone(),
        }
    }

    /// Caddy's storage, home and base Caddyfile, under the data directory.
    pub fn caddy_dir(&self) -> PathBuf {
        self.data_dir.join("caddy")
    }

    /// Where Caddy checks for the file that makes it close keep-alive connections before a
    /// load (see `IngressConfig::closing_flag`).
    pub fn closing_flag(&self) -> PathBuf {
        self.caddy_dir().join("flags").join("closing")
    }

    /// Where the route lookup listened last time: a restarted server takes the same port back
    /// when it can, so Caddy's configuration stays the same.
    pub fn lookup_port_file(&self) -> PathBuf {
        self.caddy_dir().join("lookup-port")
    }

    /// What RouterSync routes and how. `server` is where this server listens (the dashboard's
    /// upstream); `lookup` is where Caddy looks each app's live release up.
    pub fn router_settings(&self, server: SocketAddr, lookup: Option<Lookup>) -> RouterSettings {
        let admin_listen = rustploy_actors::ingress::admin::listen_of(&self.caddy_admin)
            .expect("checked when the settings were resolved");
        let ingress = (self.caddy != CaddyMode::Off).then(|| IngressConfig {
            admin_listen,
            http_listen: self.http_listen.clone(),
            https_listen: self.https_listen.clone(),
            storage_root: self.caddy_dir().join("storage"),
            grace: self.drain,
            try_duration: Duration::from_secs(5),
            lookup,
            closing_flag: Some(self.closing_flag()),
        });
        let dial = if server.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), server.port())
        } else {
            server
        };
        RouterSettings {
            ingress,
            base_domain: self
                .base_domain
                .as_ref()
                .map(|(d, tls)| (d.to_string(), *tls)),
            dashboard: self
                .dashboard
                .as_ref()
                .map(|(d, tls)| (d.to_string(), *tls, dial.to_string())),
            debounce: self.router_debounce,
            check_every: self.router_check,
            caddy_outlives_server: self.caddy == CaddyMode::External,
        }
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.data_dir.join("rustploy.db")
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("rustploy-server").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let cli = parse(&["serve", "--listen", "127.0.0.1:9999"]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve")
        };
        let file: FileConfig =
            toml::from_str("listen = '127.0.0.1:7777'\ndeploy_concurrency = 5").unwrap();
        let s = Settings::resolve(&cli.global, &serve, file).unwrap();
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.deploy_concurrency, 5);
        assert_eq!(s.job_lease, Duration::from_secs(60));
        assert_eq!(s.public_url, "http://127.0.0.1:9999");
    }

    #[test]
    fn the_public_url_defaults_to_the_dashboard_domain_when_there_is_one() {
        let resolve = |args: &[&str], file: &str| {
            let cli = parse(args);
            let Some(Command::Serve(serve)) = cli.command else {
                panic!("serve")
            };
            Settings::resolve(&cli.global, &serve, toml::from_str(file).unwrap())
                .unwrap()
                .public_url
        };
        assert_eq!(resolve(&["serve"], ""), "http://127.0.0.1:8080");
        assert_eq!(
            resolve(&["serve"], "dashboard_domain = 'paas.example.com'"),
            "https://paas.example.com"
        );
        assert_eq!(
            resolve(
                &["serve", "--dashboard-tls", "off"],
                "dashboard_domain = 'paas.example.com'"
            ),
            "http://paas.example.com"
        );
        assert_eq!(
            resolve(
                &["serve", "--public-url", "https://ops.example.com/"],
                "dashboard_domain = 'paas.example.com'"
            ),
            "https://ops.example.com"
        );
    }

    #[test]
    fn deploy_settings_have_defaults_and_are_checked() {
        let cli = parse(&["serve"]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve")
        };
        let s = Settings::resolve(&cli.global, &serve, FileConfig::default()).unwrap();
        assert_eq!(s.project_prefix, "rp");
        assert_eq!(s.docker_network, "rustploy");
        assert!(!s.allow_local_repos);
        assert_eq!(s.health_deadline, Duration::from_secs(120));
        assert_eq!(s.stop_grace, Duration::from_secs(10));
        let cli = parse(&["serve", "--allow-local-repos", "--stop-grace-secs", "0"]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve")
        };
        let file: FileConfig = toml::from_str("project_prefix = 'rpt1'").unwrap();
        let s = Settings::resolve(&cli.global, &serve, file).unwrap();
        assert!(s.allow_local_repos);
        assert_eq!(s.project_prefix, "rpt1");
        assert_eq!(s.stop_grace, Duration::ZERO);
        for bad in [
            "project_prefix = 'RP'",
            "project_prefix = '-x'",
            "docker_network = 'a b'",
            "http_listen = '80'",
            "https_listen = ':0'",
            "base_domain = 'apps.example.com'\nbase_domain_tls = 'custom'",
            "dashboard_domain = '*.example.com'",
        ] {
            let file: FileConfig = toml::from_str(bad).unwrap();
            assert!(
                Settings::resolve(&cli.global, &serve, file).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_webhook_rate_has_a_default_layers_and_must_be_positive() {
        let cli = parse(&["serve"]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve")
        };
        let s = Settings::resolve(&cli.global, &serve, FileConfig::default()).unwrap();
        assert_eq!(s.webhook_rate_per_minute, 300);
        let file: FileConfig = toml::from_str("webhook_rate_per_minute = 50").unwrap();
        let s = Settings::resolve(&cli.global, &serve, file).unwrap();
        assert_eq!(s.webhook_rate_per_minute, 50);
        let cli = parse(&["serve", "--webhook-rate-per-minute", "0"]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve")
        };
        assert!(Settings::resolve(&cli.global, &serve, FileConfig::default()).is_err());
    }

    #[test]
    fn trusted_proxies_layer_and_the_managed_caddy_is_trusted() {
        let resolve = |args: &[&str], file: &str| {
            let cli = parse(args);
            let Some(Command::Serve(serve)) = cli.command else {
                panic!("serve")
            };
            Settings::resolve(&cli.global, &serve, toml::from_str(file).unwrap())
        };
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let s = resolve(&["serve"], "").unwrap();
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.ops_access, OpsAccess::Loopback);
        let s = resolve(
            &["serve"],
            "trusted_proxies = ['10.0.0.0/8']\nops_access = 'token'",
        )
        .unwrap();
        assert!(s.trusted_proxies.contains("10.1.1.1".parse().unwrap()));
        assert!(!s.trusted_proxies.contains(loopback));
        assert_eq!(s.ops_access, OpsAccess::Token);
        let s = resolve(
            &[
                "serve",
                "--trusted-proxies",
                "192.0.2.7,198.51.100.0/24",
                "--caddy",
                "managed",
            ],
            "trusted_proxies = ['10.0.0.0/8']",
        )
        .unwrap();
        assert!(
            !s.trusted_proxies.contains("10.1.1.1".parse().unwrap()),
            "the flag wins"
        );
        assert!(s.trusted_proxies.contains("198.51.100.3".parse().unwrap()));
        assert!(s.trusted_proxies.contains(loopback), "the managed Caddy");
        assert!(s.trusted_proxies.contains("::1".parse().unwrap()));
        let s = resolve(
            &["serve", "--caddy", "managed", "--listen", "192.0.2.10:8080"],
            "",
        )
        .unwrap();
        assert!(s.trusted_proxies.contains("192.0.2.10".parse().unwrap()));
        let err = resolve(&["serve", "--trusted-proxies", "10.0.0.0/40"], "").unwrap_err();
        assert!(err.contains("10.0.0.0/40"), "{err}");
        assert!(resolve(&["serve"], "ops_access = 'everyone'").is_err());
    }

    #[test]
    fn retention_settings_have_defaults_layer_and_must_be_positive() {
        let cli = parse(&["serve"]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve")
        };
        let s = Settings::resolve(&cli.global, &serve, FileConfig::default()).unwrap();
        assert_eq!(s.retention.keep_deployments, 50);
        assert_eq!(s.retention.audit_for, Duration::from_secs(90 * 86_400));
        assert_eq!(s.retention.deliveries_for, Duration::from_secs(30 * 86_400));
        assert_eq!(s.retention.jobs_for, Duration::from_secs(7 * 86_400));
        assert_eq!(s.retention.agents_for, Duration::from_secs(30 * 86_400));
        assert_eq!(s.housekeeping_every, Duration::from_secs(600));
        let cli = parse(&["serve", "--keep-deployments", "5", "--audit-days", "1"]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve")
        };
        let file: FileConfig =
            toml::from_str("keep_deployments = 9\njobs_days = 2\nhousekeeping_secs = 60").unwrap();
        let s = Settings::resolve(&cli.global, &serve, file).unwrap();
        assert_eq!(s.retention.keep_deployments, 5);
        assert_eq!(s.retention.audit_for, Duration::from_secs(86_400));
        assert_eq!(s.retention.jobs_for, Duration::from_secs(2 * 86_400));
        assert_eq!(s.housekeeping_every, Duration::from_secs(60));
        for bad in [
            "keep_deployments = 0",
            "audit_days = 0",
            "deliveries_days = 0",
            "jobs_days = 0",
            "agents_days = 0",
            "housekeeping_secs = 0",
        ] {
            let file: FileConfig = toml::from_str(bad).unwrap();
            let err = Settings::resolve(&cli.global, &ServeArgs::default(), file).unwrap_err();
            assert!(err.contains("must be greater than 0"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_webhook_memory_has_a_default_layers_and_must_be_positive() {
        let cli = parse(&["serve"]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve")
        };
        let s = Settings::resolve(&cli.global, &serve, FileConfig::default()).unwrap();
        assert_eq!(s.webhook_memory, 64 * 1024 * 1024);
        let file: FileConfig = toml::from_str("webhook_memory_mib = 128").unwrap();
        let s = Settings::resolve(&cli.global, &serve, file).unwrap();
        assert_eq!(s.webhook_memory, 128 * 1024 * 1024);
        let cli = parse(&["serve", "--webhook-memory-mib", "0"]);
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve")
        };
        assert!(Settings::resolve(&cli.global, &serve, FileConfig::default()).is_err());
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let err = toml::from_str::<FileConfig>("lisen = '1.2.3.4:5'").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
