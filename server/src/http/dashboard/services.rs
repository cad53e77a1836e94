//! An app's Services tab: its managed databases and their status, adding one, backing one up,
//! deleting one (keeping or erasing its data), and a service's backups with their restores.
//!
//! Every action calls the functions the API's handlers call (`services_api::create`, `delete`,
//! `request_backup`, `request_restore`, `credentials_of`), so both check the same rules.

use axum::Extension;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};
use rusqlite::Connection;
use rustploy_actors::ledger::services::{
    self as rows, BackupRow, KeptRow as Kept, RestoreJobRow as RestoreJob, ServiceRow,
};
use rustploy_actors::ledger::{LedgerError, audit, now_ms};
use rustploy_actors::services::Engine;
use rustploy_api::states::BackupState;
use serde::Deserialize;
use serde_json::Value;

use super::apps::{AppHead, Tab, app_frame, app_head, some};
use super::{
    Problem, Table, Viewer, action, badge, confirm, csrf, duration, error_page, form_error,
    optional_field, percent, respond, see_other, when,
};
use crate::http::AppState;
use crate::http::auth::{Need, Principal};
use crate::http::error::{ApiError, ApiResult};
use crate::http::services_api::{self, NewServiceBody};

pub(super) fn table() -> Table {
    use axum::http::Method as M;
    vec![
        (M::GET, "/apps/{app}/services", Need::Read, get(services)),
        (M::POST, "/apps/{app}/services", Need::Deploy, action(add)),
        (
            M::POST,
            "/apps/{app}/services/{name}/backup",
            Need::Deploy,
            action(back_up),
        ),
        (
            M::POST,
            "/apps/{app}/services/{name}/delete",
            Need::Deploy,
            action(delete),
        ),
        (
            M::GET,
            "/apps/{app}/services/{name}/backups",
            Need::Read,
            get(backups),
        ),
        (
            M::POST,
            "/apps/{app}/services/{name}/backups/{id}/restore",
            Need::Deploy,
            action(restore),
        ),
    ]
}

// The tab.

#[derive(Deserialize, Default)]
struct ServicesQuery {
    reveal: Option<String>,
}

#[derive(Deserialize, Default)]
struct ServiceForm {
    #[serde(default)]
    engine: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    env_name: String,
    #[serde(default)]
    image: String,
}

const SERVICE_FIELDS: &[&str] = &["engine", "name", "env_name", "image"];

/// The engines a person can pick, with the words shown for them.
const ENGINES: [(Engine, &str); 3] = [
    (Engine::Postgres, "PostgreSQL"),
    (Engine::Redis, "Redis"),
    (Engine::Mariadb, "MariaDB (MySQL)"),
];

async fn services(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Query(q): Query<ServicesQuery>,
) -> Response {
    let page = Page {
        status: StatusCode::OK,
        reveal: q.reveal.as_deref() == Some("true"),
        draft: &ServiceForm::default(),
        problem: &Problem::default(),
    };
    services_page(&state, &v, key, page).await
}

/// How the tab is rendered: a plain view, a reveal, or the answer to a failed form.
struct Page<'a> {
    status: StatusCode,
    reveal: bool,
    /// The add form as sent, after a failed add.
    draft: &'a ServiceForm,
    problem: &'a Problem,
}

async fn services_page(state: &AppState, v: &Viewer, key: String, page: Page<'_>) -> Response {
    // Revealing passwords needs the role that reveals secret env values.
    if page.reveal && !v.can(Need::Admin) {
        return error_page(Some(v), ApiError::forbidden("admin"));
    }
    let head = match app_head(state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e),
    };
    let app = head.id;
    let read = state
        .ledger
        .run(move |c| {
            Ok((
                rows::list(c, app)?,
                services_api::last_services_error(c, app)?,
                kept_volumes(c, app)?,
            ))
        })
        .await;
    let (list, last_error, kept) = match read {
        Ok(r) => r,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let views = services_api::views(state, &head.name, &list, last_error).await;
    let revealed = if page.reveal && !list.is_empty() {
        match reveal(state, v, &head, &list).await {
            Ok(r) => Some(r),
            Err(e) => return error_page(Some(v), e),
        }
    } else {
        None
    };
    let base = format!("/apps/{}/services", percent(&head.name));
    let can_change = v.can(Need::Deploy);
    let content = html! {
        // Refreshed from the plain tab, so that a reveal is neither repeated nor audited again.
        section id="live" data-refresh="10" data-refresh-from=(base) {
            @if views.is_empty() {
                (empty_state())
            } @else {
                (services_table(&base, &views))
                p.hint { "The app receives each service's URL in its variable at its next deployment; the running release keeps what it started with." }
            }
        }
        @if let Some(creds) = &revealed {
            (revealed_notice(&base, creds))
        } @else if v.can(Need::Admin) && !list.is_empty() {
            p { a href={ (base) "?reveal=true" } { "Reveal the connection URLs with their passwords" } " (recorded in the audit log)" }
        }
        @if can_change && !list.is_empty() {
            section {
                h2 { "Back up or delete" }
                div.cards { @for s in &list { (service_actions(v, &base, s)) } }
            }
        }
        @if !kept.is_empty() { (kept_section(v, &base, &kept)) }
        @if can_change {
            (add_form(state, v, &base, page.draft, page.problem))
        }
    };
    respond(page.status, app_frame(v, &head, Tab::Services, content))
}

