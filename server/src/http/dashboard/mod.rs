//! The browser dashboard: server-rendered HTML (maud), one stylesheet and one small script
//! served from `/assets`, nothing from elsewhere.
//!
//! Every page is a function returning `Markup` inside [`layout`]. Every form posts to the
//! dashboard and works without JavaScript; the script only adds live logs (server-sent events
//! from the API's log stream) and a periodic refresh of status tables.
//!
//! Access: each route and method declares its [`Need`] in [`table`], and [`guard`] enforces it, like the
//! API's `require` layer does for `/api/v1`: a visitor without a session is sent to `/login`, a
//! role that does not suffice gets a 403 page, and every POST must carry the session's CSRF
//! token in a hidden `_csrf` field. Public forms (login, setup, reset) carry a token that must
//! match a `SameSite=Strict` cookie set with the form (double submit). Actions call the same
//! functions as the API's handlers, never the API over HTTP.

mod access;
mod apps;
mod services;
mod system;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::AppState;
use super::auth::{self, Need, Principal};
use super::error::ApiError;
use crate::secrets;

/// The stylesheet and the script, embedded in the binary.
const CSS: &str = include_str!("app.css");
const JS: &str = include_str!("app.js");

/// Nothing runs or loads but our own assets; no inline script or style is allowed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The cookie that public forms (no session yet) are checked against, over http and (with the
/// `__Host-` prefix, so no other host can plant one) over https.
const FORM_COOKIE: &str = "rp_form";
const HOST_FORM_COOKIE: &str = "__Host-rp_form";

/// The name of the hidden CSRF field in every form.
pub const CSRF_FIELD: &str = "_csrf";

/// Every dashboard page and action: method, path, the access it needs, and its handler. Like
/// the API's table, a path's GET and POST are separate rows, so a form's action declares the
/// access it needs and its handler never checks it again.
fn table() -> Table {
    use axum::http::Method as M;
    let mut t: Table = vec![(
        M::GET,
        "/",
        Need::Authenticated,
        get(|| async { see_other("/apps") }),
    )];
    t.extend(access::table());
    t.extend(apps::table());
    t.extend(services::table());
    t.extend(system::table());
    t
}

/// The dashboard's routes as (method, path, need), for tests.
pub fn operations() -> Vec<(Method, &'static str, Need)> {
    table().into_iter().map(|(m, p, n, _)| (m, p, n)).collect()
}

/// The routes that change state (every method but GET and HEAD), as (path, method, need).
pub fn write_routes() -> Vec<(&'static str, Method, Need)> {
    operations()
        .into_iter()
        .filter(|(m, _, _)| !matches!(*m, Method::GET | Method::HEAD))
        .map(|(m, p, n)| (p, m, n))
        .collect()
}

pub fn routes(state: &AppState) -> Router<AppState> {
    let assets = Router::new()
        .route("/assets/app.css", get(|| async { asset(CSS, "text/css") }))
        .route(
            "/assets/app.js",
            get(|| async { asset(JS, "text/javascript") }),
        );
    table()
        .into_iter()
        .fold(assets, |router, (_, path, need, handler)| {
            router.route(
                path,
                handler.route_layer(axum::middleware::from_fn_with_state(
                    (state.clone(), need),
                    guard,
                )),
            )
        })
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Who is looking at a page, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub principal: Principal,
    pub email: String,
    pub role: rustploy_api::states::Role,
    /// The session's CSRF token, for the forms the page renders.
    pub csrf: String,
}

impl Viewer {
    pub fn can(&self, need: Need) -> bool {
        self.principal.allows(need)
    }
}

/// The CSRF token of a public form (matches the `rp_form` cookie).
#[derive(Debug, Clone)]
pub struct FormToken(pub String);

