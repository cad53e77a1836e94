//! GitHub integrations (`github_integrations`) and the webhook deliveries the server received
//! (`webhook_deliveries`), with what became of each (`WebhookOutcome`).
//!
//! The webhook endpoint records deliveries here (in batches, inside its receiver's transaction),
//! WebhookIntake turns the pending ones into deployments, and the API lists them.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use rustploy_api::states::{DeploymentState, WebhookOutcome};

use super::{LedgerError, Millis};

/// An app's connection to a GitHub repository and branch, without its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub app_id: i64,
    pub app: String,
    pub owner: String,
    pub repo: String,
    pub branch: String,
    pub deploy_tags: bool,
    pub created_at: Millis,
    /// Other apps connected to the same repository (they share its webhook and secret).
    pub shared_with: Vec<String>,
    /// The app has a repository to deploy from (an import configuration).
    pub has_import: bool,
}

/// What connecting an app writes: its integration, with the secret already sealed for it.
#[derive(Debug, Clone)]
pub struct NewIntegration {
    pub app_id: i64,
    pub owner: String,
    pub repo: String,
    pub branch: String,
    pub deploy_tags: bool,
    pub secret_enc: Vec<u8>,
    pub created_at: Millis,
}

/// An app connected to a repository, with its sealed secret: who may have signed a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Signer {
    pub app_id: i64,
    pub app: String,
    pub branch: String,
    pub deploy_tags: bool,
    pub secret_enc: Vec<u8>,
}

/// A webhook delivery about to be recorded for one app (or for none).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery<'a> {
    /// GitHub's `X-GitHub-Delivery`; `None` only for a refused request that carried none.
    pub delivery_id: Option<&'a str>,
    pub event: &'a str,
    pub app_id: Option<i64>,
    pub repository: Option<&'a str>,
    pub git_ref: Option<&'a str>,
    pub commit_sha: Option<&'a str>,
    pub outcome: WebhookOutcome,
    pub reason: Option<&'a str>,
    /// For a redelivery: the row of the delivery it repeats.
    pub duplicate_of: Option<i64>,
    pub source_addr: Option<&'a str>,
    pub received_at: Millis,
    pub handled_at: Option<Millis>,
}

/// One recorded delivery, as the list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub delivery_id: Option<String>,
    pub event: String,
    pub app_id: Option<i64>,
    /// `None` when the app was deleted since, or no app was concerned.
    pub app: Option<String>,
    pub repository: Option<String>,
    pub git_ref: Option<String>,
    pub commit_sha: Option<String>,
    pub outcome: WebhookOutcome,
    pub reason: Option<String>,
    pub deployment_id: Option<i64>,
    /// The state of `deployment_id` now.
    pub deployment_state: Option<DeploymentState>,
    pub source_addr: Option<String>,
    pub received_at: Millis,
    pub handled_at: Option<Millis>,
    pub duplicate_of: Option<i64>,
}

/// Which deliveries [`list`] returns: newest first, with ids below `before`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryFilter {
    pub app_id: Option<i64>,
    pub outcome: Option<WebhookOutcome>,
    pub before: i64,
    pub limit: i64,
}

/// The first recording of a delivery for one app: what a redelivery of it is answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    pub id: i64,
    pub app_id: Option<i64>,
    pub app: Option<String>,
    pub outcome: WebhookOutcome,
    pub reason: Option<String>,
    pub commit_sha: Option<String>,
    pub deployment_id: Option<i64>,
}

/// A delivery waiting for WebhookIntake.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: i64,
    pub delivery_id: Option<String>,
    pub app_id: Option<i64>,
    pub commit_sha: Option<String>,
}

// --- Integrations ---------------------------------------------------------------------------