fn empty_state() -> Markup {
    html! {
        p.empty { "This app has no services yet." }
        p.hint {
            "A service is a database (PostgreSQL, Redis or MariaDB) that Rustploy runs beside the app, "
            "on the app's private network, with its data in a volume that outlives releases. "
            "The app receives its connection URL in an env var at its next deployment."
        }
        p.hint {
            "A line " code { "dependencies: [postgres]" } " in the repository's " code { "rustploy.yaml" }
            " also makes one, at the next deployment."
        }
    }
}

fn services_table(base: &str, views: &[Value]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th { "Service" } th { "Engine" } th { "Status" } th { "Variable" } th { "Image" } th { "Volume" } th {}
            } }
            tbody { @for s in views {
                @let name = str_of(s, "name");
                tr {
                    td { (name) }
                    td { (str_of(s, "engine")) }
                    td {
                        (badge(str_of(s, "status")))
                        @if let Some(e) = s["last_error"].as_str() { br; small.reason { (e) } }
                    }
                    td.mono { (str_of(s, "env_name")) br; small { (str_of(s, "url")) } }
                    td.mono { (str_of(s, "image")) }
                    td.mono { (str_of(s, "volume")) }
                    td { a href={ (base) "/" (percent(name)) "/backups" } { "Backups" } }
                }
            } }
        } }
    }
}

/// The connection URLs with their passwords, for an owner who asked for them.
fn revealed_notice(base: &str, creds: &[Value]) -> Markup {
    html! {
        section.notice.fresh role="status" {
            h2 { "Connection URLs" }
            p { "With their passwords. This view was recorded in the audit log." }
            dl.facts {
                @for (i, c) in creds.iter().enumerate() {
                    @let id = format!("service-url-{i}");
                    dt { label for=(id) { (str_of(c, "name")) " · " (str_of(c, "env_name")) } }
                    dd { input.copy id=(id) type="text" readonly value=(str_of(c, "url")); }
                }
            }
            p { a href=(base) { "Hide them" } }
        }
    }
}

/// "Back up now" and the two ways to delete, for one service.
fn service_actions(v: &Viewer, base: &str, s: &ServiceRow) -> Markup {
    let at = format!("{base}/{}", percent(&s.name));
    let keep = html! {
        p { "The " (s.engine) " service " strong { (s.name) } " stops and its container is removed. "
            "Its data stays in the volume " code { (s.volume) } " with its credentials: a " (s.engine)
            " service added again under this name takes both back. Its backups are kept." }
        p { "The app's running release loses the service at once; from its next deployment it no longer receives "
            code { (s.env_name) } "." }
    };
    let purge = html! {
        p { "The " (s.engine) " service " strong { (s.name) } " stops, and its volume " code { (s.volume) }
            " is erased with all its data. This cannot be undone." }
        p { "Its backups are kept: restore one into a new service of the same engine to get the data back." }
    };
    html! {
        div.card {
            h3 { (s.name) }
            div.actions {
                form method="post" action={ (at) "/backup" } {
                    (csrf(&v.csrf))
                    button.secondary type="submit" { "Back up now" }
                }
                a.button.secondary href={ (at) "/backups" } { "Backups" }
            }
            div.confirms {
                (confirm("Delete", "Delete, keep the data", &format!("{at}/delete"), &v.csrf, keep))
                (confirm("Delete and erase the data", "Delete and erase the data", &format!("{at}/delete?purge=true"), &v.csrf, purge))
            }
        }
    }
}

/// The app's services deleted with their data kept: their rows stay, so that a service made
/// again under a name takes back the volume and the credentials the data was made with.
fn kept_volumes(c: &Connection, app: i64) -> Result<Vec<Kept>, LedgerError> {
    rustploy_actors::ledger::services::kept_list(c, app)
}

