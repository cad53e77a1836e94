//! Apps: the list, importing one, and an app's tabs (overview, deployments and their live
//! logs, env vars, domains, GitHub: connecting a repository, its secret shown once).

use axum::Extension;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};
use rustploy_actors::ledger::apps::{self, AppSummary};
use rustploy_actors::ledger::deployments::views::{self as deployment_views, DeploymentRow};
use rustploy_actors::ledger::trust::{self, Trust};
use rustploy_api::apps::App;
use rustploy_api::states::{DeploymentState, DomainSource, TlsMode};
use serde::Deserialize;

use super::{
    Problem, Section, Table, Viewer, action, badge, confirm, csrf, duration, error_page, field,
    form_error, layout, percent, respond, see_other, when, when_str,
};
use crate::http::AppState;
use crate::http::auth::Need;
use crate::http::error::{ApiError, ApiResult};
use crate::http::op_errors::no_app;
use crate::http::webhook_api;
use crate::ops::deploys;
use crate::ops::domains::{self, NewDomain};
use crate::ops::env::{self, NewVar};
use crate::ops::github::{self, ConnectRequest, Integration};
use crate::ops::import::{self, ImportError, ImportRequest};
use crate::ops::trust as app_trust;

pub(super) fn table() -> Table {
    use axum::http::Method as M;
    vec![
        (M::GET, "/apps", Need::Read, get(list)),
        (M::GET, "/apps/import", Need::Deploy, get(import_form)),
        (M::POST, "/apps/import", Need::Deploy, action(import_submit)),
        (M::GET, "/apps/{app}", Need::Read, get(overview)),
        (
            M::GET,
            "/apps/{app}/deployments",
            Need::Read,
            get(deployments),
        ),
        (M::POST, "/apps/{app}/deploy", Need::Deploy, action(deploy)),
        (
            M::POST,
            "/apps/{app}/rollback",
            Need::Deploy,
            action(rollback),
        ),
        (
            M::POST,
            "/apps/{app}/trusted",
            Need::Admin,
            action(trust_set),
        ),
        (M::GET, "/deployments/{id}", Need::Read, get(deployment)),
        (
            M::POST,
            "/deployments/{id}/cancel",
            Need::Deploy,
            action(cancel),
        ),
        (M::GET, "/apps/{app}/env", Need::Read, get(env)),
        (M::POST, "/apps/{app}/env", Need::Deploy, action(env_set)),
        (
            M::POST,
            "/apps/{app}/env/import",
            Need::Deploy,
            action(env_import),
        ),
        (
            M::POST,
            "/apps/{app}/env/delete",
            Need::Deploy,
            action(env_delete),
        ),
        (M::GET, "/apps/{app}/domains", Need::Read, get(domains)),
        (
            M::POST,
            "/apps/{app}/domains",
            Need::Deploy,
            action(domain_add),
        ),
        (
            M::POST,
            "/apps/{app}/domains/delete",
            Need::Deploy,
            action(domain_remove),
        ),
        (M::GET, "/apps/{app}/github", Need::Read, get(github)),
        (
            M::POST,
            "/apps/{app}/github",
            Need::Deploy,
            action(github_connect),
        ),
        (
            M::POST,
            "/apps/{app}/github/rotate",
            Need::Deploy,
            action(github_rotate),
        ),
        (
            M::POST,
            "/apps/{app}/github/disconnect",
            Need::Deploy,
            action(github_disconnect),
        ),
    ]
}

// The apps list.

fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

/// The apps list page (its body is refreshed by the script every few seconds).
pub fn apps_page(v: &Viewer, rows: &[AppSummary]) -> maud::Markup {
    layout(
        Some((v, Section::Apps)),
        "Apps",
        html! {
            @if v.can(Need::Deploy) { p { a.button href="/apps/import" { "Import an app" } } }
            @if rows.is_empty() {
                p.empty { "No apps yet." @if v.can(Need::Deploy) { " " a href="/apps/import" { "Import a repository" } " to start." } }
            } @else {
                div.scroll id="live" data-refresh="5" { table.apps {
                    thead { tr { th { "App" } th { "Status" } th { "Last deployment" } th { "Domains" } th { "Health" } } }
                    tbody {
                        @for a in rows {
                            tr {
                                td { a href={ "/apps/" (percent(&a.name)) } { (a.name) } }
                                td { @match &a.last { Some(d) => (badge(d.state.as_str())), None => (badge("new")) } }
                                td {
                                    @if let Some(d) = &a.last {
                                        a href={ "/deployments/" (d.id) } { "#" (d.id) }
                                        " " (when(d.created_at))
                                        @if let Some(c) = &d.commit_sha { " " code { (short(c)) } }
                                    } @else { "never deployed" }
                                }
                                td { @for d in &a.domains { span.domain { (d) } " " } }
                                td { @if a.live { (badge("live")) } @else { (badge("not running")) } }
                            }
                        }
                    }
                } }
            }
        },
    )
}

