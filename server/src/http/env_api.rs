//! `/api/v1/apps/{app}/env`: an app's environment variables, encrypted at rest.
//!
//! Values of variables marked secret are masked in answers; an admin may ask for them with
//! `?reveal=true`, and each reveal is recorded in the audit log.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get};
use rustploy_api::apps::EnvUpdated;
use serde::Deserialize;

use super::AppState;
use super::auth::{Need, Principal};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::ops::env::{self, NewVar};

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (M::GET, "/api/v1/apps/{app}/env", Need::Read, get(list_env)),
        (
            M::PUT,
            "/api/v1/apps/{app}/env",
            Need::Deploy,
            axum::routing::put(put_env),
        ),
        (
            M::DELETE,
            "/api/v1/apps/{app}/env/{key}",
            Need::Deploy,
            delete(delete_env),
        ),
    ]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevealQuery {
    reveal: Option<bool>,
}

async fn list_env(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<RevealQuery>,
) -> ApiResult<impl IntoResponse> {
    let vars = env::read(&state, &who, key, q.reveal.unwrap_or(false)).await?;
    Ok(ApiJson(vars))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVarIn {
    value: String,
    #[serde(default)]
    secret: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutEnv {
    vars: BTreeMap<String, EnvVarIn>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    /// For a `.env` body: mark every variable in it secret.
    secret: Option<bool>,
}

/// Upserts variables, from JSON (`{"vars": {"KEY": {"value", "secret"}}}`) or from a `.env`
/// file sent as `text/plain`.
async fn put_env(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<PutQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let vars: Vec<NewVar> = if content_type.starts_with("text/plain") {
        let secret = q.secret.unwrap_or(false);
        env::parse_dotenv(&body)?
            .into_iter()
            .map(|(key, value)| NewVar { key, value, secret })
            .collect()
    } else if content_type.starts_with("application/json") {
        let parsed: PutEnv = serde_json::from_slice(&body).map_err(|e| {
            let (status, code) = if e.is_data() {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            } else {
                (StatusCode::BAD_REQUEST, "bad_json")
            };
            ApiError::new(
                status,
                code,
                format!("the body is not the expected JSON: {e}"),
            )
        })?;
        parsed
            .vars
            .into_iter()
            .map(|(key, v)| NewVar {
                key,
                value: v.value,
                secret: v.secret,
            })
            .collect()
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON ('Content-Type: application/json') or a .env file ('Content-Type: text/plain')",
        ));
    };
    let updated = env::write(&state, key, vars).await?;
    Ok(ApiJson(EnvUpdated { updated }))
}

async fn delete_env(
    State(state): State<AppState>,
    ApiPath((key, name)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    env::remove(&state, key, name).await?;
    Ok(StatusCode::NO_CONTENT)
}
