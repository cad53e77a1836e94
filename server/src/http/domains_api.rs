//! `/api/v1/apps/{app}/domains`: the hostnames an app answers at, with their TLS mode. The
//! operations are `ops::domains`'.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get};

use super::AppState;
use super::auth::Need;
use super::error::{ApiJson, ApiPath, ApiResult};
use crate::ops::domains::{self, NewDomain};

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (
            M::GET,
            "/api/v1/apps/{app}/domains",
            Need::Read,
            get(list_domains),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/domains",
            Need::Deploy,
            axum::routing::post(add_domain),
        ),
        (
            M::DELETE,
            "/api/v1/apps/{app}/domains/{domain}",
            Need::Deploy,
            delete(remove_domain),
        ),
    ]
}

async fn list_domains(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(domains::list(&state, key).await?))
}

async fn add_domain(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<NewDomain>,
) -> ApiResult<impl IntoResponse> {
    let domain = domains::add(&state, key, body).await?;
    Ok((StatusCode::CREATED, ApiJson(domain)))
}

async fn remove_domain(
    State(state): State<AppState>,
    ApiPath((key, domain)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    domains::remove(&state, key, domain).await?;
    Ok(StatusCode::NO_CONTENT)
}