async fn list(State(state): State<AppState>, Extension(v): Extension<Viewer>) -> Response {
    match state.ledger.run(|c| apps::summaries(c)).await {
        Ok(rows) => respond(StatusCode::OK, apps_page(&v, &rows)),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

// Importing.

#[derive(Deserialize, Default)]
struct ImportForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    repo_url: String,
    #[serde(default)]
    branch: String,
    #[serde(default)]
    compose_path: String,
    #[serde(default)]
    deploy_key: String,
    #[serde(default)]
    https_token: String,
}

const IMPORT_FIELDS: &[&str] = &[
    "name",
    "repo_url",
    "branch",
    "compose_path",
    "deploy_key",
    "https_token",
];

fn import_page(v: &Viewer, form: &ImportForm, problem: &Problem) -> Markup {
    let branch = if form.branch.is_empty() {
        "main"
    } else {
        form.branch.as_str()
    };
    layout(
        Some((v, Section::Import)),
        "Import an app",
        html! {
            p.hint { "Rustploy clones the branch, finds a compose file or a Dockerfile, and says what it will run. Nothing is deployed yet." }
            form.card method="post" action="/apps/import" {
                (csrf(&v.csrf))
                (form_error(problem, IMPORT_FIELDS))
                (field("App name (lowercase letters, digits, dashes)", "name", "text", &form.name, problem))
                (field("Repository URL", "repo_url", "text", &form.repo_url, problem))
                (field("Branch", "branch", "text", branch, problem))
                (field("Compose file path (empty: detect)", "compose_path", "text", &form.compose_path, problem))
                details {
                    summary { "Private repository" }
                    div.field.invalid[problem.beside("deploy_key").is_some()] {
                        label for="f-deploy_key" { "SSH deploy key (private key)" }
                        textarea id="f-deploy_key" name="deploy_key" rows="4" { (form.deploy_key) }
                        @if let Some(e) = problem.beside("deploy_key") { p.field-error role="alert" { (e) } }
                    }
                    (field("HTTPS access token", "https_token", "password", "", problem))
                }
                button type="submit" { "Import" }
            }
        },
    )
}

async fn import_form(Extension(v): Extension<Viewer>) -> Response {
    respond(
        StatusCode::OK,
        import_page(&v, &ImportForm::default(), &Problem::default()),
    )
}

/// A form field's text, trimmed; `None` when it was left empty.
pub(super) fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

async fn import_submit(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Form(form): Form<ImportForm>,
) -> Response {
    let request = ImportRequest {
        name: form.name.trim().to_string(),
        repo_url: form.repo_url.trim().to_string(),
        branch: some(&form.branch),
        compose_path: some(&form.compose_path),
        deploy_key: some(&form.deploy_key),
        https_token: some(&form.https_token),
        trusted: false,
    };
    let e = match import::import(&state, &v.principal, request).await {
        Ok(app) => return respond(StatusCode::CREATED, imported_page(&v, &app)),
        Err(e @ (ImportError::Interrupted(_) | ImportError::Ledger(_))) => {
            return error_page(Some(&v), e.into());
        }
        Err(e) => e,
    };
    let mut form = form;
    // A URL with a token in it is not sent back into the page.
    if matches!(e, ImportError::CredentialsInUrl) {
        form.repo_url.clear();
    }
    let problem = Problem {
        field: e.field().map(str::to_string),
        message: e.to_string(),
    };
    // The page answers with the status the API gives the same failure.
    let status = ApiError::from(e).status;
    respond(status, import_page(&v, &form, &problem))
}

/// What an import found, and why.
fn imported_page(v: &Viewer, app: &App) -> Markup {
    let name = app.name.as_str();
    let Some(i) = &app.import else {
        return layout(
            Some((v, Section::Import)),
            &format!("Imported {name}"),
            html! {},
        );
    };
    let text = |s: Option<&str>| s.unwrap_or("—").to_string();
    layout(
        Some((v, Section::Import)),
        &format!("Imported {name}"),
        html! {
            div.notice.good role="status" { "The app " strong { (name) } " was created. Here is what Rustploy found." }
            dl.facts {
                dt { "Repository" } dd.mono { (i.repo_url) }
                dt { "Branch" } dd { (i.branch) }
                dt { "Commit" } dd.mono { (i.commit_sha) }
                dt { "Build" } dd { (i.build_mode) }
                dt { "Compose file" } dd.mono { (text(i.compose_path.as_deref())) }
                dt { "Routed service" } dd { (i.routed_service) }
                dt { "Port" } dd { (text(i.port.map(|p| p.to_string()).as_deref())) }
                dt { "Health check path" } dd.mono { (text(i.healthcheck_path.as_deref())) }
                dt { "Services" } dd { (i.services.join(", ")) }
            }
            @if !i.reasons.is_empty() {
                h2 { "Why" }
                ul.reasons { @for r in &i.reasons { li { (r) } } }
            }
            @if !i.warnings.is_empty() {
                h2 { "Warnings" }
                ul.warnings { @for w in &i.warnings { li { (w) } } }
            }
            div.actions {
                form method="post" action={ "/apps/" (percent(name)) "/deploy" } {
                    (csrf(&v.csrf))
                    button type="submit" { "Deploy now" }
                }
                a.button.secondary href={ "/apps/" (percent(name)) "/env" } { "Set env vars first" }
            }
        },
    )
}

// An app's tabs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tab {
    Overview,
    Deployments,
    Env,
    Domains,
    Services,
    Github,
}

/// What every tab shows above itself.
pub(super) struct AppHead {
    pub(super) id: i64,
    pub(super) name: String,
    last_state: Option<DeploymentState>,
}

pub(super) async fn app_head(state: &AppState, key: &str) -> ApiResult<AppHead> {
    let k = key.to_string();
    let head = state
        .ledger
        .run(move |c| match apps::resolve(c, &k)? {
            Some(id) => apps::head(c, id),
            None => Ok(None),
        })
        .await?;
    head.map(|h| AppHead {
        id: h.id,
        name: h.name,
        last_state: h.last_state,
    })
    .ok_or_else(|| no_app(key))
}

