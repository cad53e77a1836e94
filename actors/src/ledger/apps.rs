//! Apps: creating, finding, listing, renaming and removing them, with their newest deployment.
//!
//! An app is deleted by a job: [`request_delete`] marks it (`deleting_at`) and queues its
//! `app_delete` job, which its Deployer runs; the job's last step is [`delete`]. While an app
//! is marked, the ledger refuses every new job of it (migration 0010's triggers), whichever
//! path asks, with an error [`deleting_refusal`] recognises.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use rustploy_api::states::{DeploymentState, JobState};

use super::deployments::views::{self, DeploymentRow};
use super::jobs::{self, JobId, JobKind, NewJob};
use super::{LedgerError, Millis, now_ms};
use crate::deploy::detect::Detection;

/// An app, with its newest deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRow {
    pub id: i64,
    pub name: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// An owner lifted the compose policy for it.
    pub trusted: bool,
    pub trusted_by: Option<String>,
    pub trusted_at: Option<Millis>,
    /// When its deletion was asked for; set until its rows are gone.
    pub deleting_at: Option<Millis>,
    pub last_deployment: Option<DeploymentRow>,
}

/// An app's id and name, as a lookup by either finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRef {
    pub id: i64,
    pub name: String,
}

/// An app with the state of its newest deployment and the release that serves it: what every
/// dashboard tab shows on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHead {
    pub id: i64,
    pub name: String,
    /// Its newest deployment, which may have failed while an older release goes on serving.
    pub last: Option<(i64, DeploymentState)>,
    /// The deployment whose containers are routed (the newest, during a switch).
    pub live: Option<i64>,
}

/// One line of the dashboard's apps list.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSummary {
    pub name: String,
    pub last: Option<LastDeployment>,
    /// Its hostnames, in order.
    pub domains: Vec<String>,
    /// The deployment whose release is routed, if any.
    pub live: Option<i64>,
}

/// The newest deployment of an app, as the apps list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastDeployment {
    pub id: i64,
    pub state: DeploymentState,
    pub commit_sha: Option<String>,
    pub created_at: Millis,
}

/// Where an imported app's code comes from, its credentials already sealed.
#[derive(Debug, Clone)]
pub struct ImportSource {
    pub repo_url: String,
    pub branch: String,
    pub deploy_key_enc: Option<Vec<u8>>,
    pub https_token_enc: Option<Vec<u8>>,
}

/// What renaming an app did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renamed {
    Done,
    /// It has been deployed: its name is part of its containers' and volumes' names.
    Deployed,
    /// Another app has that name.
    Taken,
}

/// The apps with their newest deployment, in one query. The newest deployment is found per app
/// by its primary key through the `(app_id, id)` index, which keeps a page of 200 apps cheap.
const SELECT: &str = "SELECT a.id, a.name, a.created_at, a.updated_at, a.trusted, a.trusted_by,
        a.trusted_at, a.deleting_at, d.id, d.app_id, d.state, d.step, d.requested_ref,
        d.commit_sha, d.trigger, d.triggered_by, d.reason, d.created_at, d.started_at,
        d.finished_at, d.rollback_of
   FROM apps a
   LEFT JOIN deployments d ON d.id = (SELECT MAX(id) FROM deployments WHERE app_id = a.id)";

fn app_row(r: &Row<'_>) -> rusqlite::Result<AppRow> {
    let name: String = r.get(1)?;
    let last_deployment = match r.get::<_, Option<i64>>(8)? {
        Some(_) => Some(views::read_at(r, 8, name.clone())?),
        None => None,
    };
    Ok(AppRow {
        id: r.get(0)?,
        name,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
        trusted: r.get(4)?,
        trusted_by: r.get(5)?,
        trusted_at: r.get(6)?,
        deleting_at: r.get(7)?,
        last_deployment,
    })
}

/// App `id` with its newest deployment.
pub fn get(c: &Connection, id: i64) -> Result<Option<AppRow>, LedgerError> {
    Ok(c.prepare_cached(&format!("{SELECT} WHERE a.id = ?1"))?
        .query_row([id], app_row)
        .optional()?)
}

