//! Managed services and their backups in the ledger.
//!
//! A change to an app's services is committed with a `services` job that makes Docker match
//! (start, stop, purge), so a crash between the two loses nothing. Passwords are generated here
//! and sealed; they never change for the life of the service.

use rusqlite::{Connection, OptionalExtension, params};
use rustploy_api::states::{BackupState, JobState};
use serde::Serialize;

use super::jobs::{self, JobId, JobKind, NewJob};
use super::{LedgerError, Millis, now_ms};
use crate::crypto::SecretBox;
use crate::services::{self, Engine, Service};

/// An app may have at most this many services.
pub const MAX_PER_APP: i64 = 10;

/// A service row, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceRow {
    pub id: i64,
    pub name: String,
    pub engine: String,
    pub image: String,
    pub env_name: String,
    pub volume: String,
    pub created_at: Millis,
}

/// What a new service is made of; names are checked by the caller.
#[derive(Debug, Clone)]
pub struct NewService {
    pub name: String,
    pub engine: Engine,
    pub image: String,
    pub env_name: String,
    pub volume: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the app already has a service named '{0}'")]
    NameTaken(String),
    #[error("the service '{0}' already receives {1}: choose another env_name")]
    EnvTaken(String, String),
    #[error("an app has at most {MAX_PER_APP} services")]
    TooMany,
    #[error(
        "the kept volume of a deleted {1} service named '{0}' holds its data: make a {1} service \
         to take it back, or remove it with DELETE .../services/{0}?purge=true"
    )]
    KeptVolume(String, String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

pub fn password_context(app_id: i64, name: &str) -> String {
    format!("service-password:{app_id}:{name}")
}

pub fn root_password_context(app_id: i64, name: &str) -> String {
    format!("service-root-password:{app_id}:{name}")
}

/// Queues a `services` job for the app: Docker is made to match its rows. `purge` names
/// volumes to remove once their services are gone.
pub fn enqueue_apply(conn: &Connection, app_id: i64, purge: &[String]) -> Result<i64, LedgerError> {
    Ok(jobs::enqueue(
        conn,
        &NewJob::new(JobKind::Services {
            purge_volumes: purge.to_vec(),
        })
        .app(app_id)
        .max_attempts(3),
    )?
    .id())
}

/// Adds a service with new credentials and queues its start. Call it in an immediate
/// transaction. Returns the row and the job.
pub fn create(
    conn: &Connection,
    secrets: &SecretBox,
    app_id: i64,
    new: &NewService,
) -> Result<(ServiceRow, i64), CreateError> {
    let row = insert(conn, secrets, app_id, new)?;
    let job = enqueue_apply(conn, app_id, &[])?;
    Ok((row, job))
}

/// For each engine a manifest depends on, a service unless the app has one of that engine:
/// named after the engine, with the server's image. Returns the rows made.
pub fn ensure(
    conn: &Connection,
    secrets: &SecretBox,
    app_id: i64,
    engines: &[Engine],
    image: impl Fn(Engine) -> String,
    volume: impl Fn(&str) -> String,
) -> Result<Vec<ServiceRow>, CreateError> {
    let mut made = Vec::new();
    for &engine in engines {
        let rows = list(conn, app_id)?;
        if rows.iter().any(|r| r.engine == engine.as_str()) {
            continue;
        }
        let name = engine.as_str().to_string();
        made.push(insert(
            conn,
            secrets,
            app_id,
            &NewService {
                volume: volume(&name),
                name,
                engine,
                image: image(engine),
                env_name: engine.default_env_name().into(),
            },
        )?);
    }
    Ok(made)
}

/// Adds a service with new credentials (no job).
fn insert(
    conn: &Connection,
    secrets: &SecretBox,
    app_id: i64,
    new: &NewService,
) -> Result<ServiceRow, CreateError> {
    let rows = list(conn, app_id)?;
    if rows.iter().any(|r| r.name == new.name) {
        return Err(CreateError::NameTaken(new.name.clone()));
    }
    if let Some(r) = rows.iter().find(|r| r.env_name == new.env_name) {
        return Err(CreateError::EnvTaken(r.name.clone(), r.env_name.clone()));
    }
    if rows.len() as i64 >= MAX_PER_APP {
        return Err(CreateError::TooMany);
    }
    let kept: Option<(i64, String, String, Millis)> = conn
        .prepare_cached(
            "SELECT id, engine, volume, created_at FROM managed_services
              WHERE app_id = ?1 AND name = ?2 AND deleted_at IS NOT NULL",
        )
        .map_err(LedgerError::from)?
        .query_row(params![app_id, new.name], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(LedgerError::from)?;
    if let Some((id, engine, volume, created_at)) = kept {
        if engine != new.engine.as_str() {
            return Err(CreateError::KeptVolume(new.name.clone(), engine));
        }
        // Its volume and credentials come back; the image and variable are the new request's.
        conn.execute(
            "UPDATE managed_services SET deleted_at = NULL, image = ?2, env_name = ?3 WHERE id = ?1",
            params![id, new.image, new.env_name],
        )
        .map_err(LedgerError::from)?;
        return Ok(ServiceRow {
            id,
            name: new.name.clone(),
            engine,
            image: new.image.clone(),
            env_name: new.env_name.clone(),
            volume,
            created_at,
        });
    }
    let password = secrets.seal(
        &password_context(app_id, &new.name),
        services::generate_password().as_bytes(),
    );
    let root = new.engine.has_root().then(|| {
        secrets.seal(
            &root_password_context(app_id, &new.name),
            services::generate_password().as_bytes(),
        )
    });
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO managed_services (app_id, name, engine, image, volume, username, password_enc,
                                       root_password_enc, database_name, env_name, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .map_err(LedgerError::from)?
    .execute(params![
        app_id,
        new.name,
        new.engine.as_str(),
        new.image,
        new.volume,
        services::USER,
        password,
        root,
        services::DATABASE,
        new.env_name,
        now
    ])
    .map_err(LedgerError::from)?;
    Ok(ServiceRow {
        id: conn.last_insert_rowid(),
        name: new.name.clone(),
        engine: new.engine.as_str().into(),
        image: new.image.clone(),
        env_name: new.env_name.clone(),
        volume: new.volume.clone(),
        created_at: now,
    })
}

/// A `ServiceRow` from `SELECT id, name, engine, image, env_name, volume, created_at`.
fn service_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceRow> {
    Ok(ServiceRow {
        id: r.get(0)?,
        name: r.get(1)?,
        engine: r.get(2)?,
        image: r.get(3)?,
        env_name: r.get(4)?,
        volume: r.get(5)?,
        created_at: r.get(6)?,
    })
}

pub fn list(conn: &Connection, app_id: i64) -> Result<Vec<ServiceRow>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, engine, image, env_name, volume, created_at
           FROM managed_services WHERE app_id = ?1 AND deleted_at IS NULL ORDER BY name",
    )?;
    let rows = stmt
        .query_map([app_id], service_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn get(conn: &Connection, app_id: i64, name: &str) -> Result<Option<ServiceRow>, LedgerError> {
    Ok(list(conn, app_id)?.into_iter().find(|r| r.name == name))
}

/// The app's services with their secrets opened: what Docker runs and the app receives.
pub fn load(
    conn: &Connection,
    secrets: &SecretBox,
    app_id: i64,
) -> Result<Vec<Service>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, engine, image, env_name, password_enc, root_password_enc
           FROM managed_services WHERE app_id = ?1 AND deleted_at IS NULL ORDER BY name",
    )?;
    let rows = stmt
        .query_map([app_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<Vec<u8>>>(4)?,
                r.get::<_, Option<Vec<u8>>>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(name, engine, image, env_name, pw, root)| {
            let engine = Engine::parse(&engine)
                .ok_or_else(|| LedgerError::Invalid(format!("service {name}: engine {engine}")))?;
            let open = |ctx: String, v: &[u8]| {
                secrets
                    .open_string(&ctx, v)
                    .map_err(|e| LedgerError::Invalid(format!("service {name}: {e}")))
            };
            let password = open(
                password_context(app_id, &name),
                pw.as_deref().unwrap_or_default(),
            )?;
            let root_password = root
                .map(|r| open(root_password_context(app_id, &name), &r))
                .transpose()?;
            Ok(Service {
                name,
                engine,
                image,
                env_name,
                password,
                root_password,
            })
        })
        .collect()
}

/// Deletes a service and queues its container's removal. Without `purge` its row stays,
/// marked deleted, with the credentials its kept volume's data was made with; with `purge`
/// the row and the volume go (also for a service deleted earlier without purge). Its backups
/// stay. Returns the row, or `None` when there is none to delete.
pub fn delete(
    conn: &Connection,
    app_id: i64,
    name: &str,
    purge: bool,
) -> Result<Option<(ServiceRow, i64)>, LedgerError> {
    let row = match get(conn, app_id, name)? {
        Some(row) => row,
        None if purge => match kept(conn, app_id, name)? {
            Some(row) => row,
            None => return Ok(None),
        },
        None => return Ok(None),
    };
    let purge_volumes = if purge {
        conn.execute("DELETE FROM managed_services WHERE id = ?1", [row.id])?;
        vec![row.volume.clone()]
    } else {
        conn.execute(
            "UPDATE managed_services SET deleted_at = ?2 WHERE id = ?1",
            params![row.id, now_ms()],
        )?;
        Vec::new()
    };
    let job = enqueue_apply(conn, app_id, &purge_volumes)?;
    Ok(Some((row, job)))
}

/// A service deleted with its volume kept.
pub fn kept(conn: &Connection, app_id: i64, name: &str) -> Result<Option<ServiceRow>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, name, engine, image, env_name, volume, created_at FROM managed_services
              WHERE app_id = ?1 AND name = ?2 AND deleted_at IS NOT NULL",
        )?
        .query_row(params![app_id, name], service_row)
        .optional()?)
}

