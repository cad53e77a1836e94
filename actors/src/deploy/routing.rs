//! Which service of a compose project takes traffic, and on which port: pure functions of the
//! parsed services, so every rule is table-tested without a repository or Docker.
//!
//! The rules, in order (the first that decides wins, and its reason is recorded):
//! 1. the manifest's `service` (and `port`);
//! 2. a service labelled `dev.rustploy.route` (the value is its port, or `true`);
//! 3. the one service publishing an HTTP-looking port (`ports:`);
//! 4. a service named `web`, `app`, `frontend`, `proxy` or `nginx`;
//! 5. the one service with an HTTP-looking `expose`, Dockerfile `EXPOSE` or image `EXPOSE`;
//! 6. the one service that is not a well-known backing image (databases, caches, queues, ...).
//!
//! The port always belongs to the routed service. Ports of other protocols (SMTP, SSH, DNS,
//! databases, ...) are never routed. A wrong route is worse than a question: when the file
//! does not settle it, the answer is an error that lists the candidates and the line to add.

use serde_json::{Map, Value};

/// The label that names the routed service (value: its port, or `true`).
pub const ROUTE_LABEL: &str = "dev.rustploy.route";

/// Service names that take traffic by convention, in order of preference.
pub const ROUTED_NAMES: &[&str] = &["web", "app", "frontend", "proxy", "nginx"];

/// Images that back an app rather than serve it: databases, caches, queues, search engines,
/// object stores and the admin or mail-catching tools that sit beside them. Matched against
/// the image's last path component without its tag (`bitnami/postgresql:16` is `postgresql`),
/// as a prefix followed by nothing or `-`.
const BACKING_IMAGES: &[&str] = &[
    "postgres",
    "postgresql",
    "postgis",
    "timescaledb",
    "mysql",
    "mariadb",
    "percona",
    "mongo",
    "mongodb",
    "redis",
    "valkey",
    "keydb",
    "dragonfly",
    "memcached",
    "clickhouse",
    "clickhouse-server",
    "elasticsearch",
    "opensearch",
    "rabbitmq",
    "minio",
    "kafka",
    "zookeeper",
    "nats",
    "etcd",
    "cassandra",
    "scylla",
    "couchdb",
    "neo4j",
    "influxdb",
    "qdrant",
    "mailhog",
    "mailpit",
    "adminer",
    "phpmyadmin",
    "pgadmin4",
    "mongo-express",
    "redis-commander",
    "redisinsight",
];

/// Well-known ports of protocols other than plain HTTP, with their names for messages. TLS
/// ports (443, 8443) are here too: Caddy speaks plain HTTP to the app.
const OTHER_PROTOCOLS: &[(u16, &str)] = &[
    (21, "FTP"),
    (22, "SSH"),
    (23, "Telnet"),
    (25, "SMTP"),
    (53, "DNS"),
    (110, "POP3"),
    (143, "IMAP"),
    (389, "LDAP"),
    (443, "HTTPS"),
    (465, "SMTPS"),
    (587, "SMTP submission"),
    (636, "LDAPS"),
    (993, "IMAPS"),
    (995, "POP3S"),
    (1025, "SMTP"),
    (1433, "SQL Server"),
    (1521, "Oracle"),
    (1883, "MQTT"),
    (1935, "RTMP"),
    (2049, "NFS"),
    (2222, "SSH"),
    (2375, "Docker API"),
    (2376, "Docker API"),
    (3306, "MySQL"),
    (3389, "RDP"),
    (4222, "NATS"),
    (4369, "Erlang EPMD"),
    (5222, "XMPP"),
    (5432, "PostgreSQL"),
    (5672, "AMQP"),
    (5900, "VNC"),
    (6379, "Redis"),
    (6443, "Kubernetes API"),
    (7687, "Bolt"),
    (8443, "HTTPS"),
    (8883, "MQTT over TLS"),
    (9443, "HTTPS"),
    (9042, "Cassandra"),
    (9092, "Kafka"),
    (9300, "Elasticsearch transport"),
    (11211, "memcached"),
    (25565, "Minecraft"),
    (26257, "CockroachDB"),
    (27017, "MongoDB"),
    (28015, "RethinkDB"),
];

/// One port a service declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    /// The port inside the container (the first of a range).
    pub port: u16,
    pub udp: bool,
    /// The host port it is published on, when `ports:` names one.
    pub host: Option<u16>,
}

