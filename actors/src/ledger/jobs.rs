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

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{LedgerError, Millis, now_ms};

pub type JobId = i64;

/// A job to put in the queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    /// While a job with this key is queued or running, enqueueing the same key returns it instead.
    pub key: Option<String>,
    pub payload: serde_json::Value,
    pub app_id: Option<i64>,
    pub deployment_id: Option<i64>,
    pub max_attempts: u32,
    pub run_at: Option<Millis>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            key: None,
            payload: serde_json::Value::Object(Default::default()),
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

    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
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
    pub kind: String,
    pub key: Option<String>,
    pub payload: serde_json::Value,
    pub app_id: Option<i64>,
    pub deployment_id: Option<i64>,
    pub attempts: u32,
    pub max_attempts: u32,
}

/// A job as the ledger holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JobRow {
    pub id: JobId,
    pub kind: String,
    pub key: Option<String>,
    pub state: String,
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
    let now = now_ms();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (kind, job_key, payload, app_id, deployment_id, max_attempts,
                               next_run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        )?
        .execute(params![
            job.kind,
            job.key,
            job.payload.to_string(),
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
/// with the reason that its worker was interrupted.
pub fn claim(
    conn: &mut Connection,
    worker: &str,
    lease: Duration,
    kinds: &[&str],
) -> Result<Option<ClaimedJob>, LedgerError> {
    let now = now_ms();
    let kinds_json = serde_json::to_string(kinds).expect("kinds serialise");
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    bury_lapsed(&tx, now)?;
    let claimed = tx
        .prepare_cached(
            "UPDATE jobs
                SET state = 'running', attempts = attempts + 1, locked_by = ?1,
                    locked_until = ?2, updated_at = ?3
              WHERE id = (
                    -- Two index-ordered searches, each stopping at its first match, instead of
                    -- one OR that sorts every due job: a claim costs the same at any backlog.
                    SELECT id FROM (
                        SELECT * FROM (
                            SELECT j.id, j.next_run_at FROM jobs j
                             WHERE j.state = 'queued' AND j.next_run_at <= ?3
                               AND j.kind IN (SELECT value FROM json_each(?4))
                               AND (j.app_id IS NULL OR NOT EXISTS (
                                    SELECT 1 FROM jobs r
                                     WHERE r.app_id = j.app_id AND r.state = 'running'
                                       AND r.id != j.id AND r.locked_until >= ?3))
                             ORDER BY j.next_run_at, j.id
                             LIMIT 1)
                        UNION ALL
                        SELECT * FROM (
                            SELECT j.id, j.next_run_at FROM jobs j
                             WHERE j.state = 'running' AND j.locked_until < ?3
                               AND j.locked_by != ?1
                               AND j.kind IN (SELECT value FROM json_each(?4))
                               AND (j.app_id IS NULL OR NOT EXISTS (
                                    SELECT 1 FROM jobs r
                                     WHERE r.app_id = j.app_id AND r.state = 'running'
                                       AND r.id != j.id AND r.locked_until >= ?3))
                             ORDER BY j.next_run_at, j.id
                             LIMIT 1))
                     ORDER BY next_run_at, id
                     LIMIT 1)
              RETURNING id, kind, job_key, payload, app_id, deployment_id, attempts, max_attempts",
        )?
        .query_row(
            params![worker, now + lease.as_millis() as i64, now, kinds_json],
            |r| {
                let payload: String = r.get(3)?;
                Ok(ClaimedJob {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    key: r.get(2)?,
                    payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                    app_id: r.get(4)?,
                    deployment_id: r.get(5)?,
                    attempts: r.get(6)?,
                    max_attempts: r.get(7)?,
                })
            },
        )
        .optional()?;
    tx.commit()?;
    Ok(claimed)
}

/// Jobs whose lease lapsed on their last allowed attempt will not be retried: they are dead.
fn bury_lapsed(conn: &Connection, now: Millis) -> Result<(), LedgerError> {
    let reason = "interrupted: the worker running this job stopped before it finished, \
                  and no attempts are left";
    let dead: Vec<Option<i64>> = conn
        .prepare_cached(
            "UPDATE jobs
                SET state = 'dead', last_error = ?1, locked_by = NULL, locked_until = NULL,
                    updated_at = ?2, finished_at = ?2
              WHERE state = 'running' AND locked_until < ?2 AND attempts >= max_attempts
              RETURNING deployment_id",
        )?
        .query_map(params![reason, now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for deployment in dead.into_iter().flatten() {
        end_deployment(conn, deployment, "failed", reason, now)?;
    }
    Ok(())
}

/// Marks a claimed job done. Returns false when the worker had lost the lease.
pub fn complete(conn: &Connection, id: JobId, worker: &str) -> Result<bool, LedgerError> {
    let now = now_ms();
    let n = conn
        .prepare_cached(
            "UPDATE jobs
                SET state = 'succeeded', locked_by = NULL, locked_until = NULL, last_error = NULL,
                    updated_at = ?3, finished_at = ?3
              WHERE id = ?1 AND locked_by = ?2 AND state = 'running'",
        )?
        .execute(params![id, worker, now])?;
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
    let now = now_ms();
    let next = now + delay.as_millis() as i64;
    let tx = conn.transaction()?;
    let row: Option<(String, Option<i64>)> = tx
        .prepare_cached(
            "UPDATE jobs
                SET state = CASE
                        WHEN cancel_requested = 1 THEN 'cancelled'
                        WHEN ?4 AND attempts < max_attempts THEN 'queued'
                        ELSE 'dead' END,
                    next_run_at = CASE WHEN ?4 AND attempts < max_attempts THEN ?5 ELSE next_run_at END,
                    finished_at = CASE
                        WHEN cancel_requested = 0 AND ?4 AND attempts < max_attempts THEN NULL
                        ELSE ?6 END,
                    last_error = ?3, locked_by = NULL, locked_until = NULL, updated_at = ?6
              WHERE id = ?1 AND locked_by = ?2 AND state = 'running'
              RETURNING state, deployment_id",
        )?
        .query_row(params![id, worker, error, retry, next, now], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let outcome = match row {
        None => FailOutcome::LostLease,
        Some((state, deployment)) => {
            let outcome = match state.as_str() {
                "queued" => FailOutcome::Retrying(next),
                "cancelled" => FailOutcome::Cancelled,
                _ => FailOutcome::Dead,
            };
            if let Some(deployment) = deployment {
                match outcome {
                    FailOutcome::Dead => end_deployment(&tx, deployment, "failed", error, now)?,
                    FailOutcome::Cancelled => {
                        end_deployment(&tx, deployment, "cancelled", "cancelled", now)?
                    }
                    _ => {}
                }
            }
            outcome
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// Gives a claimed job back unfinished (the server is shutting down): it is queued again at
/// once, and the attempt does not count against it.
pub fn release(conn: &Connection, id: JobId, worker: &str) -> Result<bool, LedgerError> {
    let now = now_ms();
    let n = conn
        .prepare_cached(
            "UPDATE jobs
                SET state = 'queued', attempts = MAX(attempts - 1, 0), locked_by = NULL,
                    locked_until = NULL, next_run_at = ?3, updated_at = ?3
              WHERE id = ?1 AND locked_by = ?2 AND state = 'running'",
        )?
        .execute(params![id, worker, now])?;
    Ok(n == 1)
}

/// Cancels a job: a queued one at once, a running one by asking its worker to stop.
pub fn cancel(conn: &mut Connection, id: JobId) -> Result<CancelOutcome, LedgerError> {
    let now = now_ms();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: Option<(String, Option<i64>)> = tx
        .query_row(
            "SELECT state, deployment_id FROM jobs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let outcome = match found {
        None => CancelOutcome::NotFound,
        Some((state, deployment)) => match state.as_str() {
            "queued" => {
                tx.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, last_error = 'cancelled',
                            updated_at = ?2, finished_at = ?2
                      WHERE id = ?1",
                    params![id, now],
                )?;
                if let Some(deployment) = deployment {
                    end_deployment(&tx, deployment, "cancelled", "cancelled", now)?;
                }
                CancelOutcome::Cancelled
            }
            "running" => {
                tx.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
                CancelOutcome::Requested
            }
            _ => CancelOutcome::AlreadyFinished,
        },
    };
    tx.commit()?;
    Ok(outcome)
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
              WHERE locked_by = ?1 AND state = 'running'",
        )?
        .execute(params![worker, now + lease.as_millis() as i64, now])?)
}

/// At start-up of the only worker on this ledger, jobs other workers left running were
/// interrupted by a crash: queue them again at once (or bury them when no attempts are left)
/// instead of waiting for their leases to lapse.
pub fn recover_interrupted(conn: &mut Connection, worker: &str) -> Result<usize, LedgerError> {
    let now = now_ms();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n = tx.execute(
        "UPDATE jobs SET locked_until = ?2 - 1
          WHERE state = 'running' AND (locked_by IS NULL OR locked_by != ?1)",
        params![worker, now],
    )?;
    bury_lapsed(&tx, now)?;
    tx.execute(
        "UPDATE jobs
            SET state = 'queued', locked_by = NULL, locked_until = NULL, next_run_at = ?2,
                last_error = 'interrupted: the server stopped while this job ran', updated_at = ?2
          WHERE state = 'running' AND locked_until < ?2",
        params![worker, now],
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
                 WHERE state = 'queued' AND kind IN (SELECT value FROM json_each(?1))
                UNION ALL
                SELECT MIN(locked_until) AS t FROM jobs
                 WHERE state = 'running' AND kind IN (SELECT value FROM json_each(?1)))",
        )?
        .query_row([kinds_json], |r| r.get(0))?)
}

pub fn is_cancel_requested(conn: &Connection, id: JobId) -> Result<bool, LedgerError> {
    Ok(conn
        .prepare_cached("SELECT cancel_requested FROM jobs WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .unwrap_or(true))
}

pub fn get(conn: &Connection, id: JobId) -> Result<Option<JobRow>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, kind, job_key, state, attempts, max_attempts, next_run_at, locked_until,
                    locked_by, last_error, cancel_requested, created_at, finished_at
               FROM jobs WHERE id = ?1",
        )?
        .query_row([id], |r| {
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
        })
        .optional()?)
}

/// How many jobs are in each state.
pub fn count_by_state(conn: &Connection) -> Result<Vec<(String, i64)>, LedgerError> {
    let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Ends a deployment that is still queued or running; a finished one is left as it is.
fn end_deployment(
    conn: &Connection,
    id: i64,
    state: &str,
    reason: &str,
    now: Millis,
) -> Result<(), LedgerError> {
    conn.prepare_cached(
        "UPDATE deployments SET state = ?2, step = NULL, reason = ?3, finished_at = ?4
          WHERE id = ?1 AND state IN ('queued', 'running')",
    )?
    .execute(params![id, state, reason, now])?;
    Ok(())
}