/// One page of apps with ids below `before`, newest first, each with its newest deployment.
pub fn page(c: &Connection, before: i64, limit: i64) -> Result<Vec<AppRow>, LedgerError> {
    let rows = c
        .prepare_cached(&format!(
            "{SELECT} WHERE a.id < ?1 ORDER BY a.id DESC LIMIT CAST(?2 AS INTEGER)"
        ))?
        .query_map(params![before, limit], app_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The id of the app `key` names: its id in digits, or its name.
pub fn resolve(c: &Connection, key: &str) -> Result<Option<i64>, LedgerError> {
    Ok(resolve_named(c, key)?.map(|a| a.id))
}

/// Like [`resolve`], with the app's name.
pub fn resolve_named(c: &Connection, key: &str) -> Result<Option<AppRef>, LedgerError> {
    let by_id = key.parse::<i64>().ok();
    Ok(
        c.prepare_cached("SELECT id, name FROM apps WHERE id = ?1 OR name = ?2")?
            .query_row(params![by_id, key], |r| {
                Ok(AppRef {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })
            .optional()?,
    )
}

/// Creates the app `name`; `None` when another app has that name.
pub fn create(c: &Connection, name: &str) -> Result<Option<i64>, LedgerError> {
    let now = now_ms();
    let inserted = c
        .prepare_cached("INSERT INTO apps (name, created_at, updated_at) VALUES (?1, ?2, ?2)")?
        .execute(params![name, now]);
    match inserted {
        Ok(_) => Ok(Some(c.last_insert_rowid())),
        Err(e) if is_constraint(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Records what an import of app `app_id` found, and where its code comes from.
pub fn save_import(
    c: &Connection,
    app_id: i64,
    source: &ImportSource,
    d: &Detection,
) -> Result<(), LedgerError> {
    c.prepare_cached(
        "INSERT INTO app_import_configs (app_id, repo_url, branch, compose_path, build_mode,
                routed_service, port, healthcheck_path, manifest_json, detection_json,
                deploy_key_enc, https_token_enc, imported_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        app_id,
        source.repo_url,
        source.branch,
        d.compose_path,
        d.build_mode.as_str(),
        d.routed_service,
        d.port,
        d.healthcheck_path,
        d.manifest.as_ref().map(json_text),
        json_text(d),
        source.deploy_key_enc,
        source.https_token_enc,
        now_ms(),
    ])?;
    Ok(())
}

/// JSON text of what the import found; these types always serialise.
fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialises")
}

/// Renames app `id`, unless it has been deployed or the name is taken. Call it inside a
/// transaction, so no deployment is requested between the check and the rename.
pub fn rename(c: &Connection, id: i64, name: &str) -> Result<Renamed, LedgerError> {
    let deployed: bool = c
        .prepare_cached("SELECT COUNT(*) > 0 FROM deployments WHERE app_id = ?1")?
        .query_row([id], |r| r.get(0))?;
    if deployed {
        return Ok(Renamed::Deployed);
    }
    let renamed = c
        .prepare_cached("UPDATE apps SET name = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, name, now_ms()]);
    match renamed {
        Ok(_) => Ok(Renamed::Done),
        // An app being deleted keeps its name: that refusal is the ledger's to report.
        Err(e) if is_deleting_refusal(&e) => Err(e.into()),
        Err(e) if is_constraint(&e) => Ok(Renamed::Taken),
        Err(e) => Err(e.into()),
    }
}

/// Marks app `id` as being deleted and queues its `app_delete` job, or finds the one already
/// queued or running (whose `purge_volumes` then stands). Its deployments still waiting in the
/// queue are cancelled: nothing of the app starts any more, and a running one is left to end
/// before the deletion runs (jobs of one app never run side by side). Call it inside an
/// immediate transaction.
pub fn request_delete(
    c: &Connection,
    id: i64,
    name: &str,
    purge_volumes: bool,
) -> Result<JobId, LedgerError> {
    c.prepare_cached("UPDATE apps SET deleting_at = COALESCE(deleting_at, ?2) WHERE id = ?1")?
        .execute(params![id, now_ms()])?;
    let waiting: Vec<JobId> = c
        .prepare_cached("SELECT id FROM jobs WHERE app_id = ?1 AND kind = ?2 AND state = ?3")?
        .query_map(
            params![id, JobKind::Deploy {}.name(), JobState::Queued],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    for job in waiting {
        jobs::cancel_in(c, job)?;
    }
    let job = NewJob::new(JobKind::AppDelete {
        app: name.to_string(),
        purge_volumes,
    })
    .key(format!("app_delete:{id}"))
    .app(id);
    Ok(jobs::enqueue(c, &job)?.id())
}

/// What the deletion of an app needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub name: String,
    /// Something of it may be on the engine: one of its deployments started, or it has managed
    /// services.
    pub ran: bool,
}

/// App `id` as its deletion sees it; `None` when it is gone.
pub fn doomed(c: &Connection, id: i64) -> Result<Option<Doomed>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT name,
                EXISTS (SELECT 1 FROM deployments WHERE app_id = a.id AND started_at IS NOT NULL)
                OR EXISTS (SELECT 1 FROM managed_services WHERE app_id = a.id)
           FROM apps a WHERE id = ?1",
    )?
    .query_row([id], |r| {
        Ok(Doomed {
            name: r.get(0)?,
            ran: r.get(1)?,
        })
    })
    .optional()?)
}

/// Deletes app `id` with everything that belongs to it (its rows cascade), in one transaction:
/// the last step of its `app_delete` job `job`, which is first detached from the app so that it
/// outlives it and records its own end. Returns whether the app was still there.
pub fn delete(c: &mut Connection, id: i64, job: JobId) -> Result<bool, LedgerError> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.prepare_cached("UPDATE jobs SET app_id = NULL WHERE id = ?1 AND app_id = ?2")?
        .execute(params![job, id])?;
    let deleted = tx
        .prepare_cached("DELETE FROM apps WHERE id = ?1")?
        .execute([id])?;
    tx.commit()?;
    Ok(deleted == 1)
}

/// The start of the message of the ledger's refusal to queue work for, or rename, an app being
/// deleted (raised by migration 0010's triggers).
const DELETING: &str = "app_deleting: ";

/// When `e` is the ledger refusing a change to an app being deleted, what it said.
pub fn deleting_refusal(e: &LedgerError) -> Option<&str> {
    match e {
        LedgerError::Sqlite(e @ rusqlite::Error::SqliteFailure(_, Some(msg)))
            if is_deleting_refusal(e) =>
        {
            msg.strip_prefix(DELETING)
        }
        _ => None,
    }
}

fn is_deleting_refusal(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(msg))
        if f.code == rusqlite::ErrorCode::ConstraintViolation && msg.starts_with(DELETING))
}

