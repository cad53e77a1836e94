//! `/api/v1/apps/{app}/services`: the app's managed databases. A change is committed with a
//! job that makes Docker match; status is read from Docker at each request. Backups and
//! restores are jobs too, run by the app's Deployer between its deployments.

use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use rustploy_actors::deploy::DeployConfig;
use rustploy_actors::deploy::docker::DockerEngine;
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::jobs::{self, NewJob};
use rustploy_actors::ledger::services::{
    self as rows, BackupRow, CreateError, NewService, ServiceRow,
};
use rustploy_actors::services::run::Scope;
use rustploy_actors::services::{self, Engine, Status};
use rustploy_api::states::BackupState;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Need;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::op_errors::no_app;
use crate::domain::rfc3339;
use crate::ops::apps::resolve_named as resolve_app_named;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (
            M::GET,
            "/api/v1/apps/{app}/services",
            Need::Read,
            get(list_services),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/services",
            Need::Deploy,
            post(create_service),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/services/{name}",
            Need::Read,
            get(get_service),
        ),
        (
            M::DELETE,
            "/api/v1/apps/{app}/services/{name}",
            Need::Deploy,
            axum::routing::delete(delete_service),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/services/{name}/credentials",
            Need::Admin,
            get(credentials),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/services/{name}/backups",
            Need::Read,
            get(list_backups),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/services/{name}/backups",
            Need::Deploy,
            post(create_backup),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/services/{name}/backups/{id}/download",
            Need::Admin,
            get(download_backup),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/services/{name}/restore",
            Need::Deploy,
            post(restore),
        ),
    ]
}

/// How long a request waits for Docker's view of the services before saying it is unknown.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct NewServiceBody {
    pub(super) engine: String,
    pub(super) name: Option<String>,
    pub(super) image: Option<String>,
    pub(super) env_name: Option<String>,
}

/// A new service checked against the rules, ready for the ledger.
pub(super) fn validate(
    config: &DeployConfig,
    app: &str,
    body: &NewServiceBody,
) -> ApiResult<NewService> {
    let engine = Engine::parse(&body.engine).ok_or_else(|| {
        ApiError::invalid(
            "engine",
            format!(
                "'{}' is not an engine Rustploy runs: use postgres, redis or mariadb (mysql)",
                body.engine
            ),
        )
    })?;
    let name = body
        .name
        .clone()
        .unwrap_or_else(|| engine.as_str().to_string());
    services::check_name(&name).map_err(|m| ApiError::invalid("name", m))?;
    let env_name = body
        .env_name
        .clone()
        .unwrap_or_else(|| engine.default_env_name().to_string());
    services::check_env_name(&env_name).map_err(|m| ApiError::invalid("env_name", m))?;
    let image = match &body.image {
        Some(i) => {
            let i = i.trim();
            if i.is_empty()
                || i.len() > 255
                || i.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ApiError::invalid(
                    "image",
                    "an image is a reference like 'postgres:17' or 'registry.example.com/pg:16'",
                ));
            }
            i.to_string()
        }
        None => config.services.image(engine).to_string(),
    };
    Ok(NewService {
        volume: config.service_names(app).volume(&name),
        name,
        engine,
        image,
        env_name,
    })
}

/// An app's name and id, or 404.
async fn app_of(state: &AppState, key: &str) -> ApiResult<(i64, String)> {
    let k = key.to_string();
    state
        .ledger
        .run(move |c| resolve_app_named(c, &k))
        .await?
        .ok_or_else(|| no_app(key))
}

/// The services' views, with Docker's status of each (`unknown` when Docker does not answer).
pub(super) async fn views(
    state: &AppState,
    app: &str,
    rows: &[ServiceRow],
    last_error: Option<String>,
) -> Vec<Value> {
    let config = state.settings.deploy_config();
    let scope = Scope {
        config: &config,
        engine: &DockerEngine,
        app,
    };
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    // A service without a container yet whose start is still queued or running is starting,
    // not missing.
    let a = app.to_string();
    let pending = state
        .ledger
        .run(move |c| rows::apply_pending(c, &a))
        .await
        .unwrap_or(false);
    let statuses = match tokio::time::timeout(STATUS_TIMEOUT, scope.statuses(&names)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::warn!(app, error = %e, "reading the services' status failed");
            None
        }
        Err(_) => None,
    };
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let (status, container) = match &statuses {
                Some(s) if s[i].0 == Status::Missing && pending => {
                    (Status::Starting.as_str(), None)
                }
                Some(s) => (s[i].0.as_str(), s[i].1.as_ref()),
                None => ("unknown", None),
            };
            view(
                r,
                status,
                container.map(|c| c.name.as_str()),
                last_error.as_deref(),
            )
        })
        .collect()
}

fn view(r: &ServiceRow, status: &str, container: Option<&str>, last_error: Option<&str>) -> Value {
    let engine = Engine::parse(&r.engine).unwrap_or(Engine::Postgres);
    json!({
        "name": r.name,
        "engine": r.engine,
        "image": r.image,
        "env_name": r.env_name,
        "host": r.name,
        "port": engine.port(),
        "username": services::USER,
        "database": services::DATABASE,
        "url": services::connection_url(engine, &r.name, None),
        "volume": r.volume,
        "status": status,
        "container": container,
        // Why Docker could not be brought to the services, when the last attempt failed.
        "last_error": if status == Status::Healthy.as_str() { None } else { last_error },
        "created_at": rfc3339(r.created_at),
    })
}

