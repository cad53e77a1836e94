//! Managed services: databases that run beside an app, with credentials Rustploy made.
//!
//! An app's services live in one compose project of their own, `<prefix>-<app>-services`,
//! that outlives its releases: blue/green releases come and go beside it, so a database never
//! runs twice on one volume. Each service has a pinned named volume, a healthcheck and no host
//! ports, and sits only on the app's private network (`<prefix>-<app>-private`, internal: no
//! way out and no way in but from the app's own containers). Every service of the app's
//! releases joins that network, and receives each service's URL (`DATABASE_URL`, ...). A
//! release starts only once its services are healthy, which is what `depends_on:
//! service_healthy` would say if compose could reach across projects.
//!
//! This module holds the engines' facts and the compose document, as pure functions;
//! [`backup`] dumps and restores with the engines' own tools; the rows are in
//! [`crate::ledger::services`].

pub mod backup;
pub mod run;

use serde_json::{Map, Value, json};

use crate::deploy::compose::LABEL_APP;

/// Marks a service container (and its volume) as one of the app's managed services.
pub const LABEL_SERVICE_OF: &str = "dev.rustploy.service-of";

/// The user name and database every engine is set up with.
pub const USER: &str = "app";
pub const DATABASE: &str = "app";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    Postgres,
    Redis,
    Mariadb,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Postgres, Engine::Redis, Engine::Mariadb];

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Redis => "redis",
            Engine::Mariadb => "mariadb",
        }
    }

    /// `mysql` is read as mariadb: it speaks the protocol and has the tools.
    pub fn parse(s: &str) -> Option<Engine> {
        match s {
            "postgres" | "postgresql" => Some(Engine::Postgres),
            "redis" => Some(Engine::Redis),
            "mariadb" | "mysql" => Some(Engine::Mariadb),
            _ => None,
        }
    }

    /// The official image, used unless the server or the service names another.
    pub fn default_image(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres:17",
            Engine::Redis => "redis:7",
            Engine::Mariadb => "mariadb:11",
        }
    }

    /// The variable the app's services receive the URL in, unless the service names another.
    pub fn default_env_name(self) -> &'static str {
        match self {
            Engine::Postgres => "DATABASE_URL",
            Engine::Redis => "REDIS_URL",
            Engine::Mariadb => "MYSQL_URL",
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Engine::Postgres => 5432,
            Engine::Redis => 6379,
            Engine::Mariadb => 3306,
        }
    }

    /// Where the engine keeps its data inside the container: the volume's mount point.
    pub fn data_path(self) -> &'static str {
        match self {
            Engine::Postgres => "/var/lib/postgresql/data",
            Engine::Redis => "/data",
            Engine::Mariadb => "/var/lib/mysql",
        }
    }

    /// Whether the engine has a root password beside the app user's.
    pub fn has_root(self) -> bool {
        self == Engine::Mariadb
    }

    /// The file extension of a backup.
    pub fn backup_extension(self) -> &'static str {
        match self {
            Engine::Postgres => "dump",
            Engine::Redis => "rdb",
            Engine::Mariadb => "sql",
        }
    }
}

/// How this server runs services.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub postgres_image: String,
    pub redis_image: String,
    pub mariadb_image: String,
    /// How many finished backups of one service are kept.
    pub backup_retention: u32,
    /// The longest one backup or restore may take.
    pub backup_timeout: std::time::Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            postgres_image: Engine::Postgres.default_image().into(),
            redis_image: Engine::Redis.default_image().into(),
            mariadb_image: Engine::Mariadb.default_image().into(),
            backup_retention: 7,
            backup_timeout: std::time::Duration::from_secs(30 * 60),
        }
    }
}

impl ServiceSettings {
    /// The image a new service of `engine` runs unless it names one.
    pub fn image(&self, engine: Engine) -> &str {
        match engine {
            Engine::Postgres => &self.postgres_image,
            Engine::Redis => &self.redis_image,
            Engine::Mariadb => &self.mariadb_image,
        }
    }
}

/// One service as the ledger holds it, with its secrets opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub engine: Engine,
    pub image: String,
    pub env_name: String,
    pub password: String,
    pub root_password: Option<String>,
}

impl Service {
    /// The URL the app connects with: the service's name is its host on the private network.
    pub fn url(&self) -> String {
        connection_url(self.engine, &self.name, Some(&self.password))
    }
}

