//! Managed services beside an app (postgres, redis, mariadb), their backups and restores, and
//! the jobs that carry those out.
//!
//! A change to a service is answered at once and carried out by a job in the background: the
//! answers name the job, and [`Client::job`] tells how it went.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::apps::segment;
use crate::{Client, Error};

/// The engines the server runs, by the names it uses for them. It also takes `mysql` for
/// mariadb.
pub const ENGINES: &[&str] = &["postgres", "redis", "mariadb"];

/// A service's status as Docker sees it: `healthy`, `starting` (its healthcheck has not passed
/// yet), `unhealthy`, `missing` (no container: not started yet, or removed behind the server's
/// back), or `unknown` when Docker did not answer in time.
pub const STATUSES: &[&str] = &["healthy", "starting", "unhealthy", "missing", "unknown"];

/// A managed service of an app. Its URL carries a masked password; the real one is in
/// [`Credentials`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Also its host name on the app's private network.
    pub name: String,
    /// One of [`ENGINES`].
    pub engine: String,
    pub image: String,
    /// The variable the app receives the URL in, such as `DATABASE_URL`.
    pub env_name: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub database: String,
    /// The URL the app receives, with the password masked.
    pub url: String,
    /// The Docker volume that holds the data. It outlives the service unless purged.
    pub volume: String,
    /// One of [`STATUSES`].
    pub status: String,
    #[serde(default)]
    pub container: Option<String>,
    /// Why the last attempt to start or stop the app's services failed; never set on a healthy
    /// service.
    #[serde(default)]
    pub last_error: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Services {
    pub items: Vec<Service>,
}

/// A service to add. Whatever is `None` takes the server's default: the engine's name as the
/// service's name, the server's image for the engine, and the engine's usual variable
/// (`DATABASE_URL`, `REDIS_URL`, `MYSQL_URL`). The server refuses a field it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewService {
    pub engine: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_name: Option<String>,
}

/// The answer to adding a service: the service (`missing` until its job starts it), the job,
/// and a note on when the app receives its URL (at its next deployment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceCreated {
    #[serde(flatten)]
    pub service: Service,
    pub job_id: i64,
    pub note: String,
}

/// What happens to a deleted service's data volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataVolume {
    /// The volume stays: a later service of the same name finds the data again.
    Keep,
    /// The volume is removed with the service: its data is gone.
    Purge,
}

/// The answer to deleting a service. The container (and, when purged, the volume) goes in the
/// background; the app keeps the service's variable until its next deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDeleted {
    pub name: String,
    pub volume: String,
    pub volume_kept: bool,
    pub job_id: i64,
    pub note: String,
}

/// How to reach a service, password included. Only an admin token may read them.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    pub name: String,
    pub env_name: String,
    /// The URL the app receives, password included.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub database: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is a secret, and the URL carries it: neither prints.
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("env_name", &self.env_name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// One backup of a service, made with the engine's own tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub id: i64,
    /// The service's name. Backups outlive their service.
    pub service: String,
    pub engine: String,
    /// Where the dump is, relative to the server's data directory.
    pub file: String,
    /// Known once it is done.
    #[serde(default)]
    pub size_bytes: Option<i64>,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Why it failed.
    #[serde(default)]
    pub reason: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
}

/// A service's backups, newest first (also those of an earlier service of the same name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backups {
    pub items: Vec<Backup>,
}

/// The answer to backing a service up: the backup, `running` until its job ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupStarted {
    #[serde(flatten)]
    pub backup: Backup,
    pub job_id: i64,
}

/// The answer to a restore: it is queued; the job tells how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreQueued {
    pub job_id: i64,
    pub service: String,
    pub backup_id: i64,
    pub note: String,
}

/// A job of the server's durable queue: a deployment, a service change, a backup, a restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    /// Such as `deploy`, `services`, `backup` or `restore`.
    pub kind: String,
    #[serde(default)]
    pub key: Option<String>,
    /// `queued`, `running`, `succeeded`, `dead` (failed for good) or `cancelled`.
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    #[serde(default)]
    pub next_run_at: Option<String>,
    #[serde(default)]
    pub locked_until: Option<String>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub cancel_requested: bool,
    pub created_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
}

