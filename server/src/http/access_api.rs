//! `/api/v1` routes of access: signing in and out, password reset, users, API tokens, audit.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use rusqlite::{Connection, OptionalExtension, params};
use rustploy_actors::ledger::{LedgerError, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{self, Need, Principal, SCOPES};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::domain::rfc3339;
use crate::secrets;

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
            axum::routing::patch(update_user),
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
        (M::GET, "/api/v1/audit", Need::Admin, get(audit)),
    ]
}

const ROLES: &[&str] = &["owner", "maintainer", "viewer"];

pub(super) fn user_json(c: &Connection, id: i64) -> Result<Option<Value>, LedgerError> {
    Ok(
        c.prepare_cached(
            "SELECT id, email, role, created_at, updated_at FROM users WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok(json!({
                "id": r.get::<_, i64>(0)?,
                "email": r.get::<_, String>(1)?,
                "role": r.get::<_, String>(2)?,
                "created_at": rfc3339(r.get(3)?),
                "updated_at": rfc3339(r.get(4)?),
            }))
        })
        .optional()?,
    )
}

async fn me(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(match who {
        Principal::User { id, csrf_token, .. } => {
            let mut user = state
                .ledger
                .run(move |c| user_json(c, id))
                .await?
                .ok_or_else(ApiError::unauthenticated)?;
            user["kind"] = json!("user");
            user["csrf_token"] = json!(csrf_token);
            user
        }
        Principal::Token { id, name, scopes } => {
            json!({ "kind": "token", "id": id, "name": name, "scopes": scopes })
        }
    }))
}

fn valid_email(email: &str) -> ApiResult<String> {
    let email = email.trim();
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(ApiError::invalid(
            "email",
            format!("'{email}' is not a valid email address"),
        ));
    }
    Ok(email.to_string())
}

fn valid_password(password: &str) -> ApiResult<()> {
    secrets::check_password_rules(password).map_err(|e| ApiError::invalid("password", e))
}

async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(ApiError::internal)
}

/// A hash to verify against when the email is unknown, so that both cases take as long.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| secrets::hash_password(&secrets::random_secret()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

/// A refusal by a limit: 429 `rate_limited`, `message` with `{secs}` replaced by the wait,
/// and the wait in `details.retry_after`.
pub(super) fn rate_limited(wait: std::time::Duration, message: &str) -> ApiError {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        message.replace("{secs}", &secs.to_string()),
    )
    .details(json!({ "retry_after": secs }))
}

/// An error as a response; a refusal by a limit carries `Retry-After`.
pub(super) fn refusal(e: ApiError) -> Response {
    let retry = retry_after(&e);
    let mut r = e.into_response();
    set_retry_after(&mut r, retry);
    r
}

/// The wait of a refusal by a limit, in seconds.
pub(super) fn retry_after(e: &ApiError) -> Option<u64> {
    (e.code == "rate_limited")
        .then(|| e.details.as_ref().and_then(|d| d["retry_after"].as_u64()))
        .flatten()
}

pub(super) fn set_retry_after(r: &mut Response, secs: Option<u64>) {
    if let Some(secs) = secs {
        r.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
}

async fn login(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let client = super::client_addr(&req).unwrap_or_else(|| "unknown".into());
    let ApiJson(body) =
        match <ApiJson<Login> as axum::extract::FromRequest<AppState>>::from_request(req, &state)
            .await
        {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
    match sign_in(&state, &body.email, body.password, client).await {
        Ok(SignedIn { secret, csrf, user }) => {
            let secure = auth::https(&state.settings);
            (
                [(
                    header::SET_COOKIE,
                    auth::session_cookie_header(&secret, secure),
                )],
                ApiJson(json!({ "user": user, "csrf_token": csrf })),
            )
                .into_response()
        }
        Err(e) => refusal(e),
    }
}

/// A new session: the cookie secret, its CSRF token, and the user.
pub(super) struct SignedIn {
    pub(super) secret: String,
    pub(super) csrf: String,
    pub(super) user: Value,
}

/// Checks an email and password and creates a session. The dashboard's login form uses it
/// too. Attempts are limited per client address and delayed per account (see `limiter.rs`),
/// the same for an unknown email as for a known one, and an unknown email takes as long to
/// refuse. A refusal by the limits is `rate_limited` with `details.retry_after` in seconds.
pub(super) async fn sign_in(
    state: &AppState,
    email: &str,
    password: String,
    client: String,
) -> ApiResult<SignedIn> {
    let email = email.trim().to_lowercase();
    let (account_key, client_key) = (account_key(&email), format!("client:{client}"));
    let limiter = &state.login_limiter;
    if let Err(wait) = limiter.begin(&account_key, &client_key, Instant::now()) {
        return Err(rate_limited(
            wait,
            "too many failed sign-ins; try again in {secs} s",
        ));
    }
    let lookup = email.clone();
    let user = state
        .ledger
        .run(move |c| {
            Ok(c.query_row(
                "SELECT id, password_hash FROM users WHERE email = ?1",
                [lookup],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?)
        })
        .await?;
    let (user_id, hash) = match &user {
        Some((id, hash)) => (Some(*id), hash.clone()),
        None => (None, dummy_hash().to_string()),
    };
    let verified = tokio::task::spawn_blocking(move || secrets::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user_id) = user_id.filter(|_| verified) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "the email or password is wrong",
        ));
    };
    limiter.succeeded(&account_key, &client_key);
    let (secret, csrf, user) = state
        .ledger
        .run(move |c| {
            let secret = auth::create_session(c, user_id, Some(&client))?;
            let csrf: String = c.query_row(
                "SELECT csrf_token FROM sessions WHERE secret_hash = ?1",
                [secrets::hash_secret(&secret)],
                |r| r.get(0),
            )?;
            Ok((secret, csrf, user_json(c, user_id)?))
        })
        .await?;
    Ok(SignedIn {
        secret,
        csrf,
        user: user.unwrap_or(Value::Null),
    })
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let expired = sign_out(&state, &headers).await?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]).into_response())
}