fn kept_section(v: &Viewer, base: &str, kept: &[Kept]) -> Markup {
    html! {
        section {
            h2 { "Kept data" }
            p.hint { "These services were deleted and their data kept. Add a service of the same engine under the name to take the data back, or erase it." }
            div.scroll { table {
                thead { tr { th { "Service" } th { "Engine" } th { "Volume" } th { "Deleted" } th {} } }
                tbody { @for k in kept {
                    @let at = format!("{base}/{}", percent(&k.name));
                    tr {
                        td { (k.name) }
                        td { (k.engine) }
                        td.mono.whole { (k.volume) }
                        td.nowrap { (when(k.deleted_at)) }
                        td {
                            a href={ (at) "/backups" } { "Backups" }
                            @if v.can(Need::Deploy) {
                                (confirm("Erase the data", "Erase the data", &format!("{at}/delete?purge=true"), &v.csrf, html! {
                                    p { "The volume " code { (k.volume) } " of the deleted service " strong { (k.name) }
                                        " is erased with all its data. This cannot be undone. Its backups are kept." }
                                }))
                            }
                        }
                    }
                } }
            } }
        }
    }
}

fn add_form(
    state: &AppState,
    v: &Viewer,
    base: &str,
    draft: &ServiceForm,
    problem: &Problem,
) -> Markup {
    let config = state.settings.deploy_config();
    // The placeholders are the defaults of the chosen engine; the list below says all of them,
    // since without a script they cannot follow the select.
    let chosen = Engine::parse(draft.engine.trim());
    let engine = chosen.unwrap_or(Engine::Postgres);
    let unknown = (chosen.is_none() && !draft.engine.trim().is_empty()).then_some(&draft.engine);
    let engine_error = problem.beside("engine");
    html! {
        section {
            h2 { "Add a service" }
            form.card method="post" action=(base) {
                (csrf(&v.csrf))
                (form_error(problem, SERVICE_FIELDS))
                div.field.invalid[engine_error.is_some()] {
                    label for="f-engine" { "Engine" }
                    select id="f-engine" name="engine" {
                        @for (e, text) in ENGINES {
                            @if unknown.is_none() && e == engine {
                                option value=(e.as_str()) selected { (text) }
                            } @else {
                                option value=(e.as_str()) { (text) }
                            }
                        }
                        // What was sent stays visible beside its error.
                        @if let Some(u) = unknown { option value=(u) selected { (u) } }
                    }
                    @if let Some(e) = engine_error { p.field-error role="alert" { (e) } }
                }
                (optional_field("Name (optional)", "name", "text", &draft.name, Some(engine.as_str()), problem))
                (optional_field("Env var the app receives (optional)", "env_name", "text", &draft.env_name, Some(engine.default_env_name()), problem))
                (optional_field("Image (optional)", "image", "text", &draft.image, Some(config.services.image(engine)), problem))
                p.hint { "Left empty, a field takes the engine's default:" }
                ul.hint {
                    @for (e, text) in ENGINES {
                        li { (text) ": name " code { (e.as_str()) } ", variable " code { (e.default_env_name()) }
                            ", image " code { (config.services.image(e)) } }
                    }
                }
                p.hint { "The service starts at once on the app's private network. The app receives its URL at its next deployment. "
                    "A name whose data was kept when its service was deleted takes that data back." }
                button type="submit" { "Add service" }
            }
        }
    }
}

async fn add(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
    Form(form): Form<ServiceForm>,
) -> Response {
    let body = NewServiceBody {
        engine: form.engine.trim().to_string(),
        name: some(&form.name),
        image: some(&form.image),
        env_name: some(&form.env_name),
    };
    match services_api::create(&state, &key, &body).await {
        Ok(_) => see_other(&format!("/apps/{}/services", percent(&key))),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            let page = Page {
                status: e.status,
                reveal: false,
                draft: &form,
                problem: &Problem::from(e),
            };
            services_page(&state, &v, key, page).await
        }
        Err(e) => error_page(Some(&v), e),
    }
}

