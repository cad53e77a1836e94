//! Command line and settings. Each setting is layered: built-in default, then the TOML file
//! (`--config`, or `/etc/rustploy/agent.toml` when it exists), then its environment variable,
//! then its flag.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// The settings file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/rustploy/agent.toml";
/// Where the agent keeps its identity when nothing else is said (systemd's `StateDirectory=`
/// sets `STATE_DIRECTORY`, which wins).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rustploy-agent";

#[derive(Debug, Parser)]
#[command(
    name = "rustploy-agent",
    version,
    about = "Rustploy's host agent: registers this host and sends heartbeats with its telemetry"
)]
pub struct Cli {
    /// The Rustploy server, e.g. https://rustploy.example.com
    #[arg(long, env = "RUSTPLOY_SERVER")]
    pub server: Option<String>,
    /// An API token with the `agent` scope. Prefer the settings file or the environment: flags
    /// are visible to other users of the host.
    #[arg(long, env = "RUSTPLOY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Settings file (TOML). Default: /etc/rustploy/agent.toml when it exists.
    #[arg(long, env = "RUSTPLOY_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seconds between heartbeats. Default: 10
    #[arg(long, env = "RUSTPLOY_AGENT_INTERVAL")]
    pub interval: Option<u64>,
    /// Where the agent keeps its identity. Default: $STATE_DIRECTORY/state.json, else
    /// /var/lib/rustploy-agent/state.json
    #[arg(long, env = "RUSTPLOY_AGENT_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// The Docker engine: unix:///path/to/docker.sock or tcp://host:port.
    /// Default: unix:///var/run/docker.sock
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// The longest wait between attempts while the server is unreachable, in seconds. Default: 60
    #[arg(long, env = "RUSTPLOY_AGENT_MAX_BACKOFF")]
    pub max_backoff: Option<u64>,
    /// How long to wait after the server refused the token, in seconds. Default: 60
    #[arg(long, env = "RUSTPLOY_AGENT_AUTH_RETRY")]
    pub auth_retry: Option<u64>,
    /// Send one heartbeat and exit: 0 if the server recorded it, 1 if not.
    #[arg(long)]
    pub once: bool,
}

/// The settings file: the same settings as the flags, all optional. Unknown keys are refused so
/// that a typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: Option<String>,
    pub token: Option<String>,
    pub interval_secs: Option<u64>,
    pub state_file: Option<PathBuf>,
    pub docker_host: Option<String>,
    pub max_backoff_secs: Option<u64>,
    pub auth_retry_secs: Option<u64>,
}

impl FileConfig {
    /// Reads `explicit`, or [`DEFAULT_CONFIG`] when it exists.
    pub fn load(explicit: Option<&Path>) -> Result<Self, String> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(e) => return Err(format!("cannot read settings file {}: {e}", path.display())),
        };
        toml::from_str(&text).map_err(|e| {
            format!(
                "settings file {} is invalid: {}",
                path.display(),
                e.message()
            )
        })
    }
}

/// An API token: never printed.
#[derive(Clone)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: String,
    pub token: Token,
    pub interval: Duration,
    pub state_file: PathBuf,
    pub docker_host: String,
    pub max_backoff: Duration,
    pub auth_retry: Duration,
    pub once: bool,
}

impl Settings {
    pub fn resolve(cli: Cli, file: FileConfig) -> Result<Self, String> {
        let server = cli
            .server
            .or(file.server)
            .ok_or("no server given: pass --server URL, set RUSTPLOY_SERVER, or put `server` in the settings file")?;
        let token = cli
            .token
            .or(file.token)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or("no token given: pass --token, set RUSTPLOY_TOKEN, or put `token` in the settings file")?;
        let secs = |flag: Option<u64>, file: Option<u64>, default: u64, what: &str| {
            let v = flag.or(file).unwrap_or(default);
            if v == 0 {
                Err(format!("{what} must be at least 1 second"))
            } else {
                Ok(Duration::from_secs(v))
            }
        };
        let interval = secs(cli.interval, file.interval_secs, 10, "the interval")?;
        if interval > Duration::from_secs(3600) {
            return Err("the interval must be at most 3600 seconds".into());
        }
        let state_file = cli
            .state_file
            .or(file.state_file)
            .unwrap_or_else(default_state_file);
        Ok(Self {
            server,
            token: Token(token),
            interval,
            state_file,
            docker_host: cli
                .docker_host
                .or(file.docker_host)
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into()),
            max_backoff: secs(
                cli.max_backoff,
                file.max_backoff_secs,
                60,
                "the maximum backoff",
            )?,
            auth_retry: secs(cli.auth_retry, file.auth_retry_secs, 60, "the auth retry")?,
            once: cli.once,
        })
    }
}

fn default_state_file() -> PathBuf {
    let dir = std::env::var_os("STATE_DIRECTORY")
        // systemd may list several directories, separated by colons: the first is ours.
        .and_then(|d| {
            d.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    dir.join("state.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("rustploy-agent").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file: FileConfig = toml::from_str(
            "server = 'http://file:1'\ntoken = 'rp_file'\ninterval_secs = 30\nauth_retry_secs = 5",
        )
        .unwrap();
        let s = Settings::resolve(cli(&["--server", "http://flag:2", "--once"]), file).unwrap();
        assert_eq!(s.server, "http://flag:2");
        assert_eq!(s.token.0, "rp_file");
        assert_eq!(s.interval, Duration::from_secs(30));
        assert_eq!(s.auth_retry, Duration::from_secs(5));
        assert_eq!(s.max_backoff, Duration::from_secs(60));
        assert!(s.once);
        assert!(
            !format!("{s:?}").contains("rp_file"),
            "the token must not print"
        );
    }

    #[test]
    fn missing_or_silly_settings_are_refused_with_a_hint() {
        let e = Settings::resolve(cli(&["--token", "t"]), FileConfig::default()).unwrap_err();
        assert!(e.contains("--server"), "{e}");
        let e =
            Settings::resolve(cli(&["--server", "http://s"]), FileConfig::default()).unwrap_err();
        assert!(e.contains("--token"), "{e}");
        let e = Settings::resolve(
            cli(&["--server", "http://s", "--token", "t", "--interval", "0"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(e.contains("interval"), "{e}");
        let e = toml::from_str::<FileConfig>("intervl_secs = 3").unwrap_err();
        assert!(e.to_string().contains("intervl_secs"), "{e}");
    }
}