/// Revokes the request's session (if any) and returns the `Set-Cookie` value that clears it.
/// The dashboard's logout button uses it too.
pub(super) async fn sign_out(state: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    let secure = auth::https(&state.settings);
    if let Some(secret) = auth::session_cookie(headers, secure) {
        let hash = secrets::hash_secret(&secret);
        state
            .ledger
            .run(move |c| {
                c.execute(
                    "UPDATE sessions SET revoked_at = ?2 WHERE secret_hash = ?1 AND revoked_at IS NULL",
                    params![hash, now_ms()],
                )?;
                Ok(())
            })
            .await?;
    }
    Ok(auth::expired_session_cookie_header(secure))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    email: String,
}

/// Always 202 with the same body, whether or not the email exists, and as fast: the link is
/// issued and sent after the answer. It goes by mail (or to the server log when no mail is
/// configured), never into the response.
async fn reset_request(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let client = super::client_addr(&req).unwrap_or_else(|| "unknown".into());
    let ApiJson(body) =
        match <ApiJson<ResetRequest> as axum::extract::FromRequest<AppState>>::from_request(
            req, &state,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
    match request_reset(&state, &body.email, &client) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            ApiJson(json!({ "status": "accepted" })),
        )
            .into_response(),
        Err(e) => refusal(e),
    }
}

/// The longest issuing and mailing one reset link may take in the background.
const RESET_MAIL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Counts a reset request for `email` from `client` against the limits (per address and per
/// account, known or not) and, when it is within them, issues and sends the link in a task of
/// its own: the caller answers at once and the same way whether or not such a user exists.
/// The dashboard's reset form uses it too.
pub(super) fn request_reset(state: &AppState, email: &str, client: &str) -> ApiResult<()> {
    let email = valid_email(email)?.to_lowercase();
    state
        .reset_limiter
        .take(
            &account_key(&email),
            &format!("client:{client}"),
            Instant::now(),
        )
        .map_err(|wait| {
            rate_limited(
                wait,
                "too many password reset requests; try again in {secs} s",
            )
        })?;
    let state = state.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(RESET_MAIL_TIMEOUT, send_reset_link(&state, &email)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = e.message, "issuing a password reset link failed")
            }
            Err(_) => tracing::error!(
                "issuing and sending a password reset link took longer than {RESET_MAIL_TIMEOUT:?}"
            ),
        }
    });
    Ok(())
}

/// The limiters' key of an account: a digest, so that keys are small whatever was typed.
fn account_key(email: &str) -> String {
    format!("account:{}", hex::encode(secrets::hash_secret(email)))
}

