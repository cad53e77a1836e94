//! The durable job queue's ledger operations.
//!
//! A job is claimed under a lease: `locked_by` names the worker and `locked_until` the time the
//! claim lapses. A worker renews its leases while it works; a crashed worker's leases lapse and
//! its jobs become claimable again. Every state change is fenced on `locked_by`, so a worker
//! whose lease was taken over can no longer finish a job it lost.
//!
//! A job bound to a deployment (`deployment_id`) keeps that deployment consistent: when the job
//! dies or is cancelled, a deployment still queued or running is ended with the same reason, so no
//! deployment is ever left stranded in `running`.
//!
//! What a job does is a [`JobKind`]: its name is stored in `jobs.kind` and its fields, as JSON
//! text, in `jobs.payload`, exactly as the untyped queue stored them, so older ledgers read the
//! same.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use rustploy_api::states::JobState;
use serde::{Deserialize, Serialize};

use super::deployments;
use super::{LedgerError, Millis, now_ms};

pub type JobId = i64;

/// What a job does, and what it needs to know to do it.
///
/// Serde's adjacent tagging matches the two columns: the tag is `jobs.kind`, the content is
/// `jobs.payload`. A field added later must be optional (`#[serde(default)]`), so payloads
/// written before it still read. New kinds are new variants here and a handler registered under
/// their name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum JobKind {
    /// Runs the deployment the job is bound to (`deployment_id`).
    Deploy {},
    /// Brings Docker to the app's service rows; `purge_volumes` are removed once their services
    /// are gone.
    Services {
        #[serde(default)]
        purge_volumes: Vec<String>,
    },
    /// Dumps a managed service into the backup row `backup_id`.
    Backup { backup_id: i64 },
    /// Loads the finished backup `backup_id` into the app's service `service`.
    Restore { backup_id: i64, service: String },
    /// Deletes the app the job is keyed to (`app_id`): its containers, networks, images and
    /// checkout, its volumes too with `purge_volumes`, then its rows. `app` is its name when
    /// the deletion was asked for. The job outlives the app: its rows go without it.
    AppDelete {
        app: String,
        #[serde(default)]
        purge_volumes: bool,
    },
    /// Does nothing, after `sleep_ms`: a diagnostic job for the queue itself.
    Noop {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sleep_ms: Option<u64>,
    },
}

impl JobKind {
    /// Every kind's name, as `jobs.kind` stores it.
    pub const NAMES: &'static [&'static str] = &[
        "deploy",
        "services",
        "backup",
        "restore",
        "app_delete",
        "noop",
    ];

    /// The name stored in `jobs.kind`, and the key of the kind's handler.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Deploy {} => "deploy",
            JobKind::Services { .. } => "services",
            JobKind::Backup { .. } => "backup",
            JobKind::Restore { .. } => "restore",
            JobKind::AppDelete { .. } => "app_delete",
            JobKind::Noop { .. } => "noop",
        }
    }

    /// The text stored in `jobs.payload`.
    pub fn payload(&self) -> String {
        let mut tagged = serde_json::to_value(self).expect("a job kind serialises");
        tagged["payload"].take().to_string()
    }

    /// Reads a job back from its two columns.
    pub fn decode(kind: &str, payload: &str) -> Result<Self, String> {
        let payload: serde_json::Value = serde_json::from_str(payload)
            .map_err(|e| format!("the payload of a '{kind}' job is not JSON: {e}"))?;
        Self::from_parts(kind, payload)
    }

    fn from_parts(kind: &str, payload: serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(serde_json::json!({ "kind": kind, "payload": payload }))
            .map_err(|e| format!("a '{kind}' job cannot be read: {e}"))
    }
}

/// A job to put in the queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    kind: JobKind,
    /// While a job with this key is queued or running, enqueueing the same key returns it instead.
    pub key: Option<String>,
    pub app_id: Option<i64>,
    pub deployment_id: Option<i64>,
    pub max_attempts: u32,
    pub run_at: Option<Millis>,
}

