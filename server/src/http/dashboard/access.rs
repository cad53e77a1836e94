//! Signing in and out, first-run setup, password reset, API tokens and users.

use axum::Extension;
use axum::Form;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use rustploy_api::access::{IssuedToken, NewToken, NewUser, UserPatch};
use rustploy_api::states::{Role, Scope};
use serde::Deserialize;

use super::{
    FormToken, Problem, Section, Table, Viewer, action, badge, csrf, error_page, field, form_error,
    layout, respond, see_other, when_str,
};
use crate::http::AppState;
use crate::http::auth::{self, Need};
use crate::http::error::ApiError;
use crate::http::op_errors::set_retry_after;
use crate::ops::access::{audit, sessions, setup, tokens, users};
use crate::secrets;

pub(super) fn table() -> Table {
    use axum::http::Method as M;
    vec![
        (M::GET, "/setup", Need::Public, get(setup_form)),
        (M::POST, "/setup", Need::Public, action(setup_submit)),
        (M::GET, "/login", Need::Public, get(login_form)),
        (M::POST, "/login", Need::Public, action(login_submit)),
        (
            M::GET,
            "/reset-password/request",
            Need::Public,
            get(reset_request_form),
        ),
        (
            M::POST,
            "/reset-password/request",
            Need::Public,
            action(reset_request_submit),
        ),
        (M::GET, "/reset-password", Need::Public, get(reset_form)),
        (
            M::POST,
            "/reset-password",
            Need::Public,
            action(reset_submit),
        ),
        (M::POST, "/logout", Need::Authenticated, action(logout)),
        (M::GET, "/tokens", Need::Admin, get(tokens)),
        (M::POST, "/tokens", Need::Admin, action(create_token)),
        (
            M::POST,
            "/tokens/{id}/revoke",
            Need::Admin,
            action(revoke_token),
        ),
        (M::GET, "/users", Need::Admin, get(users)),
        (M::POST, "/users", Need::Admin, action(create_user)),
        (
            M::POST,
            "/users/{id}/role",
            Need::Admin,
            action(change_role),
        ),
        (
            M::POST,
            "/users/{id}/delete",
            Need::Admin,
            action(delete_user),
        ),
    ]
}

fn public_page(status: StatusCode, title: &str, content: Markup) -> Response {
    respond(status, layout(None, title, content))
}

fn session_cookie(state: &AppState, secret: &str) -> String {
    auth::session_cookie_header(secret, auth::https(&state.settings))
}

// First-run setup.

#[derive(Deserialize, Default)]
struct TokenQuery {
    token: Option<String>,
}

fn setup_expired() -> Response {
    public_page(
        StatusCode::NOT_FOUND,
        "Setup link not valid",
        html! { p { "This setup link was used already, has expired, or the owner exists. Restart the server for a new link, or "
        a href="/login" { "sign in" } "." } },
    )
}

fn setup_page(form: &FormToken, token: &str, email: &str, problem: &Problem) -> Markup {
    html! {
        p { "Create the owner of this Rustploy. This link works once." }
        form.narrow method="post" action="/setup" {
            (csrf(&form.0))
            input type="hidden" name="token" value=(token);
            (form_error(problem, &["email", "password"]))
            (field("Email", "email", "email", email, problem))
            (field(&format!("Password (at least {} characters)", secrets::MIN_PASSWORD_LEN), "password", "password", "", problem))
            button type="submit" { "Create owner" }
        }
    }
}

async fn setup_form(
    State(state): State<AppState>,
    Extension(form): Extension<FormToken>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let token = q.token.unwrap_or_default();
    match setup::setup_link_valid(&state, token.clone()).await {
        Ok(true) => public_page(
            StatusCode::OK,
            "Set up Rustploy",
            setup_page(&form, &token, "", &Problem::default()),
        ),
        Ok(false) => setup_expired(),
        Err(e) => error_page(None, e.into()),
    }
}

