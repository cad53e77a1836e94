//! Retention: what the ledger stops keeping, and when.
//!
//! Each table has one function that deletes one batch of the rows its rule says may go, in one
//! short write transaction, and returns how many it deleted (fewer than the batch: nothing is
//! left). [`sweep`] runs them all until they are done, pausing between batches so that requests
//! waiting for the write lock get it: no transaction of a sweep holds the lock for long, however
//! much there is to delete.
//!
//! The rules:
//! - deployments: all but the newest `keep_deployments` of each app, except the live release,
//!   the one a rollback would take, one traffic still reaches, and unfinished ones
//!   (`deploy::plan::deployments_to_prune`). Their log lines go first, in batches of their own,
//!   so that deleting a deployment never cascades into a long transaction.
//! - token audit events older than `audit_for`.
//! - webhook deliveries that were handled (deployed or ignored) older than `deliveries_for`.
//!   Pending ones stay; rejected ones are bounded by `WebhookIntake` (the newest 1000). A
//!   delivery goes with the redeliveries recorded as its duplicates, and not while one of them
//!   is recent: deleting it alone would set their `duplicate_of` to NULL and so make them count
//!   as accepted deliveries.
//! - finished jobs older than `jobs_for`, except the newest of each kind per app (the services
//!   page shows why the last change of an app's services failed).
//! - sessions that expired or were revoked, and reset and setup tokens that expired.
//! - agents that registered again (a newer agent of the same host name and token) and have been
//!   offline for `agents_for`; their samples and transitions go with them.
//!
//! Every `ON DELETE` of a row deleted here is a cascade over a bounded set (a deployment's
//! remaining log lines and finished jobs, an agent's pruned history) or a `SET NULL` that
//! loses nothing (a rollback's `rollback_of`, a delivery's `deployment_id`), and each of those
//! child columns is indexed (migration 0008), so a delete never scans a table.

use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::{LedgerError, Millis};
use crate::deploy::plan::{self, Past, Retained};

/// How long things are kept, and how the sweep paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Deployments kept per app (with their logs), beyond the ones that always stay.
    pub keep_deployments: usize,
    pub audit_for: Duration,
    pub deliveries_for: Duration,
    pub jobs_for: Duration,
    /// How long a replaced agent stays after it went silent.
    pub agents_for: Duration,
    /// Rows deleted per transaction.
    pub batch: usize,
    /// The pause between two transactions, for the writers that waited.
    pub pause: Duration,
    /// Free pages handed back to the file system per transaction of incremental vacuum.
    pub vacuum_pages: u32,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            keep_deployments: 50,
            audit_for: 90 * DAY,
            deliveries_for: 30 * DAY,
            jobs_for: 7 * DAY,
            agents_for: 30 * DAY,
            batch: 2000,
            pause: Duration::from_millis(5),
            vacuum_pages: 200,
        }
    }
}

/// What one sweep deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub deployment_logs: usize,
    pub deployments: usize,
    pub audit_events: usize,
    pub deliveries: usize,
    pub jobs: usize,
    pub sessions: usize,
    pub tokens: usize,
    pub agents: usize,
    /// Pages given back to the file system.
    pub pages: usize,
    /// Write transactions it took.
    pub batches: usize,
}

impl Swept {
    pub fn rows(&self) -> usize {
        self.deployment_logs
            + self.deployments
            + self.audit_events
            + self.deliveries
            + self.jobs
            + self.sessions
            + self.tokens
            + self.agents
    }
}

/// Applies every rule at `now`, batch by batch, then gives the freed pages back. Runs for as
/// long as there is work; call it off the async runtime.
pub fn sweep(
    conn: &mut Connection,
    config: &RetentionConfig,
    now: Millis,
) -> Result<Swept, LedgerError> {
    let before = |d: Duration| now - d.as_millis() as Millis;
    let batch = config.batch.max(1);
    let mut swept = Swept::default();
    let mut drain = |conn: &mut Connection,
                     f: &dyn Fn(&mut Connection) -> Result<usize, LedgerError>|
     -> Result<usize, LedgerError> {
        let mut total = 0;
        loop {
            let n = f(conn)?;
            swept.batches += 1;
            total += n;
            if n < batch {
                return Ok(total);
            }
            std::thread::sleep(config.pause);
        }
    };
    let keep = config.keep_deployments.max(1);
    let logs = drain(conn, &|c| deployment_logs_batch(c, keep, batch))?;
    let deployments = drain(conn, &|c| deployments_batch(c, keep, batch))?;
    let audit = drain(conn, &|c| audit_batch(c, before(config.audit_for), batch))?;
    let deliveries = drain(conn, &|c| {
        deliveries_batch(c, before(config.deliveries_for), batch)
    })?;
    let jobs = drain(conn, &|c| jobs_batch(c, before(config.jobs_for), batch))?;
    let sessions = drain(conn, &|c| sessions_batch(c, now, batch))?;
    let tokens = drain(conn, &|c| tokens_batch(c, now, batch))?;
    let agents = drain(conn, &|c| agents_batch(c, before(config.agents_for), batch))?;
    swept.deployment_logs = logs;
    swept.deployments = deployments;
    swept.audit_events = audit;
    swept.deliveries = deliveries;
    swept.jobs = jobs;
    swept.sessions = sessions;
    swept.tokens = tokens;
    swept.agents = agents;
    loop {
        let freed = vacuum_step(conn, config.vacuum_pages.max(1))?;
        if freed == 0 {
            break;
        }
        swept.batches += 1;
        swept.pages += freed;
        std::thread::sleep(config.pause);
    }
    Ok(swept)
}