impl NewJob {
    pub fn new(kind: JobKind) -> Self {
        Self {
            kind,
            key: None,
            app_id: None,
            deployment_id: None,
            max_attempts: 5,
            run_at: None,
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    pub fn app(mut self, app_id: i64) -> Self {
        self.app_id = Some(app_id);
        self
    }

    pub fn deployment(mut self, deployment_id: i64) -> Self {
        self.deployment_id = Some(deployment_id);
        self
    }

    pub fn run_at(mut self, at: Millis) -> Self {
        self.run_at = Some(at);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Created(JobId),
    /// A job with the same key was already queued or running.
    Existing(JobId),
}

impl Enqueued {
    pub fn id(self) -> JobId {
        match self {
            Enqueued::Created(id) | Enqueued::Existing(id) => id,
        }
    }
}

/// A job claimed by a worker. `attempts` counts this attempt.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: JobId,
    pub kind: JobKind,
    pub key: Option<String>,
    pub app_id: Option<i64>,
    pub deployment_id: Option<i64>,
    pub attempts: u32,
    pub max_attempts: u32,
}

/// A job as the ledger holds it. `kind` stays text: a row may name a kind this version does
/// not know (it is never claimed here).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JobRow {
    pub id: JobId,
    pub kind: String,
    pub key: Option<String>,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub next_run_at: Millis,
    pub locked_until: Option<Millis>,
    pub locked_by: Option<String>,
    pub last_error: Option<String>,
    pub cancel_requested: bool,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again, due at this time.
    Retrying(Millis),
    Dead,
    Cancelled,
    /// The worker no longer held the lease: someone else owns the job now.
    LostLease,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    /// The job is running; its worker was asked to stop.
    Requested,
    AlreadyFinished,
    NotFound,
}

/// How failed attempts are spaced out: exponential from `base`, capped at `cap`, with jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
        }
    }
}

