//! `/api/v1`: the route table (each route with the access it needs) and its handlers.

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use rusqlite::{Connection, OptionalExtension, params};
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::jobs::{self, CancelOutcome, NewJob};
use rustploy_actors::ledger::{LedgerError, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Need, require};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::domain::{AppName, rfc3339};

/// Every `/api/v1` operation: method, path, the access it needs, and its handler. `openapi.yaml`
/// is tested against this table.
fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (M::GET, "/api/v1/apps", Need::Read, get(list_apps)),
        (M::POST, "/api/v1/apps", Need::Deploy, post(create_app)),
        (M::GET, "/api/v1/apps/{app}", Need::Read, get(get_app)),
        (
            M::PATCH,
            "/api/v1/apps/{app}",
            Need::Deploy,
            axum::routing::patch(update_app),
        ),
        (M::GET, "/api/v1/jobs", Need::Read, get(list_jobs)),
        (M::POST, "/api/v1/jobs", Need::Admin, post(enqueue_jobs)),
        (M::GET, "/api/v1/jobs/{id}", Need::Read, get(get_job)),
        (
            M::POST,
            "/api/v1/jobs/{id}/cancel",
            Need::Admin,
            post(cancel_job),
        ),
    ]
    .into_iter()
    .chain(super::access_api::table())
    .chain(super::env_api::table())
    .chain(super::deploy_api::table())
    .chain(super::domains_api::table())
    .chain(super::webhook_api::table())
    .chain(super::services_api::table())
    .chain(super::agent_api::table())
    .chain(super::trust_api::table())
    .collect()
}

/// The operations as (method, path, need), for tests and the contract check.
pub fn operations() -> Vec<(Method, &'static str, Need)> {
    table().into_iter().map(|(m, p, n, _)| (m, p, n)).collect()
}

pub fn routes(state: &AppState) -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (_, path, need, handler)| {
            let guarded = handler.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), need),
                require,
            ));
            router.route(path, guarded)
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Page {
    pub(super) limit: Option<u32>,
    pub(super) cursor: Option<String>,
    pub(super) state: Option<String>,
}

impl Page {
    /// The page size (1 to 200, default 50) and the id to continue after.
    pub(super) fn bounds(&self) -> ApiResult<(i64, i64)> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                "limit must be between 1 and 200",
            ));
        }
        let after = match &self.cursor {
            None => i64::MAX,
            Some(c) => c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::invalid("cursor", "cursor must be a value returned as next_cursor")
            })?,
        };
        Ok((limit as i64, after))
    }
}

/// Lists are newest first; `next_cursor` continues after the last item.
pub(super) fn page_of(items: Vec<Value>, limit: i64) -> Value {
    let next = (items.len() as i64 == limit)
        .then(|| {
            items
                .last()
                .and_then(|i| i["id"].as_i64())
                .map(|id| id.to_string())
        })
        .flatten();
    json!({ "items": items, "next_cursor": next })
}

/// An app with its newest deployment, in one query.
const APP_SELECT: &str = "SELECT a.id, a.name, a.created_at, a.updated_at,
        d.id, d.app_id, a.name, d.state, d.step, d.requested_ref, d.commit_sha, d.trigger,
        d.triggered_by, d.reason, d.created_at, d.started_at, d.finished_at, d.rollback_of,
        a.trusted, a.trusted_by, a.trusted_at
   FROM apps a
   LEFT JOIN deployments d ON d.id = (SELECT MAX(id) FROM deployments WHERE app_id = a.id)";

fn app_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let last = match r.get::<_, Option<i64>>(4)? {
        Some(_) => deployment_from_row(r, 4)?,
        None => Value::Null,
    };
    Ok(json!({
        "id": r.get::<_, i64>(0)?,
        "name": r.get::<_, String>(1)?,
        "created_at": rfc3339(r.get(2)?),
        "updated_at": rfc3339(r.get(3)?),
        "last_deployment": last,
        "trusted": r.get::<_, bool>(18)?,
        "trusted_by": r.get::<_, Option<String>>(19)?,
        "trusted_at": r.get::<_, Option<i64>>(20)?.map(rfc3339),
    }))
}