/// One backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupRow {
    pub id: i64,
    pub service: String,
    pub engine: String,
    /// Relative to the data directory.
    pub path: String,
    pub size_bytes: Option<i64>,
    pub state: BackupState,
    pub reason: Option<String>,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
}

const BACKUP_COLUMNS: &str =
    "id, service_name, engine, path, size_bytes, state, reason, created_at, finished_at";

fn backup_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupRow> {
    Ok(BackupRow {
        id: r.get(0)?,
        service: r.get(1)?,
        engine: r.get(2)?,
        path: r.get(3)?,
        size_bytes: r.get(4)?,
        state: r.get(5)?,
        reason: r.get(6)?,
        created_at: r.get(7)?,
        finished_at: r.get(8)?,
    })
}

/// Records a backup of `service` to run, and its `backup` job. `path` is where it will be
/// written, relative to the data directory: `dir` plus a name made from the id.
pub fn request_backup(
    conn: &Connection,
    app_id: i64,
    service: &ServiceRow,
    dir: &str,
) -> Result<(BackupRow, i64), LedgerError> {
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO service_backups (app_id, service_id, service_name, engine, path, state, created_at)
         VALUES (?1, ?2, ?3, ?4, '', ?5, ?6)",
    )?
    .execute(params![
        app_id,
        service.id,
        service.name,
        service.engine,
        BackupState::Running,
        now
    ])?;
    let id = conn.last_insert_rowid();
    let ext = Engine::parse(&service.engine)
        .map(Engine::backup_extension)
        .unwrap_or("bak");
    let path = format!("{dir}/{}-{id}.{ext}", stamp(now));
    conn.execute(
        "UPDATE service_backups SET path = ?2 WHERE id = ?1",
        params![id, path],
    )?;
    let job = jobs::enqueue(
        conn,
        &NewJob::new(JobKind::Backup { backup_id: id })
            .app(app_id)
            .key(format!("backup:{id}"))
            .max_attempts(1),
    )?
    .id();
    let row = get_backup(conn, app_id, id)?.expect("just inserted");
    Ok((row, job))
}