/// The dashboard's access layer (see the module documentation).
async fn guard(
    State((state, need)): State<(AppState, Need)>,
    mut req: Request,
    next: Next,
) -> Response {
    let write = req.method() != Method::GET && req.method() != Method::HEAD;
    let secure = auth::https(&state.settings);
    let form_cookie = if secure {
        HOST_FORM_COOKIE
    } else {
        FORM_COOKIE
    };
    if need == Need::Public {
        let cookie = auth::cookie(req.headers(), form_cookie).filter(|c| c.len() >= 32);
        if write {
            let (req, field) = match take_csrf_field(req).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            let Some(token) = cookie.filter(|c| same(c, field.as_deref())) else {
                return csrf_refused();
            };
            let mut req = req;
            req.extensions_mut().insert(FormToken(token));
            return next.run(req).await;
        }
        let (token, fresh) = match cookie {
            Some(c) => (c, false),
            None => (secrets::random_secret(), true),
        };
        req.extensions_mut().insert(FormToken(token.clone()));
        let mut response = next.run(req).await;
        if fresh {
            let value = format!(
                "{form_cookie}={token}; Path=/; HttpOnly; SameSite=Strict{}",
                if secure { "; Secure" } else { "" }
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        return response;
    }
    let principal = match auth::session_cookie(req.headers(), secure) {
        Some(secret) => auth::authenticate_session(&state.ledger, secret).await,
        None => Ok(None),
    };
    let principal = match principal {
        Ok(Some(p)) => p,
        Ok(None) => return to_login(&req),
        Err(e) => return error_page(None, e),
    };
    let Principal::User {
        email,
        role,
        csrf_token,
        ..
    } = principal.clone()
    else {
        return to_login(&req);
    };
    let viewer = Viewer {
        principal,
        email,
        role,
        csrf: csrf_token,
    };
    if !viewer.can(need) {
        return error_page(Some(&viewer), ApiError::forbidden(need.as_str()));
    }
    if write {
        let (r, field) = match take_csrf_field(req).await {
            Ok(r) => r,
            Err(r) => return r,
        };
        if !same(&viewer.csrf, field.as_deref()) {
            return csrf_refused();
        }
        req = r;
    }
    req.extensions_mut().insert(viewer);
    next.run(req).await
}

fn same(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| secrets::hashes_equal(g.as_bytes(), expected.as_bytes()))
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(rename = "_csrf")]
    csrf: Option<String>,
}

/// Reads the form body to find its `_csrf` field, and gives back a request with the same body.
async fn take_csrf_field(req: Request) -> Result<(Request, Option<String>), Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, super::BODY_LIMIT)
        .await
        .map_err(|_| super::error::too_large().into_response())?;
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let field = if is_form {
        let probe = Request::builder()
            .method(Method::POST)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(bytes.clone()))
            .map_err(|e| ApiError::internal(e).into_response())?;
        axum::Form::<CsrfOnly>::from_request(probe, &())
            .await
            .ok()
            .and_then(|f| f.0.csrf)
    } else {
        None
    };
    Ok((Request::from_parts(parts, Body::from(bytes)), field))
}

fn csrf_refused() -> Response {
    respond(
        StatusCode::FORBIDDEN,
        layout(
            None,
            "Form expired",
            html! {
                p.notice.error role="alert" {
                    "This form did not carry a valid security token (it may be from an old page or another site). "
                    "Go back, reload the page and send it again."
                }
            },
        ),
    )
}

/// Sends a visitor without a session to the login page, to come back here afterwards.
fn to_login(req: &Request) -> Response {
    let back = if req.method() == Method::GET {
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    } else {
        "/"
    };
    see_other(&format!("/login?next={}", percent(back)))
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// A full HTML answer with the dashboard's security headers.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// Where a page sits in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Apps,
    Import,
    Tokens,
    Users,
    Agents,
    Settings,
}