/// The app's integration, with the other apps of its repository.
pub fn integration(c: &Connection, app: i64) -> Result<Option<Integration>, LedgerError> {
    let row = c
        .prepare_cached(
            "SELECT a.name, g.owner, g.repo, g.branch, g.deploy_tags, g.created_at,
                    EXISTS (SELECT 1 FROM app_import_configs i WHERE i.app_id = a.id)
               FROM github_integrations g JOIN apps a ON a.id = g.app_id
              WHERE g.app_id = ?1",
        )?
        .query_row([app], |r| {
            Ok(Integration {
                app_id: app,
                app: r.get(0)?,
                owner: r.get(1)?,
                repo: r.get(2)?,
                branch: r.get(3)?,
                deploy_tags: r.get(4)?,
                created_at: r.get(5)?,
                shared_with: Vec::new(),
                has_import: r.get(6)?,
            })
        })
        .optional()?;
    let Some(mut i) = row else { return Ok(None) };
    i.shared_with = c
        .prepare_cached(
            "SELECT a.name FROM github_integrations g JOIN apps a ON a.id = g.app_id
              WHERE g.owner = ?1 AND g.repo = ?2 AND g.app_id != ?3 ORDER BY a.name",
        )?
        .query_map(params![i.owner, i.repo, app], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(Some(i))
}

/// Whether the app is connected to GitHub.
pub fn is_connected(c: &Connection, app: i64) -> Result<bool, LedgerError> {
    Ok(
        c.prepare_cached("SELECT COUNT(*) > 0 FROM github_integrations WHERE app_id = ?1")?
            .query_row([app], |r| r.get(0))?,
    )
}

/// The sealed secret of the repository `owner/repo` and the app it is sealed for: `app`'s own
/// when it is connected to that repository, else another app's of it.
pub fn repository_secret(
    c: &Connection,
    owner: &str,
    repo: &str,
    app: i64,
) -> Result<Option<(i64, Vec<u8>)>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT app_id, secret_enc FROM github_integrations
              WHERE owner = ?1 AND repo = ?2 ORDER BY app_id != ?3, app_id LIMIT 1",
    )?
    .query_row(params![owner, repo, app], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()?)
}

/// Connects an app, or changes its integration (its first `created_at` stays).
pub fn upsert(c: &Connection, i: &NewIntegration) -> Result<(), LedgerError> {
    c.prepare_cached(
        "INSERT INTO github_integrations (app_id, owner, repo, branch, deploy_tags, secret_enc, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (app_id) DO UPDATE
            SET owner = ?2, repo = ?3, branch = ?4, deploy_tags = ?5, secret_enc = ?6",
    )?
    .execute(params![
        i.app_id,
        i.owner,
        i.repo,
        i.branch,
        i.deploy_tags,
        i.secret_enc,
        i.created_at
    ])?;
    Ok(())
}

/// The apps connected to `owner/repo`, by id, but for `except`.
pub fn apps_of_repository(
    c: &Connection,
    owner: &str,
    repo: &str,
    except: Option<i64>,
) -> Result<Vec<i64>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT app_id FROM github_integrations
              WHERE owner = ?1 AND repo = ?2 AND (?3 IS NULL OR app_id != ?3)",
    )?
    .query_map(params![owner, repo, except], |r| r.get(0))?
    .collect::<Result<_, _>>()?)
}

/// Replaces an app's sealed secret.
pub fn set_secret(c: &Connection, app: i64, secret_enc: &[u8]) -> Result<(), LedgerError> {
    c.prepare_cached("UPDATE github_integrations SET secret_enc = ?2 WHERE app_id = ?1")?
        .execute(params![app, secret_enc])?;
    Ok(())
}

/// Disconnects an app. Returns whether it was connected.
pub fn disconnect(c: &Connection, app: i64) -> Result<bool, LedgerError> {
    Ok(
        c.prepare_cached("DELETE FROM github_integrations WHERE app_id = ?1")?
            .execute([app])?
            > 0,
    )
}

/// The apps connected to `owner/repo`, with their sealed secrets, by app id.
pub fn signers(c: &Connection, owner: &str, repo: &str) -> Result<Vec<Signer>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT g.app_id, a.name, g.branch, g.deploy_tags, g.secret_enc
               FROM github_integrations g JOIN apps a ON a.id = g.app_id
              WHERE g.owner = ?1 AND g.repo = ?2
              ORDER BY g.app_id",
    )?
    .query_map(params![owner, repo], |r| {
        Ok(Signer {
            app_id: r.get(0)?,
            app: r.get(1)?,
            branch: r.get(2)?,
            deploy_tags: r.get(3)?,
            secret_enc: r.get(4)?,
        })
    })?
    .collect::<Result<_, _>>()?)
}

