//! An app's GitHub tab: connect, rotate the repository's secret, disconnect, recent deliveries.

use super::*;

// GitHub.

#[derive(Deserialize, Default)]
pub(super) struct GithubForm {
    #[serde(default)]
    pub(super) owner: String,
    #[serde(default)]
    pub(super) repo: String,
    #[serde(default)]
    pub(super) branch: String,
    pub(super) deploy_tags: Option<String>,
}

pub(super) const GITHUB_FIELDS: &[&str] = &["owner", "repo", "branch"];

/// What connecting or rotating just did, for the one answer that says it. A secret made here is
/// in no other page: reloading the tab shows the integration without it.
pub(super) struct Fresh {
    /// The repository's new webhook secret; none when the app joined a repository whose webhook
    /// already has one.
    pub(super) secret: Option<String>,
    pub(super) rotated: bool,
}

pub(super) async fn github(
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
pub(super) async fn github_page(
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
                        td.mono.nowrap title=[d.git_ref.as_deref()] { (ref_label(d.git_ref.as_deref().unwrap_or(""))) @if let Some(c) = &d.commit_sha { br; small { (short(c)) } } }
                        // A refusal's reason is a problem to fix; the others explain what was done.
                        td { (badge(&d.outcome)) @if let Some(r) = &d.reason { br; small class=(if d.outcome == "rejected" { "reason" } else { "why" }) { (r) } } }
                        // A push is "deployed" once it requested a deployment: what became of
                        // that deployment is told here.
                        td.nowrap { @if let Some(id) = d.deployment_id {
                            a href={ "/deployments/" (id) } { "#" (id) }
                            @if let Some(state) = d.deployment_state { " " (badge(state.as_str())) }
                        } }
                    } } }
                } }
            }
        }
    };
    respond(status, app_frame(v, &head, Tab::Github, content))
}

/// A pushed ref as the table shows it: the branch's name, or "tag" and the tag's, the whole ref
/// in its title, on one line: the whole `refs/heads/…` broke across lines in the narrow column.
fn ref_label(git_ref: &str) -> String {
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        branch.to_string()
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        format!("tag {tag}")
    } else {
        git_ref.to_string()
    }
}

pub(super) fn connect_form(
    v: &Viewer,
    base: &str,
    draft: &GithubForm,
    problem: &Problem,
) -> Markup {
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

pub(super) fn connected_actions(v: &Viewer, base: &str, i: &Integration) -> Markup {
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
pub(super) fn fresh_notice(f: &Fresh, i: &Integration, webhook_url: &str) -> Markup {
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

pub(super) async fn github_connect(
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
pub(super) async fn github_rotate(
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

pub(super) async fn github_disconnect(
    State(state): State<AppState>,
    Extension(v): Extension<Viewer>,
    Path(key): Path<String>,
) -> Response {
    match github::disconnect(&state, &key).await {
        Ok(()) => see_other(&format!("/apps/{}/github", percent(&key))),
        Err(e) => error_page(Some(&v), e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::ref_label;

    #[test]
    fn a_ref_is_shown_by_its_branch_or_tag_name() {
        assert_eq!(ref_label("refs/heads/main"), "main");
        assert_eq!(ref_label("refs/heads/feature/login"), "feature/login");
        assert_eq!(ref_label("refs/tags/v1.2.0"), "tag v1.2.0");
        assert_eq!(ref_label("refs/pull/7/head"), "refs/pull/7/head");
        assert_eq!(ref_label(""), "");
    }
}
