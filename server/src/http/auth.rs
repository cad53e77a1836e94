//! Who is asking, and may they? The one place where access rules are enforced.
//!
//! Each route declares the access it needs ([`Need`]) in the route table; the layer built by
//! [`require`] resolves the caller from an API token or a session cookie, checks the need,
//! enforces CSRF protection for cookie-authenticated writes, and leaves a [`Principal`] in the
//! request's extensions. Every token-authenticated request is audited with its final status,
//! except answers a handler marks [`RecordedElsewhere`] (a heartbeat is its own record).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustploy_actors::ledger::access::{self, NewSession};
use rustploy_actors::ledger::{Ledger, LedgerError, now_ms};
use rustploy_api::states::{Role, Scope};

use super::AppState;
use super::error::ApiError;
use super::token_cache::{CheckedToken, Known, TokenCache};
use crate::secrets;

/// The session cookie's name when the public URL is plain http (local use).
pub const SESSION_COOKIE: &str = "rp_session";
/// Its name when the public URL is https. Browsers accept a `__Host-` cookie only when it is
/// `Secure`, has `Path=/` and no `Domain`, so no other host (an app on a sibling or child
/// domain) and no plain-http page can set or replace it.
pub const HOST_SESSION_COOKIE: &str = "__Host-rp_session";

/// Whether the dashboard is served over https (its public URL says so): then cookies are
/// `Secure` with `__Host-` names, and answers carry `Strict-Transport-Security`.
pub fn https(settings: &crate::config::Settings) -> bool {
    settings.public_url.starts_with("https://")
}

/// The name of the session cookie.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        HOST_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// The access a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No credentials needed (signing in, password reset).
    Public,
    /// Any signed-in user or token.
    Authenticated,
    Read,
    Deploy,
    Admin,
    /// Agent endpoints: the agent scope (or admin).
    Agent,
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Public => "public",
            Need::Authenticated => "authenticated",
            Need::Read => "read",
            Need::Deploy => "deploy",
            Need::Admin => "admin",
            Need::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Principal {
    User {
        id: i64,
        email: String,
        role: Role,
        csrf_token: String,
    },
    Token {
        id: i64,
        name: String,
        scopes: Vec<Scope>,
    },
}

impl Principal {
    pub fn allows(&self, need: Need) -> bool {
        match self {
            Principal::User { role, .. } => match need {
                Need::Public | Need::Authenticated => true,
                Need::Read => matches!(role, Role::Viewer | Role::Maintainer | Role::Owner),
                Need::Deploy => matches!(role, Role::Maintainer | Role::Owner),
                Need::Admin => *role == Role::Owner,
                Need::Agent => false,
            },
            Principal::Token { scopes, .. } => {
                let has = |s: Scope| scopes.contains(&s);
                match need {
                    Need::Public | Need::Authenticated => true,
                    Need::Read => has(Scope::Read) || has(Scope::Deploy) || has(Scope::Admin),
                    Need::Deploy => has(Scope::Deploy) || has(Scope::Admin),
                    Need::Admin => has(Scope::Admin),
                    Need::Agent => has(Scope::Agent) || has(Scope::Admin),
                }
            }
        }
    }

    /// A short description for `triggered_by` columns and logs.
    pub fn describe(&self) -> String {
        match self {
            Principal::User { email, .. } => format!("user:{email}"),
            Principal::Token { name, id, .. } => format!("token:{name}#{id}"),
        }
    }
}

/// The route layer: authenticate, authorise, and audit token use.
pub async fn require(
    State((state, need)): State<(AppState, Need)>,
    mut req: Request,
    next: Next,
) -> Response {
    if need == Need::Public {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client = super::client_addr(&req);
    // The request's own headers, borrowed: copying them for every request showed in profiles.
    let principal = match authenticate(&state, req.headers()).await {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::unauthenticated().into_response(),
        Err(e) => return e.into_response(),
    };
    let response = if !principal.allows(need) {
        ApiError::forbidden(need.as_str()).into_response()
    } else if let Err(e) = check_csrf(
        &principal,
        &method,
        req.headers(),
        &state.settings.public_url,
    ) {
        e.into_response()
    } else {
        req.extensions_mut().insert(principal.clone());
        next.run(req).await
    };
    let routine = response.extensions().get::<RecordedElsewhere>().is_some();
    if let Principal::Token { id, .. } = principal
        && !routine
    {
        let status = response.status().as_u16();
        let event = super::audit::AuditEvent {
            token_id: id,
            method: method.to_string(),
            path: path.clone(),
            status,
            client_addr: client,
            at: now_ms(),
        };
        // A read changed nothing: its event is written after the answer, in the next batch.
        // A write has acted by now: its event is committed before the answer, and the answer
        // must say what happened, so a failed audit write is logged and counted
        // (`rustploy_audit_write_failures_total`), not turned into a 500.
        let recorded = if matches!(method, Method::GET | Method::HEAD) {
            state.audit.record_later(event)
        } else {
            state.audit.record(event).await
        };
        if let Err(e) = recorded {
            state.metrics.audit_write_failed();
            tracing::error!(
                error = %e,
                token_id = id,
                method = %method,
                path = %path,
                status,
                "recording the token audit event failed; the request was answered"
            );
        }
    }
    response
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
            return Ok(None);
        };
        return authenticate_token(state, token.trim()).await;
    }
    match session_cookie(headers, https(&state.settings)) {
        Some(secret) => authenticate_session(&state.ledger, secret).await,
        None => Ok(None),
    }
}

