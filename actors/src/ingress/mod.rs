//! Ingress: what RouterSync needs to put apps behind Caddy. `caddy.rs` turns the desired
//! routes into Caddy's JSON configuration (a pure function), `admin.rs` talks to Caddy's admin
//! API, `managed.rs` runs Caddy as a child process, and `certs.rs` reads certificates.

pub mod admin;
pub mod caddy;
pub mod certs;
pub mod dns;
pub mod managed;

use std::path::PathBuf;
use std::time::Duration;

/// How a domain gets its certificate: defined with the other stored states.
pub use rustploy_api::states::TlsMode;

/// Where a site's requests go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Fixed upstreams (the dashboard): `IP:port` each.
    Upstreams(Vec<String>),
    /// An app's live release: Caddy looks its containers up by the app's name (see
    /// [`dns`]), so a switch needs no load; `dials` (`IP:port` of each routed container) are
    /// the fallback Caddy uses when the lookup fails, and all there is without a lookup.
    Release {
        app: String,
        port: u16,
        dials: Vec<String>,
    },
    /// The app has no healthy release yet: Caddy answers 503 saying so.
    NoRelease { app: String },
    /// A permanent redirect to this origin (`https://host[:port]`), keeping the request's URI.
    Redirect(String),
}

/// One hostname (with an optional path prefix) that Caddy serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Site {
    /// ASCII (IDNA) and lowercase; may start with `*.`.
    pub hostname: String,
    pub tls: TlsMode,
    /// Certificate and key files, for `TlsMode::Custom`.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Only requests under this path (`/api` matches `/api` and `/api/...`).
    pub path_prefix: Option<String>,
    pub target: Target,
}

/// Where Caddy listens and keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// The admin endpoint as `host:port` (kept in every configuration Rustploy loads, so a load
    /// never moves it).
    pub admin_listen: String,
    /// Where apps are served over HTTP and HTTPS, as `[host]:port`.
    pub http_listen: String,
    pub https_listen: String,
    /// Caddy's storage (certificates, its local CA).
    pub storage_root: PathBuf,
    /// How long a replaced configuration's connections get to finish.
    pub grace: Duration,
    /// How long the proxy retries an upstream that refuses connections before failing a request.
    pub try_duration: Duration,
    /// Where Caddy looks up an app's live release, when it does.
    pub lookup: Option<Lookup>,
    /// A file whose existence makes Caddy answer every request with `Connection: close`: it
    /// is created for a moment before each load, so that clients drop their keep-alive
    /// connections after an answer instead of finding them closed by the load.
    pub closing_flag: Option<PathBuf>,
}

/// How Caddy finds an app's live release (`dynamic_upstreams` of source `a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The responder, as `udp/IP:port`.
    pub resolver: String,
    /// How long Caddy keeps an answer: the longest a switch waits to be confirmed.
    pub refresh: Duration,
}

/// The port of a `[host]:port` listen address.
pub fn listen_port(listen: &str) -> Option<u16> {
    listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// Whether the kernel hands connections queued on a closing listener to another listener of
/// the same port (`net.ipv4.tcp_migrate_req`). Caddy binds its ports with `SO_REUSEPORT` and
/// opens new sockets on every configuration load (a domain or TLS change), then closes the
/// old ones: without migration, connections the kernel had queued on an old socket are reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadHandover {
    /// Queued connections move to the new socket: a load loses none.
    Migrates,
    /// The setting is 0: a connection arriving at the instant of a load can be reset.
    Off,
    /// The kernel has no such setting (before Linux 5.14), or it could not be read.
    Unknown,
}

/// Where the kernel keeps the setting, for this network namespace.
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

impl LoadHandover {
    /// Reads the setting of the calling process's network namespace.
    pub fn read() -> Self {
        match std::fs::read_to_string(MIGRATE_REQ)
            .as_deref()
            .map(str::trim)
        {
            Ok("0") => Self::Off,
            Ok(_) => Self::Migrates,
            Err(_) => Self::Unknown,
        }
    }

    /// What a person should do about it, when anything.
    pub fn advice(self) -> Option<&'static str> {
        match self {
            Self::Migrates => None,
            Self::Off => Some(
                "net.ipv4.tcp_migrate_req is 0: a connection that reaches Caddy at the instant \
                 it loads a domain or TLS change can be reset; set it to 1 (sysctl -w \
                 net.ipv4.tcp_migrate_req=1, kept across boots by the Debian package's \
                 /usr/lib/sysctl.d/60-rustploy.conf)",
            ),
            Self::Unknown => Some(
                "this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14 or later has it): a \
                 connection that reaches Caddy at the instant it loads a domain or TLS change \
                 can be reset",
            ),
        }
    }
}