/// The error of the app's newest `services` job, when it failed and is not being retried.
pub(super) fn last_services_error(
    c: &rusqlite::Connection,
    app_id: i64,
) -> Result<Option<String>, rustploy_actors::ledger::LedgerError> {
    rows::last_apply_error(c, app_id)
}

async fn list_services(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let (app_id, app) = app_of(&state, &key).await?;
    let (list, last_error) = state
        .ledger
        .run(move |c| Ok((rows::list(c, app_id)?, last_services_error(c, app_id)?)))
        .await?;
    let items = views(&state, &app, &list, last_error).await;
    Ok(ApiJson(json!({ "items": items })))
}

async fn one(state: &AppState, key: &str, name: &str) -> ApiResult<(i64, String, ServiceRow)> {
    let (app_id, app) = app_of(state, key).await?;
    let n = name.to_string();
    let row = state
        .ledger
        .run(move |c| rows::get(c, app_id, &n))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("the app '{app}' has no service named '{name}'"))
        })?;
    Ok((app_id, app, row))
}

async fn get_service(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (app_id, app, row) = one(&state, &key, &name).await?;
    let last_error = state
        .ledger
        .run(move |c| last_services_error(c, app_id))
        .await?;
    let v = views(&state, &app, std::slice::from_ref(&row), last_error).await;
    Ok(ApiJson(v.into_iter().next().expect("one row, one view")))
}

pub(super) async fn create(
    state: &AppState,
    key: &str,
    body: &NewServiceBody,
) -> ApiResult<(ServiceRow, i64, String)> {
    let (app_id, app) = app_of(state, key).await?;
    let config = state.settings.deploy_config();
    let new = validate(&config, &app, body)?;
    let secrets = state.secrets.clone();
    let made = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let made = rows::create(&tx, &secrets, app_id, &new);
            if made.is_ok() {
                tx.commit()?;
            }
            Ok(made)
        })
        .await?
        .map_err(|e| match e {
            CreateError::NameTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "service_exists", e.to_string())
                    .details(json!({ "field": "name" }))
            }
            CreateError::EnvTaken(..) => {
                ApiError::new(StatusCode::CONFLICT, "env_name_taken", e.to_string())
                    .details(json!({ "field": "env_name" }))
            }
            CreateError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, "too_many_services", e.to_string())
            }
            CreateError::KeptVolume(..) => {
                ApiError::new(StatusCode::CONFLICT, "kept_volume", e.to_string())
                    .details(json!({ "field": "name" }))
            }
            CreateError::Ledger(e) => e.into(),
        })?;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok((made.0, made.1, app))
}

async fn create_service(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<NewServiceBody>,
) -> ApiResult<impl IntoResponse> {
    let (row, job, _) = create(&state, &key, &body).await?;
    let mut v = view(&row, Status::Starting.as_str(), None, None);
    v["job_id"] = json!(job);
    v["note"] = json!(format!(
        "the service starts now; the app receives {} at its next deployment",
        row.env_name
    ));
    Ok((StatusCode::CREATED, ApiJson(v)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    purge: Option<bool>,
}

pub(super) async fn delete(
    state: &AppState,
    key: &str,
    name: &str,
    purge: bool,
) -> ApiResult<Value> {
    let (app_id, app) = app_of(state, key).await?;
    let n = name.to_string();
    let deleted = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let deleted = rows::delete(&tx, app_id, &n, purge)?;
            tx.commit()?;
            Ok(deleted)
        })
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("the app '{app}' has no service named '{name}'"))
        })?;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    let (row, job) = deleted;
    Ok(json!({
        "name": row.name,
        "volume": row.volume,
        "volume_kept": !purge,
        "job_id": job,
        "note": format!(
            "the service stops now; the app keeps {} until its next deployment",
            row.env_name
        ),
    }))
}

async fn delete_service(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    let v = delete(&state, &key, &name, q.purge.unwrap_or(false)).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(v)))
}

async fn credentials(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(credentials_of(&state, &key, &name).await?))
}

/// A service's connection details with its password. Only admins may see them; the caller
/// checks that (the route table for the API, the dashboard's reveal for owners).
pub(super) async fn credentials_of(state: &AppState, key: &str, name: &str) -> ApiResult<Value> {
    let (app_id, app, row) = one(state, key, name).await?;
    let secrets = state.secrets.clone();
    let service = state
        .ledger
        .run(move |c| rows::load(c, &secrets, app_id))
        .await?
        .into_iter()
        .find(|s| s.name == row.name)
        .ok_or_else(|| {
            ApiError::not_found(format!("the app '{app}' has no service named '{name}'"))
        })?;
    Ok(json!({
        "name": service.name,
        "env_name": service.env_name,
        "url": service.url(),
        "host": service.name,
        "port": service.engine.port(),
        "username": services::USER,
        "password": service.password,
        "database": services::DATABASE,
    }))
}

