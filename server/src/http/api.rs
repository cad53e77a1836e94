//! `/api/v1`: the route table (each route with the access it needs) and its handlers.

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use rusqlite::Connection;
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::LedgerError;
use rustploy_actors::ledger::apps::{self, Renamed};
use rustploy_actors::ledger::changes::Table;
use rustploy_actors::ledger::jobs::{self, CancelOutcome, JobKind, NewJob};
use rustploy_api::apps::App;
use rustploy_api::services::{Job, JobsQueued};
use rustploy_api::states::JobState;
use serde::Deserialize;

use super::AppState;
use super::auth::{Need, require};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::views;
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

/// Resolves `{app}`: a numeric id, or the app's unique name.
pub(super) fn resolve_app(c: &Connection, key: &str) -> Result<Option<i64>, LedgerError> {
    apps::resolve(c, key)
}

/// Like [`resolve_app`], with the app's name.
pub(super) fn resolve_app_named(
    c: &Connection,
    key: &str,
) -> Result<Option<(i64, String)>, LedgerError> {
    Ok(apps::resolve_named(c, key)?.map(|a| (a.id, a.name)))
}

/// App `id` as the API answers it.
pub(super) fn app_view(c: &Connection, id: i64) -> Result<Option<App>, LedgerError> {
    Ok(apps::get(c, id)?.map(views::app))
}

pub(super) fn no_app(key: &str) -> ApiError {
    ApiError::not_found(format!("no app with id or name '{key}'"))
}

async fn list_apps(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    // The same page is the same bytes until an app or a deployment changes.
    let body = state
        .reads
        .get_or_load(
            &state.ledger,
            format!("apps?limit={limit}&after={after}"),
            &[Table::Apps, Table::Deployments],
            move |c| {
                let items: Vec<App> = apps::page(c, after, limit)?
                    .into_iter()
                    .map(views::app)
                    .collect();
                serde_json::to_vec(&views::page(items, limit, |a: &App| a.id))
                    .map_err(|e| LedgerError::Invalid(e.to_string()))
            },
        )
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
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
        .run(move |c| match apps::create(c, name.as_str())? {
            Some(id) => app_view(c, id),
            None => Ok(None),
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
        .run(move |c| match apps::resolve(c, &k)? {
            Some(id) => app_view(c, id),
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
    Done(Box<App>),
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
            let Some(id) = apps::resolve(&tx, &k)? else {
                return Ok(Rename::Missing);
            };
            if let Some(name) = &name {
                match apps::rename(&tx, id, name.as_str())? {
                    Renamed::Done => {}
                    Renamed::Deployed => return Ok(Rename::Deployed),
                    Renamed::Taken => return Ok(Rename::Taken),
                }
            }
            let Some(app) = app_view(&tx, id)? else {
                return Ok(Rename::Missing);
            };
            tx.commit()?;
            Ok(Rename::Done(Box::new(app)))
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

/// A job row as the API shows it.
fn job_view(j: jobs::JobRow) -> Job {
    Job {
        id: j.id,
        kind: j.kind,
        key: j.key,
        state: j.state.to_string(),
        attempts: j.attempts.into(),
        max_attempts: j.max_attempts.into(),
        next_run_at: Some(rfc3339(j.next_run_at)),
        locked_until: j.locked_until.map(rfc3339),
        last_error: j.last_error,
        cancel_requested: j.cancel_requested,
        created_at: rfc3339(j.created_at),
        finished_at: j.finished_at.map(rfc3339),
    }
}

async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    let filter = match &page.state {
        None => None,
        Some(s) => Some(s.parse::<JobState>().map_err(|_| {
            let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid(
                "state",
                format!("state must be one of {}", names.join(", ")),
            )
        })?),
    };
    let items = state
        .ledger
        .run(move |c| {
            Ok(jobs::page(c, filter, after, limit)?
                .into_iter()
                .map(job_view)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(ApiJson(views::page(items, limit, |j: &Job| j.id)))
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
                        &NewJob::new(JobKind::Noop {
                            sleep_ms: Some(sleep_ms),
                        }),
                    )?
                    .id(),
                );
            }
            tx.commit()?;
            Ok(ids)
        })
        .await?;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok((StatusCode::ACCEPTED, ApiJson(JobsQueued { ids })))
}

async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let job = state.ledger.run(move |c| jobs::get(c, id)).await?;
    job.map(|j| ApiJson(job_view(j)))
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
    Ok((status, ApiJson(job.map(job_view))))
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