/// Checks a bearer token: from the token cache when it knows the token (no ledger read), else
/// from the ledger, keeping a live token for the next request.
pub(super) async fn authenticate_token(
    state: &AppState,
    token: &str,
) -> Result<Option<Principal>, ApiError> {
    let Some((public_id, secret)) = secrets::parse_token(token) else {
        return Ok(None);
    };
    let presented = secrets::hash_secret(secret);
    let now = now_ms();
    let changes = state.ledger.changes();
    let principal = |t: CheckedToken| Principal::Token {
        id: t.id,
        name: t.name,
        scopes: t.scopes,
    };
    match state.tokens.check(changes, public_id, &presented, now) {
        Known::Valid(t) => return Ok(Some(principal(t))),
        Known::Refused => return Ok(None),
        Known::Unknown => {}
    }
    let stamp = TokenCache::stamp(changes);
    let id = public_id.to_string();
    let row = state
        .ledger
        .run(move |c| access::token_for_auth(c, &id, now))
        .await?;
    let Some(checked) = row else {
        return Ok(None);
    };
    state.tokens.keep(public_id, checked.clone(), stamp);
    if !secrets::hashes_equal(&checked.secret_hash, &presented) {
        return Ok(None);
    }
    Ok(Some(principal(checked)))
}

/// The session secret the request carries. Over https only the `__Host-` cookie counts: one
/// without the prefix may have been planted by another host.
pub fn session_cookie(headers: &HeaderMap, secure: bool) -> Option<String> {
    cookie(headers, session_cookie_name(secure))
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Marks a successful answer whose request the handler already recorded in a table of its
/// own, so the token audit leaves it out: an agent's heartbeat is stored as a heartbeat (and
/// pruned by the monitor); auditing each would add thousands of rows per agent and day.
#[derive(Debug, Clone, Copy)]
pub struct RecordedElsewhere;

/// Sessions last at most this long, and lapse after this long unused.
pub const SESSION_ABSOLUTE_MS: i64 = 7 * 24 * 3600 * 1000;
pub const SESSION_IDLE_MS: i64 = 12 * 3600 * 1000;

pub(super) async fn authenticate_session(
    ledger: &Ledger,
    secret: String,
) -> Result<Option<Principal>, ApiError> {
    let hash = secrets::hash_secret(&secret);
    Ok(ledger
        .run(move |c| {
            let row = access::session_for_auth(c, &hash, now_ms(), SESSION_IDLE_MS)?;
            Ok(row.map(|s| Principal::User {
                id: s.user_id,
                email: s.email,
                role: s.role,
                csrf_token: s.csrf_token,
            }))
        })
        .await?)
}

/// The secrets of a session about to be created: the cookie's secret (stored only as its
/// hash) and the CSRF token its pages and API calls carry.
pub struct FreshSession {
    pub secret: String,
    pub csrf: String,
    secret_hash: Vec<u8>,
}

/// New random secrets for a session.
pub fn new_session() -> FreshSession {
    let secret = secrets::random_secret();
    FreshSession {
        secret_hash: secrets::hash_secret(&secret),
        secret,
        csrf: secrets::random_secret(),
    }
}

impl FreshSession {
    /// The ledger row of this session for `user_id`, with the lifetimes sessions have.
    pub fn row<'a>(&'a self, user_id: i64, client_addr: Option<&'a str>) -> NewSession<'a> {
        NewSession {
            user_id,
            secret_hash: &self.secret_hash,
            csrf_token: &self.csrf,
            client_addr,
            idle_ms: SESSION_IDLE_MS,
            absolute_ms: SESSION_ABSOLUTE_MS,
        }
    }
}

/// Creates a session for `user_id` and returns its secrets.
pub fn open_session(
    c: &rusqlite::Connection,
    user_id: i64,
    client_addr: Option<&str>,
) -> Result<FreshSession, LedgerError> {
    let session = new_session();
    access::create_session(c, &session.row(user_id, client_addr), now_ms())?;
    Ok(session)
}

/// Creates a session for `user_id` and returns the cookie secret.
pub fn create_session(
    c: &rusqlite::Connection,
    user_id: i64,
    client_addr: Option<&str>,
) -> Result<String, LedgerError> {
    Ok(open_session(c, user_id, client_addr)?.secret)
}

pub fn session_cookie_header(secret: &str, secure: bool) -> String {
    format!(
        "{}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        session_cookie_name(secure),
        SESSION_ABSOLUTE_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn expired_session_cookie_header(secure: bool) -> String {
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        session_cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

/// A cookie-authenticated request that changes state must prove it came from our own pages:
/// an `X-CSRF-Token` header matching the session's, or an Origin/Referer of our public URL.
fn check_csrf(
    principal: &Principal,
    method: &Method,
    headers: &HeaderMap,
    public_url: &str,
) -> Result<(), ApiError> {
    let Principal::User { csrf_token, .. } = principal else {
        return Ok(());
    };
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let header_token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if header_token.is_some_and(|t| secrets::hashes_equal(t.as_bytes(), csrf_token.as_bytes())) {
        return Ok(());
    }
    let same_origin = |v: &str| v == public_url || v.starts_with(&format!("{public_url}/"));
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let referer = headers.get(header::REFERER).and_then(|v| v.to_str().ok());
    if origin.is_some_and(same_origin) || (origin.is_none() && referer.is_some_and(same_origin)) {
        return Ok(());
    }
    Err(ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "csrf",
        "this request changes state but carries no valid CSRF token or same-origin header",
    ))
}