/// The page frame: navigation for a signed-in viewer, the title, the content.
pub fn layout(viewer: Option<(&Viewer, Section)>, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Rustploy" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "Rustploy" }
                    @if let Some((v, at)) = viewer {
                        nav {
                            (nav_link("/apps", "Apps", at == Section::Apps))
                            @if v.can(Need::Deploy) { (nav_link("/apps/import", "Import", at == Section::Import)) }
                            @if v.can(Need::Admin) {
                                (nav_link("/tokens", "Tokens", at == Section::Tokens))
                                (nav_link("/users", "Users", at == Section::Users))
                            }
                            (nav_link("/agents", "Agents", at == Section::Agents))
                            (nav_link("/settings", "Settings", at == Section::Settings))
                        }
                        form.logout method="post" action="/logout" {
                            (csrf(&v.csrf))
                            span.who { (v.email) " · " (v.role.as_str()) }
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

fn nav_link(href: &str, text: &str, current: bool) -> Markup {
    html! {
        @if current { a href=(href) aria-current="page" { (text) } } @else { a href=(href) { (text) } }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(token); }
}

/// A failed form: the message, and the field it is about (when known).
#[derive(Debug, Default, Clone)]
pub struct Problem {
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn at(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    /// The message when it is about `field`.
    pub fn beside(&self, field: &str) -> Option<&str> {
        (self.field.as_deref() == Some(field)).then_some(self.message.as_str())
    }

    /// The message when it is about none of `fields` (shown above the form).
    pub fn elsewhere(&self, fields: &[&str]) -> Option<&str> {
        match &self.field {
            Some(f) if fields.contains(&f.as_str()) => None,
            _ if self.message.is_empty() => None,
            _ => Some(self.message.as_str()),
        }
    }
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Self {
        let field = e
            .details
            .as_ref()
            .and_then(|d| d["field"].as_str())
            .map(|f| f.split('.').next().unwrap_or(f).to_string());
        Self {
            field,
            message: e.message,
        }
    }
}

/// A labelled input, its error beside it, keeping what was typed.
pub fn field(label: &str, name: &str, kind: &str, value: &str, problem: &Problem) -> Markup {
    optional_field(label, name, kind, value, None, problem)
}

/// A [`field`] that may be left empty, with `placeholder` saying what empty stands for.
pub fn optional_field(
    label: &str,
    name: &str,
    kind: &str,
    value: &str,
    placeholder: Option<&str>,
    problem: &Problem,
) -> Markup {
    let error = problem.beside(name);
    let id = format!("f-{name}");
    let err_id = format!("{id}-error");
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) }
            @if let Some(e) = error {
                input id=(id) name=(name) type=(kind) value=(value) placeholder=[placeholder] aria-invalid="true" aria-describedby=(err_id);
                p.field-error id=(err_id) role="alert" { (e) }
            } @else {
                input id=(id) name=(name) type=(kind) value=(value) placeholder=[placeholder];
            }
        }
    }
}

/// An error shown above a form, when it is not about one of its fields.
pub fn form_error(problem: &Problem, fields: &[&str]) -> Markup {
    html! {
        @if let Some(m) = problem.elsewhere(fields) { p.notice.error role="alert" { (m) } }
    }
}

/// An action that is hard to undo, behind a second click: `open` shows the warning and the
/// button (`yes`) that posts to `action`. It needs no script, like every dashboard form.
pub fn confirm(open: &str, yes: &str, action: &str, csrf_token: &str, warning: Markup) -> Markup {
    html! {
        details.confirm {
            summary { (open) "…" }
            form method="post" action=(action) {
                (csrf(csrf_token))
                (warning)
                button.danger type="submit" { (yes) }
            }
        }
    }
}

/// A state as a coloured badge.
pub fn badge(state: &str) -> Markup {
    let class = match state {
        "healthy" | "online" | "routed" | "deployed" | "ok" | "live" | "done" | "succeeded" => {
            "good"
        }
        "failed" | "offline" | "error" | "rejected" | "down" | "unhealthy" | "missing" | "dead" => {
            "bad"
        }
        "queued" | "running" | "pending" | "stale" | "starting" => "busy",
        _ => "quiet",
    };
    html! { span class={ "badge " (class) } { (state) } }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn when(ms: i64) -> String {
    let s = crate::domain::rfc3339(ms);
    match s.get(..19) {
        Some(head) => head.replace('T', " "),
        None => s,
    }
}

/// An RFC 3339 time as [`when`] shows it.
pub fn when_str(s: &str) -> String {
    s.get(..19).map(|h| h.replace('T', " ")).unwrap_or_default()
}

/// A duration in milliseconds for people: `850 ms`, `12 s`, `3 min 4 s`.
pub fn duration(ms: i64) -> String {
    if ms < 1000 {
        format!("{} ms", ms.max(0))
    } else if ms < 60_000 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// An error as a page: the API's message and status, in the dashboard's frame.
pub fn error_page(viewer: Option<&Viewer>, e: ApiError) -> Response {
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        s if s.is_server_error() => "Something went wrong",
        _ => "Cannot do that",
    };
    let message = if e.code == "forbidden" {
        "Your role does not allow this. Ask an owner.".to_string()
    } else {
        e.message.clone()
    };
    respond(
        e.status,
        layout(
            viewer.map(|v| (v, Section::Apps)),
            title,
            html! {
                p.notice.error role="alert" { (message) }
                p { a href="/apps" { "Back to the apps" } }
            },
        ),
    )
}

/// The routes of one dashboard module: `(path, need, handler)`.
/// Rows of the route table: method, path, the access it needs, and its handler.
type Table = Vec<(Method, &'static str, Need, MethodRouter<AppState>)>;

/// Shorthand for a POST-only route.
fn action<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    post(handler)
}
