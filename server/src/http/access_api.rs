//! `/api/v1` routes of access: signing in and out, password reset, users, API tokens, audit.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use rustploy_actors::ledger::access::{
    self as ledger, AuditFilter, AuditRow, TokenRow, UserEdit, UserEdited, UserRemoved, UserRow,
};
use rustploy_actors::ledger::now_ms;
use rustploy_api::Page;
use rustploy_api::access::{AuditEvent, IssuedToken, Me, SignedIn as SignedInBody, Token, User};
use rustploy_api::states::Role;
use serde::Deserialize;
use serde_json::json;

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

/// A user as the API shows it.
pub(super) fn user_view(row: UserRow) -> User {
    User {
        id: row.id,
        email: row.email,
        role: row.role,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    }
}

/// A token as the API shows it (never its secret).
pub(super) fn token_view(row: TokenRow) -> Token {
    Token {
        id: row.id,
        public_id: row.public_id,
        name: row.name,
        scopes: row.scopes,
        created_at: rfc3339(row.created_at),
        expires_at: row.expires_at.map(rfc3339),
        revoked_at: row.revoked_at.map(rfc3339),
        last_used_at: row.last_used_at.map(rfc3339),
    }
}

fn audit_view(row: AuditRow) -> AuditEvent {
    AuditEvent {
        id: row.id,
        token_id: row.token_id,
        user_id: row.user_id,
        method: row.method,
        path: row.path,
        status: row.status,
        client_addr: row.client_addr,
        detail: row.detail,
        at: rfc3339(row.at),
    }
}

/// Lists are newest first; `next_cursor` continues after the last item of a full page.
fn page_of<T>(items: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Page<T> {
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| id(i).to_string()))
        .flatten();
    Page { items, next_cursor }
}