/// `POST /api/v1/jobs`: the ids of the jobs queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsQueued {
    pub ids: Vec<i64>,
}

impl Job {
    /// It will not run again: it succeeded, died or was cancelled.
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "dead" | "cancelled")
    }
}

impl Client {
    /// The app's services with Docker's view of each.
    pub async fn services(&self, app: &str) -> Result<Services, Error> {
        self.get(&services_path(app)).await
    }

    pub async fn service(&self, app: &str, name: &str) -> Result<Service, Error> {
        self.get(&service_path(app, name)).await
    }

    /// Adds a service; it starts in the background, and the app receives its URL at its next
    /// deployment.
    pub async fn create_service(
        &self,
        app: &str,
        service: &NewService,
    ) -> Result<ServiceCreated, Error> {
        self.post(&services_path(app), service).await
    }

    /// Deletes a service, keeping or purging its data volume.
    pub async fn delete_service(
        &self,
        app: &str,
        name: &str,
        volume: DataVolume,
    ) -> Result<ServiceDeleted, Error> {
        let purge = volume == DataVolume::Purge;
        self.delete_json(&format!("{}?purge={purge}", service_path(app, name)))
            .await
    }

    /// The service's URL and password. Needs an admin token.
    pub async fn service_credentials(&self, app: &str, name: &str) -> Result<Credentials, Error> {
        self.get(&format!("{}/credentials", service_path(app, name)))
            .await
    }

    /// The service's backups, newest first.
    pub async fn service_backups(&self, app: &str, name: &str) -> Result<Backups, Error> {
        self.get(&format!("{}/backups", service_path(app, name)))
            .await
    }