#[derive(Deserialize)]
struct SetupForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn setup_submit(
    State(state): State<AppState>,
    Extension(form_token): Extension<FormToken>,
    Form(form): Form<SetupForm>,
) -> Response {
    let owner = setup::FirstOwner {
        token: form.token.clone(),
        email: form.email.clone(),
        password: form.password,
    };
    let problem = match setup::create_owner(&state, owner).await {
        Ok(secret) => {
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, session_cookie(&state, &secret)),
                    (header::LOCATION, "/apps".to_string()),
                ],
            )
                .into_response();
        }
        Err(e @ setup::CreateOwnerError::BadEmail) => Problem::at("email", e.to_string()),
        Err(setup::CreateOwnerError::WeakPassword(e)) => Problem::at("password", e.to_string()),
        Err(setup::CreateOwnerError::LinkInvalid) => return setup_expired(),
        Err(e) => return error_page(None, e.into()),
    };
    public_page(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Set up Rustploy",
        setup_page(&form_token, &form.token, form.email.trim(), &problem),
    )
}

// Signing in and out.

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

/// Only a path of this site is a place to go back to: `/` followed by a path character, and
/// nothing but printable ASCII other than `\`. Browsers read `//host`, `/\host` and
/// `/<tab>/host` (they drop tabs and newlines) as another site, so anything else goes to
/// `/apps`.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if is_local_path(n) => n.to_string(),
        _ => "/apps".into(),
    }
}

fn is_local_path(next: &str) -> bool {
    let Some(rest) = next.strip_prefix('/') else {
        return false;
    };
    let printable = |b: u8| b.is_ascii_graphic() && b != b'\\';
    let path_start = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@?#".contains(&b);
    rest.bytes().next().is_none_or(path_start) && rest.bytes().all(printable)
}

fn login_page(form: &FormToken, next: &str, email: &str, problem: &Problem) -> Markup {
    html! {
        form.narrow method="post" action="/login" {
            (csrf(&form.0))
            input type="hidden" name="next" value=(next);
            (form_error(problem, &["email", "password"]))
            (field("Email", "email", "email", email, problem))
            (field("Password", "password", "password", "", problem))
            button type="submit" { "Sign in" }
        }
        p { a href="/reset-password/request" { "Forgot your password?" } }
    }
}

