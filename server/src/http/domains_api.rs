//! Domains of an app and their routing status (RouterSync applies them to Caddy).

use axum::http::Method;
use axum::routing::MethodRouter;

use super::AppState;
use super::auth::Need;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    vec![]
}