    /// Starts a backup of the service now.
    pub async fn back_up_service(&self, app: &str, name: &str) -> Result<BackupStarted, Error> {
        self.post(
            &format!("{}/backups", service_path(app, name)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Queues loading a finished backup into the service, replacing its data.
    pub async fn restore_service(
        &self,
        app: &str,
        name: &str,
        backup_id: i64,
    ) -> Result<RestoreQueued, Error> {
        self.post(
            &format!("{}/restore", service_path(app, name)),
            &serde_json::json!({ "backup_id": backup_id }),
        )
        .await
    }

    pub async fn job(&self, id: i64) -> Result<Job, Error> {
        self.get(&format!("/api/v1/jobs/{id}")).await
    }
}

fn services_path(app: &str) -> String {
    format!("/api/v1/apps/{}/services", segment(app))
}

fn service_path(app: &str, name: &str) -> String {
    format!("{}/{}", services_path(app), segment(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list as `GET /api/v1/apps/{app}/services` writes it: every key present, absent values
    /// as `null`.
    const SERVICES: &str = r#"{
      "items": [
        {"name": "db", "engine": "postgres", "image": "postgres:17", "env_name": "DATABASE_URL",
         "host": "db", "port": 5432, "username": "app", "database": "app",
         "url": "postgres://app:********@db:5432/app", "volume": "rp-blog-svc-db",
         "status": "healthy", "container": "rp-blog-services-db-1", "last_error": null,
         "created_at": "2026-03-01T09:00:00Z"},
        {"name": "cache", "engine": "redis", "image": "redis:7", "env_name": "REDIS_URL",
         "host": "cache", "port": 6379, "username": "app", "database": "app",
         "url": "redis://:********@cache:6379/0", "volume": "rp-blog-svc-cache",
         "status": "missing", "container": null,
         "last_error": "docker compose up: pull access denied for redis:7x",
         "created_at": "2026-03-01T09:05:00.250Z"}
      ]
    }"#;

    #[test]
    fn services_decode_from_the_servers_json() {
        let list: Services = serde_json::from_str(SERVICES).unwrap();
        let [db, cache] = &list.items[..] else {
            panic!("two services: {list:?}");
        };
        assert_eq!((db.engine.as_str(), db.port), ("postgres", 5432));
        assert_eq!(db.container.as_deref(), Some("rp-blog-services-db-1"));
        assert_eq!(db.last_error, None);
        assert_eq!(cache.container, None);
        assert!(cache.last_error.as_deref().unwrap().contains("pull access"));
        assert!(
            list.items
                .iter()
                .all(|s| STATUSES.contains(&s.status.as_str())
                    && ENGINES.contains(&s.engine.as_str()))
        );
    }

    #[test]
    fn a_created_service_carries_its_job_and_note() {
        let body = r#"{"name": "postgres", "engine": "postgres", "image": "postgres:17",
          "env_name": "DATABASE_URL", "host": "postgres", "port": 5432, "username": "app",
          "database": "app", "url": "postgres://app:********@postgres:5432/app",
          "volume": "rp-blog-svc-postgres", "status": "missing", "container": null,
          "last_error": null, "created_at": "2026-03-01T09:00:00Z", "job_id": 41,
          "note": "the service starts now; the app receives DATABASE_URL at its next deployment"}"#;
        let made: ServiceCreated = serde_json::from_str(body).unwrap();
        assert_eq!(made.service.name, "postgres");
        assert_eq!(made.service.status, "missing");
        assert_eq!(made.job_id, 41);
        assert!(made.note.contains("DATABASE_URL"));
    }

    #[test]
    fn a_new_service_sends_only_what_was_chosen() {
        // The server refuses unknown fields, and takes its defaults for absent ones.
        let bare = NewService {
            engine: "redis".into(),
            ..NewService::default()
        };
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            serde_json::json!({ "engine": "redis" })
        );
        let named = NewService {
            engine: "postgres".into(),
            name: Some("db".into()),
            image: None,
            env_name: Some("PRIMARY_DB".into()),
        };
        assert_eq!(
            serde_json::to_value(&named).unwrap(),
            serde_json::json!({ "engine": "postgres", "name": "db", "env_name": "PRIMARY_DB" })
        );
    }

    #[test]
    fn a_deletion_says_whether_the_volume_was_kept() {
        let body = r#"{"name": "db", "volume": "rp-blog-svc-db", "volume_kept": true,
          "job_id": 42,
          "note": "the service stops now; the app keeps DATABASE_URL until its next deployment"}"#;
        let gone: ServiceDeleted = serde_json::from_str(body).unwrap();
        assert!(gone.volume_kept);
        assert_eq!((gone.volume.as_str(), gone.job_id), ("rp-blog-svc-db", 42));
    }

    #[test]
    fn credentials_decode_and_never_print_the_password() {
        let body = r#"{"name": "db", "env_name": "DATABASE_URL",
          "url": "postgres://app:Zx81secretPassw0rd@db:5432/app", "host": "db", "port": 5432,
          "username": "app", "password": "Zx81secretPassw0rd", "database": "app"}"#;
        let c: Credentials = serde_json::from_str(body).unwrap();
        assert_eq!(c.password, "Zx81secretPassw0rd");
        let printed = format!("{c:?}");
        assert!(!printed.contains("Zx81"), "{printed}");
        assert!(printed.contains("DATABASE_URL"), "{printed}");
    }

