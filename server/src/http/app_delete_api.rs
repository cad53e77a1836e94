//! `DELETE /api/v1/apps/{app}` (routed in `deploy_api.rs`'s table): deleting an app through
//! `ops::app_delete`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::ops::app_delete::{self, DeleteRequest, Deletion};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    purge_volumes: Option<bool>,
}

/// Deletes an app (volumes kept unless `?purge_volumes=true`): 204 once it is gone, or 202 with
/// its deletion's job (also in `Location`) when that takes longer than the request waits.
pub(super) async fn delete_app(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<Response> {
    let request = DeleteRequest {
        purge_volumes: q.purge_volumes.unwrap_or(false),
    };
    Ok(
        match app_delete::delete(&state, key, request, app_delete::WAIT).await? {
            Deletion::Done => StatusCode::NO_CONTENT.into_response(),
            Deletion::Pending(job) => (
                StatusCode::ACCEPTED,
                [(header::LOCATION, format!("/api/v1/jobs/{}", job.id))],
                ApiJson(job),
            )
                .into_response(),
        },
    )
}
