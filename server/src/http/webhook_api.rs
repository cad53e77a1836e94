//! GitHub integrations and the webhook endpoint; WebhookIntake turns deliveries into deploys.

use axum::http::Method;
use axum::routing::MethodRouter;

use super::AppState;
use super::auth::Need;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    vec![]
}