/// The delay before retrying after failed attempt number `attempt` (1-based). `jitter` in
/// `[0, 1]` spreads the delay over the upper half of the exponential step ("equal jitter"), so
/// retries of jobs that failed together do not stampede together.
pub fn backoff(policy: RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let step = policy.base.saturating_mul(1u32 << exponent).min(policy.cap);
    let half = step / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

const ACTIVE_KEY_INDEX: &str = "jobs.job_key";

/// Inserts a job. Call it inside the transaction that writes the row the job acts on.
pub fn enqueue(conn: &Connection, job: &NewJob) -> Result<Enqueued, LedgerError> {
    let kind = &job.kind;
    let now = now_ms();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (kind, job_key, payload, app_id, deployment_id, max_attempts,
                               next_run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        )?
        .execute(params![
            kind.name(),
            job.key,
            kind.payload(),
            job.app_id,
            job.deployment_id,
            job.max_attempts.max(1),
            job.run_at.unwrap_or(now),
            now,
        ]);
    match inserted {
        Ok(_) => Ok(Enqueued::Created(conn.last_insert_rowid())),
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains(ACTIVE_KEY_INDEX) =>
        {
            // The states are written out (not bound) so that SQLite can use the partial index
            // `jobs_active_key`, whose condition names them.
            let id = conn
                .prepare_cached(
                    "SELECT id FROM jobs WHERE job_key = ?1 AND state IN ('queued', 'running')",
                )?
                .query_row([&job.key], |r| r.get(0))?;
            Ok(Enqueued::Existing(id))
        }
        Err(e) => Err(e.into()),
    }
}

/// Claims the most overdue job of one of `kinds` for `worker`, under a lease of `lease`.
///
/// A lapsed lease of another worker is taken over; a lapsed lease of `worker` itself is not,
/// since that job may still be running here (its renewal was merely late).
///
/// Jobs of an app never run side by side: a job whose app has another job running (under a live
/// lease) waits. A job whose lease lapsed after its last allowed attempt is declared dead here,
/// with the reason that its worker was interrupted. So is a job whose payload does not fit its
/// kind: no attempt could run it.
pub fn claim(
    conn: &mut Connection,
    worker: &str,
    lease: Duration,
    kinds: &[&str],
) -> Result<Option<ClaimedJob>, LedgerError> {
    let free: Vec<(&str, usize)> = kinds.iter().map(|&k| (k, 1)).collect();
    Ok(claim_up_to(conn, worker, lease, &free, 1)?.pop())
}

/// Claims due jobs for `worker` in one transaction, at most `free` of each kind: what a queue
/// with that many free slots can start at once. The jobs come most overdue first, under the
/// same rules as [`claim`]; one commit covers them all.
pub fn claim_many(
    conn: &mut Connection,
    worker: &str,
    lease: Duration,
    free: &[(&str, usize)],
) -> Result<Vec<ClaimedJob>, LedgerError> {
    let total = free.iter().map(|(_, n)| n).sum();
    claim_up_to(conn, worker, lease, free, total)
}

fn claim_up_to(
    conn: &mut Connection,
    worker: &str,
    lease: Duration,
    free: &[(&str, usize)],
    total: usize,
) -> Result<Vec<ClaimedJob>, LedgerError> {
    let now = now_ms();
    let until = now + lease.as_millis() as i64;
    let mut free: Vec<(&str, usize)> = free.iter().copied().filter(|(_, n)| *n > 0).collect();
    let mut claimed = Vec::new();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    bury_lapsed(&tx, now)?;
    let mut kinds_json = kinds_json(&free);
    while claimed.len() < total && !free.is_empty() {
        let Some(raw) = claim_one(&tx, worker, until, now, &kinds_json)? else {
            break;
        };
        let kind = match JobKind::decode(&raw.kind, &raw.payload) {
            Ok(kind) => kind,
            Err(why) => {
                bury(&tx, raw.id, raw.deployment_id, &why, now)?;
                continue;
            }
        };
        if let Some(slot) = free.iter_mut().find(|(k, _)| *k == kind.name()) {
            slot.1 -= 1;
            if slot.1 == 0 {
                free.retain(|(_, n)| *n > 0);
                kinds_json = self::kinds_json(&free);
            }
        }
        claimed.push(ClaimedJob {
            id: raw.id,
            kind,
            key: raw.key,
            app_id: raw.app_id,
            deployment_id: raw.deployment_id,
            attempts: raw.attempts,
            max_attempts: raw.max_attempts,
        });
    }
    tx.commit()?;
    Ok(claimed)
}

fn kinds_json(free: &[(&str, usize)]) -> String {
    serde_json::to_string(&free.iter().map(|(k, _)| k).collect::<Vec<_>>())
        .expect("kinds serialise")
}

/// A claimed row before its kind is read.
struct RawClaim {
    id: JobId,
    kind: String,
    key: Option<String>,
    payload: String,
    app_id: Option<i64>,
    deployment_id: Option<i64>,
    attempts: u32,
    max_attempts: u32,
}

fn claim_one(
    conn: &Connection,
    worker: &str,
    until: Millis,
    now: Millis,
    kinds_json: &str,
) -> Result<Option<RawClaim>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "UPDATE jobs
                SET state = ?5, attempts = attempts + 1, locked_by = ?1,
                    locked_until = ?2, updated_at = ?3
              WHERE id = (
                    -- Two index-ordered searches, each stopping at its first match, instead of
                    -- one OR that sorts every due job: a claim costs the same at any backlog.
                    SELECT id FROM (
                        SELECT * FROM (
                            SELECT j.id, j.next_run_at FROM jobs j
                             WHERE j.state = ?6 AND j.next_run_at <= ?3
                               AND j.kind IN (SELECT value FROM json_each(?4))
                               AND (j.app_id IS NULL OR NOT EXISTS (
                                    SELECT 1 FROM jobs r
                                     WHERE r.app_id = j.app_id AND r.state = ?5
                                       AND r.id != j.id AND r.locked_until >= ?3))
                             ORDER BY j.next_run_at, j.id
                             LIMIT 1)
                        UNION ALL
                        SELECT * FROM (
                            SELECT j.id, j.next_run_at FROM jobs j
                             WHERE j.state = ?5 AND j.locked_until < ?3
                               AND j.locked_by != ?1
                               AND j.kind IN (SELECT value FROM json_each(?4))
                               AND (j.app_id IS NULL OR NOT EXISTS (
                                    SELECT 1 FROM jobs r
                                     WHERE r.app_id = j.app_id AND r.state = ?5
                                       AND r.id != j.id AND r.locked_until >= ?3))
                             ORDER BY j.next_run_at, j.id
                             LIMIT 1))
                     ORDER BY next_run_at, id
                     LIMIT 1)
              RETURNING id, kind, job_key, payload, app_id, deployment_id, attempts, max_attempts",
        )?
        .query_row(
            params![
                worker,
                until,
                now,
                kinds_json,
                JobState::Running,
                JobState::Queued
            ],
            |r| {
                Ok(RawClaim {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    key: r.get(2)?,
                    payload: r.get(3)?,
                    app_id: r.get(4)?,
                    deployment_id: r.get(5)?,
                    attempts: r.get(6)?,
                    max_attempts: r.get(7)?,
                })
            },
        )
        .optional()?)
}