/// Issues a reset link for `email` and sends it, when such a user exists.
async fn send_reset_link(state: &AppState, email: &str) -> ApiResult<()> {
    let e = email.to_string();
    let issued = state
        .ledger
        .run(move |c| super::setup::issue_reset_token(c, &e))
        .await?;
    if let Some(token) = issued {
        let link = format!("{}/reset-password?token={token}", state.settings.public_url);
        crate::mail::send_reset_link(&state.settings, email, &link).await;
    }
    Ok(())
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
    valid_password(&body.password)?;
    let done = super::setup::reset_password(&state.ledger, body.token, body.password, |p| {
        secrets::hash_password(p)
    })
    .await?;
    if !done {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            "this reset token is unknown, used already, or expired; ask for a new one",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

impl ListQuery {
    fn page(&self) -> super::api::Page {
        super::api::Page {
            limit: self.limit,
            cursor: self.cursor.clone(),
            state: None,
        }
    }
}

async fn list_users(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = super::api::id_page(&state.ledger, "users", &q.page(), user_json).await?;
    Ok(ApiJson(page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    pub(super) email: String,
    pub(super) role: String,
    pub(super) password: String,
}

fn valid_role(role: &str) -> ApiResult<()> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "role",
            "role must be owner, maintainer or viewer",
        ))
    }
}

async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<impl IntoResponse> {
    let user = add_user(&state, body).await?;
    Ok((StatusCode::CREATED, ApiJson(user)))
}

/// Checks and creates a user. The dashboard's users page uses it too.
pub(super) async fn add_user(state: &AppState, body: NewUser) -> ApiResult<Value> {
    let email = valid_email(&body.email)?;
    valid_role(&body.role)?;
    valid_password(&body.password)?;
    let hash = hash_password(body.password).await?;
    let (e, role) = (email.clone(), body.role);
    let user = state
        .ledger
        .run(move |c| {
            let now = now_ms();
            match c.execute(
                "INSERT INTO users (email, password_hash, role, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![e, hash, role, now],
            ) {
                Ok(_) => user_json(c, c.last_insert_rowid()),
                Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => Ok(None),
                Err(err) => Err(err.into()),
            }
        })
        .await?;
    user.ok_or_else(|| ApiError::conflict(format!("a user with email {email} already exists")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserPatch {
    pub(super) email: Option<String>,
    pub(super) role: Option<String>,
    pub(super) password: Option<String>,
}

enum UserChange {
    Done(Value),
    Missing,
    LastOwner,
    EmailTaken,
}

fn owners_besides(c: &Connection, id: i64) -> Result<i64, LedgerError> {
    Ok(c.query_row(
        "SELECT COUNT(*) FROM users WHERE role = 'owner' AND id != ?1",
        [id],
        |r| r.get(0),
    )?)
}

async fn update_user(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UserPatch>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(change_user(&state, id, body).await?))
}

/// Changes a user's email, role or password (never demoting the last owner). The dashboard's
/// users page uses it too.
pub(super) async fn change_user(state: &AppState, id: i64, body: UserPatch) -> ApiResult<Value> {
    let email = body.email.as_deref().map(valid_email).transpose()?;
    if let Some(role) = &body.role {
        valid_role(role)?;
    }
    let hash = match body.password {
        Some(p) => {
            valid_password(&p)?;
            Some(hash_password(p).await?)
        }
        None => None,
    };
    let role = body.role;
    let change = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current: Option<String> = tx
                .query_row("SELECT role FROM users WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            let Some(current) = current else {
                return Ok(UserChange::Missing);
            };
            let now = now_ms();
            if let Some(role) = &role {
                if current == "owner" && role != "owner" && owners_besides(&tx, id)? == 0 {
                    return Ok(UserChange::LastOwner);
                }
                tx.execute(
                    "UPDATE users SET role = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, role, now],
                )?;
                revoke_tokens_beyond(&tx, id, role, now)?;
            }
            if let Some(email) = &email {
                match tx.execute(
                    "UPDATE users SET email = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, email, now],
                ) {
                    Ok(_) => {}
                    Err(rusqlite::Error::SqliteFailure(f, _))
                        if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        return Ok(UserChange::EmailTaken);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(hash) = &hash {
                // A new password ends the user's sessions everywhere.
                tx.execute(
                    "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, hash, now],
                )?;
                tx.execute(
                    "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
                    params![id, now],
                )?;
            }
            let user = user_json(&tx, id)?.unwrap_or(Value::Null);
            tx.commit()?;
            Ok(UserChange::Done(user))
        })
        .await?;
    match change {
        UserChange::Done(u) => Ok(u),
        UserChange::Missing => Err(ApiError::not_found(format!("no user {id}"))),
        UserChange::LastOwner => Err(last_owner()),
        UserChange::EmailTaken => Err(ApiError::conflict("another user has that email")),
    }
}

/// The token scopes a role holds itself: what a token made by a user with that role may keep.
fn scopes_of_role(role: &str) -> &'static [&'static str] {
    match role {
        "owner" => SCOPES,
        "maintainer" => &["read", "deploy"],
        _ => &["read"],
    }
}

/// Whether a token with `scopes` grants more than `role` holds.
fn exceeds_role(scopes: &str, role: &str) -> bool {
    let held = scopes_of_role(role);
    scopes.split(',').any(|s| !held.contains(&s))
}

/// Revokes the live tokens user `id` made that grant more than their (new) `role`. Tokens within
/// the role stay: a demoted owner's read-only token for a status page keeps working, and such a
/// token gives nothing its maker does not hold. Sessions need nothing: they read the role at
/// every request.
fn revoke_tokens_beyond(c: &Connection, id: i64, role: &str, now: i64) -> Result<(), LedgerError> {
    let tokens: Vec<(i64, String)> = c
        .prepare_cached(
            "SELECT id, scopes FROM api_tokens WHERE created_by = ?1 AND revoked_at IS NULL",
        )?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (token, scopes) in tokens {
        if exceeds_role(&scopes, role) {
            c.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1",
                params![token, now],
            )?;
        }
    }
    Ok(())
}

