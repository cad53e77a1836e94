//! Apps: the list, importing one, and an app's tabs (overview, deployments and their live
//! logs, env vars, domains, GitHub: connecting a repository, its secret shown once).

mod domains_tab;
mod env_tab;
mod github_tab;
mod releases;

use domains_tab::*;
use env_tab::*;
use github_tab::*;
use releases::*;
pub(super) use releases::{Tab, app_frame, app_head};

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
                                td { @if let Some(live) = a.live {
                                        (badge("live")) " " a href={ "/deployments/" (live) } { "#" (live) }
                                    } @else { (badge("not running")) } }
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
                (field("Branch (empty: the repository's default)", "branch", "text", &form.branch, problem))
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
                dt { "Health check" }
                @match &i.healthcheck_path {
                    Some(path) => dd { span.mono { "HTTP GET " (path) } ", unless the image has its own HEALTHCHECK" },
                    // What the Deployer does without a path (its `Probe::choose`).
                    None => dd { (no_health_path(i.port)) },
                }
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

/// How a release without a health check path is judged healthy (an image's own HEALTHCHECK
/// comes first either way).
fn no_health_path(port: Option<u16>) -> String {
    let connect = match port {
        Some(p) => format!("a TCP connection to port {p}"),
        None => "a TCP connection to its port".to_string(),
    };
    format!("no HTTP path set: the image's own HEALTHCHECK when it has one, else {connect}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_without_a_health_path_says_how_its_release_is_judged() {
        assert_eq!(
            no_health_path(Some(8000)),
            "no HTTP path set: the image's own HEALTHCHECK when it has one, else a TCP \
             connection to port 8000"
        );
        assert!(no_health_path(None).ends_with("a TCP connection to its port"));
    }
}
