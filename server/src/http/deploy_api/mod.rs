//! `/api/v1` routes of apps' code and releases: import a repository, request, list, inspect and
//! cancel deployments, read and stream their logs, roll back, see the live runtime and its
//! container logs. Deleting an app is routed here and handled in `app_delete_api.rs`.
//!
//! The operations themselves are in `ops::deploys` and `ops::import`; the handlers here parse
//! the request, call them, and answer. `deployments.rs` holds the deployments' and the
//! runtime's handlers, `import.rs` the import's, `logs.rs` the log reads and the log stream.

mod deployments;
mod import;
mod logs;

use axum::http::Method;
use axum::routing::{MethodRouter, get, post};

use super::AppState;
use super::auth::Need;

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
            axum::routing::delete(super::app_delete_api::delete_app),
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
            "/api/v1/apps/{app}/deployments/{id}",
            Need::Read,
            get(deployments::get_app_deployment),
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
