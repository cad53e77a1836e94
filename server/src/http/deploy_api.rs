//! `/api/v1` routes of apps' code and releases: import a repository, request, list, inspect and
//! cancel deployments, read and stream their logs, roll back, see the live runtime and its
//! container logs. Deleting an app is routed here and handled in `app_delete_api.rs`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{MethodRouter, get, post};
use rustploy_actors::deploy::detect::{self, DetectError};
use rustploy_actors::deploy::docker::{self, EngineError};
use rustploy_actors::deploy::git::{self, Credentials, Git};
use rustploy_actors::deploy::plan;
use rustploy_actors::deploy::policy::{self, Violation};
use rustploy_actors::deploy::process::ProcessError;
use rustploy_actors::deploy::redact::{Redactor, url_credentials};
use rustploy_actors::deploy::{compose, contexts};
use rustploy_actors::job_queue::JobQueueMsg;
use rustploy_actors::ledger::Ledger;
use rustploy_actors::ledger::apps::{self, ImportSource};
use rustploy_actors::ledger::deployments::views as deployment_views;
use rustploy_actors::ledger::deployments::{self, DeployRequest as NewDeployment};
use rustploy_actors::ledger::jobs::{self, CancelOutcome};
use rustploy_actors::ledger::trust;
use rustploy_api::apps::{App, Deployment, EngineStatus, LogPage, Runtime};
use rustploy_api::states::DeploymentState;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::auth::{Need, Principal};
use super::error::optional_json;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use super::op_errors::no_app;
use super::paging::Page;
use super::views;
use crate::domain::GitRef;
use crate::ops::apps::view as app_view;

/// The deployment operations, merged into the `/api/v1` route table.
pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (
            M::POST,
            "/api/v1/apps/import",
            Need::Deploy,
            post(import_app),
        ),
        (
            M::DELETE,
            "/api/v1/apps/{app}",
            Need::Admin,
            axum::routing::delete(super::app_delete_api::delete_app),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/rollback",
            Need::Deploy,
            post(rollback),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/runtime",
            Need::Read,
            get(runtime),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/containers/{id}/logs",
            Need::Read,
            get(container_logs),
        ),
        (
            M::GET,
            "/api/v1/deployments/{id}/logs/stream",
            Need::Read,
            get(stream_logs),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/deployments",
            Need::Read,
            get(list_deployments),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/deployments",
            Need::Deploy,
            post(request_deployment),
        ),
        (
            M::GET,
            "/api/v1/deployments/{id}",
            Need::Read,
            get(get_deployment),
        ),
        (
            M::POST,
            "/api/v1/deployments/{id}/cancel",
            Need::Deploy,
            post(cancel_deployment),
        ),
        (
            M::GET,
            "/api/v1/deployments/{id}/logs",
            Need::Read,
            get(deployment_logs),
        ),
    ]
}