pub(super) fn app_frame(v: &Viewer, head: &AppHead, tab: Tab, content: Markup) -> Markup {
    let base = format!("/apps/{}", percent(&head.name));
    let tab_link = |t: Tab, href: String, text: &str| {
        html! {
            @if t == tab { a href=(href) aria-current="page" { (text) } } @else { a href=(href) { (text) } }
        }
    };
    layout(
        Some((v, Section::Apps)),
        &head.name,
        html! {
            div.app-head {
                @if let Some(s) = head.last_state { (badge(s.as_str())) } @else { (badge("new")) }
                @if v.can(Need::Deploy) {
                    form.inline method="post" action={ (base) "/deploy" } {
                        (csrf(&v.csrf))
                        button type="submit" { "Deploy" }
                    }
                    form.inline method="post" action={ (base) "/rollback" } {
                        (csrf(&v.csrf))
                        button.secondary type="submit" { "Roll back" }
                    }
                }
            }
            nav.tabs {
                (tab_link(Tab::Overview, base.clone(), "Overview"))
                (tab_link(Tab::Deployments, format!("{base}/deployments"), "Deployments"))
                (tab_link(Tab::Env, format!("{base}/env"), "Env vars"))
                (tab_link(Tab::Domains, format!("{base}/domains"), "Domains"))
                (tab_link(Tab::Services, format!("{base}/services"), "Services"))
                (tab_link(Tab::Github, format!("{base}/github"), "GitHub"))
            }
            (content)
        },
    )
}

/// The newest `limit` deployments of app `app`.
fn recent_deployments(
    c: &rusqlite::Connection,
    app: i64,
    limit: i64,
) -> Result<Vec<DeploymentRow>, rustploy_actors::ledger::LedgerError> {
    deployment_views::page(c, app, i64::MAX, limit)
}