impl PortSpec {
    pub fn tcp(port: u16) -> Self {
        Self {
            port,
            udp: false,
            host: None,
        }
    }

    /// Whether this port may speak HTTP: TCP and not a well-known port of another protocol.
    pub fn http_looking(&self) -> bool {
        !self.udp && other_protocol(self.port).is_none()
    }
}

/// The protocol a well-known non-HTTP port speaks.
pub fn other_protocol(port: u16) -> Option<&'static str> {
    OTHER_PROTOCOLS
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, name)| *name)
}

/// What routing needs to know of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub name: String,
    pub image: Option<String>,
    pub has_build: bool,
    /// The `dev.rustploy.route` label's value.
    pub route_label: Option<String>,
    /// From `ports:`.
    pub published: Vec<PortSpec>,
    /// From `expose:`.
    pub exposed: Vec<PortSpec>,
    /// From the service's Dockerfile `EXPOSE` (filled in by detection).
    pub dockerfile_ports: Vec<PortSpec>,
    /// From the image's `EXPOSE`, when the engine has the image (filled in by detection).
    pub image_ports: Vec<PortSpec>,
    /// The port the healthcheck's URL names (`curl -f http://localhost:3000/health`).
    pub healthcheck_port: Option<u16>,
    pub profiles: Vec<String>,
}

