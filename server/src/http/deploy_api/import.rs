//! The import handler: `POST /api/v1/apps/import`.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::http::AppState;
use crate::http::auth::Principal;
use crate::http::error::{ApiJson, ApiResult};
use crate::ops::import::{self, ImportRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportBody {
    name: String,
    repo_url: String,
    branch: Option<String>,
    compose_path: Option<String>,
    deploy_key: Option<String>,
    https_token: Option<String>,
    trusted: Option<bool>,
}

/// Imports a repository and answers the app with what was detected under `import`; nothing is
/// deployed yet.
pub(super) async fn import_app(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<ImportBody>,
) -> ApiResult<impl IntoResponse> {
    let request = ImportRequest {
        name: body.name,
        repo_url: body.repo_url,
        branch: body.branch,
        compose_path: body.compose_path,
        deploy_key: body.deploy_key,
        https_token: body.https_token,
        trusted: body.trusted.unwrap_or(false),
    };
    let app = import::import(&state, &who, request).await?;
    Ok((StatusCode::CREATED, ApiJson(app)))
}