fn deployments_table(v: &Viewer, rows: &[DeploymentRow], actions: bool) -> Markup {
    html! {
        div.scroll { table {
            thead { tr { th { "#" } th { "State" } th { "Commit" } th { "Trigger" } th { "Created" } th { "Duration" }
                @if actions { th {} } } }
            tbody {
                @for d in rows {
                    tr {
                        td { a href={ "/deployments/" (d.id) } { "#" (d.id) } }
                        td { (badge(d.state.as_str()))
                            @if let (Some(s), DeploymentState::Running) = (d.step, d.state) { " " small { (s) } }
                            @if let Some(r) = &d.reason { br; small.reason { (r) } } }
                        td { @if let Some(c) = &d.commit_sha { code { (short(c)) } } @else if let Some(r) = &d.requested_ref { code { (r) } } }
                        td { (d.trigger) @if let Some(of) = d.rollback_of { " of #" (of) }
                            @if let Some(b) = &d.triggered_by { br; small { (b) } } }
                        td { (when(d.created_at)) }
                        td { @if let (Some(s), Some(f)) = (d.started_at, d.finished_at) { (duration(f - s)) }
                             @else if d.started_at.is_some() { "running" } }
                        @if actions {
                            td {
                                @if v.can(Need::Deploy) && d.state.is_active() {
                                    form method="post" action={ "/deployments/" (d.id) "/cancel" } {
                                        (csrf(&v.csrf))
                                        button.danger type="submit" { "Cancel" }
                                    }
                                }
                                @if v.can(Need::Deploy) && d.state == DeploymentState::Superseded && d.commit_sha.is_some() {
                                    form method="post" action="rollback" {
                                        (csrf(&v.csrf))
                                        input type="hidden" name="deployment_id" value=(d.id);
                                        button.secondary type="submit" { "Roll back to this" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } }
    }
}

async fn overview(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
) -> Response {
    let head = match app_head(&state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(&v), e),
    };
    let app = head.id;
    let read = state
        .ledger
        .run(move |c| {
            Ok((
                recent_deployments(c, app, 5)?,
                domains::domains_of(c, app)?,
                trust::get(c, app)?.unwrap_or(Trust {
                    trusted: false,
                    by: None,
                    at: None,
                }),
            ))
        })
        .await;
    let (recent, domains, trusted) = match read {
        Ok(r) => r,
        Err(e) => return error_page(Some(&v), e.into()),
    };
    // A failure reads as the API says it (an internal one without its cause, which is logged).
    let runtime = deploys::runtime_of(&state, head.name.clone())
        .await
        .map_err(ApiError::from);
    let content = html! {
        div id="live" data-refresh="5" {
            section {
                h2 { "Runtime" }
                @match &runtime {
                    Err(e) => { p.notice.error { (e.message) } }
                    Ok(rt) => {
                        @if !rt.engine.ok {
                            p.notice.error { "Docker: " (rt.engine.error.as_deref().unwrap_or("—")) }
                        }
                        @if let Some(first) = rt.route.first() {
                            p { "Live release: " a href={ "/deployments/" (first.deployment_id) } { "#" (first.deployment_id) }
                                " · route " @for r in &rt.route { code { (r.url) } " " } }
                        } @else { p.empty { "No release is live." } }
                        @let containers = rt.containers.as_deref().unwrap_or_default();
                        @if !containers.is_empty() {
                            div.scroll { table {
                                thead { tr { th { "Container" } th { "Service" } th { "State" } th { "Health" } th { "Up" } th { "Restarts" } } }
                                tbody { @for c in containers { tr {
                                    td.mono { (c.name) }
                                    td { (c.service) }
                                    td { (badge(&c.state)) }
                                    td { (badge(c.health.as_deref().unwrap_or("none"))) }
                                    td { @if let Some(s) = c.uptime_secs { (duration(s * 1000)) } }
                                    td { (c.restart_count) }
                                } } }
                            } }
                        }
                    }
                }
            }
            section {
                h2 { "Domains" }
                @if domains.is_empty() { p.empty { "No domains. " a href="domains" { "Add one" } "." } }
                ul.plain { @for d in &domains { li { (badge(d.status.as_str())) " " a href=(d.url) rel="noreferrer" { (d.url) } } } }
            }
            section {
                h2 { "Recent deployments" }
                @if recent.is_empty() { p.empty { "None yet." } } @else { (deployments_table(&v, &recent, false)) }
            }
        }
        // Outside the refreshed part, so an open confirmation stays open.
        (trust_section(&v, &head, &trusted))
    };
    respond(StatusCode::OK, app_frame(&v, &head, Tab::Overview, content))
}

/// Whether the app is trusted, what that means, and (for owners) the switch.
fn trust_section(v: &Viewer, head: &AppHead, t: &Trust) -> Markup {
    let action = |to: bool| format!("/apps/{}/trusted?trusted={to}", percent(&head.name));
    html! {
        section.trust id="trust" {
            h2 { "Trusted" }
            p {
                @if t.trusted { (badge("trusted")) } @else { (badge("not trusted")) }
                @if let (Some(by), Some(at)) = (&t.by, t.at) {
                    " " small { "set by " (by) " at " (when(at)) }
                }
            }
            p.hint {
                "An app that is not trusted may not ask Docker for anything that reaches past its \
                 containers: privileged mode, extra capabilities, the host's devices, namespaces or \
                 network, loosened confinement, host paths outside its checkout, the Docker socket, \
                 or another app's volumes and networks. A deployment whose compose file asks for one \
                 fails and names it."
            }
            p.hint {
                "Trusting the app lifts these refusals: anyone who can push to its repository can \
                 then run code as root on this host. Only owners can change it, and each change is \
                 recorded in the audit log."
            }
            @if v.can(Need::Admin) {
                @if t.trusted {
                    (confirm("Stop trusting", "Check its compose file again", &action(false), &v.csrf, html! {
                        p { "Its next deployment fails if its compose file asks for what the policy refuses. The live release keeps running." }
                    }))
                } @else {
                    (confirm("Trust this app", "Trust it: allow root on this host", &action(true), &v.csrf, html! {
                        p.notice.error { "Whoever can push to this app's repository will be able to take over this host." }
                    }))
                }
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct TrustQuery {
    trusted: Option<String>,
}

async fn trust_set(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Query(q): Query<TrustQuery>,
) -> Response {
    let trusted = match q.trusted.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return error_page(
                Some(&v),
                ApiError::invalid("trusted", "say ?trusted=true or ?trusted=false"),
            );
        }
    };
    match app_trust::set(&state, &v.principal, key.clone(), trusted).await {
        Ok(_) => see_other(&format!("/apps/{}#trust", percent(&key))),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

async fn deployments(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
) -> Response {
    let head = match app_head(&state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(&v), e),
    };
    let app = head.id;
    let rows = match state
        .ledger
        .run(move |c| recent_deployments(c, app, 100))
        .await
    {
        Ok(r) => r,
        Err(e) => return error_page(Some(&v), e.into()),
    };
    let content = html! {
        div id="live" data-refresh="5" {
            @if rows.is_empty() { p.empty { "No deployments yet." } } @else { (deployments_table(&v, &rows, true)) }
        }
    };
    respond(
        StatusCode::OK,
        app_frame(&v, &head, Tab::Deployments, content),
    )
}

async fn deploy(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
) -> Response {
    match deploys::request_deploy(&state, &v.principal, key, None).await {
        Ok(d) => see_other(&format!("/deployments/{}", d.id)),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

#[derive(Deserialize, Default)]
struct RollbackForm {
    deployment_id: Option<String>,
}

async fn rollback(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<RollbackForm>,
) -> Response {
    let target = match form
        .deployment_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(s) => match s.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => {
                return error_page(
                    Some(&v),
                    ApiError::invalid("deployment_id", "deployment_id must be a deployment number"),
                );
            }
        },
    };
    match deploys::roll_back(&state, &v.principal, key, target).await {
        Ok(d) => see_other(&format!("/deployments/{}", d.id)),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

async fn cancel(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Response {
    match deploys::cancel(&state, id).await {
        Ok(_) => see_other(&format!("/deployments/{id}")),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

/// The most log lines a deployment page renders; the rest stream in or are paged by the API.
const LOG_LINES: i64 = 5000;

async fn deployment(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Response {
    let read = state
        .ledger
        .run(move |c| {
            let Some(d) = deployment_views::get(c, id)? else {
                return Ok(None);
            };
            // The newest lines, oldest first.
            let lines = deployment_views::newest_logs(c, id, LOG_LINES)?;
            Ok(Some((d.app_id, d, lines)))
        })
        .await;
    let (app, d, lines) = match read {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error_page(Some(&v), ApiError::not_found(format!("no deployment {id}")));
        }
        Err(e) => return error_page(Some(&v), e.into()),
    };
    let head = match app_head(&state, &app.to_string()).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(&v), e),
    };
    let after = lines.last().map(|l| l.seq).unwrap_or(0);
    let active = d.state.is_active();
    let content = html! {
        section {
            h2 { "Deployment #" (d.id) " " span id="deployment-state" { (badge(d.state.as_str())) } }
            dl.facts {
                dt { "Commit" } dd.mono { @if let Some(c) = &d.commit_sha { (c) } @else { (d.requested_ref.as_deref().unwrap_or("—")) } }
                dt { "Trigger" } dd { (d.trigger) @if let Some(b) = &d.triggered_by { " by " (b) } }
                dt { "Created" } dd { (when(d.created_at)) }
                @if let (Some(s), Some(f)) = (d.started_at, d.finished_at) { dt { "Duration" } dd { (duration(f - s)) } }
                @if let Some(r) = &d.reason { dt { "Reason" } dd { (r) } }
            }
            @if active && v.can(Need::Deploy) {
                form method="post" action={ "/deployments/" (d.id) "/cancel" } {
                    (csrf(&v.csrf))
                    button.danger type="submit" { "Cancel" }
                }
            }
            h2 { "Log" }
            @if active { p.hint id="log-status" { "Following the log as it is written." } }
            pre.log id="log" data-stream={ "/api/v1/deployments/" (d.id) "/logs/stream" } data-after=(after) data-active=(active) {
                @for l in &lines {
                    span class={ "line " (l.stream) } data-seq=(l.seq) { (l.line) "\n" }
                }
            }
            @if !active { p.hint { "The deployment has finished." } }
        }
    };
    respond(
        StatusCode::OK,
        app_frame(&v, &head, Tab::Deployments, content),
    )
}

// Env vars.

#[derive(Deserialize, Default)]
struct EnvQuery {
    reveal: Option<bool>,
    edit: Option<String>,
}

#[derive(Deserialize, Default)]
struct EnvForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    secret: Option<String>,
}

#[derive(Deserialize, Default)]
struct DotenvForm {
    #[serde(default)]
    dotenv: String,
    secret: Option<String>,
}

async fn env(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Response {
    let draft = EnvForm {
        key: q.edit.clone().unwrap_or_default(),
        ..Default::default()
    };
    env_page(
        &state,
        &v,
        key,
        q.reveal.unwrap_or(false),
        StatusCode::OK,
        &draft,
        &DotenvForm::default(),
        &Problem::default(),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn env_page(
    state: &AppState,
    v: &Viewer,
    key: String,
    reveal: bool,
    status: StatusCode,
    draft: &EnvForm,
    dotenv: &DotenvForm,
    problem: &Problem,
) -> Response {
    let head = match app_head(state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e),
    };
    let vars = match env::read(state, &v.principal, head.name.clone(), reveal).await {
        Ok(vars) => vars,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let vars = vars.vars;
    // Editing a plain variable starts from its value; a secret one is typed again.
    let mut draft_value = draft.value.clone();
    let mut draft_secret = draft.secret.is_some();
    if draft_value.is_empty()
        && let Some(existing) = vars.get(&draft.key)
    {
        draft_value = existing.value.clone().unwrap_or_default();
        draft_secret = existing.secret;
    }
    let base = format!("/apps/{}", percent(&head.name));
    let can_edit = v.can(Need::Deploy);
    let content = html! {
        section {
            @if vars.is_empty() { p.empty { "No env vars yet." } } @else {
                div.scroll { table {
                    thead { tr { th { "Key" } th { "Value" } th { "Updated" } th {} } }
                    tbody {
                        @for (k, var) in &vars {
                            tr {
                                td.mono { (k) @if var.secret { " " (badge("secret")) } }
                                td.mono { @if var.masked { span.masked { "••••••••" } } @else { (var.value.as_deref().unwrap_or("")) } }
                                td { (when_str(&var.updated_at)) }
                                td {
                                    @if can_edit {
                                        a href={ (base) "/env?edit=" (percent(k)) } { "Edit" }
                                        form.inline method="post" action={ (base) "/env/delete" } {
                                            (csrf(&v.csrf))
                                            input type="hidden" name="key" value=(k);
                                            button.danger type="submit" { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
                @if v.can(Need::Admin) && !reveal && vars.values().any(|x| x.masked) {
                    p { a href={ (base) "/env?reveal=true" } { "Reveal secret values" } " (recorded in the audit log)" }
                }
            }
        }
        @if can_edit {
            section {
                h2 { "Set a variable" }
                form.card method="post" action={ (base) "/env" } {
                    (csrf(&v.csrf))
                    (form_error(problem, &["key", "value", "dotenv"]))
                    (field("Key", "key", "text", &draft.key, problem))
                    (field("Value", "value", "text", &draft_value, problem))
                    label.inline {
                        @if draft_secret { input type="checkbox" name="secret" value="on" checked; } @else { input type="checkbox" name="secret" value="on"; }
                        " Secret (masked once saved)"
                    }
                    button type="submit" { "Save" }
                }
                h2 { "Paste a .env file" }
                form.card method="post" action={ (base) "/env/import" } {
                    (csrf(&v.csrf))
                    div.field.invalid[problem.beside("dotenv").is_some()] {
                        label for="f-dotenv" { "KEY=value lines" }
                        textarea id="f-dotenv" name="dotenv" rows="6" { (dotenv.dotenv) }
                        @if let Some(e) = problem.beside("dotenv") { p.field-error role="alert" { (e) } }
                    }
                    label.inline {
                        @if dotenv.secret.is_some() { input type="checkbox" name="secret" value="on" checked; } @else { input type="checkbox" name="secret" value="on"; }
                        " Mark all of them secret"
                    }
                    button type="submit" { "Save all" }
                }
                p.hint { "Changes apply at the next deployment." }
            }
        }
    };
    respond(status, app_frame(v, &head, Tab::Env, content))
}

async fn env_set(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<EnvForm>,
) -> Response {
    let var = NewVar {
        key: form.key.trim().to_string(),
        value: form.value.clone(),
        secret: form.secret.is_some(),
    };
    let p = match env::write(&state, key.clone(), vec![var]).await {
        Ok(_) => return see_other(&format!("/apps/{}/env", percent(&key))),
        Err(e @ env::WriteError::BadKey { .. }) => Problem::at("key", e.to_string()),
        Err(e @ env::WriteError::TooLarge { .. }) => Problem::at("value", e.to_string()),
        Err(e) => return error_page(Some(&v), e.into()),
    };
    env_page(
        &state,
        &v,
        key,
        false,
        StatusCode::UNPROCESSABLE_ENTITY,
        &form,
        &DotenvForm::default(),
        &p,
    )
    .await
}

async fn env_import(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<DotenvForm>,
) -> Response {
    let secret = form.secret.is_some();
    let problem = match env::parse_dotenv(form.dotenv.as_bytes()) {
        Err(e) => e.to_string(),
        Ok(pairs) => {
            let vars = pairs
                .into_iter()
                .map(|(key, value)| NewVar { key, value, secret })
                .collect();
            match env::write(&state, key.clone(), vars).await {
                Ok(_) => return see_other(&format!("/apps/{}/env", percent(&key))),
                Err(e @ (env::WriteError::BadKey { .. } | env::WriteError::TooLarge { .. })) => {
                    e.to_string()
                }
                Err(e) => return error_page(Some(&v), e.into()),
            }
        }
    };
    env_page(
        &state,
        &v,
        key,
        false,
        StatusCode::UNPROCESSABLE_ENTITY,
        &EnvForm::default(),
        &form,
        &Problem::at("dotenv", problem),
    )
    .await
}

#[derive(Deserialize)]
struct KeyForm {
    #[serde(default)]
    key: String,
}

async fn env_delete(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<KeyForm>,
) -> Response {
    match env::remove(&state, key.clone(), form.key).await {
        Ok(()) => see_other(&format!("/apps/{}/env", percent(&key))),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

// Domains.

#[derive(Deserialize, Default)]
struct DomainForm {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    tls: String,
    #[serde(default)]
    cert_path: String,
    #[serde(default)]
    key_path: String,
    #[serde(default)]
    redirect_to: String,
    #[serde(default)]
    path_prefix: String,
}

const DOMAIN_FIELDS: &[&str] = &[
    "domain",
    "tls",
    "cert_path",
    "key_path",
    "redirect_to",
    "path_prefix",
];

async fn domains(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
) -> Response {
    domains_page(
        &state,
        &v,
        key,
        StatusCode::OK,
        &DomainForm::default(),
        &Problem::default(),
    )
    .await
}

/// How each TLS mode reads in the form.
fn tls_label(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Auto => "auto (ACME)",
        TlsMode::Internal => "internal CA",
        TlsMode::Custom => "custom certificate",
        TlsMode::Off => "off (HTTP only)",
    }
}

async fn domains_page(
    state: &AppState,
    v: &Viewer,
    key: String,
    status: StatusCode,
    draft: &DomainForm,
    problem: &Problem,
) -> Response {
    let head = match app_head(state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e),
    };
    let app = head.id;
    let list = match state.ledger.run(move |c| domains::domains_of(c, app)).await {
        Ok(l) => l,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let base = format!("/apps/{}", percent(&head.name));
    let tls = if draft.tls.is_empty() {
        TlsMode::Auto.as_str()
    } else {
        draft.tls.as_str()
    };
    let content = html! {
        section id="live" data-refresh="10" {
            @if list.is_empty() { p.empty { "No domains yet." } } @else {
                div.scroll { table {
                    thead { tr { th { "Domain" } th { "TLS" } th { "Status" } th { "Certificate" } th { "Source" } th {} } }
                    tbody {
                        @for d in &list {
                            tr {
                                td { a href=(d.url) rel="noreferrer" { (d.url) }
                                    @if let Some(r) = &d.redirect_to { br; small { "redirects to " (r) } } }
                                td { (d.tls.as_str()) }
                                td { (badge(d.status.as_str())) @if let Some(m) = &d.status_message { br; small.reason { (m) } } }
                                td { @if let Some(c) = &d.certificate {
                                        (c.issuer) @if let Some(na) = &c.not_after { br; small { "until " (when_str(na)) } } } }
                                td { (d.source.as_str()) }
                                td {
                                    @if v.can(Need::Deploy) && d.source != DomainSource::Base {
                                        form method="post" action={ (base) "/domains/delete" } {
                                            (csrf(&v.csrf))
                                            input type="hidden" name="domain" value=(d.domain);
                                            button.danger type="submit" { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
        }
        @if v.can(Need::Deploy) {
            section {
                h2 { "Add a domain" }
                form.card method="post" action={ (base) "/domains" } {
                    (csrf(&v.csrf))
                    (form_error(problem, DOMAIN_FIELDS))
                    (field("Domain", "domain", "text", &draft.domain, problem))
                    div.field.invalid[problem.beside("tls").is_some()] {
                        label for="f-tls" { "TLS" }
                        select id="f-tls" name="tls" {
                            @for &m in TlsMode::ALL {
                                @if m.as_str() == tls { option value=(m.as_str()) selected { (tls_label(m)) } } @else { option value=(m.as_str()) { (tls_label(m)) } }
                            }
                        }
                        @if let Some(e) = problem.beside("tls") { p.field-error role="alert" { (e) } }
                    }
                    details {
                        summary { "More" }
                        (field("Certificate file (custom TLS)", "cert_path", "text", &draft.cert_path, problem))
                        (field("Key file (custom TLS)", "key_path", "text", &draft.key_path, problem))
                        (field("Redirect to (origin)", "redirect_to", "text", &draft.redirect_to, problem))
                        (field("Path prefix", "path_prefix", "text", &draft.path_prefix, problem))
                    }
                    button type="submit" { "Add domain" }
                }
            }
        }
    };
    respond(status, app_frame(v, &head, Tab::Domains, content))
}

async fn domain_add(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<DomainForm>,
) -> Response {
    let body = NewDomain {
        domain: form.domain.trim().to_string(),
        tls: some(&form.tls),
        cert_path: some(&form.cert_path),
        key_path: some(&form.key_path),
        redirect_to: some(&form.redirect_to),
        path_prefix: some(&form.path_prefix),
    };
    let (status, problem) = match domains::add(&state, key.clone(), body).await {
        Ok(_) => return see_other(&format!("/apps/{}/domains", percent(&key))),
        Err(domains::AddError::Invalid(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Problem::at(e.field(), e.to_string()),
        ),
        Err(e @ domains::AddError::TooMany) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Problem::at("domain", e.to_string()),
        ),
        Err(e @ (domains::AddError::DashboardHost(_) | domains::AddError::Taken { .. })) => {
            (StatusCode::CONFLICT, Problem::at("domain", e.to_string()))
        }
        Err(e) => return error_page(Some(&v), e.into()),
    };
    domains_page(&state, &v, key, status, &form, &problem).await
}

#[derive(Deserialize)]
struct DomainKey {
    #[serde(default)]
    domain: String,
}

async fn domain_remove(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<DomainKey>,
) -> Response {
    match domains::remove(&state, key.clone(), form.domain).await {
        Ok(()) => see_other(&format!("/apps/{}/domains", percent(&key))),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

// GitHub.

#[derive(Deserialize, Default)]
struct GithubForm {
    #[serde(default)]
    owner: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    branch: String,
    deploy_tags: Option<String>,
}

const GITHUB_FIELDS: &[&str] = &["owner", "repo", "branch"];

/// What connecting or rotating just did, for the one answer that says it. A secret made here is
/// in no other page: reloading the tab shows the integration without it.
struct Fresh {
    /// The repository's new webhook secret; none when the app joined a repository whose webhook
    /// already has one.
    secret: Option<String>,
    rotated: bool,
}

async fn github(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
) -> Response {
    github_page(
        &state,
        &v,
        key,
        StatusCode::OK,
        None,
        &Problem::default(),
        None,
    )
    .await
}

/// The GitHub tab: the integration (or the form that makes one), what a connect or rotate just
/// did, and the recent deliveries. `draft` is the form as sent, after a failed connect.
async fn github_page(
    state: &AppState,
    v: &Viewer,
    key: String,
    status: StatusCode,
    draft: Option<&GithubForm>,
    problem: &Problem,
    fresh: Option<&Fresh>,
) -> Response {
    let head = match app_head(state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e),
    };
    let app = head.id;
    let read = state
        .ledger
        .run(move |c| {
            let integration = github::load_integration(c, app)?;
            let imported_branch = apps::import_branch(c, app)?;
            let deliveries = github::recent_deliveries(c, app, 50)?;
            Ok((integration, imported_branch, deliveries))
        })
        .await;
    let (integration, imported_branch, deliveries) = match read {
        Ok(r) => r,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let base = format!("/apps/{}/github", percent(&head.name));
    let webhook_url = format!("{}{}", state.settings.public_url, webhook_api::PATH);
    let defaults = GithubForm {
        branch: imported_branch.unwrap_or_else(|| "main".into()),
        ..Default::default()
    };
    let draft = draft.unwrap_or(&defaults);
    let content = html! {
        @if let (Some(f), Some(i)) = (fresh, &integration) { (fresh_notice(f, i, &webhook_url)) }
        section {
            @match &integration {
                None => {
                    p.empty { "This app is not connected to a GitHub repository." }
                    @if v.can(Need::Deploy) {
                        (connect_form(v, &base, draft, problem))
                    } @else {
                        p.hint { "Connect it with " code { "PUT /api/v1/apps/" (head.name) "/github" } " (owner, repo, branch): the answer holds the webhook secret, shown once. Then add a webhook in the repository's settings with this payload URL, content type application/json:" }
                        pre.mono { (webhook_url) }
                    }
                }
                Some(i) => {
                    @if !i.has_import {
                        p.notice.error role="alert" { "The app has no repository yet, so a push cannot deploy it. " a href="/apps/import" { "Import" } " the repository as this app first." }
                    }
                    dl.facts {
                        dt { "Repository" } dd.mono { (i.owner) "/" (i.repo) "@" (i.branch) }
                        dt { "Tags deploy" } dd { @if i.deploy_tags { "yes" } @else { "no" } }
                        dt { "Connected" } dd { (when(i.created_at)) }
                        dt { "Payload URL" } dd.mono { (webhook_url) }
                        @if !i.shared_with.is_empty() {
                            dt { "Shares the webhook with" } dd { (i.shared_with.join(", ")) }
                        }
                        dt { "Secret" } dd { "Shown once when it was made. Rotate it for a new one." }
                    }
                    @if v.can(Need::Deploy) { (connected_actions(v, &base, i)) }
                }
            }
        }
        section id="deliveries" data-refresh="10" data-refresh-from=(base) {
            h2 { "Recent deliveries" }
            @if deliveries.is_empty() { p.empty { "None yet." } } @else {
                div.scroll { table {
                    thead { tr { th { "Received" } th { "Event" } th { "Ref" } th { "Outcome" } th { "Deployment" } } }
                    tbody { @for d in &deliveries { tr {
                        td { (when_str(&d.received_at)) }
                        td { (d.event) }
                        td.mono { (d.git_ref.as_deref().unwrap_or("")) @if let Some(c) = &d.commit_sha { br; small { (short(c)) } } }
                        td { (badge(&d.outcome)) @if let Some(r) = &d.reason { br; small.reason { (r) } } }
                        td { @if let Some(id) = d.deployment_id { a href={ "/deployments/" (id) } { "#" (id) } } }
                    } } }
                } }
            }
        }
    };
    respond(status, app_frame(v, &head, Tab::Github, content))
}

fn connect_form(v: &Viewer, base: &str, draft: &GithubForm, problem: &Problem) -> Markup {
    html! {
        h2 { "Connect to GitHub" }
        form.card method="post" action=(base) {
            (csrf(&v.csrf))
            (form_error(problem, GITHUB_FIELDS))
            (field("Owner (account or organisation)", "owner", "text", &draft.owner, problem))
            (field("Repository", "repo", "text", &draft.repo, problem))
            (field("Branch", "branch", "text", &draft.branch, problem))
            label.inline {
                @if draft.deploy_tags.is_some() { input type="checkbox" name="deploy_tags" value="on" checked; } @else { input type="checkbox" name="deploy_tags" value="on"; }
                " Deploy tags pushed to the repository too"
            }
            p.hint { "A push to the branch deploys its commit. Rustploy makes the webhook's secret and shows it once, with what to enter in GitHub." }
            button type="submit" { "Connect" }
        }
    }
}

fn connected_actions(v: &Viewer, base: &str, i: &Integration) -> Markup {
    let rotate_warning = html! {
        p { "A new secret replaces the current one at once. GitHub's deliveries are refused until you enter it in the repository's webhook." }
        @if !i.shared_with.is_empty() {
            p { "The repository's other apps share the secret and switch to the new one too: " strong { (i.shared_with.join(", ")) } "." }
        }
    };
    let disconnect_warning = html! {
        p { "Pushes to " (i.owner) "/" (i.repo) " no longer deploy this app. Remove the webhook in GitHub too"
            @if i.shared_with.is_empty() { "." } @else { ", unless it still serves " (i.shared_with.join(", ")) "." } }
    };
    html! {
        div.confirms {
            (confirm("Rotate the secret", "Make a new secret", &format!("{base}/rotate"), &v.csrf, rotate_warning))
            (confirm("Disconnect", "Disconnect from GitHub", &format!("{base}/disconnect"), &v.csrf, disconnect_warning))
        }
    }
}

/// What to enter in GitHub after connecting or rotating: the one place a secret is shown.
fn fresh_notice(f: &Fresh, i: &Integration, webhook_url: &str) -> Markup {
    let hooks = format!(
        "https://github.com/{}/{}/settings/hooks",
        percent(&i.owner),
        percent(&i.repo)
    );
    html! {
        @match &f.secret {
            None => {
                div.notice.good.fresh role="status" {
                    p { "Connected to " strong.mono { (i.owner) "/" (i.repo) "@" (i.branch) } "." }
                    @if i.shared_with.is_empty() {
                        p { "The repository's webhook secret is unchanged: GitHub needs no change." }
                    } @else {
                        p { "The repository's webhook already serves " (i.shared_with.join(", ")) ". This app shares it and its secret, so GitHub needs no change." }
                    }
                }
            }
            Some(secret) => {
                div.notice.good.fresh role="status" {
                    @if f.rotated {
                        p { "A new secret was made for " strong.mono { (i.owner) "/" (i.repo) } ". Enter it in the repository's webhook: "
                            a href=(hooks) rel="noreferrer" { "Settings → Webhooks" } ", edit the webhook, then change its secret." }
                        @if !i.shared_with.is_empty() {
                            p { "It is also the secret of " (i.shared_with.join(", ")) ", which share the webhook." }
                        }
                    } @else {
                        p { "Connected to " strong.mono { (i.owner) "/" (i.repo) "@" (i.branch) } ". Now add a webhook in the repository: "
                            a href={ (hooks) "/new" } rel="noreferrer" { "Settings → Webhooks → Add webhook" } ", with these values:" }
                    }
                    dl.facts {
                        dt { label for="webhook-url" { "Payload URL" } }
                        dd { input.copy id="webhook-url" type="text" readonly value=(webhook_url); }
                        dt { "Content type" }
                        dd { code { "application/json" } }
                        dt { label for="webhook-secret" { "Secret" } }
                        dd { input.copy id="webhook-secret" type="text" readonly value=(secret); }
                        dt { "Events" }
                        dd { "Just the " code { "push" } " event. GitHub sends a " code { "ping" } " by itself when the webhook is made; it shows under Recent deliveries." }
                    }
                    p { strong { "Copy the secret now: this secret will not be shown again." } }
                }
            }
        }
    }
}

async fn github_connect(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<GithubForm>,
) -> Response {
    let request = ConnectRequest {
        owner: form.owner.trim().to_string(),
        repo: form.repo.trim().to_string(),
        branch: form.branch.trim().to_string(),
        deploy_tags: Some(form.deploy_tags.is_some()),
        rotate_secret: None,
    };
    let problem = match github::connect(&state, &key, request).await {
        Ok(done) => {
            let status = if done.existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let fresh = Fresh {
                secret: done.integration.secret,
                rotated: false,
            };
            return github_page(
                &state,
                &v,
                key,
                status,
                None,
                &Problem::default(),
                Some(&fresh),
            )
            .await;
        }
        Err(github::ConnectError::Owner(m)) => Problem::at("owner", m),
        Err(github::ConnectError::Repo(m)) => Problem::at("repo", m),
        Err(github::ConnectError::Branch(m)) => Problem::at("branch", m),
        Err(e) => return error_page(Some(&v), e.into()),
    };
    github_page(
        &state,
        &v,
        key,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(&form),
        &problem,
        None,
    )
    .await
}

/// A new secret for the repository, through the same path as the API's `rotate_secret`.
async fn github_rotate(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
) -> Response {
    match github::rotate(&state, &key).await {
        Ok(done) => {
            let fresh = Fresh {
                secret: done.integration.secret,
                rotated: true,
            };
            github_page(
                &state,
                &v,
                key,
                StatusCode::OK,
                None,
                &Problem::default(),
                Some(&fresh),
            )
            .await
        }
        Err(e) => error_page(Some(&v), e.into()),
    }
}

async fn github_disconnect(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
) -> Response {
    match github::disconnect(&state, &key).await {
        Ok(()) => see_other(&format!("/apps/{}/github", percent(&key))),
        Err(e) => error_page(Some(&v), e.into()),
    }
}
