//! Agents: registration, heartbeats, and their state as the HeartbeatMonitor sees it.

use axum::http::Method;
use axum::routing::MethodRouter;

use super::AppState;
use super::auth::Need;

pub fn table() -> Vec<(Method, &'static str, Need, MethodRouter<AppState>)> {
    vec![]
}