impl Facts {
    /// Reads one service of a (merged) compose document.
    pub fn from_service(name: &str, s: &Map<String, Value>) -> Self {
        let ports = |key: &str| -> Vec<PortSpec> {
            s.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(port_spec)
                .collect()
        };
        let labels = s.get("labels");
        let route_label = match labels {
            Some(Value::Object(m)) => m.get(ROUTE_LABEL).map(scalar_text),
            Some(Value::Array(items)) => {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .find_map(|l| match l.split_once('=') {
                        Some((k, v)) if k.trim() == ROUTE_LABEL => Some(v.trim().to_string()),
                        None if l.trim() == ROUTE_LABEL => Some(String::new()),
                        _ => None,
                    })
            }
            _ => None,
        };
        let healthcheck_port = s
            .get("healthcheck")
            .and_then(|h| h.get("test"))
            .and_then(|t| match t {
                Value::String(s) => Some(s.clone()),
                Value::Array(items) => Some(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            })
            .and_then(|text| url_port(&text));
        Facts {
            name: name.to_string(),
            image: s.get("image").and_then(Value::as_str).map(String::from),
            has_build: s.contains_key("build"),
            route_label,
            published: ports("ports"),
            exposed: ports("expose"),
            dockerfile_ports: Vec::new(),
            image_ports: Vec::new(),
            healthcheck_port,
            profiles: s
                .get("profiles")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        }
    }

    /// Whether the service is one of the well-known backing images (and builds nothing).
    pub fn is_backing(&self) -> bool {
        !self.has_build && self.image.as_deref().is_some_and(is_backing_image)
    }

    /// Whether compose starts it with the manifest's `profiles` enabled.
    pub fn is_active(&self, enabled: &[String]) -> bool {
        self.profiles.is_empty() || self.profiles.iter().any(|p| enabled.contains(p))
    }

    /// The ports the service states, best source first: the file's `ports` and `expose`, else
    /// its Dockerfile's `EXPOSE`, else its image's. Each list comes with where it was read.
    fn declared_ports(&self) -> (Vec<PortSpec>, &'static str) {
        let mut from_file: Vec<PortSpec> = Vec::new();
        for p in self.published.iter().chain(&self.exposed) {
            if !from_file.iter().any(|q| q.port == p.port && q.udp == p.udp) {
                from_file.push(*p);
            }
        }
        if !from_file.is_empty() {
            return (from_file, "the compose file's ports/expose");
        }
        if !self.dockerfile_ports.is_empty() {
            return (self.dockerfile_ports.clone(), "its Dockerfile's EXPOSE");
        }
        if !self.image_ports.is_empty() {
            return (self.image_ports.clone(), "its image's EXPOSE");
        }
        (Vec::new(), "")
    }

    fn describe_ports(&self) -> String {
        let (ports, _) = self.declared_ports();
        if ports.is_empty() {
            return "no port".into();
        }
        ports
            .iter()
            .map(|p| match (p.udp, other_protocol(p.port)) {
                (true, _) => format!("{}/udp", p.port),
                (false, Some(proto)) => format!("{} {proto}", p.port),
                (false, None) => p.port.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the manifest asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted<'a> {
    pub service: Option<&'a str>,
    pub port: Option<u16>,
    pub profiles: &'a [String],
}

/// The routed service and its port, with the reasons for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service: String,
    /// `None` when nothing states it: the deploy then uses the port the image EXPOSEs.
    pub port: Option<u16>,
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
}

/// Chooses the routed service and its port. The error is a message a person can act on.
pub fn choose(services: &[Facts], wanted: Wanted<'_>) -> Result<Route, String> {
    let active: Vec<&Facts> = services
        .iter()
        .filter(|s| s.is_active(wanted.profiles))
        .collect();
    let (service, why, label_port) = choose_service(services, &active, wanted)?;
    let mut reasons = vec![format!("routed service '{}': {why}", service.name)];
    let mut warnings = Vec::new();
    let port = match (wanted.port, label_port) {
        (Some(p), _) => {
            reasons.push(format!("port {p}: from the manifest"));
            Some(p)
        }
        (None, Some(p)) => {
            reasons.push(format!("port {p}: from the label {ROUTE_LABEL}"));
            Some(p)
        }
        (None, None) => {
            let (p, why) = choose_port(service)?;
            match p {
                Some(p) => reasons.push(format!("port {p}: {why}")),
                None => {
                    reasons.push(format!("port: {why}"));
                    warnings.push(format!(
                        "service '{}' states no port and its image is not on this server yet: the \
                         deploy uses the one port the image EXPOSEs. Add \"port: <number>\" to \
                         rustploy.yaml to be sure",
                        service.name
                    ));
                }
            }
            p
        }
    };
    Ok(Route {
        service: service.name.clone(),
        port,
        reasons,
        warnings,
    })
}

/// The routed service, why, and the port its route label names.
fn choose_service<'a>(
    all: &'a [Facts],
    active: &[&'a Facts],
    wanted: Wanted<'_>,
) -> Result<(&'a Facts, String, Option<u16>), String> {
    if let Some(name) = wanted.service {
        let Some(s) = all.iter().find(|s| s.name == name) else {
            return Err(format!(
                "the manifest names service '{name}', but the compose file has only: {}",
                all.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if !s.is_active(wanted.profiles) {
            return Err(format!(
                "the manifest routes service '{name}', which is only in profile(s) {}: add one \
                 of them to 'profiles:' in rustploy.yaml",
                s.profiles.join(", ")
            ));
        }
        return Ok((s, "named by the manifest".into(), None));
    }
    if active.is_empty() {
        return Err(
            "every service is in a profile that is not enabled: list the profiles to start \
             under 'profiles:' in rustploy.yaml"
                .into(),
        );
    }
    let labelled: Vec<&Facts> = active
        .iter()
        .copied()
        .filter(|s| s.route_label.is_some())
        .collect();
    match labelled.as_slice() {
        [] => {}
        [s] => {
            let value = s.route_label.as_deref().unwrap_or_default();
            let port = match value.trim() {
                "" | "true" | "yes" => None,
                v => match v.parse::<u16>() {
                    Ok(p) if p > 0 => Some(p),
                    _ => {
                        return Err(format!(
                            "service '{}': the label {ROUTE_LABEL} must be a port number or \
                             'true', not '{value}'",
                            s.name
                        ));
                    }
                },
            };
            return Ok((s, format!("labelled {ROUTE_LABEL}"), port));
        }
        many => {
            return Err(format!(
                "several services carry the label {ROUTE_LABEL} ({}): keep it on one",
                names(many)
            ));
        }
    }
    let serving: Vec<&Facts> = active.iter().copied().filter(|s| !s.is_backing()).collect();
    let publishing: Vec<&Facts> = serving
        .iter()
        .copied()
        .filter(|s| s.published.iter().any(PortSpec::http_looking))
        .collect();
    if let [s] = publishing.as_slice() {
        return Ok((s, "the only service publishing an HTTP port".into(), None));
    }
    for name in ROUTED_NAMES {
        if let Some(s) = active.iter().find(|s| s.name == *name) {
            return Ok((s, "its name".into(), None));
        }
    }
    let exposing: Vec<&Facts> = serving
        .iter()
        .copied()
        .filter(|s| {
            s.published
                .iter()
                .chain(&s.exposed)
                .chain(&s.dockerfile_ports)
                .chain(&s.image_ports)
                .any(PortSpec::http_looking)
        })
        .collect();
    if let [s] = exposing.as_slice() {
        return Ok((s, "the only service with an HTTP port".into(), None));
    }
    if let [s] = serving.as_slice() {
        return Ok((
            s,
            "the only service that is not a database, cache or queue".into(),
            None,
        ));
    }
    if let [s] = active {
        return Ok((s, "the only service".into(), None));
    }
    // The candidates a person chooses among: the narrowest set a rule left standing.
    let candidates: &[&Facts] = if publishing.len() > 1 {
        &publishing
    } else if exposing.len() > 1 {
        &exposing
    } else if !serving.is_empty() {
        &serving
    } else {
        active
    };
    Err(ambiguous(candidates))
}

/// The routed service's port and why, or `None` when it states none.
fn choose_port(s: &Facts) -> Result<(Option<u16>, String), String> {
    let (ports, source) = s.declared_ports();
    if ports.is_empty() {
        return Ok((
            None,
            "not stated anywhere; the deploy uses the one port the image EXPOSEs".into(),
        ));
    }
    let http: Vec<u16> = ports
        .iter()
        .filter(|p| p.http_looking())
        .map(|p| p.port)
        .collect();
    if let Some(p) = s.healthcheck_port.filter(|p| http.contains(p)) {
        return Ok((Some(p), "the port its healthcheck's URL names".into()));
    }
    match http.as_slice() {
        [p] if ports.len() == 1 => Ok((Some(*p), format!("from {source}"))),
        [p] => Ok((
            Some(*p),
            format!("the only HTTP port in {source} ({})", s.describe_ports()),
        )),
        [] => Err(format!(
            "service '{}' takes traffic but states only ports of other protocols ({}): add \
             \"port: <its HTTP port>\" to rustploy.yaml",
            s.name,
            s.describe_ports()
        )),
        many => Err(format!(
            "service '{}' takes traffic on one of several HTTP ports ({}): add \"port: {}\" \
             (or the one it serves HTTP on) to rustploy.yaml",
            s.name,
            many.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            many[0]
        )),
    }
}

fn ambiguous(candidates: &[&Facts]) -> String {
    // Sorted, so the question reads the same whatever order the file lists its services in.
    let mut candidates = candidates.to_vec();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    let listed = candidates
        .iter()
        .map(|s| format!("'{}' ({})", s.name, s.describe_ports()))
        .collect::<Vec<_>>()
        .join(", ");
    let first = candidates[0];
    let port = first
        .declared_ports()
        .0
        .iter()
        .find(|p| p.http_looking())
        .map(|p| p.port)
        .unwrap_or(8080);
    format!(
        "cannot tell which service takes traffic among {listed}. Add \"service: {}\" and \
         \"port: {port}\" to rustploy.yaml (with the service and port that serve HTTP), or the \
         label \"{ROUTE_LABEL}: '{port}'\" to that service",
        first.name
    )
}

fn names(list: &[&Facts]) -> String {
    list.iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `image` (a reference like `docker.io/bitnami/redis:7`) is a well-known backing one.
pub fn is_backing_image(image: &str) -> bool {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let name = last.split(':').next().unwrap_or(last).to_ascii_lowercase();
    BACKING_IMAGES.iter().any(|b| {
        name == *b
            || name
                .strip_prefix(b)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

/// Reads one `ports` or `expose` entry: `80`, `"8080"`, `"8080:80"`, `"127.0.0.1:8080:80/tcp"`,
/// `"3000-3005"`, `"53:53/udp"`, or the long form `{target: 80, published: 8080, protocol}`.
pub fn port_spec(entry: &Value) -> Option<PortSpec> {
    match entry {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|p| *p > 0)
            .map(PortSpec::tcp),
        Value::String(s) => {
            let (spec, proto) = s.split_once('/').unwrap_or((s, "tcp"));
            let mut parts: Vec<&str> = rsplit_port_parts(spec);
            let container = parts.pop()?;
            let host = parts.pop().and_then(first_of_range);
            let port = first_of_range(container)?;
            Some(PortSpec {
                port,
                udp: proto.trim().eq_ignore_ascii_case("udp"),
                host,
            })
        }
        Value::Object(o) => {
            let port = match o.get("target")? {
                Value::String(s) => first_of_range(s)?,
                other => u16::try_from(other.as_u64()?).ok()?,
            };
            let host = match o.get("published") {
                Some(Value::String(s)) => first_of_range(s),
                Some(other) => other.as_u64().and_then(|n| u16::try_from(n).ok()),
                None => None,
            };
            Some(PortSpec {
                port,
                udp: o
                    .get("protocol")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.eq_ignore_ascii_case("udp")),
                host,
            })
        }
        _ => None,
    }
}

/// Splits `[ip:][host:]container`, where an IPv6 address sits in brackets.
fn rsplit_port_parts(spec: &str) -> Vec<&str> {
    let spec = match spec.rfind(']') {
        Some(i) => spec[i + 1..].trim_start_matches(':'),
        None => spec,
    };
    spec.split(':').collect()
}

fn first_of_range(text: &str) -> Option<u16> {
    text.split('-')
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// The port a healthcheck's URL names: `http://localhost:3000/up` is 3000, `http://127.0.0.1/`
/// is 80; `wget -qO- localhost:8080` is 8080.
pub fn url_port(text: &str) -> Option<u16> {
    for word in text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        let (rest, default) = if let Some(r) = word.strip_prefix("http://") {
            (r, Some(80))
        } else if let Some(r) = word.strip_prefix("https://") {
            (r, None)
        } else if word.starts_with("localhost:") || word.starts_with("127.0.0.1:") {
            (word, None)
        } else {
            continue;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        match authority.rsplit_once(':') {
            Some((_, port)) => {
                if let Ok(p) = port.parse::<u16>() {
                    return Some(p);
                }
            }
            None => {
                if default.is_some() {
                    return default;
                }
            }
        }
    }
    None
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(name: &str, service: Value) -> Facts {
        Facts::from_service(name, service.as_object().expect("a mapping"))
    }

    fn route(services: &[Facts]) -> Result<(String, Option<u16>), String> {
        choose(services, Wanted::default()).map(|r| (r.service, r.port))
    }

    #[test]
    fn ports_are_read_in_every_form() {
        let tcp = |port, host| PortSpec {
            port,
            udp: false,
            host,
        };
        for (v, p) in [
            (json!(80), Some(tcp(80, None))),
            (json!("8080"), Some(tcp(8080, None))),
            (json!("8080:80"), Some(tcp(80, Some(8080)))),
            (json!("127.0.0.1:8080:80/tcp"), Some(tcp(80, Some(8080)))),
            (json!("[::1]:8080:80"), Some(tcp(80, Some(8080)))),
            (json!("3000-3005:3000-3005"), Some(tcp(3000, Some(3000)))),
            (
                json!("53:53/udp"),
                Some(PortSpec {
                    port: 53,
                    udp: true,
                    host: Some(53),
                }),
            ),
            (
                json!({ "target": 5000, "published": "80", "protocol": "tcp" }),
                Some(tcp(5000, Some(80))),
            ),
            (json!("x"), None),
            (json!(0), None),
        ] {
            assert_eq!(port_spec(&v), p, "{v}");
        }
    }

    #[test]
    fn backing_images_are_known_by_name_whatever_their_registry_and_tag() {
        for image in [
            "postgres:16-alpine",
            "docker.io/library/mariadb:11",
            "bitnami/postgresql:15",
            "redis/redis-stack:latest",
            "ghcr.io/x/mongo@sha256:abc",
            "clickhouse/clickhouse-server:24",
            "valkey/valkey:8",
        ] {
            assert!(is_backing_image(image), "{image}");
        }
        for image in [
            "nginx:1",
            "ghost:5",
            "wordpress",
            "redisson-app:1",
            "grafana/grafana",
        ] {
            assert!(!is_backing_image(image), "{image}");
        }
    }

    #[test]
    fn healthcheck_urls_name_ports() {
        for (text, port) in [
            ("curl -f http://localhost:3000/health", Some(3000)),
            ("wget -qO- http://127.0.0.1/ || exit 1", Some(80)),
            ("CMD wget --spider localhost:8080/up", Some(8080)),
            ("CMD-SHELL pg_isready -U app", None),
            ("curl -fk https://localhost/", None),
        ] {
            assert_eq!(url_port(text), port, "{text}");
        }
    }

    /// One row per rule and per trap from real projects: the services, then the expected
    /// service and port (or a fragment of the question).
    #[test]
    fn the_routed_service_and_port_follow_the_rules_in_order() {
        type Row = (
            &'static str,
            Vec<Facts>,
            Result<(&'static str, Option<u16>), &'static str>,
        );
        let db = || {
            facts(
                "db",
                json!({ "image": "postgres:16", "ports": ["5432:5432"] }),
            )
        };
        let cache = || facts("cache", json!({ "image": "redis:7", "expose": [6379] }));
        let rows: Vec<Row> = vec![
            (
                "one published HTTP port beside a database publishing 5432",
                vec![
                    facts("site", json!({ "build": ".", "ports": ["80:8000"] })),
                    db(),
                ],
                Ok(("site", Some(8000))),
            ),
            (
                "a backend with no port and a frontend publishing: the frontend, on its own port",
                vec![
                    facts("backend", json!({ "build": "./api" })),
                    facts("front", json!({ "build": "./ui", "ports": ["8080:80"] })),
                    facts(
                        "mysql",
                        json!({ "image": "mysql:8", "ports": ["3306:3306"] }),
                    ),
                ],
                Ok(("front", Some(80))),
            ),
            (
                "the label wins over names and ports",
                vec![
                    facts("web", json!({ "build": ".", "ports": ["80:80"] })),
                    facts(
                        "api",
                        json!({ "build": ".", "labels": { ROUTE_LABEL: "9000" } }),
                    ),
                ],
                Ok(("api", Some(9000))),
            ),
            (
                "a label 'true' takes the port from the service",
                vec![
                    facts(
                        "api",
                        json!({ "build": ".", "expose": ["4000"], "labels": [format!("{ROUTE_LABEL}=true")] }),
                    ),
                    facts("web", json!({ "build": "." })),
                ],
                Ok(("api", Some(4000))),
            ),
            (
                "by name when nothing publishes",
                vec![
                    facts("worker", json!({ "build": "." })),
                    facts("app", json!({ "build": ".", "expose": [3000] })),
                    cache(),
                ],
                Ok(("app", Some(3000))),
            ),
            (
                "the one service with an HTTP expose, whatever its name",
                vec![
                    facts("ghost", json!({ "image": "ghost:5", "expose": ["2368"] })),
                    facts("mysql", json!({ "image": "mysql:8", "expose": ["3306"] })),
                ],
                Ok(("ghost", Some(2368))),
            ),
            (
                "the one service that is not a backing image, without a port",
                vec![
                    facts("cms", json!({ "image": "wordpress:6" })),
                    facts("db", json!({ "image": "mariadb:11" })),
                    cache(),
                ],
                Ok(("cms", None)),
            ),
            (
                "a mail app publishing SMTP and HTTP routes HTTP",
                vec![
                    facts(
                        "mail",
                        json!({ "image": "mailserver:1", "ports": ["25:25", "587:587", "8080:80"] }),
                    ),
                    db(),
                ],
                Ok(("mail", Some(80))),
            ),
            (
                "a git forge with SSH and HTTP routes HTTP",
                vec![
                    facts(
                        "forge",
                        json!({ "image": "forge:1", "ports": ["2222:22", "3000:3000"] }),
                    ),
                    db(),
                ],
                Ok(("forge", Some(3000))),
            ),
            (
                "the healthcheck's URL names the port among several",
                vec![facts(
                    "api",
                    json!({
                        "build": ".",
                        "ports": ["8000:8000", "9090:9090"],
                        "healthcheck": { "test": ["CMD", "curl", "-f", "http://localhost:8000/health"] },
                    }),
                )],
                Ok(("api", Some(8000))),
            ),
            (
                "two HTTP ports and no hint: ask",
                vec![facts(
                    "api",
                    json!({ "build": ".", "ports": ["8000:8000", "9090:9090"] }),
                )],
                Err("several HTTP ports (8000, 9090)"),
            ),
            (
                "only ports of other protocols: ask",
                vec![
                    facts("relay", json!({ "image": "relay:1", "ports": ["25:25"] })),
                    db(),
                ],
                Err("only ports of other protocols (25 SMTP)"),
            ),
            (
                "two services publishing, no names: ask, listing both",
                vec![
                    facts("api", json!({ "build": ".", "ports": ["8000:8000"] })),
                    facts("admin", json!({ "build": ".", "ports": ["3000:3000"] })),
                    db(),
                ],
                Err("'admin' (3000), 'api' (8000). Add \"service: admin\" and \"port: 3000\""),
            ),
            (
                "an admin tool publishing beside the app does not count",
                vec![
                    facts("shop", json!({ "build": ".", "ports": ["8000:8000"] })),
                    facts(
                        "adminer",
                        json!({ "image": "adminer", "ports": ["8081:8080"] }),
                    ),
                    db(),
                ],
                Ok(("shop", Some(8000))),
            ),
            (
                "the Dockerfile's EXPOSE decides between two built services",
                vec![
                    Facts {
                        dockerfile_ports: vec![PortSpec::tcp(5000)],
                        ..facts("api", json!({ "build": "./api" }))
                    },
                    facts("worker", json!({ "build": "./api" })),
                ],
                Ok(("api", Some(5000))),
            ),
            (
                "the image's EXPOSE gives a port-less service its port",
                vec![
                    Facts {
                        image_ports: vec![PortSpec::tcp(2368)],
                        ..facts("blog", json!({ "image": "ghost:5" }))
                    },
                    facts("db", json!({ "image": "mysql:8" })),
                ],
                Ok(("blog", Some(2368))),
            ),
            (
                "a lone database is still the only service",
                vec![facts(
                    "search",
                    json!({ "image": "opensearch:2", "expose": [9200] }),
                )],
                Ok(("search", Some(9200))),
            ),
            (
                "a profiled service is never routed unless enabled",
                vec![
                    facts(
                        "web",
                        json!({ "build": ".", "profiles": ["debug"], "ports": ["80:80"] }),
                    ),
                    facts("site", json!({ "build": ".", "expose": [8080] })),
                ],
                Ok(("site", Some(8080))),
            ),
            (
                "two services publishing: an internal exporter is no tie-breaker",
                vec![
                    facts(
                        "prometheus",
                        json!({ "image": "prom/prometheus", "ports": ["9090:9090"] }),
                    ),
                    facts(
                        "grafana",
                        json!({ "image": "grafana/grafana", "ports": ["3000:3000"] }),
                    ),
                    facts(
                        "exporter",
                        json!({ "image": "prom/node-exporter", "expose": [9100] }),
                    ),
                ],
                Err("among 'grafana' (3000), 'prometheus' (9090)"),
            ),
            (
                "a UDP port is not HTTP",
                vec![facts(
                    "dns",
                    json!({ "image": "dns:1", "ports": ["53:53/udp", "5380:5380"] }),
                )],
                Ok(("dns", Some(5380))),
            ),
        ];
        let mut wrong = Vec::new();
        for (what, services, want) in rows {
            let got = route(&services);
            let ok = match (&got, &want) {
                (Ok((s, p)), Ok((ws, wp))) => s == ws && p == wp,
                (Err(e), Err(fragment)) => e.contains(fragment),
                _ => false,
            };
            if !ok {
                wrong.push(format!("{what}: got {got:?}, want {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_manifest_and_profiles_are_obeyed() {
        let services = vec![
            facts("web", json!({ "build": ".", "ports": ["80:80"] })),
            facts(
                "docs",
                json!({ "build": ".", "profiles": ["docs"], "expose": [4000] }),
            ),
        ];
        let enabled = vec!["docs".to_string()];
        let r = choose(
            &services,
            Wanted {
                service: Some("docs"),
                port: Some(4001),
                profiles: &enabled,
            },
        )
        .unwrap();
        assert_eq!((r.service.as_str(), r.port), ("docs", Some(4001)));
        assert!(r.reasons[0].contains("manifest"), "{:?}", r.reasons);
        let e = choose(
            &services,
            Wanted {
                service: Some("docs"),
                ..Wanted::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("profile(s) docs"), "{e}");
        let e = choose(
            &services,
            Wanted {
                service: Some("nope"),
                ..Wanted::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("web, docs"), "{e}");
        let bad = vec![facts(
            "a",
            json!({ "build": ".", "labels": { ROUTE_LABEL: "http" } }),
        )];
        assert!(route(&bad).unwrap_err().contains("port number or 'true'"));
    }
}