// --- Deliveries -----------------------------------------------------------------------------
//
// The outcomes the statements select by are written into them as literals, not bound: SQLite
// uses the partial indexes on them (`webhook_deliveries_pending`, `webhook_deliveries_rejected`,
// `webhook_deliveries_deployed`, `webhook_deliveries_once`) only for a literal it can match
// against the index's own, and a bound value it compares with one makes it prepare the
// statement again on every run.

/// Records a delivery. Returns its row id.
pub fn insert(c: &Connection, d: &NewDelivery<'_>) -> Result<i64, LedgerError> {
    c.prepare_cached(
        "INSERT INTO webhook_deliveries (delivery_id, event, app_id, repository, git_ref,
                commit_sha, outcome, reason, duplicate_of, source_addr, received_at, handled_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        d.delivery_id,
        d.event,
        d.app_id,
        d.repository,
        d.git_ref,
        d.commit_sha,
        d.outcome,
        d.reason,
        d.duplicate_of,
        d.source_addr,
        d.received_at,
        d.handled_at,
    ])?;
    Ok(c.last_insert_rowid())
}

/// The rows that first recorded `delivery_id` (one per app; rejected ones and redeliveries
/// aside), oldest first: empty when it is new.
pub fn first_handled(c: &Connection, delivery_id: &str) -> Result<Vec<Handled>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT w.id, w.app_id, a.name, w.outcome, w.reason, w.commit_sha, w.deployment_id
               FROM webhook_deliveries w LEFT JOIN apps a ON a.id = w.app_id
              WHERE w.delivery_id = ?1 AND w.outcome != 'rejected' AND w.duplicate_of IS NULL
              ORDER BY w.id",
    )?
    .query_map(params![delivery_id], |r| {
        Ok(Handled {
            id: r.get(0)?,
            app_id: r.get(1)?,
            app: r.get(2)?,
            outcome: r.get(3)?,
            reason: r.get(4)?,
            commit_sha: r.get(5)?,
            deployment_id: r.get(6)?,
        })
    })?
    .collect::<Result<_, _>>()?)
}

/// How many redeliveries of `delivery_id` were recorded.
pub fn redeliveries(c: &Connection, delivery_id: &str) -> Result<i64, LedgerError> {
    Ok(c
        .prepare_cached(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE delivery_id = ?1 AND duplicate_of IS NOT NULL",
        )?
        .query_row([delivery_id], |r| r.get(0))?)
}

/// Deliveries newest first, as `filter` says.
pub fn list(c: &Connection, filter: &DeliveryFilter) -> Result<Vec<Delivery>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT w.id, w.delivery_id, w.event, w.app_id, a.name, w.repository, w.git_ref,
                    w.commit_sha, w.outcome, w.reason, w.deployment_id, w.source_addr,
                    w.received_at, w.handled_at, w.duplicate_of, d.state
               FROM webhook_deliveries w LEFT JOIN apps a ON a.id = w.app_id
                    LEFT JOIN deployments d ON d.id = w.deployment_id
              WHERE w.id < ?1 AND (?2 IS NULL OR w.app_id = ?2)
                AND (?3 IS NULL OR w.outcome = ?3)
              ORDER BY w.id DESC LIMIT CAST(?4 AS INTEGER)",
    )?
    .query_map(
        params![filter.before, filter.app_id, filter.outcome, filter.limit],
        |r| {
            Ok(Delivery {
                id: r.get(0)?,
                delivery_id: r.get(1)?,
                event: r.get(2)?,
                app_id: r.get(3)?,
                app: r.get(4)?,
                repository: r.get(5)?,
                git_ref: r.get(6)?,
                commit_sha: r.get(7)?,
                outcome: r.get(8)?,
                reason: r.get(9)?,
                deployment_id: r.get(10)?,
                source_addr: r.get(11)?,
                received_at: r.get(12)?,
                handled_at: r.get(13)?,
                duplicate_of: r.get(14)?,
                deployment_state: r.get(15)?,
            })
        },
    )?
    .collect::<Result<_, _>>()?)
}

/// The ids of up to `limit` pending deliveries, oldest first, each with its app.
pub fn pending_ids(c: &Connection, limit: i64) -> Result<Vec<(i64, Option<i64>)>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT id, app_id FROM webhook_deliveries
          WHERE outcome = 'pending' ORDER BY id LIMIT CAST(?1 AS INTEGER)",
    )?
    .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect::<Result<_, _>>()?)
}

