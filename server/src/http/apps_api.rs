//! `/api/v1/apps`: list, create, read and rename apps.

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, patch, post};
use serde::Deserialize;

use super::AppState;
use super::auth::Need;
use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use super::paging::Page;
use crate::ops::apps;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (M::GET, "/api/v1/apps", Need::Read, get(list_apps)),
        (M::POST, "/api/v1/apps", Need::Deploy, post(create_app)),
        (M::GET, "/api/v1/apps/{app}", Need::Read, get(get_app)),
        (
            M::PATCH,
            "/api/v1/apps/{app}",
            Need::Deploy,
            patch(update_app),
        ),
    ]
}

async fn list_apps(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    let body = apps::page_json(&state, after, limit).await?;
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
    let app = apps::create(&state, &body.name).await?;
    Ok((StatusCode::CREATED, ApiJson(app)))
}

async fn get_app(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(apps::get(&state, key).await?))
}

/// A JSON body that may be left out entirely (then the defaults apply).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppPatch {
    name: Option<String>,
}

/// Renames an app (only before its first deployment).
async fn update_app(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<AppPatch>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(
        apps::rename(&state, key, body.name.as_deref()).await?,
    ))
}