async fn list_deployments(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<impl IntoResponse> {
    let (limit, after) = page.bounds()?;
    let k = key.clone();
    let rows = state
        .ledger
        .run(move |c| match apps::resolve(c, &k)? {
            Some(app) => deployment_views::page(c, app, after, limit).map(Some),
            None => Ok(None),
        })
        .await?;
    let Some(rows) = rows else {
        return Err(no_app(&key));
    };
    let items = rows.into_iter().map(views::deployment).collect();
    Ok(ApiJson(views::page(items, limit, |d: &Deployment| d.id)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

/// Queues a deployment. While one of the app's deployments waits in the queue, further requests
/// join it (taking the newest ref) instead of queueing more.
async fn request_deployment(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let request: DeployRequest = optional_json(&body)?;
    let git_ref = match request.git_ref {
        Some(r) => Some(GitRef::parse(&r).map_err(|e| ApiError::invalid("ref", e))?),
        None => None,
    };
    let deployment = request_deploy(&state, &who, key, git_ref).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(deployment)))
}

/// Queues a deployment of the app `key` (or joins its waiting one), then nudges the queue.
/// Returns the deployment, with `coalesced` saying whether it joined one. The dashboard's
/// deploy button uses it too.
pub(super) async fn request_deploy(
    state: &AppState,
    who: &Principal,
    key: String,
    git_ref: Option<GitRef>,
) -> ApiResult<Deployment> {
    let k = key.clone();
    let by = who.describe();
    let created = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(app) = apps::resolve(&tx, &k)? else {
                return Ok(None);
            };
            let requested = deployments::request(
                &tx,
                &NewDeployment {
                    app_id: app,
                    git_ref: git_ref.map(|r| r.as_str().to_string()),
                    commit_sha: None,
                    trigger: "api".into(),
                    triggered_by: Some(by),
                },
            )?;
            let d = deployment_views::get(&tx, requested.deployment_id)?;
            tx.commit()?;
            Ok(d.map(|d| (d, requested.coalesced)))
        })
        .await?;
    let Some((row, coalesced)) = created else {
        return Err(no_app(&key));
    };
    state.job_queue.nudge(JobQueueMsg::Nudge);
    Ok(Deployment {
        coalesced: Some(coalesced),
        ..views::deployment(row)
    })
}

async fn get_deployment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let d = state
        .ledger
        .run(move |c| deployment_views::detail(c, id))
        .await?;
    d.map(|d| ApiJson(views::deployment_detail(d)))
        .ok_or_else(|| ApiError::not_found(format!("no deployment {id}")))
}

async fn cancel_deployment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<impl IntoResponse> {
    let (status, deployment) = cancel(&state, id).await?;
    Ok((status, ApiJson(deployment)))
}

