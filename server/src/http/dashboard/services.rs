//! An app's Services tab: its managed databases and their status, adding one, backing one up,
//! deleting one (keeping or erasing its data), and a service's backups with their restores.
//!
//! Every page and action calls the operations the API's handlers call (`ops::services`), so
//! both check the same rules and show the same answers.

use axum::Extension;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};
use rustploy_actors::ledger::services::{KeptRow as Kept, RestoreJobRow as RestoreJob, ServiceRow};
use rustploy_actors::services::Engine;
use rustploy_api::services::{Backup, Credentials, DataVolume, NewService, Service};
use rustploy_api::states::{BackupState, JobState};
use serde::Deserialize;

use super::apps::{Tab, app_frame, app_head, some};
use super::{
    Problem, Table, Viewer, action, badge, confirm, csrf, duration, error_page, form_error,
    optional_field, percent, respond, see_other, when, when_str,
};
use crate::http::AppState;
use crate::http::auth::Need;
use crate::http::error::ApiError;
use crate::ops::services::{self, CreateError, RestoreError};

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
    // Revealing passwords needs the role that reveals secret env values (the operation checks),
    // and is recorded in the audit log.
    let revealed = if page.reveal {
        match services::reveal(state, &v.principal, key.clone()).await {
            Ok(creds) => Some(creds).filter(|c| !c.is_empty()),
            Err(e) => return error_page(Some(v), e.into()),
        }
    } else {
        None
    };
    let head = match app_head(state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e),
    };
    let list = match services::list(state, key.clone()).await {
        Ok(l) => l.items,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let kept = match services::kept(state, key).await {
        Ok(k) => k,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let base = format!("/apps/{}/services", percent(&head.name));
    let can_change = v.can(Need::Deploy);
    let content = html! {
        // Refreshed from the plain tab, so that a reveal is neither repeated nor audited again.
        section id="live" data-refresh="10" data-refresh-from=(base) {
            @if list.is_empty() {
                (empty_state())
            } @else {
                (services_table(&base, &list))
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

fn services_table(base: &str, list: &[Service]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th { "Service" } th { "Engine" } th { "Status" } th { "Variable" } th { "Image" } th { "Volume" } th {}
            } }
            tbody { @for s in list {
                tr {
                    td { (s.name) }
                    td { (s.engine) }
                    td {
                        (badge(&s.status))
                        @if let Some(e) = &s.last_error { br; small.reason { (e) } }
                    }
                    td.mono { (s.env_name) br; small { (s.url) } }
                    td.mono { (s.image) }
                    td.mono { (s.volume) }
                    td { a href={ (base) "/" (percent(&s.name)) "/backups" } { "Backups" } }
                }
            } }
        } }
    }
}

/// The connection URLs with their passwords, for an owner who asked for them.
fn revealed_notice(base: &str, creds: &[Credentials]) -> Markup {
    html! {
        section.notice.fresh role="status" {
            h2 { "Connection URLs" }
            p { "With their passwords. This view was recorded in the audit log." }
            dl.facts {
                @for (i, c) in creds.iter().enumerate() {
                    @let id = format!("service-url-{i}");
                    dt { label for=(id) { (c.name) " · " (c.env_name) } }
                    dd { input.copy id=(id) type="text" readonly value=(c.url); }
                }
            }
            p { a href=(base) { "Hide them" } }
        }
    }
}

