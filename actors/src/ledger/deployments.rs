//! Deployments as the ledger holds them, and the state machine that moves them.
//!
//! [`request`] is the one way a deployment row and its `deploy` job are created for a request
//! (the API, a webhook), so every requester coalesces the same way; [`roll_back`] queues a
//! rollback. After that only the transitions below change `deployments.state`:
//!
//! ```text
//! queued ──begin──▶ running ──switch──▶ healthy ──(the next switch)──▶ superseded
//!   ▲                 │  │
//!   └──requeue/interrupt┘  ├──fail──▶ failed      (also from queued)
//!                        └──cancel─▶ cancelled   (also from queued)
//! ```
//!
//! A transition asked of a deployment in a state it does not leave changes nothing and answers
//! [`Transition::Refused`] with the state found.

pub mod views;

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use rustploy_api::states::{DeployStep, DeploymentState, JobState};

use super::jobs::{self, CancelOutcome, JobId, JobKind, NewJob};
use super::{LedgerError, Millis, now_ms};
use crate::crypto::SecretBox;
use crate::deploy::contexts;
use crate::deploy::plan::{self, Past};

/// What became of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The deployment moved.
    Done,
    /// The deployment is in a state this transition does not leave: nothing changed.
    Refused(DeploymentState),
    /// A cancel of the deployment's job was asked for: nothing changed, the job ends cancelled.
    CancelRequested,
    /// There is no such deployment.
    NotFound,
}

impl Transition {
    pub fn is_done(self) -> bool {
        self == Transition::Done
    }
}

pub fn state_of(conn: &Connection, id: i64) -> Result<Option<DeploymentState>, LedgerError> {
    Ok(conn
        .prepare_cached("SELECT state FROM deployments WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// How many deployments are in each state.
pub fn count_by_state(conn: &Connection) -> Result<Vec<(DeploymentState, i64)>, LedgerError> {
    let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM deployments GROUP BY state")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

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
              WHERE d.app_id = ?1 AND d.state = ?2 AND d.rollback_of IS NULL
                AND EXISTS (SELECT 1 FROM jobs j WHERE j.deployment_id = d.id AND j.state = ?3)
              ORDER BY d.id DESC LIMIT 1",
        )?
        .query_row(
            params![req.app_id, DeploymentState::Queued, JobState::Queued],
            |r| r.get(0),
        )
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
    let id = insert_queued(
        conn,
        &Queued {
            app_id: req.app_id,
            requested_ref: req.git_ref.as_deref(),
            commit_sha: req.commit_sha.as_deref(),
            trigger: &req.trigger,
            triggered_by: req.triggered_by.as_deref(),
            rollback_of: None,
        },
    )?;
    Ok(Requested {
        deployment_id: id,
        coalesced: false,
    })
}

/// A new deployment row, queued.
struct Queued<'a> {
    app_id: i64,
    requested_ref: Option<&'a str>,
    commit_sha: Option<&'a str>,
    trigger: &'a str,
    triggered_by: Option<&'a str>,
    rollback_of: Option<i64>,
}

/// Inserts a queued deployment and its `deploy` job.
fn insert_queued(conn: &Connection, d: &Queued<'_>) -> Result<i64, LedgerError> {
    conn.prepare_cached(
        "INSERT INTO deployments (app_id, state, requested_ref, commit_sha, trigger, triggered_by,
                                  rollback_of, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        d.app_id,
        DeploymentState::Queued,
        d.requested_ref,
        d.commit_sha,
        d.trigger,
        d.triggered_by,
        d.rollback_of,
        now_ms()
    ])?;
    let id = conn.last_insert_rowid();
    jobs::enqueue(
        conn,
        &NewJob::new(JobKind::Deploy {})
            .app(d.app_id)
            .deployment(id)
            .key(format!("deploy:{id}"))
            .max_attempts(3),
    )?;
    Ok(id)
}