fn last_owner() -> ApiError {
    ApiError::conflict("this is the last owner; make another user owner first")
}

async fn delete_user(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    remove_user(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a user (never the last owner). The dashboard's users page uses it too.
pub(super) async fn remove_user(state: &AppState, id: i64) -> ApiResult<()> {
    let change = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let role: Option<String> = tx
                .query_row("SELECT role FROM users WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            let Some(role) = role else {
                return Ok(UserChange::Missing);
            };
            if role == "owner" && owners_besides(&tx, id)? == 0 {
                return Ok(UserChange::LastOwner);
            }
            // Tokens outlive their maker (`created_by` becomes NULL): revoke them first, so
            // removing a person removes what they could do.
            let now = now_ms();
            tx.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE created_by = ?1 AND revoked_at IS NULL",
                params![id, now],
            )?;
            tx.execute("DELETE FROM users WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(UserChange::Done(Value::Null))
        })
        .await?;
    match change {
        UserChange::Missing => Err(ApiError::not_found(format!("no user {id}"))),
        UserChange::LastOwner => Err(last_owner()),
        _ => Ok(()),
    }
}

pub(super) fn token_json(c: &Connection, id: i64) -> Result<Option<Value>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT id, public_id, name, scopes, created_at, expires_at, revoked_at, last_used_at FROM api_tokens WHERE id = ?1",
    )?
    .query_row([id], |r| {
        let scopes: String = r.get(3)?;
        Ok(json!({
            "id": r.get::<_, i64>(0)?,
            "public_id": r.get::<_, String>(1)?,
            "name": r.get::<_, String>(2)?,
            "scopes": scopes.split(',').collect::<Vec<_>>(),
            "created_at": rfc3339(r.get(4)?),
            "expires_at": r.get::<_, Option<i64>>(5)?.map(rfc3339),
            "revoked_at": r.get::<_, Option<i64>>(6)?.map(rfc3339),
            "last_used_at": r.get::<_, Option<i64>>(7)?.map(rfc3339),
        }))
    })
    .optional()?)
}

async fn list_tokens(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = super::api::id_page(&state.ledger, "api_tokens", &q.page(), token_json).await?;
    Ok(ApiJson(page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    pub(super) name: String,
    pub(super) scopes: Vec<String>,
    pub(super) expires_in_days: Option<u32>,
}

/// Validates token scopes: known names, at least one; returns them sorted and unique.
pub fn valid_scopes(scopes: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = scopes.iter().map(|s| s.trim().to_string()).collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err("give at least one scope: read, deploy, admin or agent".into());
    }
    if let Some(bad) = out.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(format!(
            "unknown scope '{bad}': use read, deploy, admin or agent"
        ));
    }
    Ok(out)
}

async fn create_token(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<NewToken>,
) -> ApiResult<impl IntoResponse> {
    let row = issue_api_token(&state, &who, body).await?;
    Ok((StatusCode::CREATED, ApiJson(row)))
}

/// Checks and creates an API token; the answer holds the token itself under `token`, which is
/// never shown again. The dashboard's token form uses it too.
pub(super) async fn issue_api_token(
    state: &AppState,
    who: &Principal,
    body: NewToken,
) -> ApiResult<Value> {
    let name = body.name.trim().to_string();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::invalid(
            "name",
            "the token name must have 1 to 100 characters",
        ));
    }
    let scopes = valid_scopes(&body.scopes).map_err(|e| ApiError::invalid("scopes", e))?;
    let expires_at = match body.expires_in_days {
        Some(0) | Some(3651..) => {
            return Err(ApiError::invalid(
                "expires_in_days",
                "expires_in_days must be between 1 and 3650",
            ));
        }
        Some(d) => Some(now_ms() + d as i64 * 86_400_000),
        None => None,
    };
    let created_by = match who {
        Principal::User { id, .. } => Some(*id),
        Principal::Token { .. } => None,
    };
    let issued = secrets::issue_token();
    let token = issued.token.clone();
    let row = state
        .ledger
        .run(move |c| {
            c.execute(
                "INSERT INTO api_tokens (public_id, name, secret_hash, scopes, created_by, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![issued.public_id, name, issued.secret_hash, scopes.join(","), created_by, now_ms(), expires_at],
            )?;
            token_json(c, c.last_insert_rowid())
        })
        .await?;
    let mut row = row.unwrap_or(Value::Null);
    row["token"] = json!(token);
    Ok(row)
}