/// "Back up now" and the two ways to delete, for one service.
fn service_actions(v: &Viewer, base: &str, s: &Service) -> Markup {
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
    let new = NewService {
        engine: form.engine.trim().to_string(),
        name: some(&form.name),
        image: some(&form.image),
        env_name: some(&form.env_name),
    };
    let e = match services::create(&state, key.clone(), new).await {
        Ok(_) => return see_other(&format!("/apps/{}/services", percent(&key))),
        Err(e) => e,
    };
    // A failure the form can fix is said beside its field, with what was sent kept.
    let field = match &e {
        CreateError::Engine(_) => Some("engine"),
        CreateError::Name(_) | CreateError::NameTaken(_) | CreateError::KeptVolume { .. } => {
            Some("name")
        }
        CreateError::EnvName(_) | CreateError::EnvTaken { .. } => Some("env_name"),
        CreateError::Image => Some("image"),
        CreateError::TooMany => None,
        CreateError::NoApp(_) | CreateError::Ledger(_) => return error_page(Some(&v), e.into()),
    };
    let problem = Problem {
        field: field.map(str::to_string),
        message: e.to_string(),
    };
    let page = Page {
        // The status the API answers for the same failure.
        status: ApiError::from(e).status,
        reveal: false,
        draft: &form,
        problem: &problem,
    };
    services_page(&state, &v, key, page).await
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
    let volume = if q.purge.as_deref() == Some("true") {
        DataVolume::Purge
    } else {
        DataVolume::Keep
    };
    match services::delete(&state, key.clone(), name, volume).await {
        Ok(_) => see_other(&format!("/apps/{}/services", percent(&key))),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

async fn back_up(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path((key, name)): Path<(String, String)>,
) -> Response {
    match services::back_up(&state, key.clone(), name.clone()).await {
        Ok(_) => see_other(&backups_url(&key, &name)),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

// A service's backups.

fn backups_url(key: &str, name: &str) -> String {
    format!("/apps/{}/services/{}/backups", percent(key), percent(name))
}

#[derive(Deserialize, Default)]
struct BackupsQuery {
    restore_job: Option<String>,
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
/// deleted, since backups outlive their service. `error` says why a restore was refused.
async fn backups_page(
    state: &AppState,
    v: &Viewer,
    key: String,
    name: String,
    status: StatusCode,
    restore: Option<i64>,
    error: Option<&str>,
) -> Response {
    let head = match app_head(state, &key).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e),
    };
    let history = match services::backups(state, key.clone(), name.clone()).await {
        Ok(h) => h,
        Err(e) => return error_page(Some(v), e.into()),
    };
    let job = match restore {
        Some(id) => match services::restore_job(state, key, id).await {
            Ok(j) => j,
            Err(e) => return error_page(Some(v), e.into()),
        },
        None => None,
    };
    let (service, kept, list) = (history.service, history.kept, history.backups.items);
    let page_url = backups_url(&head.name, &name);
    let tab = format!("/apps/{}/services", percent(&head.name));
    let running = list
        .iter()
        .any(|b| b.state == BackupState::Running.as_str());
    let content = html! {
        p { a href=(tab) { "← All services" } }
        h2 { "Backups of " (name) }
        @if let Some(e) = error { p.notice.error role="alert" { (e) } }
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
    list: &[Backup],
) -> Markup {
    // A restore goes into the service of this name, when there is one of the backup's engine.
    let target = service.filter(|_| v.can(Need::Deploy));
    html! {
        table {
            thead { tr { th { "#" } th { "Created" } th { "State" } th { "Size" } th { "File" } th {} } }
            tbody { @for b in list { tr {
                td.nowrap { "#" (b.id) }
                td.nowrap {
                    (when_str(&b.created_at))
                    @if let Some(took) = took(b) { br; small { "took " (duration(took)) } }
                }
                td {
                    (badge(&b.state))
                    @if let Some(r) = &b.reason { br; small.reason { (r) } }
                }
                td.nowrap { @if let Some(n) = b.size_bytes { (size(n)) } }
                td.mono.whole { (file_path(&b.file)) }
                td {
                    @if let Some(s) = target {
                        @if b.state == BackupState::Done.as_str() && b.engine == s.engine {
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

/// How long a finished backup took, in milliseconds.
fn took(b: &Backup) -> Option<i64> {
    let at = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    let (start, end) = (at(&b.created_at)?, at(b.finished_at.as_deref()?)?);
    Some((end - start).whole_milliseconds() as i64)
}

fn restore_warning(b: &Backup, s: &ServiceRow) -> Markup {
    html! {
        p { "Restoring backup #" (b.id) " (" (when_str(&b.created_at)) ") replaces all of "
            strong { (s.name) } "'s current data. Anything written since that backup is lost." }
        p { "It runs between the app's deployments. Back up now first if the current data may still be needed." }
    }
}

fn restore_notice(j: &RestoreJob, name: &str, page_url: &str) -> Markup {
    let class = match j.state {
        JobState::Succeeded => "notice good",
        JobState::Dead | JobState::Cancelled => "notice error",
        JobState::Queued | JobState::Running => "notice",
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
    let e = match services::restore(&state, key.clone(), name.clone(), backup_id).await {
        Ok(q) => {
            return see_other(&format!(
                "{}?restore_job={}",
                backups_url(&key, &name),
                q.job_id
            ));
        }
        Err(e) => e,
    };
    // A refused restore is said on the backups page, which shows why.
    match e {
        RestoreError::NoService(_)
        | RestoreError::NoBackup(_)
        | RestoreError::NotDone { .. }
        | RestoreError::OtherEngine { .. }
        | RestoreError::Running => {
            let message = e.to_string();
            // The status the API answers for the same failure.
            let status = ApiError::from(e).status;
            backups_page(&state, &v, key, name, status, None, Some(&message)).await
        }
        RestoreError::NoApp(_) | RestoreError::Ledger(_) => error_page(Some(&v), e.into()),
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
