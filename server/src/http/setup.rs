//! First-run setup: the one-time URL printed at start lets its visitor create the owner.
//! Also the minimal landing page; the full dashboard is served elsewhere as it grows.

use axum::Form;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};
use rusqlite::{OptionalExtension, params};
use rustploy_actors::ledger::{LedgerError, now_ms};
use serde::Deserialize;

use super::AppState;
use super::auth::{create_session, session_cookie_header};
use crate::secrets;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/setup", get(setup_form).post(setup_submit))
        .route("/reset-password", get(reset_form).post(reset_submit))
}

pub fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Rustploy" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { main { h1 { (title) } (content) } }
        }
    }
}

const STYLE: &str = "
:root { color-scheme: light dark; font-family: system-ui, sans-serif; }
main { max-width: 32rem; margin: 3rem auto; padding: 0 1rem; }
label { display: block; margin: 1rem 0 .25rem; }
input { width: 100%; padding: .5rem; box-sizing: border-box; }
button { margin-top: 1rem; padding: .5rem 1rem; }
.error { color: #c62828; }
";

fn page(status: StatusCode, title: &str, content: Markup) -> Response {
    (
        status,
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        )],
        layout(title, content),
    )
        .into_response()
}

async fn home() -> Response {
    page(
        StatusCode::OK,
        "Rustploy",
        html! {
            p { "The control plane is running. Use the API at " code { "/api/v1" } " with a token from "
                code { "rustploy-server admin create-token" } "." }
            p { a href="/readyz" { "Readiness" } " · " a href="/metrics" { "Metrics" } }
        },
    )
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Setup tokens live this long.
pub const SETUP_TOKEN_MS: i64 = 24 * 3600 * 1000;

fn valid_setup_token(c: &rusqlite::Connection, token: &str) -> Result<Option<i64>, LedgerError> {
    let users: i64 = c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
    if users > 0 {
        return Ok(None);
    }
    Ok(c.query_row(
        "SELECT id FROM setup_tokens WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
        params![secrets::hash_secret(token), now_ms()],
        |r| r.get(0),
    )
    .optional()?)
}

fn expired_page() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Setup link not valid",
        html! { p { "This setup link was used already, has expired, or the owner exists. Restart the server for a new link, or sign in." } },
    )
}

fn setup_page(token: &str, email: &str, error: Option<&str>) -> Markup {
    html! {
        p { "Create the owner of this Rustploy. This link works once." }
        form method="post" action="/setup" {
            input type="hidden" name="token" value=(token);
            label for="email" { "Email" }
            input id="email" name="email" type="email" required value=(email);
            label for="password" { "Password (at least " (secrets::MIN_PASSWORD_LEN) " characters)" }
            input id="password" name="password" type="password" required;
            @if let Some(e) = error { p.error role="alert" { (e) } }
            button type="submit" { "Create owner" }
        }
    }
}

async fn setup_form(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    let token = q.token.unwrap_or_default();
    let t = token.clone();
    match state.ledger.run(move |c| valid_setup_token(c, &t)).await {
        Ok(Some(_)) => page(
            StatusCode::OK,
            "Set up Rustploy",
            setup_page(&token, "", None),
        ),
        Ok(None) => expired_page(),
        Err(e) => super::error::ApiError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
struct SetupForm {
    token: String,
    email: String,
    password: String,
}

async fn setup_submit(State(state): State<AppState>, Form(form): Form<SetupForm>) -> Response {
    let email = form.email.trim().to_string();
    let invalid = |msg: String| {
        page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Set up Rustploy",
            setup_page(&form.token, &email, Some(&msg)),
        )
    };
    if !email.contains('@') || email.len() > 254 {
        return invalid("enter a valid email address".into());
    }
    if let Err(e) = secrets::check_password_rules(&form.password) {
        return invalid(e);
    }
    let password = form.password.clone();
    let hash = match tokio::task::spawn_blocking(move || secrets::hash_password(&password)).await {
        Ok(h) => h,
        Err(e) => return super::error::ApiError::internal(e).into_response(),
    };
    let (token, mail) = (form.token.clone(), email.clone());
    let created = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(token_id) = valid_setup_token(&tx, &token)? else { return Ok(None) };
            let now = now_ms();
            tx.execute("UPDATE setup_tokens SET used_at = ?2 WHERE id = ?1", params![token_id, now])?;
            tx.execute(
                "INSERT INTO users (email, password_hash, role, created_at, updated_at) VALUES (?1, ?2, 'owner', ?3, ?3)",
                params![mail, hash, now],
            )?;
            let secret = create_session(&tx, tx.last_insert_rowid(), None)?;
            tx.commit()?;
            Ok(Some(secret))
        })
        .await;
    match created {
        Ok(Some(secret)) => {
            let secure = state.settings.public_url.starts_with("https://");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, session_cookie_header(&secret, secure)),
                    (header::LOCATION, "/".to_string()),
                ],
            )
                .into_response()
        }
        Ok(None) => expired_page(),
        Err(e) => super::error::ApiError::from(e).into_response(),
    }
}