/// Jobs whose lease lapsed on their last allowed attempt will not be retried: they are dead.
fn bury_lapsed(conn: &Connection, now: Millis) -> Result<(), LedgerError> {
    let reason = "interrupted: the worker running this job stopped before it finished, \
                  and no attempts are left";
    let dead: Vec<Option<i64>> = conn
        .prepare_cached(
            "UPDATE jobs
                SET state = ?3, last_error = ?1, locked_by = NULL, locked_until = NULL,
                    updated_at = ?2, finished_at = ?2
              WHERE state = ?4 AND locked_until < ?2 AND attempts >= max_attempts
              RETURNING deployment_id",
        )?
        .query_map(
            params![reason, now, JobState::Dead, JobState::Running],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    for deployment in dead.into_iter().flatten() {
        deployments::fail(conn, deployment, reason, now)?;
    }
    Ok(())
}

/// Declares one claimed job dead with `reason`, ending its deployment.
fn bury(
    conn: &Connection,
    id: JobId,
    deployment: Option<i64>,
    reason: &str,
    now: Millis,
) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "UPDATE jobs
            SET state = ?2, last_error = ?3, locked_by = NULL, locked_until = NULL,
                updated_at = ?4, finished_at = ?4
          WHERE id = ?1",
    )?
    .execute(params![id, JobState::Dead, reason, now])?;
    if let Some(deployment) = deployment {
        deployments::fail(conn, deployment, reason, now)?;
    }
    Ok(())
}

/// Marks a claimed job done. Returns false when the worker had lost the lease.
pub fn complete(conn: &Connection, id: JobId, worker: &str) -> Result<bool, LedgerError> {
    let now = now_ms();
    let n = conn
        .prepare_cached(
            "UPDATE jobs
                SET state = ?4, locked_by = NULL, locked_until = NULL, last_error = NULL,
                    updated_at = ?3, finished_at = ?3
              WHERE id = ?1 AND locked_by = ?2 AND state = ?5",
        )?
        .execute(params![
            id,
            worker,
            now,
            JobState::Succeeded,
            JobState::Running
        ])?;
    Ok(n == 1)
}

/// Records a failed attempt. With `retry` and attempts left, the job is queued again after
/// `delay`; otherwise it is dead with `error`. A job whose cancellation was requested ends
/// cancelled instead.
pub fn fail(
    conn: &mut Connection,
    id: JobId,
    worker: &str,
    error: &str,
    retry: bool,
    delay: Duration,
) -> Result<FailOutcome, LedgerError> {
    let tx = conn.transaction()?;
    let outcome = fail_in(&tx, id, worker, error, retry, delay)?;
    tx.commit()?;
    Ok(outcome)
}

