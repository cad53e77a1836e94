//! `/api/v1` routes of deployments: request, list, inspect, cancel, and their logs.

use axum::Extension;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use rusqlite::{OptionalExtension, params};
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::jobs::{self, CancelOutcome, NewJob};
use rustploy_actors::ledger::now_ms;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::api::{Page, deployment_json, no_app, optional_json, page_of, resolve_app};
use super::auth::{Need, Principal};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::domain::{GitRef, rfc3339};

/// The deployment operations, merged into the `/api/v1` route table.
pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (
            M::DELETE,
            "/api/v1/apps/{app}",
            Need::Admin,
            axum::routing::delete(delete_app),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/deployments",
            Need::Read,
            get(list_deployments),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/deployments",
            Need::Deploy,
            post(request_deployment),
        ),
        (
            M::GET,
            "/api/v1/deployments/{id}",
            Need::Read,
            get(get_deployment),
        ),
        (
            M::POST,
            "/api/v1/deployments/{id}/cancel",
            Need::Deploy,
            post(cancel_deployment),
        ),
        (
            M::GET,
            "/api/v1/deployments/{id}/logs",
            Need::Read,
            get(deployment_logs),
        ),
    ]
}

async fn list_deployments(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    let k = key.clone();
    let items = state
        .ledger
        .run(move |c| {
            let Some(app) = resolve_app(c, &k)? else { return Ok(None) };
            let ids: Vec<i64> = c
                .prepare_cached("SELECT id FROM deployments WHERE app_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3")?
                .query_map(params![app, after, limit], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.into_iter()
                .filter_map(|id| deployment_json(c, id).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
        .await?;
    items
        .map(|items| ApiJson(page_of(items, limit)))
        .ok_or_else(|| no_app(&key))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

/// Queues a deployment. While one of the app's deployments waits in the queue, further requests
/// join it (taking the newest ref) instead of queueing more.
async fn request_deployment(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let request: DeployRequest = optional_json(&body)?;
    let git_ref = match request.git_ref {
        Some(r) => Some(GitRef::parse(&r).map_err(|e| ApiError::invalid("ref", e))?),
        None => None,
    };
    let k = key.clone();
    let by = who.describe();
    let created = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(app) = resolve_app(&tx, &k)? else { return Ok(None) };
            let queued: Option<i64> = tx
                .query_row(
                    "SELECT id FROM deployments WHERE app_id = ?1 AND state = 'queued' ORDER BY id DESC LIMIT 1",
                    [app],
                    |r| r.get(0),
                )
                .optional()?;
            let (id, coalesced) = match queued {
                Some(id) => {
                    if let Some(r) = &git_ref {
                        tx.execute("UPDATE deployments SET requested_ref = ?2 WHERE id = ?1", params![id, r.as_str()])?;
                    }
                    (id, true)
                }
                None => {
                    tx.execute(
                        "INSERT INTO deployments (app_id, state, requested_ref, trigger, triggered_by, created_at)
                         VALUES (?1, 'queued', ?2, 'api', ?3, ?4)",
                        params![app, git_ref.as_ref().map(|r| r.as_str()), by, now_ms()],
                    )?;
                    let id = tx.last_insert_rowid();
                    jobs::enqueue(
                        &tx,
                        &NewJob::new("deploy").app(app).deployment(id).key(format!("deploy:{id}")).max_attempts(3),
                    )?;
                    (id, false)
                }
            };
            let d = deployment_json(&tx, id)?;
            tx.commit()?;
            Ok(d.map(|d| (d, coalesced)))
        })
        .await?;
    let Some((mut deployment, coalesced)) = created else {
        return Err(no_app(&key));
    };
    state.job_queue.nudge(JobQueueMsg::Nudge);
    deployment["coalesced"] = json!(coalesced);
    Ok((StatusCode::ACCEPTED, ApiJson(deployment)))
}

async fn get_deployment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let d = state.ledger.run(move |c| deployment_json(c, id)).await?;
    d.map(ApiJson)
        .ok_or_else(|| ApiError::not_found(format!("no deployment {id}")))
}

async fn cancel_deployment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let outcome = state
        .ledger
        .run(move |c| {
            let job: Option<i64> = c
                .query_row(
                    "SELECT id FROM jobs WHERE deployment_id = ?1 ORDER BY id DESC LIMIT 1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            let exists: bool = c.query_row(
                "SELECT COUNT(*) FROM deployments WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            let outcome = match job {
                Some(job) => Some((job, jobs::cancel(c, job)?)),
                None => None,
            };
            Ok((exists, outcome, deployment_json(c, id)?))
        })
        .await?;
    match outcome {
        (false, ..) => Err(ApiError::not_found(format!("no deployment {id}"))),
        (_, Some((job, CancelOutcome::Requested)), Some(d)) => {
            state.job_queue.nudge(JobQueueMsg::Cancel(job));
            Ok((StatusCode::ACCEPTED, ApiJson(d)))
        }
        (_, Some((_, CancelOutcome::Cancelled)), Some(d)) => Ok((StatusCode::OK, ApiJson(d))),
        _ => Err(ApiError::conflict(format!(
            "deployment {id} has already finished"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn deployment_logs(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<impl IntoResponse> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000);
    if !(1..=5000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 5000",
        ));
    }
    let lines = state
        .ledger
        .run(move |c| {
            let exists: bool = c.query_row(
                "SELECT COUNT(*) FROM deployments WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(None);
            }
            let lines = c
                .prepare_cached(
                    "SELECT seq, at, stream, line FROM deployment_logs
                      WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?
                .query_map(params![id, after, limit], |r| {
                    Ok(json!({
                        "seq": r.get::<_, i64>(0)?,
                        "at": rfc3339(r.get(1)?),
                        "stream": r.get::<_, String>(2)?,
                        "line": r.get::<_, String>(3)?,
                    }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(lines))
        })
        .await?;
    let lines = lines.ok_or_else(|| ApiError::not_found(format!("no deployment {id}")))?;
    let next_after = lines
        .last()
        .and_then(|l| l["seq"].as_i64())
        .unwrap_or(after);
    Ok(ApiJson(json!({ "lines": lines, "next_after": next_after })))
}

async fn delete_app(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let k = key.clone();
    let outcome = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(id) = resolve_app(&tx, &k)? else {
                return Ok(None);
            };
            let running: i64 = tx.query_row(
                "SELECT COUNT(*) FROM jobs WHERE app_id = ?1 AND state = 'running'",
                [id],
                |r| r.get(0),
            )?;
            if running > 0 {
                return Ok(Some(false));
            }
            tx.execute("DELETE FROM apps WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(Some(true))
        })
        .await?;
    match outcome {
        None => Err(no_app(&key)),
        Some(false) => Err(ApiError::conflict(
            "a deployment of this app is running; cancel it and delete the app when it has stopped",
        )),
        Some(true) => Ok(StatusCode::NO_CONTENT),
    }
}
