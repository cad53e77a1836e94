//! `/api/v1` routes of access: signing in and out, password reset, users, API tokens, audit.

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post};
use rustploy_api::access::{NewToken, NewUser, ResetRequested, SignedIn, UserPatch};
use serde::Deserialize;

use super::AppState;
use super::auth::{self, Need, Principal};
use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use super::paging;
use crate::ops::access::{audit, sessions, setup, tokens, users};

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (M::POST, "/api/v1/auth/login", Need::Public, post(login)),
        (
            M::POST,
            "/api/v1/auth/logout",
            Need::Authenticated,
            post(logout),
        ),
        (M::GET, "/api/v1/auth/me", Need::Authenticated, get(me)),
        (
            M::POST,
            "/api/v1/auth/password-reset/request",
            Need::Public,
            post(reset_request),
        ),
        (
            M::POST,
            "/api/v1/auth/password-reset/confirm",
            Need::Public,
            post(reset_confirm),
        ),
        (M::GET, "/api/v1/users", Need::Admin, get(list_users)),
        (M::POST, "/api/v1/users", Need::Admin, post(create_user)),
        (
            M::PATCH,
            "/api/v1/users/{id}",
            Need::Admin,
            patch(update_user),
        ),
        (
            M::DELETE,
            "/api/v1/users/{id}",
            Need::Admin,
            delete(delete_user),
        ),
        (M::GET, "/api/v1/tokens", Need::Admin, get(list_tokens)),
        (M::POST, "/api/v1/tokens", Need::Admin, post(create_token)),
        (
            M::DELETE,
            "/api/v1/tokens/{id}",
            Need::Admin,
            delete(revoke_token),
        ),
        (
            M::GET,
            "/api/v1/tokens/{id}/audit",
            Need::Admin,
            get(token_audit),
        ),
        (M::GET, "/api/v1/audit", Need::Admin, get(audit_log)),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

/// A refusal by the limits is 429 `rate_limited` with the wait in `details.retry_after` and
/// `Retry-After`.
async fn login(State(state): State<AppState>, req: Request) -> Response {
    let client = super::client_addr(&req).unwrap_or_else(|| "unknown".into());
    let ApiJson(body) = match ApiJson::<Login>::from_request(req, &state).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match sessions::sign_in(&state, &body.email, body.password, client).await {
        Ok(signed) => {
            let secure = auth::https(&state.settings);
            (
                [(
                    header::SET_COOKIE,
                    auth::session_cookie_header(&signed.secret, secure),
                )],
                ApiJson(SignedIn {
                    user: signed.user,
                    csrf_token: signed.csrf,
                }),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Revokes the request's session (if any) and clears its cookie.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let secure = auth::https(&state.settings);
    sessions::sign_out(&state, auth::session_cookie(&headers, secure)).await?;
    let expired = auth::expired_session_cookie_header(secure);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]).into_response())
}

async fn me(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(sessions::me(&state, who).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    email: String,
}

/// Always 202 with the same body, whether or not the email exists, and as fast: the link is
/// issued and sent after the answer.
async fn reset_request(State(state): State<AppState>, req: Request) -> Response {
    let client = super::client_addr(&req).unwrap_or_else(|| "unknown".into());
    let ApiJson(body) = match ApiJson::<ResetRequest>::from_request(req, &state).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match setup::request_reset(&state, &body.email, &client) {
        Ok(()) => (StatusCode::ACCEPTED, ApiJson(ResetRequested::accepted())).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetConfirm {
    token: String,
    password: String,
}

async fn reset_confirm(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetConfirm>,
) -> ApiResult<impl IntoResponse> {
    setup::confirm_reset(&state, body.token, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

impl ListQuery {
    /// The page size and the id to continue after.
    fn bounds(self) -> ApiResult<(i64, i64)> {
        paging::Page {
            limit: self.limit,
            cursor: self.cursor,
            state: None,
        }
        .bounds()
    }
}

async fn list_users(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let (limit, before) = q.bounds()?;
    Ok(ApiJson(users::page(&state, before, limit).await?))
}

async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<impl IntoResponse> {
    let user = users::add(&state, body).await?;
    Ok((StatusCode::CREATED, ApiJson(user)))
}

async fn update_user(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UserPatch>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(users::change(&state, id, body).await?))
}

async fn delete_user(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    users::remove(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tokens(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let (limit, before) = q.bounds()?;
    Ok(ApiJson(tokens::page(&state, before, limit).await?))
}

async fn create_token(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewToken>,
) -> ApiResult<impl IntoResponse> {
    let issued = tokens::issue(&state, &who, body).await?;
    Ok((StatusCode::CREATED, ApiJson(issued)))
}

async fn revoke_token(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    tokens::revoke(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    token_id: Option<i64>,
    user_id: Option<i64>,
    method: Option<String>,
    status: Option<u16>,
    path_prefix: Option<String>,
}

impl AuditQuery {
    /// The filter, and the page size and the id to continue after.
    fn parse(self) -> ApiResult<(audit::Filter, i64, i64)> {
        let (limit, before) = ListQuery {
            limit: self.limit,
            cursor: self.cursor,
        }
        .bounds()?;
        let filter = audit::Filter {
            token_id: self.token_id,
            user_id: self.user_id,
            method: self.method,
            status: self.status,
            path_prefix: self.path_prefix,
        };
        Ok((filter, limit, before))
    }
}

async fn token_audit(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let (filter, limit, before) = q.parse()?;
    Ok(ApiJson(
        audit::token_page(&state, id, filter, before, limit).await?,
    ))
}

async fn audit_log(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let (filter, limit, before) = q.parse()?;
    Ok(ApiJson(audit::page(&state, filter, before, limit).await?))
}
