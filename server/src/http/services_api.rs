//! `/api/v1/apps/{app}/services`: the app's managed databases. A change is committed with a
//! job that makes Docker match; status is read from Docker at each request. Backups and
//! restores are jobs too, run by the app's Deployer between its deployments. Each handler
//! parses the request, calls its operation in `ops::services` and serialises the answer.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use rustploy_api::services::{DataVolume, NewService};
use serde::Deserialize;

use super::AppState;
use super::auth::Need;
use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::ops::services;

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

async fn list_services(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(services::list(&state, key).await?))
}

async fn get_service(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(services::get(&state, key, name).await?))
}

async fn create_service(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<NewService>,
) -> ApiResult<impl IntoResponse> {
    let made = services::create(&state, key, body).await?;
    Ok((StatusCode::CREATED, ApiJson(made)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    purge: Option<bool>,
}

async fn delete_service(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    let volume = if q.purge.unwrap_or(false) {
        DataVolume::Purge
    } else {
        DataVolume::Keep
    };
    let deleted = services::delete(&state, key, name, volume).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(deleted)))
}

async fn credentials(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(services::credentials(&state, key, name).await?))
}

async fn list_backups(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(services::backups(&state, key, name).await?.backups))
}

async fn create_backup(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let started = services::back_up(&state, key, name).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(started)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    backup_id: i64,
}

async fn restore(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> ApiResult<impl IntoResponse> {
    let queued = services::restore(&state, key, name, body.backup_id).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(queued)))
}

/// A finished backup's file, streamed: it holds the service's data, so only admins get it.
async fn download_backup(
    State(state): State<AppState>,
    ApiPath((key, name, id)): ApiPath<(String, String, i64)>,
) -> ApiResult<impl IntoResponse> {
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;
    let backup = services::backup_file(&state, key, name, id).await?;
    let chunks = futures_util::stream::unfold(backup.file, |mut file| async move {
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
    let mut response = axum::body::Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) =
        axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{}\"", backup.name))
    {
        headers.insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    if let Some(size) = backup.size {
        headers.insert(axum::http::header::CONTENT_LENGTH, size.into());
    }
    Ok(response)
}