/// `20261127T174501Z` from milliseconds since the epoch (UTC): a file name that sorts by time.
pub fn stamp(ms: Millis) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) else {
        return ms.to_string();
    };
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn get_backup(
    conn: &Connection,
    app_id: i64,
    id: i64,
) -> Result<Option<BackupRow>, LedgerError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {BACKUP_COLUMNS} FROM service_backups WHERE app_id = ?1 AND id = ?2"
        ))?
        .query_row(params![app_id, id], backup_row)
        .optional()?)
}

/// What came of asking for a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreRequest {
    /// The `restore` job.
    Queued(JobId),
    /// The app has no backup of that id.
    NoBackup,
    /// The backup is still running or failed.
    NotDone(BackupState),
    /// The backup is of this other engine than the service's.
    OtherEngine(String),
    /// A restore into the service is already queued or running.
    Running,
}

/// Queues a restore of the app's backup `backup_id` into `service`: only a finished backup of
/// the service's engine, and one restore per service at a time. Call it in an immediate
/// transaction.
pub fn request_restore(
    conn: &Connection,
    app_id: i64,
    service: &ServiceRow,
    backup_id: i64,
) -> Result<RestoreRequest, LedgerError> {
    let Some(b) = get_backup(conn, app_id, backup_id)? else {
        return Ok(RestoreRequest::NoBackup);
    };
    if b.state != BackupState::Done {
        return Ok(RestoreRequest::NotDone(b.state));
    }
    if b.engine != service.engine {
        return Ok(RestoreRequest::OtherEngine(b.engine));
    }
    let job = jobs::enqueue(
        conn,
        &NewJob::new(JobKind::Restore {
            backup_id,
            service: service.name.clone(),
        })
        .app(app_id)
        .key(format!("restore:{}", service.id))
        .max_attempts(1),
    )?;
    Ok(match job {
        jobs::Enqueued::Created(id) => RestoreRequest::Queued(id),
        jobs::Enqueued::Existing(_) => RestoreRequest::Running,
    })
}