/// The deployments the rule deletes, at most `limit`, across every app with more than `keep`.
fn doomed_deployments(tx: &Connection, keep: usize, limit: usize) -> Result<Vec<i64>, LedgerError> {
    let apps: Vec<i64> = tx
        .prepare_cached(
            "SELECT app_id FROM deployments GROUP BY app_id HAVING COUNT(*) > ?1 ORDER BY app_id",
        )?
        .query_map([keep as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut doomed = Vec::new();
    for app in apps {
        let history: Vec<Retained> = tx
            .prepare_cached(
                "SELECT d.id, d.state, d.commit_sha,
                        EXISTS (SELECT 1 FROM app_runtimes r WHERE r.deployment_id = d.id),
                        EXISTS (SELECT 1 FROM jobs j WHERE j.deployment_id = d.id
                                   AND j.state IN ('queued', 'running'))
                   FROM deployments d WHERE d.app_id = ?1 ORDER BY d.id DESC",
            )?
            .query_map([app], |r| {
                Ok(Retained {
                    past: Past {
                        id: r.get(0)?,
                        state: r.get(1)?,
                        commit_sha: r.get(2)?,
                    },
                    routed: r.get(3)?,
                    active_job: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        doomed.extend(plan::deployments_to_prune(&history, keep));
        if doomed.len() >= limit {
            doomed.truncate(limit);
            break;
        }
    }
    Ok(doomed)
}

/// Runs one batch of a rule in its own short write transaction, so a sweep never holds the
/// write lock for long. Returns how many rows it deleted.
fn batch(
    conn: &mut Connection,
    delete: impl FnOnce(&Transaction) -> Result<usize, LedgerError>,
) -> Result<usize, LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let deleted = delete(&tx)?;
    tx.commit()?;
    Ok(deleted)
}

/// Deletes up to `limit` log lines of the deployments [`deployments_batch`] would delete.
pub fn deployment_logs_batch(
    conn: &mut Connection,
    keep: usize,
    limit: usize,
) -> Result<usize, LedgerError> {
    batch(conn, |tx| {
        let mut deleted = 0;
        for id in doomed_deployments(tx, keep, limit)? {
            deleted += tx
                .prepare_cached(
                    "DELETE FROM deployment_logs WHERE deployment_id = ?1 AND seq IN (
                        SELECT seq FROM deployment_logs WHERE deployment_id = ?1 ORDER BY seq LIMIT CAST(?2 AS INTEGER))",
                )?
                .execute(params![id, (limit - deleted) as i64])?;
            if deleted >= limit {
                break;
            }
        }
        Ok(deleted)
    })
}

/// Deletes up to `limit` deployments beyond the newest `keep` of their app (see
/// [`plan::deployments_to_prune`] for the ones that always stay), with what is left of their
/// logs and their finished jobs.
pub fn deployments_batch(
    conn: &mut Connection,
    keep: usize,
    limit: usize,
) -> Result<usize, LedgerError> {
    batch(conn, |tx| {
        let mut deleted = 0;
        for id in doomed_deployments(tx, keep, limit)? {
            deleted += tx
                .prepare_cached("DELETE FROM deployments WHERE id = ?1")?
                .execute([id])?;
        }
        Ok(deleted)
    })
}

/// Deletes up to `limit` token audit events recorded before `before`.
pub fn audit_batch(
    conn: &mut Connection,
    before: Millis,
    limit: usize,
) -> Result<usize, LedgerError> {
    batch(conn, |tx| {
        let n = tx
            .prepare_cached(
                "DELETE FROM token_audit_events WHERE id IN (
                    SELECT id FROM token_audit_events WHERE at < ?1 ORDER BY at LIMIT CAST(?2 AS INTEGER))",
            )?
            .execute(params![before, limit as i64])?;
        Ok(n)
    })
}

/// Deletes up to `limit` handled webhook deliveries received before `before`, each with the
/// redeliveries recorded as its duplicates; one with a duplicate received since stays.
pub fn deliveries_batch(
    conn: &mut Connection,
    before: Millis,
    limit: usize,
) -> Result<usize, LedgerError> {
    batch(conn, |tx| {
        let ids: Vec<i64> = tx
            .prepare_cached(
                "SELECT w.id FROM webhook_deliveries w
                  WHERE w.outcome IN ('deployed', 'ignored') AND w.received_at < ?1
                    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                     WHERE d.duplicate_of = w.id AND d.received_at >= ?1)
                  ORDER BY w.id LIMIT CAST(?2 AS INTEGER)",
            )?
            .query_map(params![before, limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut deleted = 0;
        for id in &ids {
            // Duplicates first: deleting the row they repeat would set their duplicate_of to NULL.
            deleted += tx
                .prepare_cached("DELETE FROM webhook_deliveries WHERE duplicate_of = ?1")?
                .execute([id])?;
            deleted += tx
                .prepare_cached("DELETE FROM webhook_deliveries WHERE id = ?1")?
                .execute([id])?;
        }
        Ok(deleted)
    })
}

/// Deletes up to `limit` jobs that finished before `before`, keeping each app's newest job of
/// each kind.
pub fn jobs_batch(
    conn: &mut Connection,
    before: Millis,
    limit: usize,
) -> Result<usize, LedgerError> {
    batch(conn, |tx| {
        let n = tx
            .prepare_cached(
                "DELETE FROM jobs WHERE id IN (
                    SELECT j.id FROM jobs j
                     WHERE j.state IN ('succeeded', 'dead', 'cancelled')
                       AND COALESCE(j.finished_at, j.updated_at) < ?1
                       AND EXISTS (SELECT 1 FROM jobs n WHERE n.app_id IS j.app_id
                                      AND n.kind = j.kind AND n.id > j.id)
                     ORDER BY j.id LIMIT CAST(?2 AS INTEGER))",
            )?
            .execute(params![before, limit as i64])?;
        Ok(n)
    })
}

/// Deletes up to `limit` sessions that expired (absolutely or for being idle) or were revoked
/// by `now`.
pub fn sessions_batch(
    conn: &mut Connection,
    now: Millis,
    limit: usize,
) -> Result<usize, LedgerError> {
    batch(conn, |tx| {
        let n = tx
            .prepare_cached(
                "DELETE FROM sessions WHERE id IN (
                    SELECT id FROM sessions
                     WHERE expires_at <= ?1 OR idle_expires_at <= ?1 OR revoked_at IS NOT NULL
                     ORDER BY id LIMIT CAST(?2 AS INTEGER))",
            )?
            .execute(params![now, limit as i64])?;
        Ok(n)
    })
}

/// Deletes up to `limit` password reset and setup tokens that expired by `now` (used or not).
pub fn tokens_batch(
    conn: &mut Connection,
    now: Millis,
    limit: usize,
) -> Result<usize, LedgerError> {
    batch(conn, |tx| {
        let mut n = tx
            .prepare_cached(
                "DELETE FROM password_reset_tokens WHERE id IN (
                    SELECT id FROM password_reset_tokens WHERE expires_at <= ?1 ORDER BY id LIMIT CAST(?2 AS INTEGER))",
            )?
            .execute(params![now, limit as i64])?;
        n += tx
            .prepare_cached(
                "DELETE FROM setup_tokens WHERE id IN (
                    SELECT id FROM setup_tokens WHERE expires_at <= ?1 ORDER BY id LIMIT CAST(?2 AS INTEGER))",
            )?
            .execute(params![now, limit.saturating_sub(n) as i64])?;
        Ok(n)
    })
}