/// Issues a setup token when there is no user yet. Returns the token to print, or `None`.
pub fn issue_setup_token(c: &rusqlite::Connection) -> Result<Option<String>, LedgerError> {
    let users: i64 = c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
    if users > 0 {
        return Ok(None);
    }
    let token = secrets::random_secret();
    let now = now_ms();
    c.execute(
        "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
        params![secrets::hash_secret(&token), now, now + SETUP_TOKEN_MS],
    )?;
    Ok(Some(token))
}

/// Password reset tokens live this long.
pub const RESET_TOKEN_MS: i64 = 30 * 60 * 1000;

fn reset_page(token: &str, error: Option<&str>) -> Markup {
    html! {
        form method="post" action="/reset-password" {
            input type="hidden" name="token" value=(token);
            label for="password" { "New password (at least " (secrets::MIN_PASSWORD_LEN) " characters)" }
            input id="password" name="password" type="password" required;
            @if let Some(e) = error { p.error role="alert" { (e) } }
            button type="submit" { "Set password" }
        }
    }
}

fn valid_reset_token(
    c: &rusqlite::Connection,
    token: &str,
) -> Result<Option<(i64, i64)>, LedgerError> {
    Ok(c.query_row(
        "SELECT id, user_id FROM password_reset_tokens WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
        params![secrets::hash_secret(token), now_ms()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

fn reset_invalid_page() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Reset link not valid",
        html! { p { "This reset link was used already or has expired. Ask for a new one." } },
    )
}

async fn reset_form(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    let token = q.token.unwrap_or_default();
    let t = token.clone();
    match state.ledger.run(move |c| valid_reset_token(c, &t)).await {
        Ok(Some(_)) => page(
            StatusCode::OK,
            "Choose a new password",
            reset_page(&token, None),
        ),
        Ok(None) => reset_invalid_page(),
        Err(e) => super::error::ApiError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
struct ResetForm {
    token: String,
    password: String,
}

/// Sets the new password, uses up the token, and ends the user's sessions.
async fn reset_submit(State(state): State<AppState>, Form(form): Form<ResetForm>) -> Response {
    if let Err(e) = secrets::check_password_rules(&form.password) {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose a new password",
            reset_page(&form.token, Some(&e)),
        );
    }
    let password = form.password.clone();
    let hash = match tokio::task::spawn_blocking(move || secrets::hash_password(&password)).await {
        Ok(h) => h,
        Err(e) => return super::error::ApiError::internal(e).into_response(),
    };
    let done = apply_reset(&state.ledger, form.token.clone(), hash).await;
    match done {
        Ok(true) => page(
            StatusCode::OK,
            "Password changed",
            html! { p { "Your password was changed. Sign in with it." } },
        ),
        Ok(false) => reset_invalid_page(),
        Err(e) => super::error::ApiError::from(e).into_response(),
    }
}

/// Uses up a reset token: sets the new password hash and ends the user's sessions. Returns
/// false when the token is unknown, used or expired.
pub async fn apply_reset(
    ledger: &rustploy_actors::ledger::Ledger,
    token: String,
    hash: String,
) -> Result<bool, LedgerError> {
    ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some((id, user)) = valid_reset_token(&tx, &token)? else {
                return Ok(false);
            };
            let now = now_ms();
            tx.execute(
                "UPDATE password_reset_tokens SET used_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            tx.execute(
                "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                params![user, hash, now],
            )?;
            tx.execute(
                "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
                params![user, now],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
}