/// The backups of the app's service `name` (also those made before it was deleted and made
/// again), newest first.
pub fn list_backups(
    conn: &Connection,
    app_id: i64,
    name: &str,
) -> Result<Vec<BackupRow>, LedgerError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {BACKUP_COLUMNS} FROM service_backups WHERE app_id = ?1 AND service_name = ?2
          ORDER BY id DESC"
    ))?;
    let rows = stmt
        .query_map(params![app_id, name], backup_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Ends a backup: done with its size, or failed with the reason.
pub fn finish_backup(
    conn: &Connection,
    id: i64,
    outcome: Result<u64, String>,
) -> Result<(), LedgerError> {
    let now = now_ms();
    match outcome {
        Ok(size) => conn.execute(
            "UPDATE service_backups SET state = ?4, size_bytes = ?2, finished_at = ?3, reason = NULL
              WHERE id = ?1",
            params![id, size as i64, now, BackupState::Done],
        )?,
        Err(reason) => conn.execute(
            "UPDATE service_backups SET state = ?4, reason = ?2, finished_at = ?3 WHERE id = ?1",
            params![id, reason, now, BackupState::Failed],
        )?,
    };
    Ok(())
}

/// Ends a `backup` job's backup: its row finished with `outcome`, and the finished backups of
/// its service beyond the newest `keep` deleted. Returns the deleted rows, whose files the
/// caller removes.
pub fn finish_backup_and_prune(
    conn: &Connection,
    app_id: i64,
    backup_id: i64,
    service: &str,
    outcome: Result<u64, String>,
    keep: u32,
) -> Result<Vec<BackupRow>, LedgerError> {
    finish_backup(conn, backup_id, outcome)?;
    let old = beyond_retention(conn, app_id, service, keep)?;
    for b in &old {
        conn.prepare_cached("DELETE FROM service_backups WHERE id = ?1")?
            .execute([b.id])?;
    }
    Ok(old)
}

/// The finished backups of one service beyond the newest `keep`, to delete (rows and files).
pub fn beyond_retention(
    conn: &Connection,
    app_id: i64,
    name: &str,
    keep: u32,
) -> Result<Vec<BackupRow>, LedgerError> {
    Ok(list_backups(conn, app_id, name)?
        .into_iter()
        .filter(|b| b.state != BackupState::Running)
        .skip(keep as usize)
        .collect())
}

/// At start-up, before jobs run: a backup still running was interrupted by the stop (its job,
/// allowed one attempt, is buried), unless its job still waits in the queue. Marked failed.
pub fn fail_interrupted_backups(conn: &Connection) -> Result<usize, LedgerError> {
    Ok(conn.execute(
        "UPDATE service_backups
            SET state = ?2, finished_at = ?1,
                reason = 'interrupted: the server stopped during the backup; start another'
          WHERE state = ?3
            AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_key = 'backup:' || service_backups.id
                             AND j.state = 'queued')",
        params![now_ms(), BackupState::Failed, BackupState::Running],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(stamp(0), "19700101T000000Z");
        // 2026-11-27 17:45:01 UTC
        assert_eq!(stamp(1_795_801_501_000), "20261127T174501Z");
        assert_eq!(stamp(951_782_400_000), "20000229T000000Z");
    }
}

/// A service deleted with its data kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRow {
    pub name: String,
    pub engine: String,
    pub volume: String,
    pub deleted_at: Millis,
}