/// An app's deployments, newest first, as a rollback weighs them.
pub fn history(conn: &Connection, app_id: i64) -> Result<Vec<Past>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, state, commit_sha FROM deployments WHERE app_id = ?1 ORDER BY id DESC",
    )?;
    let rows = stmt
        .query_map([app_id], |r| {
            Ok(Past {
                id: r.get(0)?,
                state: r.get(1)?,
                commit_sha: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Queues a rollback of app `app_id` to deployment `target` (default: the release before the
/// live one, [`plan::rollback_target`]): a deployment of the target's exact commit with the
/// target's env snapshot (re-sealed for the new deployment). `Ok(Err(why))` when there is
/// nothing to roll back to. Call it inside an immediate transaction.
pub fn roll_back(
    conn: &Connection,
    secrets: &SecretBox,
    app_id: i64,
    target: Option<i64>,
    triggered_by: Option<&str>,
) -> Result<Result<i64, String>, LedgerError> {
    let target = match plan::rollback_target(&history(conn, app_id)?, target) {
        Ok(t) => t,
        Err(why) => return Ok(Err(why)),
    };
    let (sha, snapshot): (String, Option<Vec<u8>>) = conn
        .prepare_cached("SELECT commit_sha, env_snapshot_enc FROM deployments WHERE id = ?1")?
        .query_row([target], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let id = insert_queued(
        conn,
        &Queued {
            app_id,
            requested_ref: Some(&sha),
            commit_sha: None,
            trigger: "rollback",
            triggered_by,
            rollback_of: Some(target),
        },
    )?;
    if let Some(snapshot) = snapshot {
        // The snapshot is bound to its deployment: re-seal it for the new one.
        let plain = secrets
            .open(&contexts::deployment_env(target), &snapshot)
            .map_err(|e| LedgerError::Invalid(e.to_string()))?;
        set_env_snapshot(
            conn,
            id,
            &secrets.seal(&contexts::deployment_env(id), &plain),
        )?;
    }
    Ok(Ok(id))
}

/// What asking to cancel a deployment led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRequest {
    /// It had not started: it is cancelled.
    Cancelled,
    /// Its job runs: the worker was asked to stop it (nudge the queue with the job).
    Requested(JobId),
    /// It already finished (or never had a job).
    Finished,
    NotFound,
}

/// Cancels deployment `id` through its newest job ([`jobs::cancel_in`] ends a queued one at
/// once, with its deployment). One immediate transaction.
pub fn request_cancel(conn: &mut Connection, id: i64) -> Result<CancelRequest, LedgerError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let outcome = if state_of(&tx, id)?.is_none() {
        CancelRequest::NotFound
    } else {
        match jobs::latest_of_deployment(&tx, id)? {
            None => CancelRequest::Finished,
            Some(job) => match jobs::cancel_in(&tx, job)? {
                CancelOutcome::Cancelled => CancelRequest::Cancelled,
                CancelOutcome::Requested => CancelRequest::Requested(job),
                CancelOutcome::AlreadyFinished | CancelOutcome::NotFound => CancelRequest::Finished,
            },
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// The answer of a conditional `UPDATE` of deployment `id` that changed `changed` rows.
fn answer(conn: &Connection, id: i64, changed: usize) -> Result<Transition, LedgerError> {
    if changed > 0 {
        return Ok(Transition::Done);
    }
    Ok(match state_of(conn, id)? {
        Some(state) => Transition::Refused(state),
        None => Transition::NotFound,
    })
}

/// queued or running → running, at the first step; a retry keeps its first start time.
pub fn begin(conn: &Connection, id: i64, now: Millis) -> Result<Transition, LedgerError> {
    let n = conn
        .prepare_cached(
            "UPDATE deployments SET state = ?2, step = ?3, reason = NULL,
                    started_at = COALESCE(started_at, ?4)
              WHERE id = ?1 AND state IN (?5, ?2)",
        )?
        .execute(params![
            id,
            DeploymentState::Running,
            DeployStep::Fetch,
            now,
            DeploymentState::Queued
        ])?;
    answer(conn, id, n)
}

/// Records the step a running deployment is at.
pub fn step(conn: &Connection, id: i64, step: DeployStep) -> Result<Transition, LedgerError> {
    let n = conn
        .prepare_cached("UPDATE deployments SET step = ?2 WHERE id = ?1 AND state = ?3")?
        .execute(params![id, step, DeploymentState::Running])?;
    answer(conn, id, n)
}

/// Moves a running deployment from step `from` to `to`, and only from `from` (the build turns
/// into the start while a later step may already be recorded). Refused otherwise.
pub fn step_from(
    conn: &Connection,
    id: i64,
    from: DeployStep,
    to: DeployStep,
) -> Result<Transition, LedgerError> {
    let n = conn
        .prepare_cached(
            "UPDATE deployments SET step = ?3 WHERE id = ?1 AND state = ?4 AND step = ?2",
        )?
        .execute(params![id, from, to, DeploymentState::Running])?;
    answer(conn, id, n)
}

/// A container of a release that takes its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedContainer {
    pub container_id: String,
    pub address: String,
}

/// A healthy release, as the switch records it.
#[derive(Debug, Clone)]
pub struct Release {
    /// The routed service, and its port.
    pub service: String,
    pub port: u16,
    pub containers: Vec<RoutedContainer>,
    /// Milliseconds per step.
    pub timings: BTreeMap<String, u64>,
    /// Image ids per service.
    pub images: BTreeMap<String, String>,
}

/// running → healthy: the app's runtime now points at `release`, and the app's previous
/// healthy deployment becomes superseded, in one immediate transaction. A cancel asked for
/// meanwhile wins: nothing changes.
pub fn switch(
    conn: &mut Connection,
    id: i64,
    app_id: i64,
    release: &Release,
) -> Result<Transition, LedgerError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = now_ms();
    if jobs::running_job_cancel_requested(&tx, id)? {
        return Ok(Transition::CancelRequested);
    }
    match state_of(&tx, id)? {
        None => return Ok(Transition::NotFound),
        Some(DeploymentState::Running) => {}
        Some(other) => return Ok(Transition::Refused(other)),
    }
    tx.prepare_cached("DELETE FROM app_runtimes WHERE app_id = ?1")?
        .execute([app_id])?;
    for c in &release.containers {
        tx.prepare_cached(
            "INSERT INTO app_runtimes (app_id, container_id, deployment_id, service, address, port, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            app_id,
            c.container_id,
            id,
            release.service,
            c.address,
            release.port,
            now
        ])?;
    }
    tx.prepare_cached(
        "UPDATE deployments SET state = ?3 WHERE app_id = ?1 AND state = ?4 AND id != ?2",
    )?
    .execute(params![
        app_id,
        id,
        DeploymentState::Superseded,
        DeploymentState::Healthy
    ])?;
    let timings = serde_json::to_string(&release.timings).expect("a map of numbers serialises");
    let images = serde_json::to_string(&release.images).expect("a map of strings serialises");
    tx.prepare_cached(
        "UPDATE deployments SET state = ?2, step = NULL, reason = NULL, finished_at = ?3,
                step_timings_json = ?4, image_ids_json = ?5
          WHERE id = ?1",
    )?
    .execute(params![id, DeploymentState::Healthy, now, timings, images])?;
    tx.commit()?;
    Ok(Transition::Done)
}

/// queued or running → failed, with `reason`.
pub fn fail(
    conn: &Connection,
    id: i64,
    reason: &str,
    now: Millis,
) -> Result<Transition, LedgerError> {
    end(conn, id, DeploymentState::Failed, reason, now)
}

/// queued or running → cancelled.
pub fn cancel(conn: &Connection, id: i64, now: Millis) -> Result<Transition, LedgerError> {
    end(conn, id, DeploymentState::Cancelled, "cancelled", now)
}

fn end(
    conn: &Connection,
    id: i64,
    state: DeploymentState,
    reason: &str,
    now: Millis,
) -> Result<Transition, LedgerError> {
    let n = conn
        .prepare_cached(
            "UPDATE deployments SET state = ?2, step = NULL, reason = ?3, finished_at = ?4
              WHERE id = ?1 AND state IN (?5, ?6)",
        )?
        .execute(params![
            id,
            state,
            reason,
            now,
            DeploymentState::Queued,
            DeploymentState::Running
        ])?;
    answer(conn, id, n)
}

/// running → queued after a failed attempt that will be retried; `reason` says why.
pub fn requeue(conn: &Connection, id: i64, reason: &str) -> Result<Transition, LedgerError> {
    let n = conn
        .prepare_cached(
            "UPDATE deployments SET state = ?3, step = NULL, reason = ?2
              WHERE id = ?1 AND state = ?4",
        )?
        .execute(params![
            id,
            reason,
            DeploymentState::Queued,
            DeploymentState::Running
        ])?;
    answer(conn, id, n)
}

/// running → queued when the server stops during an attempt (its job is given back), so the
/// deployment waits for the next start instead of claiming to run. A deployment whose cancel
/// was asked for stays running: its job ends it cancelled.
pub fn interrupt(conn: &Connection, id: i64) -> Result<Transition, LedgerError> {
    let n = conn
        .prepare_cached(
            "UPDATE deployments SET state = ?2, step = NULL,
                    reason = 'interrupted: the server stopped; it resumes at the next start'
              WHERE id = ?1 AND state = ?3
                AND NOT EXISTS (SELECT 1 FROM jobs WHERE deployment_id = ?1 AND cancel_requested = 1)",
        )?
        .execute(params![
            id,
            DeploymentState::Queued,
            DeploymentState::Running
        ])?;
    match answer(conn, id, n)? {
        Transition::Refused(DeploymentState::Running) => Ok(Transition::CancelRequested),
        other => Ok(other),
    }
}

/// Records the commit a deployment checked out.
pub fn set_commit(conn: &Connection, id: i64, sha: &str) -> Result<(), LedgerError> {
    conn.prepare_cached("UPDATE deployments SET commit_sha = ?2 WHERE id = ?1")?
        .execute(params![id, sha])?;
    Ok(())
}

/// Stores the sealed env a deployment runs with; retries and rollbacks reuse it.
pub fn set_env_snapshot(conn: &Connection, id: i64, sealed: &[u8]) -> Result<(), LedgerError> {
    conn.prepare_cached("UPDATE deployments SET env_snapshot_enc = ?2 WHERE id = ?1")?
        .execute(params![id, sealed])?;
    Ok(())
}

/// Adds one timing to a deployment's recorded step timings (the route, after the switch).
pub fn add_timing(conn: &Connection, id: i64, name: &str, ms: u64) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "UPDATE deployments
            SET step_timings_json = json_set(COALESCE(step_timings_json, '{}'), '$.' || ?2, ?3)
          WHERE id = ?1",
    )?
    .execute(params![id, name, ms as i64])?;
    Ok(())
}

/// Appends one line to a deployment's log with the next sequence number.
pub fn append_log(
    conn: &Connection,
    id: i64,
    stream: &str,
    line: &str,
) -> Result<i64, LedgerError> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO deployment_logs (deployment_id, seq, at, stream, line)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deployment_logs WHERE deployment_id = ?1),
                     ?2, ?3, ?4)
             RETURNING seq",
        )?
        .query_row(params![id, now_ms(), stream, line], |r| r.get(0))?)
}