pub(super) fn app_json(c: &Connection, id: i64) -> Result<Option<Value>, LedgerError> {
    Ok(c.prepare_cached(&format!("{APP_SELECT} WHERE a.id = ?1"))?
        .query_row([id], app_from_row)
        .optional()?)
}

/// Reads the deployment columns of [`DEPLOYMENT_SELECT`] starting at column `at`.
fn deployment_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": r.get::<_, i64>(at)?,
        "app_id": r.get::<_, i64>(at + 1)?,
        "app": r.get::<_, String>(at + 2)?,
        "state": r.get::<_, String>(at + 3)?,
        "step": r.get::<_, Option<String>>(at + 4)?,
        "requested_ref": r.get::<_, Option<String>>(at + 5)?,
        "commit_sha": r.get::<_, Option<String>>(at + 6)?,
        "trigger": r.get::<_, String>(at + 7)?,
        "triggered_by": r.get::<_, Option<String>>(at + 8)?,
        "reason": r.get::<_, Option<String>>(at + 9)?,
        "created_at": rfc3339(r.get(at + 10)?),
        "started_at": r.get::<_, Option<i64>>(at + 11)?.map(rfc3339),
        "finished_at": r.get::<_, Option<i64>>(at + 12)?.map(rfc3339),
        "rollback_of": r.get::<_, Option<i64>>(at + 13)?,
    }))
}

const DEPLOYMENT_SELECT: &str = "SELECT d.id, d.app_id, a.name, d.state, d.step, d.requested_ref, d.commit_sha,
        d.trigger, d.triggered_by, d.reason, d.created_at, d.started_at, d.finished_at, d.rollback_of
   FROM deployments d JOIN apps a ON a.id = d.app_id";

pub(super) fn deployment_json(c: &Connection, id: i64) -> Result<Option<Value>, LedgerError> {
    Ok(
        c.prepare_cached(&format!("{DEPLOYMENT_SELECT} WHERE d.id = ?1"))?
            .query_row([id], |r| deployment_from_row(r, 0))
            .optional()?,
    )
}

/// Resolves `{app}`: a numeric id, or the app's unique name.
pub(super) fn resolve_app(c: &Connection, key: &str) -> Result<Option<i64>, LedgerError> {
    let by_id = key.parse::<i64>().ok();
    Ok(
        c.prepare_cached("SELECT id FROM apps WHERE id = ?1 OR name = ?2")?
            .query_row(params![by_id, key], |r| r.get(0))
            .optional()?,
    )
}

