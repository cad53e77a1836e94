//! Requesting a deployment: the one way a deployment row and its `deploy` job are created for a
//! request (the API, a webhook), so every requester coalesces the same way.

pub mod views;

use rusqlite::{Connection, OptionalExtension, params};

use super::jobs::{self, NewJob};
use super::{LedgerError, now_ms};

/// What is asked for, and by whom.
#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    pub app_id: i64,
    /// A branch, tag or commit; `None` deploys the app's branch.
    pub git_ref: Option<String>,
    /// The exact commit, when the requester knows it (a push names it).
    pub commit_sha: Option<String>,
    /// `api`, `webhook`, ...
    pub trigger: String,
    pub triggered_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub deployment_id: i64,
    /// The request joined a deployment already waiting in the queue.
    pub coalesced: bool,
}

/// Queues a deployment of `req.app_id`, or joins the app's deployment that still waits in the
/// queue: requests that arrive while one waits become one deployment, of the newest ref. So
/// while a deployment runs, any number of requests queue exactly one more.
///
/// A waiting deployment is joined only while its job is unclaimed (a claimed one may already have
/// read its ref), and never when it is a rollback (that deploys a past release with its own env).
/// Joining with a ref makes it this request's: it takes the ref, the commit, and the trigger.
///
/// Call it inside an immediate transaction, so two requests cannot both queue one.
pub fn request(conn: &Connection, req: &DeployRequest) -> Result<Requested, LedgerError> {
    let waiting: Option<i64> = conn
        .prepare_cached(
            "SELECT d.id FROM deployments d
              WHERE d.app_id = ?1 AND d.state = 'queued' AND d.rollback_of IS NULL
                AND EXISTS (SELECT 1 FROM jobs j WHERE j.deployment_id = d.id AND j.state = 'queued')
              ORDER BY d.id DESC LIMIT 1",
        )?
        .query_row([req.app_id], |r| r.get(0))
        .optional()?;
    if let Some(id) = waiting {
        if let Some(git_ref) = &req.git_ref {
            conn.prepare_cached(
                "UPDATE deployments
                    SET requested_ref = ?2, commit_sha = ?3, trigger = ?4, triggered_by = ?5
                  WHERE id = ?1",
            )?
            .execute(params![
                id,
                git_ref,
                req.commit_sha,
                req.trigger,
                req.triggered_by
            ])?;
        }
        return Ok(Requested {
            deployment_id: id,
            coalesced: true,
        });
    }
    conn.prepare_cached(
        "INSERT INTO deployments (app_id, state, requested_ref, commit_sha, trigger, triggered_by, created_at)
         VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
            req.app_id,
            req.git_ref,
            req.commit_sha,
            req.trigger,
            req.triggered_by,
            now_ms()
        ],
    )?;
    let id = conn.last_insert_rowid();
    jobs::enqueue(
        conn,
        &NewJob::new("deploy")
            .app(req.app_id)
            .deployment(id)
            .key(format!("deploy:{id}"))
            .max_attempts(3),
    )?;
    Ok(Requested {
        deployment_id: id,
        coalesced: false,
    })
}
