//! In-process tests of the HTTP router: the real `router(AppState)` over a real SQLite ledger in
//! a temporary directory, called with `tower::ServiceExt::oneshot`. No socket, no mocks.

mod access;
mod agents;
mod app_delete;
mod apps;
mod auth_flows;
mod concurrent_writes;
mod credentials;
mod dashboard;
mod dashboard_access;
mod dashboard_host;
mod dashboard_services;
mod deploy_errors;
mod domains;
mod env_files;
mod errors;
mod harness;
mod ops;
mod read_cache;
mod services;
mod session;
mod trust;
mod upgrade;
mod webhooks;
