//! How the API and the dashboard read deployments, their logs and the live release.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use rustploy_api::states::{DeployStep, DeploymentState};

use crate::ledger::{LedgerError, Millis};

/// One deployment, as the ledger stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow {
    pub id: i64,
    pub app_id: i64,
    /// The app's name.
    pub app: String,
    pub state: DeploymentState,
    pub step: Option<DeployStep>,
    pub requested_ref: Option<String>,
    pub commit_sha: Option<String>,
    /// `api`, `webhook`, `rollback`, ...
    pub trigger: String,
    pub triggered_by: Option<String>,
    pub reason: Option<String>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub rollback_of: Option<i64>,
}

/// A deployment with what it recorded once it switched.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentDetail {
    pub deployment: DeploymentRow,
    /// Milliseconds per step; `None` until it switched (or when the stored text is unreadable).
    pub step_timings: Option<BTreeMap<String, u64>>,
    /// The image each service ran, by service.
    pub image_ids: Option<BTreeMap<String, String>>,
}

/// One line of a deployment's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub seq: i64,
    pub at: Millis,
    /// `system`, `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// Where a deployment stands, as its log stream needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub state: DeploymentState,
    pub reason: Option<String>,
}

/// One container the router sends an app's traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub container_id: String,
    pub deployment_id: i64,
    pub service: String,
    pub address: String,
    pub port: i64,
}

/// The deployment columns [`read_at`] reads, in its order, from `deployments d`.
pub(crate) const COLUMNS: &str = "d.id, d.app_id, d.state, d.step, d.requested_ref, d.commit_sha,
        d.trigger, d.triggered_by, d.reason, d.created_at, d.started_at, d.finished_at, d.rollback_of";

/// Reads the [`COLUMNS`] starting at column `at`, for the app named `app`.
pub(crate) fn read_at(r: &Row<'_>, at: usize, app: String) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.get(at)?,
        app_id: r.get(at + 1)?,
        app,
        state: r.get(at + 2)?,
        step: r.get(at + 3)?,
        requested_ref: r.get(at + 4)?,
        commit_sha: r.get(at + 5)?,
        trigger: r.get(at + 6)?,
        triggered_by: r.get(at + 7)?,
        reason: r.get(at + 8)?,
        created_at: r.get(at + 9)?,
        started_at: r.get(at + 10)?,
        finished_at: r.get(at + 11)?,
        rollback_of: r.get(at + 12)?,
    })
}

/// Deployment `id`; `None` when there is none.
pub fn get(c: &Connection, id: i64) -> Result<Option<DeploymentRow>, LedgerError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLUMNS}, a.name FROM deployments d JOIN apps a ON a.id = d.app_id WHERE d.id = ?1"
    ))?
    .query_row([id], |r| read_at(r, 0, r.get(13)?))
    .optional()?)
}

/// Deployment `id` with its step timings and images.
pub fn detail(c: &Connection, id: i64) -> Result<Option<DeploymentDetail>, LedgerError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {COLUMNS}, a.name, d.step_timings_json, d.image_ids_json
           FROM deployments d JOIN apps a ON a.id = d.app_id WHERE d.id = ?1"
    ))?
    .query_row([id], |r| {
        Ok(DeploymentDetail {
            deployment: read_at(r, 0, r.get(13)?)?,
            step_timings: json_text(r.get(14)?),
            image_ids: json_text(r.get(15)?),
        })
    })
    .optional()?)
}

/// Stored JSON text, read as `T`; unreadable text reads as nothing, as it always has.
fn json_text<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// Whether deployment `id` exists.
pub fn exists(c: &Connection, id: i64) -> Result<bool, LedgerError> {
    Ok(
        c.prepare_cached("SELECT COUNT(*) > 0 FROM deployments WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?,
    )
}

/// One page of app `app_id`'s deployments with ids below `before`, newest first.
pub fn page(
    c: &Connection,
    app_id: i64,
    before: i64,
    limit: i64,
) -> Result<Vec<DeploymentRow>, LedgerError> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS}, a.name FROM deployments d JOIN apps a ON a.id = d.app_id
              WHERE d.app_id = ?1 AND d.id < ?2 ORDER BY d.id DESC LIMIT CAST(?3 AS INTEGER)"
        ))?
        .query_map(params![app_id, before, limit], |r| {
            read_at(r, 0, r.get(13)?)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Whether any of app `app_id`'s deployments ever started (so it may have left containers).
pub fn any_started(c: &Connection, app_id: i64) -> Result<bool, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT COUNT(*) > 0 FROM deployments WHERE app_id = ?1 AND started_at IS NOT NULL",
    )?
    .query_row([app_id], |r| r.get(0))?)
}

