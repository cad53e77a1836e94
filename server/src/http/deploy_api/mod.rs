//! `/api/v1` routes of apps' code and releases: import a repository, request, list, inspect and
//! cancel deployments, read and stream their logs, roll back, see the live runtime and its
//! container logs, and delete an app with its containers.
//!
//! The operations themselves are in `ops::deploys` and `ops::import`; the handlers here parse
//! the request, call them, and answer. `deployments.rs` holds the deployments' and the
//! runtime's handlers, `import.rs` the import's, `logs.rs` the log reads and the log stream.

mod deployments;
mod import;
mod logs;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use rustploy_actors::deploy::docker::{self, EngineError};
use rustploy_actors::deploy::plan;
use rustploy_actors::ledger::apps;
use rustploy_actors::ledger::deployments::views as deployment_views;
use serde::Deserialize;

use super::AppState;
use super::auth::Need;
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult};
use super::op_errors::no_app;

/// The deployment operations, merged into the `/api/v1` route table.
pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (
            M::POST,
            "/api/v1/apps/import",
            Need::Deploy,
            post(import::import_app),
        ),
        (
            M::DELETE,
            "/api/v1/apps/{app}",
            Need::Admin,
            axum::routing::delete(delete_app),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/rollback",
            Need::Deploy,
            post(deployments::rollback),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/runtime",
            Need::Read,
            get(deployments::runtime),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/containers/{id}/logs",
            Need::Read,
            get(logs::container_logs),
        ),
        (
            M::GET,
            "/api/v1/deployments/{id}/logs/stream",
            Need::Read,
            get(logs::stream_logs),
        ),
        (
            M::GET,
            "/api/v1/apps/{app}/deployments",
            Need::Read,
            get(deployments::list_deployments),
        ),
        (
            M::POST,
            "/api/v1/apps/{app}/deployments",
            Need::Deploy,
            post(deployments::request_deployment),
        ),
        (
            M::GET,
            "/api/v1/deployments/{id}",
            Need::Read,
            get(deployments::get_deployment),
        ),
        (
            M::POST,
            "/api/v1/deployments/{id}/cancel",
            Need::Deploy,
            post(deployments::cancel_deployment),
        ),
        (
            M::GET,
            "/api/v1/deployments/{id}/logs",
            Need::Read,
            get(logs::deployment_logs),
        ),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    purge_volumes: Option<bool>,
}

/// Deletes an app: its compose projects are torn down (volumes kept unless
/// `?purge_volumes=true`), its images and checkout removed, then its rows.
async fn delete_app(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    let k = key.clone();
    let found = state
        .ledger
        .run(move |c| {
            let Some(app) = apps::resolve_named(c, &k)? else {
                return Ok(None);
            };
            let running = apps::has_running_job(c, app.id)?;
            let started = deployment_views::any_started(c, app.id)?;
            Ok(Some((app.id, app.name, running, started)))
        })
        .await?;
    let Some((id, name, running, started)) = found else {
        return Err(no_app(&key));
    };
    if running {
        return Err(ApiError::conflict(
            "a deployment of this app is running; cancel it and delete the app when it has stopped",
        ));
    }
    let config = state.settings.deploy_config();
    match teardown_app(&config, &name, q.purge_volumes.unwrap_or(false)).await {
        Ok(()) => {}
        // An app that never started anything has nothing on the engine to lose track of.
        Err(e @ EngineError::Unreachable { .. }) if started => {
            return Err(ApiError::unavailable(format!(
                "{e}: the app's containers could not be removed, so the app was kept; try again"
            )));
        }
        Err(e) => {
            tracing::warn!(app = %name, error = %e, "tearing down a deleted app's containers failed")
        }
    }
    let deleted = state
        .ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let deleted = apps::delete_unless_running(&tx, id)?;
            tx.commit()?;
            Ok(deleted)
        })
        .await?;
    if !deleted {
        return Err(ApiError::conflict(
            "a deployment of this app started meanwhile; cancel it and delete the app when it has stopped",
        ));
    }
    // Its domains went with it.
    state
        .router
        .nudge(rustploy_actors::router_sync::RouterSyncMsg::Nudge);
    let dir = config.app_dir(&name);
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn teardown_app(
    config: &rustploy_actors::deploy::DeployConfig,
    app: &str,
    purge_volumes: bool,
) -> Result<(), EngineError> {
    use rustploy_actors::deploy::docker::{DockerEngine, Engine};
    let projects = DockerEngine.app_projects(app).await?;
    for project in projects {
        if plan::project_deployment(&config.project_prefix, app, &project).is_some() {
            docker::teardown(&project, config.stop_grace).await?;
        }
    }
    // Its managed services and their private network go after the releases that used them.
    docker::teardown(&config.service_names(app).project(), config.stop_grace).await?;
    // The app's own networks, shared by its releases, go once no release uses them.
    docker::remove_app_networks(app).await?;
    let scope = config.app_scope(app);
    if purge_volumes {
        docker::remove_app_volumes(app, &scope).await?;
    }
    docker::remove_app_images(&scope).await
}