/// The deployment whose containers take the app's traffic now.
pub fn live(conn: &Connection, app_id: i64) -> Result<Option<i64>, LedgerError> {
    Ok(conn
        .prepare_cached("SELECT MAX(deployment_id) FROM app_runtimes WHERE app_id = ?1")?
        .query_row([app_id], |r| r.get::<_, Option<i64>>(0))?)
}

/// The repository an app deploys from, its credentials still sealed.
#[derive(Debug, Clone)]
pub struct SealedImport {
    pub repo_url: String,
    pub branch: String,
    pub compose_path: Option<String>,
    pub deploy_key_enc: Option<Vec<u8>>,
    pub https_token_enc: Option<Vec<u8>>,
}

/// One of the app's env vars, its value still sealed.
#[derive(Debug, Clone)]
pub struct SealedVar {
    pub key: String,
    pub value_enc: Vec<u8>,
}

/// Everything an attempt at a deployment reads before it starts, secrets still sealed.
#[derive(Debug, Clone)]
pub struct AttemptInputs {
    pub state: DeploymentState,
    pub app: String,
    /// An owner lifted the compose policy for this app.
    pub trusted: bool,
    pub requested_ref: Option<String>,
    /// The env of the first attempt (or the release a rollback returns to).
    pub env_snapshot_enc: Option<Vec<u8>>,
    pub import: Option<SealedImport>,
    pub env: Vec<SealedVar>,
    /// The deployment live now.
    pub live: Option<i64>,
}