/// Cancels deployment `id`: 202 when its running job was asked to stop, 200 when it was
/// cancelled before it started. The dashboard's cancel button uses it too.
pub(super) async fn cancel(state: &AppState, id: i64) -> ApiResult<(StatusCode, Deployment)> {
    let outcome = state
        .ledger
        .run(move |c| {
            let job = jobs::latest_of_deployment(c, id)?;
            let exists = deployment_views::exists(c, id)?;
            let outcome = match job {
                Some(job) => Some((job, jobs::cancel(c, job)?)),
                None => None,
            };
            let d = deployment_views::get(c, id)?.map(views::deployment);
            Ok((exists, outcome, d))
        })
        .await?;
    match outcome {
        (false, ..) => Err(ApiError::not_found(format!("no deployment {id}"))),
        (_, Some((job, CancelOutcome::Requested)), Some(d)) => {
            state.job_queue.nudge(JobQueueMsg::Cancel(job));
            Ok((StatusCode::ACCEPTED, d))
        }
        (_, Some((_, CancelOutcome::Cancelled)), Some(d)) => Ok((StatusCode::OK, d)),
        _ => Err(ApiError::conflict(format!(
            "deployment {id} has already finished"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn deployment_logs(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<impl IntoResponse> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000);
    if !(1..=5000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 5000",
        ));
    }
    let lines = state
        .ledger
        .run(move |c| {
            if !deployment_views::exists(c, id)? {
                return Ok(None);
            }
            deployment_views::logs_after(c, id, after, limit as i64).map(Some)
        })
        .await?;
    let lines = lines.ok_or_else(|| ApiError::not_found(format!("no deployment {id}")))?;
    let next_after = lines.last().map(|l| l.seq).unwrap_or(after);
    Ok(ApiJson(LogPage {
        lines: lines.into_iter().map(views::log_line).collect(),
        next_after,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportRequest {
    pub(super) name: String,
    pub(super) repo_url: String,
    pub(super) branch: Option<String>,
    pub(super) compose_path: Option<String>,
    /// An SSH private key with read access to the repository.
    pub(super) deploy_key: Option<String>,
    /// A token for HTTPS access (sent as basic auth `x-access-token:<token>`).
    pub(super) https_token: Option<String>,
    /// Create the app trusted: its compose file is not checked by the policy. Owners only.
    pub(super) trusted: Option<bool>,
}

async fn import_app(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<ImportRequest>,
) -> ApiResult<impl IntoResponse> {
    let app = import(&state, &who, body).await?;
    Ok((StatusCode::CREATED, ApiJson(app)))
}

/// The answer to an import whose compose file asks for what the policy refuses.
fn policy_refused(violations: &[Violation]) -> ApiError {
    let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
    let listed: Vec<Value> = violations
        .iter()
        .map(|v| json!({ "service": v.service, "key": v.key, "reason": v.why }))
        .collect();
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "policy_refused",
        format!(
            "the compose file asks for what untrusted apps may not have: {}. Remove it, or have \
             an owner import the app with \"trusted\": true",
            lines.join("; ")
        ),
    )
    .details(json!({ "violations": listed }))
}

/// The policy's verdict on the checkout at `src` (blocking: it reads the compose file and
/// resolves the paths it names). A lone Dockerfile is always fine.
fn check_policy(
    src: &std::path::Path,
    detection: &detect::Detection,
    app_scope: &str,
    other_scopes: Vec<String>,
) -> Result<Vec<Violation>, ApiError> {
    let Some(path) = &detection.compose_path else {
        return Ok(Vec::new());
    };
    let unreadable = |message: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "undeployable", message)
            .details(json!({ "field": "compose_path" }))
    };
    // The project as a deployment reads it (override files, `extends`, interpolation with the
    // `.env` beside it), through the checkout reader, so the import judges what would run.
    let loaded = rustploy_actors::deploy::checkout::load_compose(src, path, &Default::default())
        .map_err(unreadable)?;
    let checkout = policy::Checkout::new(src, Some(path), app_scope).beside(other_scopes);
    Ok(policy::check(loaded.file.document(), &checkout))
}

/// Imports a repository: validates it, clones it shallowly, detects what it holds, and creates
/// the app. Nothing is deployed yet. Returns the app with what was detected under `import`.
/// The dashboard's import form uses it too.
pub(super) async fn import(
    state: &AppState,
    who: &Principal,
    body: ImportRequest,
) -> ApiResult<App> {
    let name = crate::ops::apps::check_name(state, &body.name)?;
    let trusted = body.trusted.unwrap_or(false);
    if trusted && !who.allows(Need::Admin) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an owner (or a token with the 'admin' scope) may import an app as trusted; \
             import it without \"trusted\", or ask an owner",
        )
        .details(json!({ "field": "trusted" })));
    }
    let settings = &state.settings;
    if holds_credentials(&body.repo_url) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "credentials_in_url",
            "repo_url must not hold credentials ('user:token@'): it is stored and shown in clear. \
             Send the URL without them and the token as https_token, which is stored sealed",
        )
        .details(json!({ "field": "repo_url" })));
    }
    git::validate_repo_url(&body.repo_url, settings.allow_local_repos)
        .map_err(|e| ApiError::invalid("repo_url", e))?;
    let branch = GitRef::parse(body.branch.as_deref().unwrap_or("main"))
        .map_err(|e| ApiError::invalid("branch", e))?;
    if let Some(p) = &body.compose_path {
        detect::check_repo_path(p).map_err(|e| ApiError::invalid("compose_path", e))?;
    }
    if let Some(k) = &body.deploy_key
        && !k.contains("PRIVATE KEY-----")
    {
        return Err(ApiError::invalid(
            "deploy_key",
            "deploy_key must be an SSH private key (PEM or OpenSSH format)",
        ));
    }
    if let Some(t) = &body.https_token
        && (t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ApiError::invalid(
            "https_token",
            "https_token must be non-empty, without spaces",
        ));
    }
    let taken = name.as_str().to_string();
    let exists = state
        .ledger
        .run(move |c| Ok(apps::resolve(c, &taken)?.is_some()))
        .await?;
    if exists {
        return Err(ApiError::conflict(format!(
            "an app named '{name}' already exists"
        )));
    }

    let config = settings.deploy_config();
    let staging = config
        .data_dir
        .join("apps")
        .join(format!(".import-{}", crate::secrets::random_public_id()));
    let credentials = Credentials {
        deploy_key: body.deploy_key.clone(),
        https_token: body.https_token.clone(),
    };
    let redactor = Redactor::new(
        [body.deploy_key.clone(), body.https_token.clone()]
            .into_iter()
            .flatten(),
    );
    let git = Git {
        timeout: config.git_timeout,
        allow_local: config.allow_local_repos,
        credentials,
        scratch: staging.join("ssh"),
    };
    let src = staging.join("src");
    let cloned = git
        .checkout(
            &body.repo_url,
            branch.as_str(),
            &src,
            &CancellationToken::new(),
            &mut |_, _| {},
        )
        .await;
    let cleanup = |dir: std::path::PathBuf| async move {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    };
    let sha = match cloned {
        Ok(sha) => sha,
        Err(e) => {
            cleanup(staging).await;
            let why = match &e {
                ProcessError::Failed { tail, .. } => rustploy_actors::deployer::telling_line(tail)
                    .map(|l| redactor.line(l))
                    .unwrap_or_else(|| e.to_string()),
                other => other.to_string(),
            };
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "repository_unavailable",
                format!(
                    "cannot clone branch '{}' of {}: {why}",
                    branch.as_str(),
                    url_credentials(&body.repo_url)
                ),
            )
            .details(json!({ "field": "repo_url" })));
        }
    };
    let root = src.clone();
    let explicit = body.compose_path.clone();
    // Asks the engine for the ports of images already on this server; works without it.
    let images = docker::LocalImages::current();
    let detected = tokio::task::spawn_blocking(move || {
        detect::detect_with(&root, explicit.as_deref(), &Default::default(), &images)
    })
    .await
    .map_err(ApiError::internal)?;
    let detection = match detected {
        Ok(d) => d,
        Err(e) => {
            cleanup(staging).await;
            return Err(match e {
                DetectError::Manifest(m) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_manifest",
                    m.to_string(),
                )
                .details(json!({ "field": format!("rustploy.yaml:{}", m.path), "path": m.path })),
                DetectError::Invalid { field, message } => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "undeployable", message)
                        .details(json!({ "field": field }))
                }
            });
        }
    };
    let named = name.as_str().to_string();
    let extending = match state
        .ledger
        .run(move |c| rustploy_actors::ledger::trust::extending_names(c, &named))
        .await
    {
        Ok(names) => names,
        Err(e) => {
            cleanup(staging).await;
            return Err(e.into());
        }
    };
    let others: Vec<String> = extending.iter().map(|n| config.app_scope(n)).collect();
    let (root, d, scope) = (
        src.clone(),
        detection.clone(),
        config.app_scope(name.as_str()),
    );
    let checked = tokio::task::spawn_blocking(move || check_policy(&root, &d, &scope, others))
        .await
        .map_err(ApiError::internal)?;
    let violations = match checked {
        Ok(v) => v,
        Err(e) => {
            cleanup(staging).await;
            return Err(e);
        }
    };
    if !violations.is_empty() && !trusted {
        cleanup(staging).await;
        return Err(policy_refused(&violations));
    }
    let mut detection = detection;
    for v in &violations {
        detection
            .warnings
            .push(format!("allowed because the app is trusted: {v}"));
    }
    let changer = trusted.then(|| super::trust_api::changer(who));

    let secrets = state.secrets.clone();
    let (app_name, repo_url, branch_s) = (
        name.as_str().to_string(),
        body.repo_url.clone(),
        branch.as_str().to_string(),
    );
    let (deploy_key, https_token) = (body.deploy_key.clone(), body.https_token.clone());
    let d = detection.clone();
    let created = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(id) = apps::create(&tx, &app_name)? else {
                return Ok(None);
            };
            let source = ImportSource {
                repo_url,
                branch: branch_s,
                deploy_key_enc: deploy_key
                    .map(|k| secrets.seal(&contexts::deploy_key(id), k.as_bytes())),
                https_token_enc: https_token
                    .map(|t| secrets.seal(&contexts::https_token(id), t.as_bytes())),
            };
            apps::save_import(&tx, id, &source, &d)?;
            if let Some(who) = &changer {
                trust::set(&tx, id, true, who)?;
            }
            let app = app_view(&tx, id)?;
            tx.commit()?;
            Ok(app)
        })
        .await;
    let app = match created {
        Ok(Some(app)) => app,
        Ok(None) => {
            cleanup(staging).await;
            return Err(ApiError::conflict(format!(
                "an app named '{name}' already exists"
            )));
        }
        Err(e) => {
            cleanup(staging).await;
            return Err(e.into());
        }
    };
    let dest = config.app_dir(name.as_str());
    let moved = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&staging, &dest)
    })
    .await
    .map_err(ApiError::internal)?;
    if let Err(e) = moved {
        // The app exists; its first deployment clones again.
        tracing::warn!(app = %name, error = %e, "keeping the imported checkout failed");
    }
    let mut app = app;
    app.import = Some(views::imported(
        &url_credentials(&body.repo_url),
        branch.as_str(),
        &sha,
        &detection,
    ));
    // A base-domain host may now exist for it.
    state
        .router
        .nudge(rustploy_actors::router_sync::RouterSyncMsg::Nudge);
    Ok(app)
}

