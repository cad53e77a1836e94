//! Command line and settings. Each setting is layered: built-in default, then `rustploy.toml`,
//! then its `RUSTPLOY_*` environment variable, then its flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

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
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Address the API and dashboard listen on. Default: 127.0.0.1:8080
    #[arg(long, env = "RUSTPLOY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The URL people reach the dashboard at, used in links the server prints.
    #[arg(long, env = "RUSTPLOY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Caddy's admin endpoint. Default: http://127.0.0.1:2019
    #[arg(long, env = "RUSTPLOY_CADDY_ADMIN")]
    pub caddy_admin: Option<String>,
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
    pub caddy_admin: Option<String>,
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
    pub caddy_admin: String,
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
        let public_url = serve
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"));
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
        Ok(Self {
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
            caddy_admin: serve
                .caddy_admin
                .clone()
                .or(file.caddy_admin)
                .unwrap_or_else(|| "http://127.0.0.1:2019".into())
                .trim_end_matches('/')
                .to_string(),
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
        }
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.data_dir.join("rustploy.db")
    }
}

#[cfg(test)]
mod tests {
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
        ] {
            let file: FileConfig = toml::from_str(bad).unwrap();
            assert!(
                Settings::resolve(&cli.global, &serve, file).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let err = toml::from_str::<FileConfig>("lisen = '1.2.3.4:5'").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
