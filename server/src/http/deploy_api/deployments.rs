//! Handlers of an app's deployments (list, request, inspect, cancel, roll back) and of what it
//! runs now.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::domain::GitRef;
use crate::http::AppState;
use crate::http::auth::Principal;
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, optional_json};
use crate::http::paging::Page;
use crate::ops::deploys::{self, Cancelled};

pub(super) async fn list_deployments(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    Ok(ApiJson(deploys::list(&state, key, after, limit).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

/// Queues a deployment. While one of the app's deployments waits in the queue, further requests
/// join it (taking the newest ref) instead of queueing more.
pub(super) async fn request_deployment(
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
    let deployment = deploys::request_deploy(&state, &who, key, git_ref).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(deployment)))
}

pub(super) async fn get_deployment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(deploys::get(&state, id).await?))
}

/// One deployment, addressed under its app.
pub(super) async fn get_app_deployment(
    State(state): State<AppState>,
    ApiPath((key, id)): ApiPath<(String, i64)>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(deploys::get_of_app(&state, key, id).await?))
}

/// Cancels a deployment: 202 when its running job was asked to stop, 200 when it was cancelled
/// before it started.
pub(super) async fn cancel_deployment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(match deploys::cancel(&state, id).await? {
        Cancelled::Requested(d) => (StatusCode::ACCEPTED, ApiJson(d)),
        Cancelled::Done(d) => (StatusCode::OK, ApiJson(d)),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    deployment_id: Option<i64>,
}

/// Deploys a previous healthy deployment's exact commit with its env snapshot (default: the
/// release before the live one).
pub(super) async fn rollback(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let request: RollbackRequest = optional_json(&body)?;
    let d = deploys::roll_back(&state, &who, key, request.deployment_id).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(d)))
}

/// The live release: where it answers (the route), and its containers as the engine sees them.
pub(super) async fn runtime(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(deploys::runtime_of(&state, key).await?))
}