/// App `id`'s name, its newest deployment and the one that serves ([`deployments::live`]).
pub fn head(c: &Connection, id: i64) -> Result<Option<AppHead>, LedgerError> {
    let Some((name, last)) = c
        .prepare_cached(
            "SELECT a.name, d.id, d.state
               FROM apps a
               LEFT JOIN deployments d
                 ON d.id = (SELECT MAX(id) FROM deployments WHERE app_id = a.id)
              WHERE a.id = ?1",
        )?
        .query_row([id], |r| {
            let last = match r.get::<_, Option<i64>>(1)? {
                Some(d) => Some((d, r.get(2)?)),
                None => None,
            };
            Ok((r.get(0)?, last))
        })
        .optional()?
    else {
        return Ok(None);
    };
    Ok(Some(AppHead {
        id,
        name,
        last,
        live: super::deployments::live(c, id)?,
    }))
}

/// Every app with its newest deployment, domains and whether a release is live, by name.
///
/// Four plain scans merged here rather than one query with correlated subqueries per app: with
/// a thousand apps that is several times faster.
pub fn summaries(c: &Connection) -> Result<Vec<AppSummary>, LedgerError> {
    let mut last: HashMap<i64, LastDeployment> = c
        .prepare_cached(
            "SELECT d.app_id, d.id, d.state, d.commit_sha, d.created_at
               FROM deployments d
               JOIN (SELECT MAX(id) AS id FROM deployments GROUP BY app_id) newest ON newest.id = d.id",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                LastDeployment {
                    id: r.get(1)?,
                    state: r.get(2)?,
                    commit_sha: r.get(3)?,
                    created_at: r.get(4)?,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut domains: HashMap<i64, Vec<String>> = HashMap::new();
    let mut stmt =
        c.prepare_cached("SELECT app_id, hostname FROM domains ORDER BY app_id, hostname")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        domains.entry(r.get(0)?).or_default().push(r.get(1)?);
    }
    let live: HashMap<i64, i64> = c
        .prepare_cached("SELECT app_id, MAX(deployment_id) FROM app_runtimes GROUP BY app_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let apps = c
        .prepare_cached("SELECT id, name FROM apps ORDER BY name")?
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .map(|row| {
            row.map(|(id, name)| AppSummary {
                name,
                last: last.remove(&id),
                domains: domains.remove(&id).unwrap_or_default(),
                live: live.get(&id).copied(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(apps)
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// The branch the app was imported to follow, when it was imported.
pub fn import_branch(c: &Connection, app_id: i64) -> Result<Option<String>, LedgerError> {
    Ok(
        c.prepare_cached("SELECT branch FROM app_import_configs WHERE app_id = ?1")?
            .query_row([app_id], |r| r.get(0))
            .optional()?,
    )
}

/// An app's name.
pub fn name(c: &Connection, app_id: i64) -> Result<Option<String>, LedgerError> {
    Ok(c.prepare_cached("SELECT name FROM apps WHERE id = ?1")?
        .query_row([app_id], |r| r.get(0))
        .optional()?)
}