async fn me(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(match who {
        Principal::User { id, csrf_token, .. } => {
            let user = state
                .ledger
                .run(move |c| ledger::user(c, id))
                .await?
                .ok_or_else(ApiError::unauthenticated)?;
            Me::User {
                user: user_view(user),
                csrf_token,
            }
        }
        Principal::Token { id, name, scopes } => Me::Token { id, name, scopes },
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
                ApiJson(SignedInBody {
                    user,
                    csrf_token: csrf,
                }),
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
    pub(super) user: User,
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
        .run(move |c| ledger::credentials(c, &lookup))
        .await?;
    let (user_id, hash) = match user {
        Some(u) => (Some(u.user_id), u.password_hash),
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
    let (session, user) = state
        .ledger
        .run(move |c| {
            let session = auth::open_session(c, user_id, Some(&client))?;
            Ok((session, ledger::user(c, user_id)?))
        })
        .await?;
    // The user was there a moment ago; one removed meanwhile has no session to use.
    let user = user.ok_or_else(ApiError::unauthenticated)?;
    Ok(SignedIn {
        secret: session.secret,
        csrf: session.csrf,
        user: user_view(user),
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
            .run(move |c| ledger::revoke_session(c, &hash, now_ms()))
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
    fn page(&self) -> super::paging::Page {
        super::paging::Page {
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
    Ok(ApiJson(users_page(&state, &q.page()).await?))
}

/// A page of users, newest first. The dashboard's users page uses it too.
pub(super) async fn users_page(
    state: &AppState,
    page: &super::paging::Page,
) -> ApiResult<Page<User>> {
    let (limit, before) = page.bounds()?;
    let rows = state
        .ledger
        .run(move |c| ledger::users(c, before, limit))
        .await?;
    let items = rows.into_iter().map(user_view).collect();
    Ok(page_of(items, limit, |u: &User| u.id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    pub(super) email: String,
    pub(super) role: String,
    pub(super) password: String,
}

fn valid_role(role: &str) -> ApiResult<Role> {
    role.parse()
        .map_err(|_| ApiError::invalid("role", "role must be owner, maintainer or viewer"))
}

async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<impl IntoResponse> {
    let user = add_user(&state, body).await?;
    Ok((StatusCode::CREATED, ApiJson(user)))
}

/// Checks and creates a user. The dashboard's users page uses it too.
pub(super) async fn add_user(state: &AppState, body: NewUser) -> ApiResult<User> {
    let email = valid_email(&body.email)?;
    let role = valid_role(&body.role)?;
    valid_password(&body.password)?;
    let hash = hash_password(body.password).await?;
    let e = email.clone();
    let user = state
        .ledger
        .run(move |c| {
            let new = ledger::NewUser {
                email: &e,
                password_hash: &hash,
                role,
            };
            match ledger::create_user(c, &new, now_ms())? {
                Some(id) => ledger::user(c, id),
                None => Ok(None),
            }
        })
        .await?;
    user.map(user_view)
        .ok_or_else(|| ApiError::conflict(format!("a user with email {email} already exists")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserPatch {
    pub(super) email: Option<String>,
    pub(super) role: Option<String>,
    pub(super) password: Option<String>,
}

async fn update_user(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UserPatch>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(change_user(&state, id, body).await?))
}

/// Changes a user's email, role or password (never demoting the last owner). A new role
/// revokes the user's tokens beyond it, and a new password ends their sessions (see
/// `ledger::access::edit_user`). The dashboard's users page uses it too.
pub(super) async fn change_user(state: &AppState, id: i64, body: UserPatch) -> ApiResult<User> {
    let email = body.email.as_deref().map(valid_email).transpose()?;
    let role = body.role.as_deref().map(valid_role).transpose()?;
    let password_hash = match body.password {
        Some(p) => {
            valid_password(&p)?;
            Some(hash_password(p).await?)
        }
        None => None,
    };
    let edit = UserEdit {
        email,
        role,
        password_hash,
    };
    let change = state
        .ledger
        .run(move |c| ledger::edit_user(c, id, &edit, now_ms()))
        .await?;
    match change {
        UserEdited::Done(u) => Ok(user_view(u)),
        UserEdited::Missing => Err(ApiError::not_found(format!("no user {id}"))),
        UserEdited::LastOwner => Err(last_owner()),
        UserEdited::EmailTaken => Err(ApiError::conflict("another user has that email")),
    }
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
/// Deletes a user (never the last owner), revoking the tokens they made. The dashboard's users
/// page uses it too.
pub(super) async fn remove_user(state: &AppState, id: i64) -> ApiResult<()> {
    let change = state
        .ledger
        .run(move |c| ledger::remove_user(c, id, now_ms()))
        .await?;
    match change {
        UserRemoved::Done => Ok(()),
        UserRemoved::Missing => Err(ApiError::not_found(format!("no user {id}"))),
        UserRemoved::LastOwner => Err(last_owner()),
    }
}

async fn list_tokens(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(tokens_page(&state, &q.page()).await?))
}

/// A page of tokens, newest first, live or not. The dashboard's tokens page uses it too.
pub(super) async fn tokens_page(
    state: &AppState,
    page: &super::paging::Page,
) -> ApiResult<Page<Token>> {
    let (limit, before) = page.bounds()?;
    let rows = state
        .ledger
        .run(move |c| ledger::tokens(c, before, limit))
        .await?;
    let items = rows.into_iter().map(token_view).collect();
    Ok(page_of(items, limit, |t: &Token| t.id))
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
) -> ApiResult<IssuedToken> {
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
    let secret = issued.token.clone();
    let row = state
        .ledger
        .run(move |c| {
            let new = ledger::NewToken {
                public_id: &issued.public_id,
                name: &name,
                secret_hash: &issued.secret_hash,
                scopes: &scopes,
                created_by,
                expires_at,
            };
            let id = ledger::create_token(c, &new, now_ms())?;
            ledger::token(c, id)
        })
        .await?
        .ok_or_else(|| ApiError::internal("the token just created is gone"))?;
    Ok(IssuedToken {
        token: token_view(row),
        secret,
    })
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
    let found = state
        .ledger
        .run(move |c| ledger::revoke_token(c, id, now_ms()))
        .await?;
    if !found {
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
    let exists = state
        .ledger
        .run(move |c| ledger::token_exists(c, id))
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

pub(super) async fn audit_page(
    state: &AppState,
    q: AuditQuery,
) -> ApiResult<ApiJson<Page<AuditEvent>>> {
    // Reads' events are written after their answers: let every one answered so far land.
    if let Err(e) = state.audit.flush().await {
        tracing::warn!(error = %e, "the audit log may miss the newest reads");
    }
    let (limit, before) = super::paging::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
        state: None,
    }
    .bounds()?;
    let filter = AuditFilter {
        before,
        limit,
        token_id: q.token_id,
        user_id: q.user_id,
        method: q.method.map(|m| m.to_uppercase()),
        status: q.status,
        path_prefix: q.path_prefix,
    };
    let rows = state
        .ledger
        .run(move |c| ledger::audit_events(c, &filter))
        .await?;
    let items = rows.into_iter().map(audit_view).collect();
    Ok(ApiJson(page_of(items, limit, |e: &AuditEvent| e.id)))
}