/// Whether a repository URL carries credentials: any user info in an `https://` (or other
/// non-ssh) URL, where git sends it as a password or token, and a password anywhere. A bare SSH
/// user name (`ssh://git@host/...`, `git@host:path`) is no secret and stays allowed. We refuse
/// rather than move the token into `https_token` ourselves, so that nothing is guessed about
/// which part is the token.
fn holds_credentials(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            match authority.rsplit_once('@') {
                None => false,
                Some((user, _)) if scheme.eq_ignore_ascii_case("ssh") => user.contains(':'),
                Some(_) => true,
            }
        }
        // scp-style `user@host:path`: a ':' before the '@' is a password.
        None => url
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':')),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    deployment_id: Option<i64>,
}

/// Deploys a previous healthy deployment's exact commit with its env snapshot (default: the
/// release before the live one).
async fn rollback(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let request: RollbackRequest = optional_json(&body)?;
    let d = roll_back(&state, &who, key, request.deployment_id).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(d)))
}

/// Queues a rollback of the app `key` to `target` (default: the release before the live one).
/// The dashboard's rollback button uses it too.
pub(super) async fn roll_back(
    state: &AppState,
    who: &Principal,
    key: String,
    target: Option<i64>,
) -> ApiResult<Deployment> {
    let k = key.clone();
    let by = who.describe();
    let secrets = state.secrets.clone();
    let created = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(app) = apps::resolve(&tx, &k)? else {
                return Ok(None);
            };
            let id = match deployments::roll_back(&tx, &secrets, app, target, Some(&by))? {
                Ok(id) => id,
                Err(why) => return Ok(Some(Err(why))),
            };
            let d = deployment_views::get(&tx, id)?;
            tx.commit()?;
            Ok(Some(Ok(d)))
        })
        .await?;
    match created {
        None => Err(no_app(&key)),
        Some(Err(why)) => Err(ApiError::conflict(why)),
        Some(Ok(d)) => {
            state.job_queue.nudge(JobQueueMsg::Nudge);
            d.map(views::deployment)
                .ok_or_else(|| ApiError::internal("the queued rollback was not found"))
        }
    }
}