/// The service's URL; without a password it is masked, for showing.
pub fn connection_url(engine: Engine, host: &str, password: Option<&str>) -> String {
    let pw = password.unwrap_or("********");
    let port = engine.port();
    match engine {
        Engine::Postgres => format!("postgres://{USER}:{pw}@{host}:{port}/{DATABASE}"),
        Engine::Redis => format!("redis://:{pw}@{host}:{port}/0"),
        Engine::Mariadb => format!("mysql://{USER}:{pw}@{host}:{port}/{DATABASE}"),
    }
}

/// A new password: 32 letters and digits (190 bits), safe in a URL and a shell word.
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A service name: it becomes a host name on the private network, a compose service and part
/// of a volume name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err("a service name has 1 to 32 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("a service name has only lowercase letters, digits and '-'".into());
    }
    if !name.as_bytes()[0].is_ascii_lowercase() || name.ends_with('-') {
        return Err("a service name starts with a letter and does not end with '-'".into());
    }
    Ok(())
}

/// An environment variable name for the URL.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a usable variable name: use uppercase letters, digits and '_', not starting with a digit"
        ))
    }
}

/// Docker names of an app's services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `<prefix>-<app>`.
    pub app_scope: String,
    pub app: String,
}

impl Names {
    pub fn project(&self) -> String {
        format!("{}-services", self.app_scope)
    }

    pub fn network(&self) -> String {
        format!("{}-private", self.app_scope)
    }

    /// The volume of service `name`: pinned, and removed only when purged.
    pub fn volume(&self, name: &str) -> String {
        format!("{}-svc-{name}", self.app_scope)
    }
}

/// The services project's compose document. Secrets go into the file (written 0600), never
/// into a command line.
pub fn project_doc(names: &Names, services: &[Service]) -> Value {
    let labels = json!({ LABEL_SERVICE_OF: names.app, LABEL_APP: names.app });
    let mut svcs = Map::new();
    let mut volumes = Map::new();
    for s in services {
        let volume = names.volume(&s.name);
        let mut env = Map::new();
        let (command, test): (Option<Value>, &str) = match s.engine {
            Engine::Postgres => {
                env.insert("POSTGRES_USER".into(), USER.into());
                env.insert("POSTGRES_DB".into(), DATABASE.into());
                env.insert("POSTGRES_PASSWORD".into(), escape(&s.password));
                // Ready only once it answers on TCP: during its first start the official
                // image initialises on a socket only.
                (
                    None,
                    "pg_isready -h 127.0.0.1 -U \"$$POSTGRES_USER\" -d \"$$POSTGRES_DB\"",
                )
            }
            Engine::Redis => {
                env.insert("REDIS_PASSWORD".into(), escape(&s.password));
                // redis-cli reads it, so checks and backups need no password argument.
                env.insert("REDISCLI_AUTH".into(), escape(&s.password));
                (
                    Some(json!([
                        "sh",
                        "-c",
                        "exec redis-server --requirepass \"$$REDIS_PASSWORD\" --dir /data \
                         --dbfilename dump.rdb --save '60 1 300 10' --appendonly no \
                         --bind '0.0.0.0' --protected-mode no"
                    ])),
                    "redis-cli -h 127.0.0.1 ping | grep -q PONG",
                )
            }
            Engine::Mariadb => {
                env.insert("MARIADB_USER".into(), USER.into());
                env.insert("MARIADB_DATABASE".into(), DATABASE.into());
                env.insert("MARIADB_PASSWORD".into(), escape(&s.password));
                env.insert(
                    "MARIADB_ROOT_PASSWORD".into(),
                    escape(s.root_password.as_deref().unwrap_or(&s.password)),
                );
                (
                    None,
                    "mariadb-admin ping -h 127.0.0.1 -u root --password=\"$$MARIADB_ROOT_PASSWORD\" --silent",
                )
            }
        };
        let mut svc = json!({
            "image": s.image,
            "restart": "unless-stopped",
            "environment": env,
            "labels": labels,
            "volumes": [format!("{}:{}", s.name, s.engine.data_path())],
            "networks": { "private": { "aliases": [s.name] } },
            "healthcheck": {
                "test": ["CMD-SHELL", test],
                "interval": "2s",
                "timeout": "5s",
                "retries": 15,
                "start_period": "120s",
            },
            // Databases flush on a clean stop; give them the time.
            "stop_grace_period": "30s",
        });
        if let Some(command) = command {
            svc["command"] = command;
        }
        svcs.insert(s.name.clone(), svc);
        volumes.insert(s.name.clone(), json!({ "name": volume, "labels": labels }));
    }
    json!({
        "services": svcs,
        "volumes": volumes,
        "networks": {
            "private": { "name": names.network(), "internal": true, "labels": labels },
        },
    })
}