/// Like [`resolve_app`], with the app's name.
pub(super) fn resolve_app_named(
    c: &Connection,
    key: &str,
) -> Result<Option<(i64, String)>, LedgerError> {
    let by_id = key.parse::<i64>().ok();
    Ok(
        c.prepare_cached("SELECT id, name FROM apps WHERE id = ?1 OR name = ?2")?
            .query_row(params![by_id, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?,
    )
}

pub(super) fn no_app(key: &str) -> ApiError {
    ApiError::not_found(format!("no app with id or name '{key}'"))
}

async fn list_apps(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    let items = state
        .ledger
        .run(move |c| {
            let apps = c
                .prepare_cached(&format!(
                    "{APP_SELECT} WHERE a.id < ?1 ORDER BY a.id DESC LIMIT ?2"
                ))?
                .query_map(params![after, limit], app_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(apps)
        })
        .await?;
    Ok(ApiJson(page_of(items, limit)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    name: String,
}

async fn create_app(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateApp>,
) -> ApiResult<impl IntoResponse> {
    let name = AppName::parse(&body.name).map_err(|e| ApiError::invalid("name", e))?;
    super::domains_api::check_app_name(name.as_str(), &state.settings)?;
    let taken = name.to_string();
    let app = state
        .ledger
        .run(move |c| {
            let now = now_ms();
            let inserted = c.execute(
                "INSERT INTO apps (name, created_at, updated_at) VALUES (?1, ?2, ?2)",
                params![name.as_str(), now],
            );
            match inserted {
                Ok(_) => app_json(c, c.last_insert_rowid()).map(Some),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Ok(None)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    match app {
        Some(app) => {
            // A base-domain host may now exist for it.
            state
                .router
                .nudge(rustploy_actors::router_sync::RouterSyncMsg::Nudge);
            Ok((StatusCode::CREATED, ApiJson(app)))
        }
        None => Err(ApiError::conflict(format!(
            "an app named '{taken}' already exists"
        ))),
    }
}

async fn get_app(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let k = key.clone();
    let app = state
        .ledger
        .run(move |c| match resolve_app(c, &k)? {
            Some(id) => app_json(c, id),
            None => Ok(None),
        })
        .await?;
    app.map(ApiJson).ok_or_else(|| no_app(&key))
}

/// A JSON body that may be left out entirely (then the defaults apply).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppPatch {
    name: Option<String>,
}

enum Rename {
    Done(Value),
    Missing,
    Deployed,
    Taken,
}

/// Renames an app. Only before its first deployment: the name is part of the names of its
/// containers, volumes and domains once it has run.
async fn update_app(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<AppPatch>,
) -> ApiResult<impl IntoResponse> {
    let name = body
        .name
        .as_deref()
        .map(AppName::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("name", e))?;
    if let Some(name) = &name {
        super::domains_api::check_app_name(name.as_str(), &state.settings)?;
    }
    let k = key.clone();
    let outcome = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(id) = resolve_app(&tx, &k)? else {
                return Ok(Rename::Missing);
            };
            if let Some(name) = &name {
                let deployed: bool = tx.query_row(
                    "SELECT COUNT(*) > 0 FROM deployments WHERE app_id = ?1",
                    [id],
                    |r| r.get(0),
                )?;
                if deployed {
                    return Ok(Rename::Deployed);
                }
                match tx.execute(
                    "UPDATE apps SET name = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, name.as_str(), now_ms()],
                ) {
                    Ok(_) => {}
                    Err(rusqlite::Error::SqliteFailure(f, _))
                        if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        return Ok(Rename::Taken);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let app = app_json(&tx, id)?.unwrap_or(Value::Null);
            tx.commit()?;
            Ok(Rename::Done(app))
        })
        .await?;
    match outcome {
        Rename::Done(app) => Ok(ApiJson(app)),
        Rename::Missing => Err(no_app(&key)),
        Rename::Deployed => Err(ApiError::conflict(
            "this app has been deployed, so its name is part of its containers and volumes; create a new app instead",
        )),
        Rename::Taken => Err(ApiError::conflict("another app has that name")),
    }
}

pub(super) fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        let code = if e.is_data() { "invalid" } else { "bad_json" };
        ApiError::new(
            status,
            code,
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

fn job_json(j: jobs::JobRow) -> Value {
    json!({
        "id": j.id,
        "kind": j.kind,
        "key": j.key,
        "state": j.state,
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "next_run_at": rfc3339(j.next_run_at),
        "locked_until": j.locked_until.map(rfc3339),
        "last_error": j.last_error,
        "cancel_requested": j.cancel_requested,
        "created_at": rfc3339(j.created_at),
        "finished_at": j.finished_at.map(rfc3339),
    })
}

const JOB_STATES: &[&str] = &["queued", "running", "succeeded", "dead", "cancelled"];

async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    if let Some(s) = &page.state
        && !JOB_STATES.contains(&s.as_str())
    {
        return Err(ApiError::invalid(
            "state",
            format!("state must be one of {}", JOB_STATES.join(", ")),
        ));
    }
    let filter = page.state.clone();
    let items = state
        .ledger
        .run(move |c| {
            let ids: Vec<i64> = c
                .prepare_cached(
                    "SELECT id FROM jobs WHERE id < ?1 AND (?2 IS NULL OR state = ?2) ORDER BY id DESC LIMIT ?3",
                )?
                .query_map(params![after, filter, limit], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(j) = jobs::get(c, id)? {
                    out.push(job_json(j));
                }
            }
            Ok(out)
        })
        .await?;
    Ok(ApiJson(page_of(items, limit)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueJobs {
    kind: String,
    count: Option<u32>,
    sleep_ms: Option<u64>,
}

/// Queues diagnostic `noop` jobs, to check the queue end to end. Real work (deployments,
/// backups) is requested through its own resource, never as a raw job.
async fn enqueue_jobs(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnqueueJobs>,
) -> ApiResult<impl IntoResponse> {
    if body.kind != "noop" {
        return Err(ApiError::invalid(
            "kind",
            "only 'noop' jobs can be queued directly; deployments are requested at /api/v1/apps/{app}/deployments",
        ));
    }
    let count = body.count.unwrap_or(1);
    if !(1..=10_000).contains(&count) {
        return Err(ApiError::invalid(
            "count",
            "count must be between 1 and 10000",
        ));
    }
    let sleep_ms = body.sleep_ms.unwrap_or(0);
    if sleep_ms > 600_000 {
        return Err(ApiError::invalid(
            "sleep_ms",
            "sleep_ms must be at most 600000",
        ));
    }
    let ids = state
        .ledger
        .run(move |c| {
            let tx = c.transaction()?;
            let mut ids = Vec::with_capacity(count as usize);
            for _ in 0..count {
                ids.push(
                    jobs::enqueue(
                        &tx,
                        &NewJob::new("noop").payload(json!({ "sleep_ms": sleep_ms })),
                    )?
                    .id(),
                );
            }
            tx.commit()?;
            Ok(ids)
        })
        .await?;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok((StatusCode::ACCEPTED, ApiJson(json!({ "ids": ids }))))
}

async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let job = state.ledger.run(move |c| jobs::get(c, id)).await?;
    job.map(|j| ApiJson(job_json(j)))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let outcome = state.ledger.run(move |c| jobs::cancel(c, id)).await?;
    let status = match outcome {
        CancelOutcome::NotFound => return Err(ApiError::not_found(format!("no job {id}"))),
        CancelOutcome::AlreadyFinished => {
            return Err(ApiError::conflict(format!("job {id} has already finished")));
        }
        CancelOutcome::Requested => {
            state.job_queue.nudge(JobQueueMsg::Cancel(id));
            StatusCode::ACCEPTED
        }
        CancelOutcome::Cancelled => StatusCode::OK,
    };
    let job = state.ledger.run(move |c| jobs::get(c, id)).await?;
    Ok((status, ApiJson(job.map(job_json).unwrap_or(Value::Null))))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `openapi.yaml` is the contract: every operation it documents exists, and every
    /// operation the router serves is documented, with matching security.
    #[test]
    fn the_router_and_openapi_yaml_agree() {
        let spec: serde_json::Value =
            serde_norway::from_str(include_str!("../../../openapi.yaml")).unwrap();
        let mut documented = BTreeSet::new();
        let mut public = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    let key = (method.to_uppercase(), path.clone());
                    if op
                        .get("security")
                        .is_some_and(|s| s.as_array().is_some_and(|a| a.is_empty()))
                    {
                        public.insert(key.clone());
                    }
                    documented.insert(key);
                }
            }
        }
        let served: BTreeSet<(String, String)> = operations()
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served but not in openapi.yaml: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "in openapi.yaml but not served: {unserved:?}"
        );
        let served_public: BTreeSet<(String, String)> = operations()
            .iter()
            .filter(|(_, _, need)| *need == Need::Public)
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(
            served_public, public,
            "operations without credentials must be marked `security: []`"
        );
    }
}