async fn login_form(Extension(form): Extension<FormToken>, Query(q): Query<NextQuery>) -> Response {
    let next = local_path(q.next.as_deref());
    public_page(
        StatusCode::OK,
        "Sign in",
        login_page(&form, &next, "", &Problem::default()),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

async fn login_submit(
    State(state): State<AppState>,
    Extension(form_token): Extension<FormToken>,
    req: axum::extract::Request,
) -> Response {
    let client = crate::http::client_addr(&req).unwrap_or_else(|| "unknown".into());
    let Ok(Form(form)) = Form::<LoginForm>::from_request(req, &state).await else {
        return error_page(
            None,
            ApiError::invalid("form", "the form could not be read"),
        );
    };
    let next = local_path(form.next.as_deref());
    let (status, problem, retry) =
        match sessions::sign_in(&state, &form.email, form.password, client).await {
            Ok(signed) => {
                return (
                    StatusCode::SEE_OTHER,
                    [
                        (header::SET_COOKIE, session_cookie(&state, &signed.secret)),
                        (header::LOCATION, next),
                    ],
                )
                    .into_response();
            }
            Err(e @ sessions::SignInError::BadCredentials) => (
                StatusCode::UNAUTHORIZED,
                Problem::at("password", e.to_string()),
                None,
            ),
            Err(e @ sessions::SignInError::RateLimited { retry_after }) => (
                StatusCode::TOO_MANY_REQUESTS,
                Problem {
                    field: None,
                    message: e.to_string(),
                },
                Some(retry_after),
            ),
            Err(e) => return error_page(None, e.into()),
        };
    let mut r = public_page(
        status,
        "Sign in",
        login_page(&form_token, &next, form.email.trim(), &problem),
    );
    if let Some(secs) = retry {
        set_retry_after(&mut r, secs);
    }
    r
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let secure = auth::https(&state.settings);
    match sessions::sign_out(&state, auth::session_cookie(&headers, secure)).await {
        Ok(()) => (
            StatusCode::SEE_OTHER,
            [
                (
                    header::SET_COOKIE,
                    auth::expired_session_cookie_header(secure),
                ),
                (header::LOCATION, "/login".to_string()),
            ],
        )
            .into_response(),
        Err(e) => error_page(None, e.into()),
    }
}

// Password reset.

fn reset_request_page(form: &FormToken, email: &str, problem: &Problem) -> Markup {
    html! {
        p { "Enter your email. If it belongs to a user, a link to choose a new password is sent to it." }
        form.narrow method="post" action="/reset-password/request" {
            (csrf(&form.0))
            (form_error(problem, &["email"]))
            (field("Email", "email", "email", email, problem))
            button type="submit" { "Send the link" }
        }
    }
}

async fn reset_request_form(Extension(form): Extension<FormToken>) -> Response {
    public_page(
        StatusCode::OK,
        "Reset your password",
        reset_request_page(&form, "", &Problem::default()),
    )
}

#[derive(Deserialize)]
struct ResetRequestForm {
    #[serde(default)]
    email: String,
}

async fn reset_request_submit(
    State(state): State<AppState>,
    Extension(form_token): Extension<FormToken>,
    req: axum::extract::Request,
) -> Response {
    let client = crate::http::client_addr(&req).unwrap_or_else(|| "unknown".into());
    let Ok(Form(form)) = Form::<ResetRequestForm>::from_request(req, &state).await else {
        return error_page(
            None,
            ApiError::invalid("form", "the form could not be read"),
        );
    };
    let email = form.email.trim();
    match setup::request_reset(&state, email, &client) {
        Ok(()) => public_page(
            StatusCode::OK,
            "Check your mail",
            html! { p { "If " strong { (email) } " belongs to a user, a reset link is on its way. It works for 30 minutes." }
            p { a href="/login" { "Back to sign in" } } },
        ),
        Err(setup::ResetRequestError::BadEmail(_)) => public_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Reset your password",
            reset_request_page(
                &form_token,
                email,
                &Problem::at("email", "enter a valid email address"),
            ),
        ),
        Err(e @ setup::ResetRequestError::RateLimited { retry_after }) => {
            let mut r = error_page(None, e.into());
            set_retry_after(&mut r, retry_after);
            r
        }
    }
}

fn reset_page(form: &FormToken, token: &str, problem: &Problem) -> Markup {
    html! {
        form.narrow method="post" action="/reset-password" {
            (csrf(&form.0))
            input type="hidden" name="token" value=(token);
            (form_error(problem, &["password"]))
            (field(&format!("New password (at least {} characters)", secrets::MIN_PASSWORD_LEN), "password", "password", "", problem))
            button type="submit" { "Set password" }
        }
    }
}

fn reset_invalid() -> Response {
    public_page(
        StatusCode::NOT_FOUND,
        "Reset link not valid",
        html! { p { "This reset link was used already or has expired. "
        a href="/reset-password/request" { "Ask for a new one" } "." } },
    )
}

async fn reset_form(
    State(state): State<AppState>,
    Extension(form): Extension<FormToken>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let token = q.token.unwrap_or_default();
    match setup::reset_link_valid(&state, token.clone()).await {
        Ok(true) => public_page(
            StatusCode::OK,
            "Choose a new password",
            reset_page(&form, &token, &Problem::default()),
        ),
        Ok(false) => reset_invalid(),
        Err(e) => error_page(None, e.into()),
    }
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

async fn reset_submit(
    State(state): State<AppState>,
    Extension(form_token): Extension<FormToken>,
    Form(form): Form<ResetForm>,
) -> Response {
    match setup::confirm_reset(&state, form.token.clone(), form.password).await {
        Ok(()) => public_page(
            StatusCode::OK,
            "Password changed",
            html! { p { "Your password was changed. " a href="/login" { "Sign in" } " with it." } },
        ),
        Err(setup::ConfirmResetError::WeakPassword(e)) => public_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose a new password",
            reset_page(
                &form_token,
                &form.token,
                &Problem::at("password", e.to_string()),
            ),
        ),
        Err(setup::ConfirmResetError::InvalidToken) => reset_invalid(),
        Err(e) => error_page(None, e.into()),
    }
}

// API tokens.

#[derive(Default)]
struct TokenDraft {
    name: String,
    scopes: Vec<String>,
    expires_in_days: String,
}

async fn tokens(State(state): State<AppState>, Extension(v): Extension<Viewer>) -> Response {
    tokens_page(
        &state,
        &v,
        StatusCode::OK,
        &TokenDraft::default(),
        &Problem::default(),
        None,
    )
    .await
}

async fn tokens_page(
    state: &AppState,
    v: &Viewer,
    status: StatusCode,
    draft: &TokenDraft,
    problem: &Problem,
    created: Option<&IssuedToken>,
) -> Response {
    let items = match tokens::page(state, i64::MAX, 200).await {
        Ok(l) => l.items,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let events = match audit::page(state, audit::Filter::default(), i64::MAX, 50).await {
        Ok(a) => a.items,
        Err(e) => return error_page(Some(v), e.into()),
    };
    respond(
        status,
        layout(
            Some((v, Section::Tokens)),
            "API tokens",
            html! {
                @if let Some(t) = created {
                    div.notice.good role="status" {
                        p { "Token " strong { (t.token.name) } " created. Copy it now: it is not shown again." }
                        pre.secret id="new-token" { (t.secret) }
                    }
                }
                section {
                    h2 { "New token" }
                    form.card method="post" action="/tokens" {
                        (csrf(&v.csrf))
                        (form_error(problem, &["name", "scopes", "expires_in_days"]))
                        (field("Name", "name", "text", &draft.name, problem))
                        fieldset.field.invalid[problem.beside("scopes").is_some()] {
                            legend { "Scopes" }
                            @for s in Scope::ALL.iter().map(|s| s.as_str()) {
                                label.inline {
                                    @if draft.scopes.iter().any(|x| x == s) {
                                        input type="checkbox" name="scopes" value=(s) checked;
                                    } @else {
                                        input type="checkbox" name="scopes" value=(s);
                                    }
                                    " " (s)
                                }
                            }
                            @if let Some(e) = problem.beside("scopes") { p.field-error role="alert" { (e) } }
                        }
                        (field("Expires in days (empty: never)", "expires_in_days", "number", &draft.expires_in_days, problem))
                        button type="submit" { "Create token" }
                    }
                }
                section {
                    h2 { "Tokens" }
                    div.scroll { table {
                        thead { tr { th { "Name" } th { "Scopes" } th { "Created" } th { "Expires" } th { "Last used" } th { "State" } th {} } }
                        tbody {
                            @for t in &items {
                                @let revoked = t.revoked_at.is_some();
                                tr {
                                    td { (t.name) br; small.mono { "rp_" (t.public_id) "_…" } }
                                    td { (scope_list(&t.scopes)) }
                                    td { (when_str(&t.created_at)) }
                                    td { (t.expires_at.as_deref().map(when_str).unwrap_or_else(|| "never".into())) }
                                    td { (t.last_used_at.as_deref().map(when_str).unwrap_or_else(|| "never".into())) }
                                    td { @if revoked { (badge("revoked")) } @else { (badge("active")) } }
                                    td {
                                        @if !revoked {
                                            form method="post" action={ "/tokens/" (t.id) "/revoke" } {
                                                (csrf(&v.csrf))
                                                button.danger type="submit" { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    } }
                }
                section {
                    h2 { "Audit log" }
                    p.hint { "Every request made with a token, and every reveal of secret values; newest first." }
                    div.scroll { table {
                        thead { tr { th { "When" } th { "Token" } th { "Request" } th { "Status" } th { "From" } } }
                        tbody {
                            @for e in &events {
                                tr {
                                    td { (when_str(&e.at)) }
                                    td { (e.token_id.map(|i| format!("#{i}")).unwrap_or_else(|| e.user_id.map(|u| format!("user #{u}")).unwrap_or_default())) }
                                    td.mono { (e.method) " " (e.path)
                                        @if let Some(d) = &e.detail { br; small { (d) } } }
                                    td { (e.status) }
                                    td { (e.client_addr.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    } }
                }
            },
        ),
    )
}

async fn create_token(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    body: axum::body::Bytes,
) -> Response {
    // Several `scopes` fields: read the pairs in order.
    let mut draft = TokenDraft::default();
    for (k, val) in form_pairs(&body) {
        match k.as_str() {
            "name" => draft.name = val,
            "scopes" => draft.scopes.push(val),
            "expires_in_days" => draft.expires_in_days = val.trim().to_string(),
            _ => {}
        }
    }
    let expires_in_days = if draft.expires_in_days.is_empty() {
        None
    } else {
        match draft.expires_in_days.parse::<u32>() {
            Ok(d) => Some(d),
            Err(_) => {
                let p = Problem::at(
                    "expires_in_days",
                    "enter a whole number of days between 1 and 3650, or leave it empty",
                );
                return tokens_page(
                    &state,
                    &v,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &draft,
                    &p,
                    None,
                )
                .await;
            }
        }
    };
    let request = NewToken {
        name: draft.name.clone(),
        scopes: draft.scopes.clone(),
        expires_in_days,
    };
    let problem = match tokens::issue(&state, &v.principal, request).await {
        Ok(issued) => {
            return tokens_page(
                &state,
                &v,
                StatusCode::CREATED,
                &TokenDraft::default(),
                &Problem::default(),
                Some(&issued),
            )
            .await;
        }
        Err(e @ tokens::IssueError::BadName) => Problem::at("name", e.to_string()),
        Err(tokens::IssueError::Scopes(e)) => Problem::at("scopes", e.to_string()),
        Err(e @ tokens::IssueError::BadExpiry) => Problem::at("expires_in_days", e.to_string()),
        Err(e) => return error_page(Some(&v), e.into()),
    };
    tokens_page(
        &state,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        &draft,
        &problem,
        None,
    )
    .await
}

/// A token's scopes as the tokens table lists them.
fn scope_list(scopes: &[Scope]) -> String {
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    names.join(", ")
}

/// The `key=value` pairs of a form body, in order (repeated keys kept).
pub(super) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|b| *b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &b""[..]),
            };
            (unpercent(k), unpercent(v))
        })
        .collect()
}

fn unpercent(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                match std::str::from_utf8(&s[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Response {
    match tokens::revoke(&state, id).await {
        Ok(()) => see_other("/tokens"),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

// Users.

#[derive(Deserialize, Default)]
struct UserDraft {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

async fn users(State(state): State<AppState>, Extension(v): Extension<Viewer>) -> Response {
    users_page(
        &state,
        &v,
        StatusCode::OK,
        &UserDraft::default(),
        &Problem::default(),
    )
    .await
}

/// The roles in the order the role menus offer them, least first.
const ROLES: [Role; 3] = [Role::Viewer, Role::Maintainer, Role::Owner];

fn role_select(name: &str, current: Option<Role>) -> Markup {
    html! {
        select name=(name) {
            @for r in ROLES {
                @if Some(r) == current { option value=(r.as_str()) selected { (r.as_str()) } } @else { option value=(r.as_str()) { (r.as_str()) } }
            }
        }
    }
}

async fn users_page(
    state: &AppState,
    v: &Viewer,
    status: StatusCode,
    draft: &UserDraft,
    problem: &Problem,
) -> Response {
    let items = match users::page(state, i64::MAX, 200).await {
        Ok(l) => l.items,
        Err(e) => return error_page(Some(v), e.into()),
    };
    // A new user's menu starts at the least role; a draft sent back keeps the one it chose.
    let role = if draft.role.is_empty() {
        Some(Role::Viewer)
    } else {
        draft.role.parse().ok()
    };
    respond(
        status,
        layout(
            Some((v, Section::Users)),
            "Users",
            html! {
                p.hint { "Viewers read; maintainers also deploy and change apps; owners also manage users, tokens and secrets." }
                div.scroll { table {
                    thead { tr { th { "Email" } th { "Role" } th { "Created" } th {} } }
                    tbody {
                        @for u in &items {
                            tr {
                                td { (u.email) }
                                td {
                                    form.row method="post" action={ "/users/" (u.id) "/role" } {
                                        (csrf(&v.csrf))
                                        (role_select("role", Some(u.role)))
                                        button type="submit" { "Change" }
                                    }
                                }
                                td { (when_str(&u.created_at)) }
                                td {
                                    form method="post" action={ "/users/" (u.id) "/delete" } {
                                        (csrf(&v.csrf))
                                        button.danger type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                } }
                h2 { "New user" }
                form.card method="post" action="/users" {
                    (csrf(&v.csrf))
                    (form_error(problem, &["email", "role", "password"]))
                    (field("Email", "email", "email", &draft.email, problem))
                    div.field { label for="f-role" { "Role" } (role_select("role", role)) }
                    (field(&format!("Password (at least {} characters)", secrets::MIN_PASSWORD_LEN), "password", "password", "", problem))
                    button type="submit" { "Create user" }
                }
            },
        ),
    )
}

async fn create_user(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Form(draft): Form<UserDraft>,
) -> Response {
    let new = NewUser {
        email: draft.email.clone(),
        role: draft.role.clone(),
        password: draft.password.clone(),
    };
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    let (status, problem) = match users::add(&state, new).await {
        Ok(_) => return see_other("/users"),
        Err(users::AddError::BadEmail(e)) => (invalid, Problem::at("email", e.to_string())),
        Err(users::AddError::BadRole(e)) => (invalid, Problem::at("role", e.to_string())),
        Err(users::AddError::WeakPassword(e)) => (invalid, Problem::at("password", e.to_string())),
        Err(e @ users::AddError::EmailTaken(_)) => (
            StatusCode::CONFLICT,
            Problem {
                field: None,
                message: e.to_string(),
            },
        ),
        Err(e) => return error_page(Some(&v), e.into()),
    };
    users_page(&state, &v, status, &draft, &problem).await
}

#[derive(Deserialize)]
struct RoleForm {
    #[serde(default)]
    role: String,
}

async fn change_role(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i64>,
    Form(form): Form<RoleForm>,
) -> Response {
    let patch = UserPatch {
        email: None,
        role: Some(form.role),
        password: None,
    };
    match users::change(&state, id, patch).await {
        Ok(_) => see_other("/users"),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

async fn delete_user(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Response {
    match users::remove(&state, id).await {
        Ok(()) => see_other("/users"),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_followed_after_sign_in() {
        let cases: &[(&str, bool)] = &[
            ("/", true),
            ("/apps", true),
            ("/apps/web/deployments?page=2&state=failed", true),
            ("/apps/web#env", true),
            ("/?next=/x", true),
            ("/%2F%2Fevil.example", true),
            ("/apps/caf%C3%A9", true),
            ("//evil.example", false),
            ("/\\evil.example", false),
            ("/\\/evil.example", false),
            ("/\t/evil.example", false),
            ("/\n/evil.example", false),
            ("/\r\n/evil.example", false),
            ("/apps\\..\\evil", false),
            ("/ /evil.example", false),
            ("/apps/\u{7f}", false),
            ("/apps/\0", false),
            ("/apps/café", false),
            ("https://evil.example", false),
            ("javascript:alert(1)", false),
            ("evil.example", false),
            ("", false),
            ("\t/apps", false),
        ];
        for (next, local) in cases {
            assert_eq!(is_local_path(next), *local, "{next:?}");
            let want = if *local { *next } else { "/apps" };
            assert_eq!(local_path(Some(next)), want, "{next:?}");
        }
        assert_eq!(local_path(None), "/apps");
    }
}