/// The state of deployment `id` and why it ended; `None` when it is gone.
pub fn progress(c: &Connection, id: i64) -> Result<Option<Progress>, LedgerError> {
    Ok(
        c.prepare_cached("SELECT state, reason FROM deployments WHERE id = ?1")?
            .query_row([id], |r| {
                Ok(Progress {
                    state: r.get(0)?,
                    reason: r.get(1)?,
                })
            })
            .optional()?,
    )
}

/// Up to `limit` lines of deployment `id`'s log with a `seq` greater than `after`, in order.
pub fn logs_after(
    c: &Connection,
    id: i64,
    after: i64,
    limit: i64,
) -> Result<Vec<LogRow>, LedgerError> {
    let lines = c
        .prepare_cached(
            "SELECT seq, at, stream, line FROM deployment_logs
              WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq LIMIT CAST(?3 AS INTEGER)",
        )?
        .query_map(params![id, after, limit], log_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lines)
}

/// The newest `limit` lines of deployment `id`'s log, oldest first.
pub fn newest_logs(c: &Connection, id: i64, limit: i64) -> Result<Vec<LogRow>, LedgerError> {
    let mut lines = c
        .prepare_cached(
            "SELECT seq, at, stream, line FROM deployment_logs WHERE deployment_id = ?1
              ORDER BY seq DESC LIMIT CAST(?2 AS INTEGER)",
        )?
        .query_map(params![id, limit], log_row)?
        .collect::<Result<Vec<_>, _>>()?;
    lines.reverse();
    Ok(lines)
}

fn log_row(r: &Row<'_>) -> rusqlite::Result<LogRow> {
    Ok(LogRow {
        seq: r.get(0)?,
        at: r.get(1)?,
        stream: r.get(2)?,
        line: r.get(3)?,
    })
}

/// The containers the router sends app `app_id`'s traffic to, by container id.
pub fn routes(c: &Connection, app_id: i64) -> Result<Vec<RouteRow>, LedgerError> {
    let rows = c
        .prepare_cached(
            "SELECT container_id, deployment_id, service, address, port FROM app_runtimes
              WHERE app_id = ?1 ORDER BY container_id",
        )?
        .query_map([app_id], |r| {
            Ok(RouteRow {
                container_id: r.get(0)?,
                deployment_id: r.get(1)?,
                service: r.get(2)?,
                address: r.get(3)?,
                port: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretBox;
    use crate::deploy::contexts;
    use crate::ledger::{Ledger, LedgerConfig, apps, deployments};

    #[test]
    fn a_rollback_takes_the_target_commit_and_its_env_resealed_for_itself() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.db"), &LedgerConfig::default()).unwrap();
        ledger
            .blocking(|c| {
                let app = apps::create(c, "shop")?.unwrap();
                assert_eq!(apps::create(c, "shop")?, None, "the name is taken");
                let secrets = SecretBox::from_key(&[7; 32]);
                c.execute(
                    "INSERT INTO deployments (app_id, state, commit_sha, trigger, created_at)
                     VALUES (?1, 'superseded', 'abc', 'api', 1)",
                    [app],
                )?;
                let target = c.last_insert_rowid();
                let sealed = secrets.seal(&contexts::deployment_env(target), b"K=v");
                deployments::set_env_snapshot(c, target, &sealed)?;
                let id = deployments::roll_back(
                    c,
                    &secrets,
                    app,
                    Some(target),
                    Some("user:o@example.com"),
                )?
                .unwrap();
                let d = get(c, id)?.unwrap();
                assert_eq!(d.state, DeploymentState::Queued);
                assert_eq!(d.rollback_of, Some(target));
                assert_eq!(d.requested_ref.as_deref(), Some("abc"));
                assert_eq!(d.trigger, "rollback");
                let snapshot: Vec<u8> = c.query_row(
                    "SELECT env_snapshot_enc FROM deployments WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )?;
                assert_eq!(
                    secrets
                        .open(&contexts::deployment_env(id), &snapshot)
                        .unwrap(),
                    b"K=v",
                    "re-sealed for the new deployment"
                );
                assert!(crate::ledger::jobs::latest_of_deployment(c, id)?.is_some());
                let app_row = apps::get(c, app)?.unwrap();
                assert_eq!(app_row.last_deployment.map(|d| d.id), Some(id));
                assert_eq!(
                    page(c, app, i64::MAX, 10)?
                        .iter()
                        .map(|d| d.id)
                        .collect::<Vec<_>>(),
                    vec![id, target]
                );
                Ok(())
            })
            .unwrap();
    }
}