/// Delivery `id`, when it is still pending.
pub fn pending(c: &Connection, id: i64) -> Result<Option<Pending>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT delivery_id, app_id, commit_sha FROM webhook_deliveries
              WHERE id = ?1 AND outcome = 'pending'",
    )?
    .query_row([id], |r| {
        Ok(Pending {
            id,
            delivery_id: r.get(0)?,
            app_id: r.get(1)?,
            commit_sha: r.get(2)?,
        })
    })
    .optional()?)
}

/// Marks delivery `id` ignored, with why.
pub fn ignore(c: &Connection, id: i64, reason: &str, now: Millis) -> Result<(), LedgerError> {
    c.prepare_cached(
        "UPDATE webhook_deliveries SET outcome = ?2, reason = ?3, handled_at = ?4 WHERE id = ?1",
    )?
    .execute(params![id, WebhookOutcome::Ignored, reason, now])?;
    Ok(())
}

/// What one delivery came to for a deployment: deployed by it, or ignored (superseded before
/// it started), with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    pub id: i64,
    pub outcome: WebhookOutcome,
    pub reason: Option<String>,
}

/// Gives each delivery of `settled` its outcome for `deployment`, in one statement: an update
/// per row would copy every page it touches into the statement's journal again (the
/// deployment's foreign key and the outcome's check make each update one that may abort).
pub fn settle(
    c: &Connection,
    deployment: i64,
    settled: &[Settle],
    now: Millis,
) -> Result<(), LedgerError> {
    if settled.is_empty() {
        return Ok(());
    }
    let rows: Vec<(i64, &str, Option<&str>)> = settled
        .iter()
        .map(|s| (s.id, s.outcome.as_str(), s.reason.as_deref()))
        .collect();
    let rows = serde_json::to_string(&rows).map_err(|e| LedgerError::Invalid(e.to_string()))?;
    c.prepare_cached(
        "UPDATE webhook_deliveries
            SET outcome = s.value ->> 1, deployment_id = ?2, reason = s.value ->> 2,
                handled_at = ?3
           FROM json_each(?1) AS s
          WHERE webhook_deliveries.id = s.value ->> 0",
    )?
    .execute(params![rows, deployment, now])?;
    Ok(())
}

/// Turns the deliveries that queued `deployment` with another commit than `sha` into ignored
/// ones, with why: they no longer decide its commit. Returns how many.
pub fn supersede(
    c: &Connection,
    deployment: i64,
    sha: &str,
    reason: &str,
) -> Result<usize, LedgerError> {
    Ok(c.prepare_cached(
        // Named: without statistics SQLite takes the index of all the deployment's rows, and a
        // burst leaves hundreds of superseded ones there for each deployed one.
        "UPDATE webhook_deliveries INDEXED BY webhook_deliveries_deployed
                SET outcome = ?4, reason = ?2
              WHERE deployment_id = ?1 AND outcome = 'deployed' AND commit_sha IS NOT ?3",
    )?
    .execute(params![deployment, reason, sha, WebhookOutcome::Ignored])?)
}

/// Deletes rejected rows beyond the newest `keep`. Returns how many went.
pub fn prune_rejected(c: &Connection, keep: i64) -> Result<usize, LedgerError> {
    Ok(c.execute(
        "DELETE FROM webhook_deliveries
          WHERE outcome = 'rejected'
            AND id < (SELECT id FROM webhook_deliveries WHERE outcome = 'rejected'
                       ORDER BY id DESC LIMIT 1 OFFSET CAST(?1 AS INTEGER))",
        [keep - 1],
    )?)
}

/// Runs `f` with a busy handler that retries every 200 µs (for up to about 5 s) instead of
/// SQLite's, whose waits grow to 100 ms; the connection's busy timeout is restored after. The
/// webhook endpoint's writer uses it so that its acknowledgements never sleep long on a lock.
pub fn with_short_busy_waits<T>(
    c: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    fn retry(attempt: i32) -> bool {
        std::thread::sleep(Duration::from_micros(200));
        attempt < 25_000
    }
    let timeout: i64 = c.pragma_query_value(None, "busy_timeout", |r| r.get(0))?;
    c.busy_handler(Some(retry))?;
    let result = f(c);
    c.busy_timeout(Duration::from_millis(timeout.max(0) as u64))?;
    result
}