async fn revoke_token(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    revoke(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes token `id` (revoking twice keeps the first time). The dashboard uses it too.
pub(super) async fn revoke(state: &AppState, id: i64) -> ApiResult<()> {
    let n = state
        .ledger
        .run(move |c| {
            Ok(c.execute(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, now_ms()],
            )?)
        })
        .await?;
    if n == 0 {
        return Err(ApiError::not_found(format!("no token {id}")));
    }
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    pub(super) limit: Option<u32>,
    pub(super) cursor: Option<String>,
    pub(super) token_id: Option<i64>,
    pub(super) user_id: Option<i64>,
    pub(super) method: Option<String>,
    pub(super) status: Option<u16>,
    pub(super) path_prefix: Option<String>,
}

async fn token_audit(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(mut q): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let exists: bool = state
        .ledger
        .run(move |c| {
            Ok(
                c.query_row("SELECT COUNT(*) FROM api_tokens WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?,
            )
        })
        .await?;
    if !exists {
        return Err(ApiError::not_found(format!("no token {id}")));
    }
    q.token_id = Some(id);
    audit_page(&state, q).await
}

async fn audit(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    audit_page(&state, q).await
}

pub(super) async fn audit_page(state: &AppState, q: AuditQuery) -> ApiResult<ApiJson<Value>> {
    // Reads' events are written after their answers: let every one answered so far land.
    if let Err(e) = state.audit.flush().await {
        tracing::warn!(error = %e, "the audit log may miss the newest reads");
    }
    let (limit, after) = super::api::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
        state: None,
    }
    .bounds()?;
    let method = q.method.map(|m| m.to_uppercase());
    let prefix = q
        .path_prefix
        .map(|p| format!("{}%", p.replace('%', "\\%").replace('_', "\\_")));
    let items = state
        .ledger
        .run(move |c| {
            let rows = c
                .prepare_cached(
                    "SELECT id, token_id, user_id, method, path, status, client_addr, detail, at
                       FROM token_audit_events
                      WHERE id < ?1 AND (?2 IS NULL OR token_id = ?2) AND (?3 IS NULL OR user_id = ?3)
                        AND (?4 IS NULL OR method = ?4) AND (?5 IS NULL OR status = ?5)
                        AND (?6 IS NULL OR path LIKE ?6 ESCAPE '\\')
                      ORDER BY id DESC LIMIT ?7",
                )?
                .query_map(params![after, q.token_id, q.user_id, method, q.status, prefix, limit], |r| {
                    Ok(json!({
                        "id": r.get::<_, i64>(0)?,
                        "token_id": r.get::<_, Option<i64>>(1)?,
                        "user_id": r.get::<_, Option<i64>>(2)?,
                        "method": r.get::<_, String>(3)?,
                        "path": r.get::<_, String>(4)?,
                        "status": r.get::<_, i64>(5)?,
                        "client_addr": r.get::<_, Option<String>>(6)?,
                        "detail": r.get::<_, Option<String>>(7)?,
                        "at": rfc3339(r.get(8)?),
                    }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    Ok(ApiJson(super::api::page_of(items, limit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_keeps_only_what_its_makers_role_holds() {
        let cases: &[(&str, &str, bool)] = &[
            ("read", "owner", false),
            ("read,deploy,admin,agent", "owner", false),
            ("read", "maintainer", false),
            ("read,deploy", "maintainer", false),
            ("deploy", "maintainer", false),
            ("admin", "maintainer", true),
            ("agent", "maintainer", true),
            ("read,admin", "maintainer", true),
            ("read", "viewer", false),
            ("deploy", "viewer", true),
            ("read,agent", "viewer", true),
            ("read", "unknown-role", false),
            ("deploy", "unknown-role", true),
        ];
        for (scopes, role, exceeds) in cases {
            assert_eq!(exceeds_role(scopes, role), *exceeds, "{scopes} / {role}");
        }
    }
}
