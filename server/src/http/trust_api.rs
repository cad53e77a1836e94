//! `/api/v1` route of an app's trust: an owner marks an app trusted, lifting the compose policy
//! (`deploy::policy`) for it, or untrusted again (`ops::trust`). Each change is an audit event.

use axum::Extension;
use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, put};
use serde::Deserialize;

use super::AppState;
use super::auth::{Need, Principal, RecordedElsewhere};
use super::error::{ApiJson, ApiPath, ApiResult};
use crate::ops::trust;

/// The trust operation, merged into the `/api/v1` route table.
pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    vec![(
        Method::PUT,
        "/api/v1/apps/{app}/trusted",
        Need::Admin,
        put(put_trusted),
    )]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustRequest {
    trusted: bool,
}

async fn put_trusted(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<TrustRequest>,
) -> ApiResult<Response> {
    let done = trust::set(&state, &who, key, body.trusted).await?;
    let mut response = ApiJson(done.app).into_response();
    if done.changed {
        // The change wrote its own audit event, saying what changed.
        response.extensions_mut().insert(RecordedElsewhere);
    }
    Ok(response)
}