/// The live release: where it answers (the route), and its containers as the engine sees them.
async fn runtime(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(runtime_of(&state, key).await?))
}

/// The runtime answer for the app `key`. The dashboard's overview uses it too.
pub(super) async fn runtime_of(state: &AppState, key: String) -> ApiResult<Runtime> {
    let k = key.clone();
    let found = state
        .ledger
        .run(move |c| {
            let Some(app) = apps::resolve_named(c, &k)? else {
                return Ok(None);
            };
            let route = deployment_views::routes(c, app.id)?;
            let live = route.iter().map(|r| r.deployment_id).max();
            let deployment = match live {
                Some(d) => deployment_views::get(c, d)?,
                None => None,
            };
            Ok(Some((app, route, live, deployment)))
        })
        .await?;
    let Some((app, route, live, deployment)) = found else {
        return Err(no_app(&key));
    };
    let config = state.settings.deploy_config();
    let (containers, engine) = match live {
        None => (Some(Vec::new()), EngineStatus::default()),
        Some(d) => {
            let project = config.project(&app.name, d);
            match docker::project_containers(&project, Some(&config.network)).await {
                Ok(list) => (
                    Some(list.iter().map(views::container).collect()),
                    EngineStatus::default(),
                ),
                Err(e) => (
                    None,
                    EngineStatus {
                        ok: false,
                        error: Some(e.to_string()),
                    },
                ),
            }
        }
    };
    Ok(Runtime {
        app_id: app.id,
        project: live.map(|d| config.project(&app.name, d)),
        app: app.name,
        deployment: deployment.map(views::deployment),
        route: route.into_iter().map(views::route).collect(),
        containers,
        engine,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerLogQuery {
    tail: Option<u64>,
    follow: Option<bool>,
}

/// A container's logs as text; with `follow=true` the answer streams until the container stops
/// or the client goes away. Only containers of the app's own deployments are shown.
async fn container_logs(
    State(state): State<AppState>,
    ApiPath((key, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ContainerLogQuery>,
) -> ApiResult<impl IntoResponse> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(ApiError::invalid("id", "a container id or name"));
    }
    let k = key.clone();
    let name = state
        .ledger
        .run(move |c| Ok(apps::resolve_named(c, &k)?.map(|a| a.name)))
        .await?;
    let Some(name) = name else {
        return Err(no_app(&key));
    };
    let engine_error = |e: EngineError| match e {
        EngineError::Unreachable { .. } => ApiError::unavailable(e.to_string()),
        EngineError::Api(_) => ApiError::internal(e),
    };
    let labels = docker::container_labels(&id).await.map_err(engine_error)?;
    let prefix = &state.settings.project_prefix;
    let owned = labels.is_some_and(|l| {
        l.get(compose::LABEL_APP) == Some(&name)
            && l.get(docker::LABEL_PROJECT)
                .is_some_and(|p| plan::project_deployment(prefix, &name, p).is_some())
    });
    if !owned {
        return Err(ApiError::not_found(format!(
            "app '{name}' has no container '{id}'"
        )));
    }
    let stream =
        docker::container_logs(&id, Some(q.tail.unwrap_or(200)), q.follow.unwrap_or(false))
            .await
            .map_err(engine_error)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(stream),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    after: Option<i64>,
}

/// The deployment's log as server-sent events: every line after `Last-Event-ID` (or `after`),
/// then new lines as they are written; an `end` event closes the stream once the deployment
/// has finished and every line was sent.
async fn stream_logs(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    // The stream stays open while the deployment runs, which a client that reads a whole body
    // would wait on for minutes: only clients that ask for events get them.
    let wants_events = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if !wants_events {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this is a server-sent event stream: send 'Accept: text/event-stream' (or read \
             /api/v1/deployments/{id}/logs?after=SEQ for pages of lines)",
        ));
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(q.after)
        .unwrap_or(0);
    let exists = state
        .ledger
        .run(move |c| deployment_views::exists(c, id))
        .await?;
    if !exists {
        return Err(ApiError::not_found(format!("no deployment {id}")));
    }
    let start = LogCursor {
        ledger: state.ledger.clone(),
        id,
        after,
        pending: std::collections::VecDeque::new(),
        settled: false,
        ended: false,
    };
    let stream = futures_util::stream::unfold(start, |mut cur| async move {
        cur.next_event()
            .await
            .map(|e| (Ok::<_, Infallible>(e), cur))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct LogCursor {
    ledger: Ledger,
    id: i64,
    after: i64,
    pending: std::collections::VecDeque<Event>,
    /// The deployment had finished at the last look, and a short while has passed since.
    settled: bool,
    ended: bool,
}

impl LogCursor {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let (id, after) = (self.id, self.after);
            let read = self
                .ledger
                .run(move |c| {
                    let progress = deployment_views::progress(c, id)?;
                    let lines = deployment_views::logs_after(c, id, after, 500)?;
                    Ok((progress, lines))
                })
                .await;
            let Ok((state, lines)) = read else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            if !lines.is_empty() {
                for line in lines {
                    self.after = line.seq;
                    let data = serde_json::to_string(&views::log_line(line))
                        .expect("a log line serialises");
                    self.pending.push_back(
                        Event::default()
                            .id(self.after.to_string())
                            .event("log")
                            .data(data),
                    );
                }
                continue;
            }
            match state {
                None => {
                    self.ended = true;
                    return Some(end_event(&LogEnd {
                        state: None,
                        reason: None,
                    }));
                }
                Some(p) if !p.state.is_active() && !self.settled => {
                    // The last lines are written just after the state changes: look once more.
                    self.settled = true;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Some(p) if !p.state.is_active() => {
                    self.ended = true;
                    return Some(end_event(&LogEnd {
                        state: Some(p.state),
                        reason: Some(p.reason),
                    }));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// The log stream's last event: how the deployment ended (`state` is null when it is gone, and
/// then there is no `reason`).
#[derive(Serialize)]
struct LogEnd {
    state: Option<DeploymentState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Option<String>>,
}

fn end_event(end: &LogEnd) -> Event {
    Event::default()
        .event("end")
        .data(serde_json::to_string(end).expect("the end of a log serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_log_says_how_the_deployment_ended() {
        let text = |end: LogEnd| serde_json::to_string(&end).unwrap();
        assert_eq!(
            text(LogEnd {
                state: None,
                reason: None
            }),
            r#"{"state":null}"#,
            "a deployment that is gone has no reason"
        );
        assert_eq!(
            text(LogEnd {
                state: Some(DeploymentState::Healthy),
                reason: Some(None)
            }),
            r#"{"state":"healthy","reason":null}"#
        );
        assert_eq!(
            text(LogEnd {
                state: Some(DeploymentState::Failed),
                reason: Some(Some("health".into()))
            }),
            r#"{"state":"failed","reason":"health"}"#
        );
    }

    #[test]
    fn repository_urls_with_credentials_are_recognised() {
        let cases: &[(&str, bool)] = &[
            ("https://github.com/o/r.git", false),
            ("https://github.com/o/r@v1.git", false),
            ("ssh://git@github.com/o/r.git", false),
            ("git@github.com:o/r.git", false),
            ("/srv/repos/r.git", false),
            ("file:///srv/repos/r.git", false),
            ("https://user:token@github.com/o/r.git", true),
            ("https://ghp_abc123@github.com/o/r.git", true),
            ("HTTPS://x-access-token:t@github.com/o/r", true),
            ("https://user:p%40ss@github.com/o/r.git", true),
            ("https://user:p@ss@github.com/o/r.git", true),
            ("http://user:pass@example.com/r.git", true),
            ("ssh://git:secret@github.com/o/r.git", true),
            ("git:secret@github.com:o/r.git", true),
        ];
        for (url, creds) in cases {
            assert_eq!(holds_credentials(url), *creds, "{url}");
        }
    }
}