/// Compose interpolates `$` in values; a value must arrive as it was made.
fn escape(v: &str) -> Value {
    Value::String(v.replace('$', "$$"))
}

/// What the app's services receive: each service's URL under its variable name.
pub fn app_env(services: &[Service]) -> Vec<(String, String)> {
    services
        .iter()
        .map(|s| (s.env_name.clone(), s.url()))
        .collect()
}

/// A service's state, from Docker's view of its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Healthy,
    /// Started, its healthcheck not passed yet.
    Starting,
    Unhealthy,
    /// No container: not started yet, or removed behind Rustploy's back.
    Missing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Starting => "starting",
            Status::Unhealthy => "unhealthy",
            Status::Missing => "missing",
        }
    }

    /// From the container's state and health, when there is a container.
    pub fn of(container: Option<(&str, Option<&str>)>) -> Status {
        match container {
            None => Status::Missing,
            Some(("running", Some("healthy"))) => Status::Healthy,
            Some(("running", Some("starting"))) | Some(("created", _)) => Status::Starting,
            Some(("restarting", _)) => Status::Starting,
            Some(("running", None)) => Status::Healthy,
            Some(_) => Status::Unhealthy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            app_scope: "rp-shop".into(),
            app: "shop".into(),
        }
    }

    fn pg() -> Service {
        Service {
            name: "db".into(),
            engine: Engine::Postgres,
            image: "postgres:17".into(),
            env_name: "DATABASE_URL".into(),
            password: "pa$s".into(),
            root_password: None,
        }
    }

    #[test]
    fn the_project_pins_volumes_publishes_nothing_and_stays_private() {
        let redis = Service {
            name: "cache".into(),
            engine: Engine::Redis,
            image: "redis:7".into(),
            env_name: "REDIS_URL".into(),
            password: "pw".into(),
            root_password: None,
        };
        let doc = project_doc(&names(), &[pg(), redis]);
        let db = &doc["services"]["db"];
        assert_eq!(db["image"], "postgres:17");
        assert_eq!(db["environment"]["POSTGRES_PASSWORD"], "pa$$s");
        assert_eq!(db["volumes"][0], "db:/var/lib/postgresql/data");
        assert_eq!(db["networks"]["private"]["aliases"][0], "db");
        assert!(db.get("ports").is_none() && db.get("expose").is_none());
        assert!(
            db["healthcheck"]["test"][1]
                .as_str()
                .unwrap()
                .contains("pg_isready")
        );
        assert_eq!(doc["volumes"]["db"]["name"], "rp-shop-svc-db");
        assert_eq!(doc["networks"]["private"]["name"], "rp-shop-private");
        assert_eq!(doc["networks"]["private"]["internal"], true);
        let cache = &doc["services"]["cache"];
        assert!(
            cache["command"][2]
                .as_str()
                .unwrap()
                .contains("--requirepass")
        );
        assert!(
            !cache["command"][2].as_str().unwrap().contains("pw"),
            "no secret on a command line"
        );
        assert_eq!(cache["labels"][LABEL_SERVICE_OF], "shop");
    }

    #[test]
    fn urls_name_the_service_as_host() {
        assert_eq!(pg().url(), "postgres://app:pa$s@db:5432/app");
        assert_eq!(
            connection_url(Engine::Redis, "cache", None),
            "redis://:********@cache:6379/0"
        );
        assert_eq!(
            connection_url(Engine::Mariadb, "sql", Some("x")),
            "mysql://app:x@sql:3306/app"
        );
    }

    #[test]
    fn names_and_variables_are_checked() {
        for ok in ["db", "pg-main", "a1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Db", "1db", "db-", "d_b", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_env_name("PRIMARY_DATABASE_URL").is_ok());
        for bad in ["", "1X", "database_url", "A-B"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
        assert_eq!(Engine::parse("mysql"), Some(Engine::Mariadb));
        assert_eq!(Engine::parse("oracle"), None);
    }

    #[test]
    fn passwords_are_long_and_plain() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn status_follows_dockers_health() {
        assert_eq!(Status::of(None), Status::Missing);
        assert_eq!(
            Status::of(Some(("running", Some("healthy")))),
            Status::Healthy
        );
        assert_eq!(
            Status::of(Some(("running", Some("starting")))),
            Status::Starting
        );
        assert_eq!(
            Status::of(Some(("running", Some("unhealthy")))),
            Status::Unhealthy
        );
        assert_eq!(Status::of(Some(("exited", None))), Status::Unhealthy);
    }
}