#[derive(Deserialize, Default)]
struct DeleteQuery {
    purge: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path((key, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Response {
    let purge = q.purge.as_deref() == Some("true");
    match services_api::delete(&state, &key, &name, purge).await {
        Ok(_) => see_other(&format!("/apps/{}/services", percent(&key))),
        Err(e) => error_page(Some(&v), e),
    }
}

async fn back_up(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path((key, name)): Path<(String, String)>,
) -> Response {
    match services_api::request_backup(&state, &key, &name).await {
        Ok(_) => see_other(&backups_url(&key, &name)),
        Err(e) => error_page(Some(&v), e),
    }
}

/// Each service's connection details with its password, recorded in the audit log as the
/// env tab's reveal is. Owners only: the caller checked.
async fn reveal(
    state: &AppState,
    v: &Viewer,
    head: &AppHead,
    list: &[ServiceRow],
) -> ApiResult<Vec<Value>> {
    let mut creds = Vec::with_capacity(list.len());
    for s in list {
        creds.push(services_api::credentials_of(state, &head.name, &s.name).await?);
    }
    let names: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
    record_reveal(state, &v.principal, &head.name, names).await?;
    Ok(creds)
}

/// One audit event per service whose password was shown, under the path of the API's
/// credentials route, so the audit log's path filter finds both.
async fn record_reveal(
    state: &AppState,
    who: &Principal,
    app: &str,
    names: Vec<String>,
) -> ApiResult<()> {
    let (token_id, user_id) = match who {
        Principal::Token { id, .. } => (Some(*id), None),
        Principal::User { id, .. } => (None, Some(*id)),
    };
    let app = app.to_string();
    state
        .ledger
        .run(move |c| {
            let tx = c.transaction()?;
            let at = now_ms();
            for name in &names {
                audit::record_shown(
                    &tx,
                    token_id,
                    user_id,
                    &format!("/api/v1/apps/{app}/services/{name}/credentials"),
                    &format!(
                        "revealed the credentials of service {name} of app {app} in the dashboard"
                    ),
                    at,
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
    Ok(())
}

// A service's backups.

fn backups_url(key: &str, name: &str) -> String {
    format!("/apps/{}/services/{}/backups", percent(key), percent(name))
}

#[derive(Deserialize, Default)]
struct BackupsQuery {
    restore_job: Option<String>,
}

/// The app's restore job `id`, when it is one.
fn restore_job(c: &Connection, app: i64, id: i64) -> Result<Option<RestoreJob>, LedgerError> {
    rustploy_actors::ledger::services::restore_job(c, app, id)
}

async fn backups(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path((key, name)): Path<(String, String)>,
    Query(q): Query<BackupsQuery>,
) -> Response {
    let job = q.restore_job.as_deref().and_then(|s| s.parse().ok());
    backups_page(&state, &v, key, name, StatusCode::OK, job, None).await
}

/// A service's backups, newest first: also those made before a service of that name was
/// deleted, since backups outlive their service. `error` is a restore that was refused.
async fn backups_page(
    state: &AppState,
    v: &Viewer,
    key: String,
    name: String,
    status: StatusCode,
    restore: Option<i64>,
    error: Option<&ApiError>,
) -> Response {
    let head = match app_head(state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e),
    };
    let app = head.id;
    let n = name.clone();
    let read = state
        .ledger
        .run(move |c| {
            let job = match restore {
                Some(id) => restore_job(c, app, id)?,
                None => None,
            };
            Ok((
                rows::get(c, app, &n)?,
                rows::kept(c, app, &n)?,
                rows::list_backups(c, app, &n)?,
                job,
            ))
        })
        .await;
    let (service, kept, list, job) = match read {
        Ok(r) => r,
        Err(e) => return error_page(Some(v), e.into()),
    };
    // As in the API: a name that never had a service nor backups is not there.
    if service.is_none() && kept.is_none() && list.is_empty() {
        return error_page(
            Some(v),
            ApiError::not_found(format!(
                "the app '{}' has no service named '{name}' and no backups of one",
                head.name
            )),
        );
    }
    let page_url = backups_url(&head.name, &name);
    let tab = format!("/apps/{}/services", percent(&head.name));
    let running = list.iter().any(|b| b.state == BackupState::Running);
    let content = html! {
        p { a href=(tab) { "← All services" } }
        h2 { "Backups of " (name) }
        @if let Some(e) = error { p.notice.error role="alert" { (e.message) } }
        @if let Some(j) = &job { (restore_notice(j, &name, &page_url)) }
        @match &service {
            Some(s) => {
                p { "A " (s.engine) " service. Backups are made with the engine's own tools and kept under the server's data directory." }
                @if v.can(Need::Deploy) {
                    div.actions {
                        form method="post" action={ (tab) "/" (percent(&s.name)) "/backup" } {
                            (csrf(&v.csrf))
                            button.secondary type="submit" { "Back up now" }
                        }
                    }
                }
            }
            None => {
                p.notice {
                    "The app has no service named " strong { (name) } " now. Its backups are kept: add a service "
                    "of the same engine with this name to restore one into it."
                    @if let Some(k) = &kept {
                        " Its data is kept in the volume " code { (k.volume) } ": a " (k.engine)
                        " service added under this name takes it back."
                    }
                }
            }
        }
        // Refreshed while a backup runs, to show how it ended.
        div.scroll id="backups" data-refresh=[running.then_some("5")] data-refresh-from=(page_url) {
            @if list.is_empty() {
                p.empty { "No backups yet." }
            } @else {
                (backups_table(v, &tab, &name, service.as_ref(), &list))
            }
        }
    };
    respond(status, app_frame(v, &head, Tab::Services, content))
}

fn backups_table(
    v: &Viewer,
    tab: &str,
    name: &str,
    service: Option<&ServiceRow>,
    list: &[BackupRow],
) -> Markup {
    // A restore goes into the service of this name, when there is one of the backup's engine.
    let target = service.filter(|_| v.can(Need::Deploy));
    html! {
        table {
            thead { tr { th { "#" } th { "Created" } th { "State" } th { "Size" } th { "File" } th {} } }
            tbody { @for b in list { tr {
                td.nowrap { "#" (b.id) }
                td.nowrap {
                    (when(b.created_at))
                    @if let Some(f) = b.finished_at { br; small { "took " (duration(f - b.created_at)) } }
                }
                td {
                    (badge(b.state.as_str()))
                    @if let Some(r) = &b.reason { br; small.reason { (r) } }
                }
                td.nowrap { @if let Some(n) = b.size_bytes { (size(n)) } }
                td.mono.whole { (file_path(&b.path)) }
                td {
                    @if let Some(s) = target {
                        @if b.state == BackupState::Done && b.engine == s.engine {
                            (confirm(
                                "Restore",
                                &format!("Replace the data with backup #{}", b.id),
                                &format!("{tab}/{}/backups/{}/restore", percent(name), b.id),
                                &v.csrf,
                                restore_warning(b, s),
                            ))
                        } @else if b.engine != s.engine {
                            small { "a " (b.engine) " backup" }
                        }
                    }
                }
            } } }
        }
    }
}

/// A backup's file: a narrow column may break it after its folder, never inside its name.
fn file_path(path: &str) -> Markup {
    let (folder, file) = path.split_at(path.rfind('/').map_or(0, |i| i + 1));
    html! { (folder) wbr; span.nowrap { (file) } }
}

fn restore_warning(b: &BackupRow, s: &ServiceRow) -> Markup {
    html! {
        p { "Restoring backup #" (b.id) " (" (when(b.created_at)) ") replaces all of "
            strong { (s.name) } "'s current data. Anything written since that backup is lost." }
        p { "It runs between the app's deployments. Back up now first if the current data may still be needed." }
    }
}

fn restore_notice(j: &RestoreJob, name: &str, page_url: &str) -> Markup {
    let class = match j.state.as_str() {
        "succeeded" => "notice good",
        "dead" | "cancelled" => "notice error",
        _ => "notice",
    };
    html! {
        // Refreshed from this page with the job, until the restore has ended.
        div id="restore" data-refresh=[j.state.is_active().then_some("5")] data-refresh-from={ (page_url) "?restore_job=" (j.id) } {
            div class=(class) role="status" {
                p {
                    "Restore"
                    @if let Some(b) = j.backup_id { " of backup #" (b) }
                    " into " strong { (name) } " (job " (j.id) "): " (badge(j.state.as_str()))
                }
                @if j.state.is_active() { p { "It replaces the service's data when it runs; this notice follows it." } }
                @if let Some(e) = &j.last_error { p.reason { (e) } }
                p.hint { "The job is also at " code { "GET /api/v1/jobs/" (j.id) } "." }
            }
        }
    }
}

async fn restore(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path((key, name, id)): Path<(String, String, String)>,
) -> Response {
    let Ok(backup_id) = id.parse::<i64>() else {
        return error_page(
            Some(&v),
            ApiError::not_found(format!("the app has no backup {id}")),
        );
    };
    match services_api::request_restore(&state, &key, &name, backup_id).await {
        Ok(job) => see_other(&format!("{}?restore_job={job}", backups_url(&key, &name))),
        Err(e) if e.status.is_client_error() => {
            backups_page(&state, &v, key, name, e.status, None, Some(&e)).await
        }
        Err(e) => error_page(Some(&v), e),
    }
}

/// A size in bytes for people: `812 B`, `4.2 MiB`.
fn size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} B", bytes.max(0))
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A string field of a view, or nothing.
fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_read_as_people_expect() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(size(-3), "0 B");
    }
}