/// [`fail`] inside the caller's transaction.
fn fail_in(
    tx: &Connection,
    id: JobId,
    worker: &str,
    error: &str,
    retry: bool,
    delay: Duration,
) -> Result<FailOutcome, LedgerError> {
    let now = now_ms();
    let next = now + delay.as_millis() as i64;
    let row: Option<(JobState, Option<i64>)> = tx
        .prepare_cached(
            "UPDATE jobs
                SET state = CASE
                        WHEN cancel_requested = 1 THEN ?7
                        WHEN ?4 AND attempts < max_attempts THEN ?8
                        ELSE ?9 END,
                    next_run_at = CASE WHEN ?4 AND attempts < max_attempts THEN ?5 ELSE next_run_at END,
                    finished_at = CASE
                        WHEN cancel_requested = 0 AND ?4 AND attempts < max_attempts THEN NULL
                        ELSE ?6 END,
                    last_error = ?3, locked_by = NULL, locked_until = NULL, updated_at = ?6
              WHERE id = ?1 AND locked_by = ?2 AND state = ?10
              RETURNING state, deployment_id",
        )?
        .query_row(
            params![
                id,
                worker,
                error,
                retry,
                next,
                now,
                JobState::Cancelled,
                JobState::Queued,
                JobState::Dead,
                JobState::Running
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let outcome = match row {
        None => FailOutcome::LostLease,
        Some((state, deployment)) => {
            let outcome = match state {
                JobState::Queued => FailOutcome::Retrying(next),
                JobState::Cancelled => FailOutcome::Cancelled,
                _ => FailOutcome::Dead,
            };
            if let Some(deployment) = deployment {
                match outcome {
                    FailOutcome::Dead => deployments::fail(tx, deployment, error, now)?,
                    FailOutcome::Cancelled => deployments::cancel(tx, deployment, now)?,
                    _ => deployments::Transition::Done,
                };
            }
            outcome
        }
    };
    Ok(outcome)
}

/// One run's end, as the worker that ran the job reports it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: JobId,
    pub worker: String,
    /// Why the run failed; `None` when it succeeded.
    pub error: Option<String>,
    /// Whether the failure may be tried again (while attempts remain).
    pub retry: bool,
    /// How long a retried job waits.
    pub delay: Duration,
}

/// What recording an [`Outcome`] did to its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Succeeded,
    Failed(FailOutcome),
}

/// Records one run's outcome; the job queue writes many together through
/// [`super::batch::in_savepoints`]. A worker that lost the job's lease gets `Failed(LostLease)`
/// and changes nothing.
pub fn record_outcome(conn: &Connection, o: &Outcome) -> Result<Recorded, LedgerError> {
    match &o.error {
        None => Ok(if complete(conn, o.id, &o.worker)? {
            Recorded::Succeeded
        } else {
            Recorded::Failed(FailOutcome::LostLease)
        }),
        Some(error) => {
            fail_in(conn, o.id, &o.worker, error, o.retry, o.delay).map(Recorded::Failed)
        }
    }
}

/// Gives a claimed job back unfinished (the server is shutting down): it is queued again at
/// once, and the attempt does not count against it.
pub fn release(conn: &Connection, id: JobId, worker: &str) -> Result<bool, LedgerError> {
    let now = now_ms();
    let n = conn
        .prepare_cached(
            "UPDATE jobs
                SET state = ?4, attempts = MAX(attempts - 1, 0), locked_by = NULL,
                    locked_until = NULL, next_run_at = ?3, updated_at = ?3
              WHERE id = ?1 AND locked_by = ?2 AND state = ?5",
        )?
        .execute(params![
            id,
            worker,
            now,
            JobState::Queued,
            JobState::Running
        ])?;
    Ok(n == 1)
}