/// What an attempt at deployment `id` of app `app_id` starts from; `None` when the
/// deployment is not (or no longer) one of the app's.
pub fn attempt_inputs(
    conn: &Connection,
    id: i64,
    app_id: i64,
) -> Result<Option<AttemptInputs>, LedgerError> {
    let row = conn
        .prepare_cached(
            "SELECT d.state, d.requested_ref, d.env_snapshot_enc, a.name, a.trusted
               FROM deployments d JOIN apps a ON a.id = d.app_id
              WHERE d.id = ?1 AND d.app_id = ?2",
        )?
        .query_row(params![id, app_id], |r| {
            Ok(AttemptInputs {
                state: r.get(0)?,
                requested_ref: r.get(1)?,
                env_snapshot_enc: r.get(2)?,
                app: r.get(3)?,
                trusted: r.get(4)?,
                import: None,
                env: Vec::new(),
                live: None,
            })
        })
        .optional()?;
    let Some(mut inputs) = row else {
        return Ok(None);
    };
    inputs.import = conn
        .prepare_cached(
            "SELECT repo_url, branch, compose_path, deploy_key_enc, https_token_enc
               FROM app_import_configs WHERE app_id = ?1",
        )?
        .query_row([app_id], |r| {
            Ok(SealedImport {
                repo_url: r.get(0)?,
                branch: r.get(1)?,
                compose_path: r.get(2)?,
                deploy_key_enc: r.get(3)?,
                https_token_enc: r.get(4)?,
            })
        })
        .optional()?;
    inputs.env = conn
        .prepare_cached("SELECT key, value_enc FROM app_env_vars WHERE app_id = ?1")?
        .query_map([app_id], |r| {
            Ok(SealedVar {
                key: r.get(0)?,
                value_enc: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    inputs.live = live(conn, app_id)?;
    Ok(Some(inputs))
}