    /// Backups as `GET .../backups` lists them, newest first: one running (no size, no end),
    /// one failed, one done.
    const BACKUPS: &str = r#"{
      "items": [
        {"id": 14, "service": "db", "engine": "postgres",
         "file": "backups/blog/db/20260302T100000Z-14.dump", "size_bytes": null,
         "state": "running", "reason": null, "created_at": "2026-03-02T10:00:00Z",
         "finished_at": null},
        {"id": 13, "service": "db", "engine": "postgres",
         "file": "backups/blog/db/20260302T090000Z-13.dump", "size_bytes": null,
         "state": "failed", "reason": "pg_dump: error: connection to server failed",
         "created_at": "2026-03-02T09:00:00Z", "finished_at": "2026-03-02T09:00:01.5Z"},
        {"id": 12, "service": "db", "engine": "postgres",
         "file": "backups/blog/db/20260301T090000Z-12.dump", "size_bytes": 1048576,
         "state": "done", "reason": null, "created_at": "2026-03-01T09:00:00Z",
         "finished_at": "2026-03-01T09:00:04Z"}
      ]
    }"#;

    #[test]
    fn backups_decode_from_the_servers_json() {
        let list: Backups = serde_json::from_str(BACKUPS).unwrap();
        let [running, failed, done] = &list.items[..] else {
            panic!("three backups: {list:?}");
        };
        assert_eq!((running.size_bytes, &running.finished_at), (None, &None));
        assert!(failed.reason.as_deref().unwrap().starts_with("pg_dump"));
        assert_eq!(done.size_bytes, Some(1_048_576));
        assert_eq!(done.file, "backups/blog/db/20260301T090000Z-12.dump");
    }

    #[test]
    fn a_started_backup_and_a_queued_restore_name_their_jobs() {
        let started = r#"{"id": 15, "service": "db", "engine": "postgres",
          "file": "backups/blog/db/20260302T110000Z-15.dump", "size_bytes": null,
          "state": "running", "reason": null, "created_at": "2026-03-02T11:00:00Z",
          "finished_at": null, "job_id": 43}"#;
        let started: BackupStarted = serde_json::from_str(started).unwrap();
        assert_eq!((started.backup.id, started.job_id), (15, 43));
        assert_eq!(started.backup.state, "running");

        let queued = r#"{"job_id": 44, "service": "db", "backup_id": 12,
          "note": "the restore replaces the service's data; follow it at /api/v1/jobs/{job_id}"}"#;
        let queued: RestoreQueued = serde_json::from_str(queued).unwrap();
        assert_eq!((queued.job_id, queued.backup_id), (44, 12));
        assert_eq!(queued.service, "db");
    }

    #[test]
    fn a_job_decodes_and_says_when_it_is_finished() {
        let body = r#"{"id": 44, "kind": "restore", "key": "restore:3", "state": "dead",
          "attempts": 1, "max_attempts": 1, "next_run_at": "2026-03-02T11:00:00Z",
          "locked_until": null, "last_error": "pg_restore: error: input file is too short",
          "cancel_requested": false, "created_at": "2026-03-02T11:00:00Z",
          "finished_at": "2026-03-02T11:00:02Z"}"#;
        let mut job: Job = serde_json::from_str(body).unwrap();
        assert!(job.is_finished());
        assert_eq!(job.key.as_deref(), Some("restore:3"));
        assert!(job.last_error.as_deref().unwrap().contains("pg_restore"));
        for (state, finished) in [
            ("queued", false),
            ("running", false),
            ("succeeded", true),
            ("cancelled", true),
        ] {
            job.state = state.into();
            assert_eq!(job.is_finished(), finished, "{state}");
        }
    }

    #[tokio::test]
    async fn paths_escape_names_and_say_whether_to_purge() {
        // Nothing listens on port 1: the error names the URL the client built.
        let c = Client::new("http://127.0.0.1:1", "t").unwrap();
        let url = |e: Error| match e {
            Error::Transport { url, .. } => url,
            e => panic!("{e:?}"),
        };
        let base = "http://127.0.0.1:1/api/v1/apps/my%20app/services";
        let e = c.delete_service("my app", "db", DataVolume::Purge).await;
        assert_eq!(url(e.unwrap_err()), format!("{base}/db?purge=true"));
        let e = c.delete_service("my app", "db", DataVolume::Keep).await;
        assert_eq!(url(e.unwrap_err()), format!("{base}/db?purge=false"));
        let e = c.restore_service("my app", "a/b", 12).await;
        assert_eq!(url(e.unwrap_err()), format!("{base}/a%2Fb/restore"));
        let e = c.service_backups("my app", "db").await;
        assert_eq!(url(e.unwrap_err()), format!("{base}/db/backups"));
        let e = c.job(44).await;
        assert_eq!(url(e.unwrap_err()), "http://127.0.0.1:1/api/v1/jobs/44");
    }
}