/// Cancels a job: a queued one at once, a running one by asking its worker to stop.
pub fn cancel(conn: &mut Connection, id: JobId) -> Result<CancelOutcome, LedgerError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let outcome = cancel_in(&tx, id)?;
    tx.commit()?;
    Ok(outcome)
}

/// [`cancel`] inside the caller's (immediate) transaction.
pub fn cancel_in(conn: &Connection, id: JobId) -> Result<CancelOutcome, LedgerError> {
    let now = now_ms();
    let found: Option<(JobState, Option<i64>)> = conn
        .prepare_cached("SELECT state, deployment_id FROM jobs WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((state, deployment)) = found else {
        return Ok(CancelOutcome::NotFound);
    };
    Ok(match state {
        JobState::Queued => {
            conn.prepare_cached(
                "UPDATE jobs SET state = ?3, cancel_requested = 1, last_error = 'cancelled',
                        updated_at = ?2, finished_at = ?2
                  WHERE id = ?1",
            )?
            .execute(params![id, now, JobState::Cancelled])?;
            if let Some(deployment) = deployment {
                deployments::cancel(conn, deployment, now)?;
            }
            CancelOutcome::Cancelled
        }
        JobState::Running => {
            conn.prepare_cached(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1",
            )?
            .execute(params![id, now])?;
            CancelOutcome::Requested
        }
        _ => CancelOutcome::AlreadyFinished,
    })
}

/// Extends every lease `worker` holds on running jobs to `lease` from now.
pub fn renew_leases(
    conn: &Connection,
    worker: &str,
    lease: Duration,
) -> Result<usize, LedgerError> {
    let now = now_ms();
    Ok(conn
        .prepare_cached(
            "UPDATE jobs SET locked_until = ?2, updated_at = ?3
              WHERE locked_by = ?1 AND state = ?4",
        )?
        .execute(params![
            worker,
            now + lease.as_millis() as i64,
            now,
            JobState::Running
        ])?)
}

/// At start-up of the only worker on this ledger, jobs other workers left running were
/// interrupted by a crash: queue them again at once (or bury them when no attempts are left)
/// instead of waiting for their leases to lapse.
pub fn recover_interrupted(conn: &mut Connection, worker: &str) -> Result<usize, LedgerError> {
    let now = now_ms();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n = tx.execute(
        "UPDATE jobs SET locked_until = ?2 - 1
          WHERE state = ?3 AND (locked_by IS NULL OR locked_by != ?1)",
        params![worker, now, JobState::Running],
    )?;
    bury_lapsed(&tx, now)?;
    tx.execute(
        "UPDATE jobs
            SET state = ?3, locked_by = NULL, locked_until = NULL, next_run_at = ?2,
                last_error = 'interrupted: the server stopped while this job ran', updated_at = ?2
          WHERE state = ?4 AND locked_until < ?2",
        params![worker, now, JobState::Queued, JobState::Running],
    )?;
    tx.commit()?;
    Ok(n)
}

/// When the next job of `kinds` becomes due (now or earlier if one is due already).
pub fn next_due_at(conn: &Connection, kinds: &[&str]) -> Result<Option<Millis>, LedgerError> {
    let kinds_json = serde_json::to_string(kinds).expect("kinds serialise");
    Ok(conn
        .prepare_cached(
            "SELECT MIN(t) FROM (
                SELECT MIN(next_run_at) AS t FROM jobs
                 WHERE state = ?2 AND kind IN (SELECT value FROM json_each(?1))
                UNION ALL
                SELECT MIN(locked_until) AS t FROM jobs
                 WHERE state = ?3 AND kind IN (SELECT value FROM json_each(?1)))",
        )?
        .query_row(
            params![kinds_json, JobState::Queued, JobState::Running],
            |r| r.get(0),
        )?)
}

pub fn is_cancel_requested(conn: &Connection, id: JobId) -> Result<bool, LedgerError> {
    Ok(conn
        .prepare_cached("SELECT cancel_requested FROM jobs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .unwrap_or(true))
}

/// Whether a cancel of the running job of deployment `id` was asked for.
pub fn running_job_cancel_requested(
    conn: &Connection,
    deployment: i64,
) -> Result<bool, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(MAX(cancel_requested), 0) FROM jobs
              WHERE deployment_id = ?1 AND state = ?2",
        )?
        .query_row(params![deployment, JobState::Running], |r| r.get(0))?)
}

