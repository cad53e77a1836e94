//! An app's frame and tabs: overview, trust, deployments (deploy, roll back, cancel) and a
//! deployment's page with its live log.

use super::*;

// An app's tabs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::http::dashboard) enum Tab {
    Overview,
    Deployments,
    Env,
    Domains,
    Services,
    Github,
}

/// What every tab shows above itself.
pub(in crate::http::dashboard) use rustploy_actors::ledger::apps::AppHead;

pub(in crate::http::dashboard) async fn app_head(
    state: &AppState,
    key: &str,
) -> ApiResult<AppHead> {
    let k = key.to_string();
    let head = state
        .ledger
        .run(move |c| match apps::resolve(c, &k)? {
            Some(id) => apps::head(c, id),
            None => Ok(None),
        })
        .await?;
    head.ok_or_else(|| no_app(key))
}

/// The app's state in a few words: its newest deployment's badge and, when that is not the
/// release that serves (it failed, or it is still on its way), which release does.
fn head_state(head: &AppHead) -> Markup {
    let Some((last, state)) = head.last else {
        return badge("new");
    };
    html! {
        (badge(state.as_str()))
        @match head.live {
            Some(live) if live != last => {
                " " small { "serving " a href={ "/deployments/" (live) } { "#" (live) } }
            }
            None if matches!(state, DeploymentState::Failed | DeploymentState::Cancelled) => {
                " " small { "nothing serving" }
            }
            _ => {}
        }
    }
}

pub(in crate::http::dashboard) fn app_frame(
    v: &Viewer,
    head: &AppHead,
    tab: Tab,
    content: Markup,
) -> Markup {
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
                (head_state(head))
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
pub(super) fn recent_deployments(
    c: &rusqlite::Connection,
    app: i64,
    limit: i64,
) -> Result<Vec<DeploymentRow>, rustploy_actors::ledger::LedgerError> {
    deployment_views::page(c, app, i64::MAX, limit)
}

pub(super) fn deployments_table(v: &Viewer, rows: &[DeploymentRow], actions: bool) -> Markup {
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

pub(super) async fn overview(
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
pub(super) fn trust_section(v: &Viewer, head: &AppHead, t: &Trust) -> Markup {
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
pub(super) struct TrustQuery {
    pub(super) trusted: Option<String>,
}

pub(super) async fn trust_set(
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

pub(super) async fn deployments(
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

pub(super) async fn deploy(
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
pub(super) struct RollbackForm {
    pub(super) deployment_id: Option<String>,
}

pub(super) async fn rollback(
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

pub(super) async fn cancel(
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
pub(super) const LOG_LINES: i64 = 5000;

pub(super) async fn deployment(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(last: Option<(i64, DeploymentState)>, live: Option<i64>) -> String {
        head_state(&AppHead {
            id: 1,
            name: "web".into(),
            last,
            live,
        })
        .into_string()
    }

    #[test]
    fn the_head_says_which_release_serves_when_the_newest_deployment_does_not() {
        let failed = head(Some((2, DeploymentState::Failed)), Some(1));
        assert!(failed.contains(">failed<"), "{failed}");
        assert!(
            failed.contains(r##"serving <a href="/deployments/1">#1</a>"##),
            "{failed}"
        );
        let running = head(Some((3, DeploymentState::Running)), Some(1));
        assert!(running.contains("serving"), "{running}");

        let healthy = head(Some((1, DeploymentState::Healthy)), Some(1));
        assert!(!healthy.contains("serving"), "{healthy}");
        let down = head(Some((1, DeploymentState::Failed)), None);
        assert!(down.contains("nothing serving"), "{down}");
        let queued = head(Some((1, DeploymentState::Queued)), None);
        assert!(!queued.contains("serving"), "{queued}");
        assert!(head(None, None).contains(">new<"));
    }
}