fn backup_view(b: &BackupRow) -> Value {
    json!({
        "id": b.id,
        "service": b.service,
        "engine": b.engine,
        "file": b.path,
        "size_bytes": b.size_bytes,
        "state": b.state,
        "reason": b.reason,
        "created_at": rfc3339(b.created_at),
        "finished_at": b.finished_at.map(rfc3339),
    })
}

async fn list_backups(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (app_id, app) = app_of(&state, &key).await?;
    // Backups outlive their service, so they are listed by its name even after a delete.
    let n = name.clone();
    let (items, known) = state
        .ledger
        .run(move |c| {
            let items = rows::list_backups(c, app_id, &n)?;
            let known = !items.is_empty()
                || rows::get(c, app_id, &n)?.is_some()
                || rows::kept(c, app_id, &n)?.is_some();
            Ok((items, known))
        })
        .await?;
    if !known {
        return Err(ApiError::not_found(format!(
            "the app '{app}' has no service named '{name}' and no backups of one"
        )));
    }
    let items: Vec<Value> = items.iter().map(backup_view).collect();
    Ok(ApiJson(json!({ "items": items })))
}

pub(super) async fn request_backup(
    state: &AppState,
    key: &str,
    name: &str,
) -> ApiResult<(BackupRow, i64)> {
    let (app_id, app, row) = one(state, key, name).await?;
    let dir = state.settings.deploy_config().backup_dir(&app, &row.name);
    let made = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let made = rows::request_backup(&tx, app_id, &row, &dir)?;
            tx.commit()?;
            Ok(made)
        })
        .await?;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok(made)
}

async fn create_backup(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (backup, job) = request_backup(&state, &key, &name).await?;
    let mut v = backup_view(&backup);
    v["job_id"] = json!(job);
    Ok((StatusCode::ACCEPTED, ApiJson(v)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreBody {
    pub(super) backup_id: i64,
}

pub(super) async fn request_restore(
    state: &AppState,
    key: &str,
    name: &str,
    backup_id: i64,
) -> ApiResult<i64> {
    let (app_id, _, row) = one(state, key, name).await?;
    let job = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(b) = rows::get_backup(&tx, app_id, backup_id)? else {
                return Ok(Err(ApiError::not_found(format!(
                    "the app has no backup {backup_id}"
                ))));
            };
            if b.state != BackupState::Done {
                return Ok(Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "backup_not_done",
                    format!(
                        "backup {backup_id} is {}: only a finished backup can be restored",
                        b.state
                    ),
                )));
            }
            if b.engine != row.engine {
                return Ok(Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "engine_mismatch",
                    format!(
                        "backup {backup_id} is of a {} service; '{}' runs {}",
                        b.engine, row.name, row.engine
                    ),
                )
                .details(json!({ "field": "backup_id" }))));
            }
            let job = jobs::enqueue(
                &tx,
                &NewJob::new("restore")
                    .app(app_id)
                    .key(format!("restore:{}", row.id))
                    .payload(json!({ "backup_id": backup_id, "service": row.name }))
                    .max_attempts(1),
            )?;
            tx.commit()?;
            Ok(match job {
                jobs::Enqueued::Created(id) => Ok(id),
                jobs::Enqueued::Existing(_) => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "restore_running",
                    "a restore into this service is already queued or running",
                )),
            })
        })
        .await??;
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok(job)
}

async fn restore(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> ApiResult<impl IntoResponse> {
    let job = request_restore(&state, &key, &name, body.backup_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(json!({
            "job_id": job,
            "service": name,
            "backup_id": body.backup_id,
            "note": format!("the restore replaces the service's data; follow it at /api/v1/jobs/{job}"),
        })),
    ))
}

/// A finished backup's file, streamed: it holds the service's data, so only admins get it.
async fn download_backup(
    State(state): State<AppState>,
    ApiPath((key, name, id)): ApiPath<(String, String, i64)>,
) -> ApiResult<impl IntoResponse> {
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;
    let (app_id, app) = app_of(&state, &key).await?;
    let backup = state
        .ledger
        .run(move |c| rows::get_backup(c, app_id, id))
        .await?
        .filter(|b| b.service == name)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "the app '{app}' has no backup {id} of a service named '{name}'"
            ))
        })?;
    if backup.state != BackupState::Done {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_not_done",
            format!(
                "backup {id} is {}: only a finished backup can be downloaded",
                backup.state
            ),
        ));
    }
    let path = state.settings.data_dir.join(&backup.path);
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::GONE,
            "backup_file_missing",
            format!(
                "the file of backup {id} cannot be read ({e}); it may have been removed by hand"
            ),
        )
    })?;
    let size = file.metadata().await.map(|m| m.len()).ok();
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
    .boxed();
    let filename = std::path::Path::new(&backup.path)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("backup")
        .to_string();
    let mut response = axum::body::Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) =
        axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
    {
        headers.insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    if let Some(size) = size {
        headers.insert(axum::http::header::CONTENT_LENGTH, size.into());
    }
    Ok(response)
}