/// The newest job of deployment `id`, whatever its state.
pub fn latest_of_deployment(
    conn: &Connection,
    deployment: i64,
) -> Result<Option<JobId>, LedgerError> {
    Ok(conn
        .prepare_cached("SELECT id FROM jobs WHERE deployment_id = ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([deployment], |r| r.get(0))
        .optional()?)
}

/// The columns [`job_from_row`] reads, in its order.
const JOB_COLUMNS: &str =
    "id, kind, job_key, state, attempts, max_attempts, next_run_at, locked_until,
        locked_by, last_error, cancel_requested, created_at, finished_at";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        key: r.get(2)?,
        state: r.get(3)?,
        attempts: r.get(4)?,
        max_attempts: r.get(5)?,
        next_run_at: r.get(6)?,
        locked_until: r.get(7)?,
        locked_by: r.get(8)?,
        last_error: r.get(9)?,
        cancel_requested: r.get(10)?,
        created_at: r.get(11)?,
        finished_at: r.get(12)?,
    })
}

pub fn get(conn: &Connection, id: JobId) -> Result<Option<JobRow>, LedgerError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_from_row)
        .optional()?)
}

/// One page of jobs with ids below `before`, newest first, only those in `state` when given.
pub fn page(
    conn: &Connection,
    state: Option<JobState>,
    before: JobId,
    limit: i64,
) -> Result<Vec<JobRow>, LedgerError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id < ?1 AND (?2 IS NULL OR state = ?2)
              ORDER BY id DESC LIMIT CAST(?3 AS INTEGER)"
        ))?
        .query_map(params![before, state, limit], job_from_row)?
        .collect::<Result<_, _>>()?)
}

/// How many jobs are in each state.
pub fn count_by_state(conn: &Connection) -> Result<Vec<(String, i64)>, LedgerError> {
    let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_the_payloads_the_untyped_queue_wrote() {
        let cases = [
            (JobKind::Deploy {}, "deploy", "{}"),
            (
                JobKind::Services {
                    purge_volumes: vec!["rp-shop-db".into()],
                },
                "services",
                r#"{"purge_volumes":["rp-shop-db"]}"#,
            ),
            (
                JobKind::Services {
                    purge_volumes: vec![],
                },
                "services",
                r#"{"purge_volumes":[]}"#,
            ),
            (
                JobKind::Backup { backup_id: 7 },
                "backup",
                r#"{"backup_id":7}"#,
            ),
            (
                JobKind::Restore {
                    backup_id: 7,
                    service: "db".into(),
                },
                "restore",
                r#"{"backup_id":7,"service":"db"}"#,
            ),
            (
                JobKind::AppDelete {
                    app: "shop".into(),
                    purge_volumes: true,
                },
                "app_delete",
                r#"{"app":"shop","purge_volumes":true}"#,
            ),
            (JobKind::Noop { sleep_ms: None }, "noop", "{}"),
            (
                JobKind::Noop { sleep_ms: Some(0) },
                "noop",
                r#"{"sleep_ms":0}"#,
            ),
        ];
        for (kind, name, payload) in cases {
            assert_eq!(kind.name(), name);
            assert!(JobKind::NAMES.contains(&name));
            assert_eq!(kind.payload(), payload, "{name}");
            assert_eq!(JobKind::decode(name, payload).unwrap(), kind);
        }
    }

    #[test]
    fn a_payload_that_does_not_fit_its_kind_does_not_read() {
        assert!(JobKind::decode("restore", r#"{"backup_id":3}"#).is_err());
        assert!(JobKind::decode("paint", "{}").is_err());
        assert!(JobKind::decode("backup", "{not json").is_err());
    }
}
