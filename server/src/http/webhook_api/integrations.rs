//! `GET`, `PUT` and `DELETE /api/v1/apps/{app}/github`: an app's connection to a GitHub
//! repository and branch. The operations are `ops::github`'s.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::http::AppState;
use crate::http::error::{ApiJson, ApiPath, ApiResult};
use crate::ops::github::{self, ConnectRequest};

pub(super) async fn get_integration(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(github::get(&state, key).await?))
}

/// Connects the app, answered with the integration, the secret when one was made, and a note on
/// what GitHub needs: 201 when the app was not connected before.
pub(super) async fn put_integration(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(request): ApiJson<ConnectRequest>,
) -> ApiResult<impl IntoResponse> {
    let done = github::connect(&state, &key, request).await?;
    let status = if done.existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, ApiJson(done.integration)))
}

pub(super) async fn delete_integration(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    github::disconnect(&state, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