/// The app's services deleted with their data kept, by name.
pub fn kept_list(conn: &Connection, app_id: i64) -> Result<Vec<KeptRow>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT name, engine, volume, deleted_at FROM managed_services
              WHERE app_id = ?1 AND deleted_at IS NOT NULL ORDER BY name",
        )?
        .query_map([app_id], |r| {
            Ok(KeptRow {
                name: r.get(0)?,
                engine: r.get(1)?,
                volume: r.get(2)?,
                deleted_at: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

/// Whether a change of the app's services is queued or running.
pub fn apply_pending(conn: &Connection, app: &str) -> Result<bool, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs j JOIN apps a ON a.id = j.app_id
                             WHERE a.name = ?1 AND j.kind = 'services'
                               AND j.state IN ('queued', 'running'))",
        )?
        .query_row([app], |r| r.get(0))?)
}

/// The error of the app's newest change of its services, when it failed and is not being
/// retried.
pub fn last_apply_error(conn: &Connection, app_id: i64) -> Result<Option<String>, LedgerError> {
    let newest: Option<(JobState, Option<String>)> = conn
        .prepare_cached(
            "SELECT state, last_error FROM jobs WHERE app_id = ?1 AND kind = 'services'
              ORDER BY id DESC LIMIT 1",
        )?
        .query_row([app_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(newest.and_then(|(state, e)| (state != JobState::Succeeded).then_some(e).flatten()))
}

/// A restore job of an app, as the backups page follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreJobRow {
    pub id: i64,
    pub state: JobState,
    pub last_error: Option<String>,
    pub backup_id: Option<i64>,
}

/// The app's restore job `id`, when it is one.
pub fn restore_job(
    conn: &Connection,
    app_id: i64,
    id: i64,
) -> Result<Option<RestoreJobRow>, LedgerError> {
    let row: Option<(JobState, Option<String>, String)> = conn
        .prepare_cached(
            "SELECT state, last_error, payload FROM jobs
              WHERE id = ?1 AND app_id = ?2 AND kind = 'restore'",
        )?
        .query_row(params![id, app_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    Ok(row.map(|(state, last_error, payload)| RestoreJobRow {
        id,
        state,
        last_error,
        backup_id: match JobKind::decode("restore", &payload) {
            Ok(JobKind::Restore { backup_id, .. }) => Some(backup_id),
            _ => None,
        },
    }))
}