/// Deletes up to `limit` agents that are offline, last heard from before `before`, and were
/// replaced: a newer agent registered with the same host name and the same token (or any
/// token, when theirs was deleted).
pub fn agents_batch(
    conn: &mut Connection,
    before: Millis,
    limit: usize,
) -> Result<usize, LedgerError> {
    batch(conn, |tx| {
        let n = tx
            .prepare_cached(
                "DELETE FROM agents WHERE id IN (
                    SELECT a.id FROM agents a
                     WHERE a.state = 'offline'
                       AND COALESCE(a.last_heartbeat_at, a.registered_at) < ?1
                       AND EXISTS (SELECT 1 FROM agents n
                                    WHERE n.id > a.id AND n.hostname = a.hostname
                                      AND (a.token_id IS NULL OR n.token_id IS a.token_id))
                     ORDER BY a.id LIMIT CAST(?2 AS INTEGER))",
            )?
            .execute(params![before, limit as i64])?;
        Ok(n)
    })
}

/// Gives up to `pages` free pages back to the file system (the ledger uses incremental
/// vacuum, see `migrate.rs`). Returns how many it freed.
pub fn vacuum_step(conn: &mut Connection, pages: u32) -> Result<usize, LedgerError> {
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    if free == 0 {
        return Ok(0);
    }
    // The pragma frees one page per step: it must be stepped to its end, in a write
    // transaction of its own.
    let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    drop(rows);
    drop(stmt);
    let left: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    Ok((free - left).max(0) as usize)
}
